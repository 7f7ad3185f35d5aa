// block_mask: classifies each (batch, query head, query block, key block) of a
// caller's mask_mod (src/mods.rs) as empty (0), partial (1) or full (2), over
// the block's indices within [Nq, Nk]; the fused kernels skip empty blocks and
// do not evaluate mask_mod on full ones. One invocation per block, stopping as
// soon as it has seen both answers. The classes follow the caller's buffers in
// the mods binding (from MOD_CLASSES on), which src/mods.rs splices in with
// the mod; without mods this kernel does not compile (it is never built so).

#import shared/grid

const BQ: u32 = 64u;
const BK: u32 = 64u;
const WG: u32 = 64u;

struct Params {
    b: u32, hq: u32, nq: u32, nk: u32,
    nqb: u32, nkb: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_workgroup(wg, nwg) * WG + lid;
    if (i >= p.b * p.hq * p.nqb * p.nkb) {
        return;
    }
    let kb = i % p.nkb;
    let qb = (i / p.nkb) % p.nqb;
    let bh = i / (p.nkb * p.nqb);
    let b = bh / p.hq;
    let h = bh % p.hq;
    var any = false;
    var all = true;
    let q_end = min((qb + 1u) * BQ, p.nq);
    let k_end = min((kb + 1u) * BK, p.nk);
    for (var q = qb * BQ; q < q_end; q++) {
        for (var kv = kb * BK; kv < k_end; kv++) {
            let v = mask_mod(b, h, q, kv);
            any = any || v;
            all = all && v;
        }
        if (any && !all) {
            break;
        }
    }
    mods[MOD_CLASSES + i] = select(select(0u, 1u, any), 2u, all);
}

// flash_attention_tiled: the fused kernel (same semantics and bindings as
// flash_attention.wgsl, via shared/flash_common.wgsl) shaped for real GPUs: a
// workgroup of WG lanes owns WG consecutive query rows (one per lane) and streams
// the keys through workgroup memory in tiles of BC keys. Every lane helps load a
// tile of K and V (coalesced: consecutive lanes, consecutive vec4 chunks), one
// barrier, then each lane runs the online softmax of its row over the tile's keys
// from workgroup memory, one barrier before the next tile. K/V are read from
// global memory once per workgroup instead of once per lane.
//
// BC is chosen by the host from the granted workgroup memory (2·BC·DMAX·4 bytes,
// within the 16 KiB WebGPU default for every head-dim bucket). The key range is
// uniform across the workgroup (made so with workgroupUniformLoad), so the
// barriers sit in uniform control flow; lanes never take different key splits.

#import shared/grid
#import shared/mask
#import shared/flash_common

override WG: u32 = 64u; // lanes = query rows per workgroup

// Substituted by the host: head-dim bucket and keys per tile.
const DMAX: u32 = 64u;
const BC: u32 = 32u;
const DV: u32 = DMAX / 4u; // vec4 chunks of a row

var<workgroup> kt: array<vec4<f32>, BC * DV>;
var<workgroup> vt: array<vec4<f32>, BC * DV>;
var<workgroup> key_range: vec2<i32>;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = flash_work(linear_workgroup(wg, nwg), lid, WG, 1u);
    // The same for every lane (the work split is per workgroup); loaded uniformly so
    // the tile loop, and the barriers in it, are in uniform control flow. A surplus
    // workgroup gets an empty range.
    if (lid == 0u) {
        key_range = select(vec2(0, 0), vec2(w.j_lo, w.j_hi), w.valid);
    }
    let range = workgroupUniformLoad(&key_range);

    var qr: array<vec4<f32>, DV>;
    var acc: array<vec4<f32>, DV>;
    let f = flash_row(w, w.row0);
    let qrow = flash_q_row(w, f);
    for (var cv = 0u; cv < DV; cv++) {
        let c = 4u * cv;
        qr[cv] = vec4(ld_q(qrow, c), ld_q(qrow, c + 1u), ld_q(qrow, c + 2u), ld_q(qrow, c + 3u)) * p.scale;
        acc[cv] = vec4(0.0);
    }
    var m = NEG_BIG;
    var l = 0.0;
    let kbase = p.k_off + w.b * p.k_sb + w.hk * p.k_sh;
    let vbase = p.v_off + w.b * p.v_sb + w.hk * p.v_sh;
    for (var j0 = range.x; j0 < range.y; j0 += i32(BC)) {
        // Keys past Nk load the last key (valid memory); flash_score excludes them.
        for (var e = lid; e < BC * DV; e += WG) {
            let j = min(u32(j0) + e / DV, p.nk - 1u);
            let c = 4u * (e % DV);
            let kr = kbase + j * p.k_sn;
            let vr = vbase + j * p.v_sn;
            kt[e] = vec4(ld_k(kr, c), ld_k(kr, c + 1u), ld_k(kr, c + 2u), ld_k(kr, c + 3u));
            vt[e] = vec4(ld_v(vr, c), ld_v(vr, c + 1u), ld_v(vr, c + 2u), ld_v(vr, c + 3u));
        }
        workgroupBarrier();
        for (var t = 0u; t < BC; t++) {
            let j = u32(j0) + t;
            var s = 0.0;
            for (var cv = 0u; cv < DV; cv++) {
                s += dot(qr[cv], kt[t * DV + cv]);
            }
            let x = flash_score(s, w, f, j, flash_bias(f, j));
            let m_new = max(m, x);
            let corr = exp(m - m_new);
            let pr = select(0.0, exp(x - m_new), x > MASKED);
            l = l * corr + pr;
            m = m_new;
            for (var cv = 0u; cv < DV; cv++) {
                acc[cv] = acc[cv] * corr + pr * vt[t * DV + cv];
            }
        }
        workgroupBarrier();
    }
    if (w.valid) {
        for (var cv = 0u; cv < (p.d + 3u) / 4u; cv++) {
            flash_store4(w, f, 4u * cv, acc[cv], l);
        }
        flash_store_lse(w, f, m, l);
    }
}

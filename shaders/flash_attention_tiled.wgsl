// flash_attention_tiled: the fused kernel (same semantics and bindings as
// flash_attention.wgsl, via shared/flash_common.wgsl) shaped for real GPUs: a
// workgroup of WG lanes streams the keys through workgroup memory in tiles of BC
// keys. Every lane helps load a tile of K and V (coalesced: consecutive lanes,
// consecutive vec4 chunks), one barrier, then each row runs its online softmax
// over the tile's keys from workgroup memory, one barrier before the next tile.
// K/V are read from global memory once per workgroup instead of once per row.
//
// A family, chosen by the host from the device (plan/fused.rs):
//   R  query rows per row group (register blocking: each K/V element read from
//      workgroup memory serves R rows);
//   G  lanes per row group (1, or 2..8 with subgroups): the G lanes of a group
//      each hold every G-th vec4 chunk of the rows' Q and O, and their partial
//      dot products are summed with subgroupShuffleXor in log2(G) steps. The
//      groups are formed from subgroup_invocation_id within one subgroup (the
//      host makes G a divisor of the smallest subgroup size the device reports
//      and WG a multiple of the largest, never assuming a size), so the shuffles
//      stay inside a group. Lines marked `//?SG:` are compiled in only with
//      SG = 1 (the host sets it when G > 1; src/shaders/mod.rs), so the G = 1
//      kernel needs no subgroup feature.
// A workgroup covers (WG / G) · R rows.
//
// BC is chosen by the host from the granted workgroup memory (2·BC·DMAX·4 bytes).
// The key range is uniform across the workgroup (made so with
// workgroupUniformLoad), so the barriers and shuffles sit in uniform control
// flow; lanes never take different key splits.

#import shared/grid
#import shared/mask
#import shared/flash_common

override WG: u32 = 64u; // lanes per workgroup

// Substituted by the host: head-dim bucket, keys per tile, rows per group,
// lanes per group, SG = 1 when G > 1 (the shuffles need subgroups).
const DMAX: u32 = 64u;
const BC: u32 = 32u;
const R: u32 = 1u;
const G: u32 = 1u;
const SG: u32 = 0u;
const DV: u32 = DMAX / 4u; // vec4 chunks of a row
const DL: u32 = DV / G;    // chunks per lane

var<workgroup> kt: array<vec4<f32>, BC * DV>;
var<workgroup> vt: array<vec4<f32>, BC * DV>;
var<workgroup> tile_class_wg: u32;
var<workgroup> key_range: vec2<i32>;

// The sum of x over the G lanes of a group.
fn group_sum(x: f32) -> f32 {
    var s = x;
//?SG:    for (var o = 1u; o < G; o *= 2u) {
//?SG:        s += subgroupShuffleXor(s, o);
//?SG:    }
    return s;
}

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
//?SG:        @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_size) sg_size: u32,
//?SG:        @builtin(subgroup_invocation_id) sg_lane: u32,
        ) {
    // Row group and lane within it: from the subgroup's own numbering when the
    // group spans lanes, so a group never straddles two subgroups.
    var group = lid;
    var g = 0u;
//?SG:    group = (sg_id * sg_size + sg_lane) / G;
//?SG:    g = sg_lane % G;
    let w = flash_work(linear_workgroup(wg, nwg), group, WG / G, R);
    // The same for every lane (the work split is per workgroup); loaded uniformly so
    // the tile loop, and the barriers in it, are in uniform control flow. A surplus
    // workgroup gets an empty range.
    if (lid == 0u) {
        key_range = select(vec2(0, 0), vec2(w.j_lo, w.j_hi), w.valid);
    }
    let range = workgroupUniformLoad(&key_range);

    var qr: array<array<vec4<f32>, DL>, R>;
    var acc: array<array<vec4<f32>, DL>, R>;
    var f: array<FlashRow, R>;
    var m: array<f32, R>;
    var l: array<f32, R>;
    for (var r = 0u; r < R; r++) {
        f[r] = flash_row(w, w.row0 + r);
        let qrow = flash_q_row(w, f[r]);
        for (var i = 0u; i < DL; i++) {
            let c = 4u * (g + i * G);
            qr[r][i] = vec4(ld_q(qrow, c), ld_q(qrow, c + 1u), ld_q(qrow, c + 2u), ld_q(qrow, c + 3u)) * p.scale;
            acc[r][i] = vec4(0.0);
        }
        m[r] = NEG_BIG;
        l[r] = 0.0;
    }
    let kbase = p.k_off + w.b * p.k_sb + w.hk * p.k_sh;
    let vbase = p.v_off + w.b * p.v_sb + w.hk * p.v_sh;
    for (var j0 = range.x; j0 < range.y; j0 += i32(BC)) {
        // Tiles no row sees (another pool part's keys, the caller's block
        // mask), one class for every lane (so the barriers stay in uniform
        // control flow); compiled out without a pool split or a block mask.
        if (PAGED_PARTS || TILE_MOD_BLOCKS) {
            if (lid == 0u) {
                tile_class_wg = flash_tile_class(w, u32(j0), u32(j0) + BC - 1u);
            }
            let tc = workgroupUniformLoad(&tile_class_wg);
            if (tc == TILE_EMPTY) {
                continue;
            }
//?MASK_MOD:            mod_full = tc == TILE_FULL;
        }
        // Keys past Nk load the last key (valid memory); flash_score excludes them.
        for (var e = lid; e < BC * DV; e += WG) {
            let j = min(u32(j0) + e / DV, p.nk - 1u);
            let c = 4u * (e % DV);
            let kj = flash_key(w, j);
            let kr = kbase + kj * p.k_sn;
            let vr = vbase + kj * p.v_sn;
            kt[e] = vec4(ld_k(kr, c), ld_k(kr, c + 1u), ld_k(kr, c + 2u), ld_k(kr, c + 3u));
            vt[e] = vec4(ld_v(vr, c), ld_v(vr, c + 1u), ld_v(vr, c + 2u), ld_v(vr, c + 3u));
        }
        workgroupBarrier();
        for (var t = 0u; t < BC; t++) {
            let j = u32(j0) + t;
            for (var r = 0u; r < R; r++) {
                var s = 0.0;
                for (var i = 0u; i < DL; i++) {
                    s += dot(qr[r][i], kt[t * DV + g + i * G]);
                }
                s = group_sum(s);
                let x = flash_score(s, w, f[r], j, flash_bias(f[r], j));
                let m_new = max(m[r], x);
                let corr = exp(m[r] - m_new);
                let pr = select(0.0, exp(x - m_new), x > MASKED);
                l[r] = l[r] * corr + pr;
                m[r] = m_new;
                for (var i = 0u; i < DL; i++) {
                    acc[r][i] = acc[r][i] * corr + pr * vt[t * DV + g + i * G];
                }
            }
        }
        workgroupBarrier();
    }
    if (w.valid) {
        for (var r = 0u; r < R; r++) {
            for (var i = 0u; i < DL; i++) {
                let c = 4u * (g + i * G);
                if (c < p.d) {
                    flash_store4(w, f[r], c, acc[r][i], m[r], l[r]);
                }
            }
            if (g == 0u) {
                flash_store_lse(w, f[r], m[r], l[r]);
            }
        }
    }
}

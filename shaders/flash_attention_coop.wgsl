// flash_attention_coop: the fused kernel (same semantics and bindings as
// flash_attention.wgsl, via shared/flash_common.wgsl) with Q·Kᵀ on cooperative
// matrices (tensor cores where the device has them). A workgroup of BR lanes owns
// BR consecutive query rows, one per lane, held in workgroup memory as f16. Per
// tile of BC keys:
//   1. every lane helps load the tile's K (f16) and V (f32) into workgroup memory;
//   2. each subgroup takes T-row slabs of the block and multiplies them with the
//      tile's keys on T×T×T f16 × f16 → f32 matrices (A = Q rows, row-major;
//      B = Kᵀ, the K rows read column-major), storing the f32 scores tile;
//   3. each lane runs the online softmax of its row over the tile's scores in
//      f32 (scale, softcap, masks, ALiBi: flash_score) and accumulates P·V from
//      the V tile, as flash_attention_tiled does;
//   or, with PV = 1 (lines marked //?PV: instead of //?!PV:, src/shaders/mod.rs):
//   3'. each lane finds its row's new maximum over the tile, writes the tile's
//      weights P (f16, in [0, 1]) and rescales its row of the O tile (f32, in
//      workgroup memory) by exp(m_old − m_new);
//   4'. each subgroup adds P·V for its slabs on the matrices (A = P rows, B =
//      the V tile in f16, C = the O tile), and O = O tile / l at the end.
//      P's f16 rounding (2⁻¹¹ relative) is the price; P·V on matrices can be
//      faster or slower than scalar (peers measured both): the autotuner
//      measures Coop::Full against Coop::On.
// Barriers sit between the steps, in uniform control flow (the key range is
// loaded uniformly). The slab loop runs per subgroup (its trip count depends on
// subgroup_id), which WGSL's uniformity analysis cannot see as uniform; every
// matrix operation in it is executed by whole subgroups alike (the host makes BR
// a multiple of the largest subgroup size), so the diagnostic is switched off.
//
// The host substitutes DMAX (head-dim bucket, a multiple of T), BC (keys per
// tile, a multiple of T), BR (lanes, a multiple of T and of the subgroup size)
// and T (8 or 16, a shape the device lists: plan/coop.rs), and with T = 16 the
// matrix types coop_mat8x8 → coop_mat16x16; PV selects step 3 or 3'–4'. Values are rounded to f16 for the
// products (clamped to ±65 504, so no inf meets a zero); Q and K stored in f16
// lose nothing, products and sums are f32.

enable f16;
enable wgpu_cooperative_matrix;
diagnostic(off, derivative_uniformity);

#import shared/grid
#import shared/mask
#import shared/flash_common

const DMAX: u32 = 64u;
const BC: u32 = 32u;
const BR: u32 = 64u;
const T: u32 = 8u;
const PV: u32 = 0u; // 1: P·V on the matrices too (the //?PV: lines)
const DV: u32 = DMAX / 4u; // vec4 chunks of a row

var<workgroup> qs: array<f16, BR * DMAX>;
var<workgroup> ks: array<f16, BC * DMAX>;
//?!PV:var<workgroup> vt: array<vec4<f32>, BC * DV>;
//?PV:var<workgroup> vs: array<f16, BC * DMAX>;
//?PV:var<workgroup> ps: array<f16, BR * BC>;
//?PV:var<workgroup> os: array<f32, BR * DMAX>;
var<workgroup> ss: array<f32, BR * BC>;
var<workgroup> tile_class_wg: u32;
var<workgroup> key_range: vec2<i32>;

fn to_half(x: f32) -> f16 {
    return f16(clamp(x, -65504.0, 65504.0));
}

@compute @workgroup_size(BR, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) nsg: u32) {
    let w = flash_work(linear_workgroup(wg, nwg), lid, BR, 1u);
    if (lid == 0u) {
        key_range = select(vec2(0, 0), vec2(w.j_lo, w.j_hi), w.valid);
    }
    let range = workgroupUniformLoad(&key_range);

    // The block's Q rows, f16, zero past D (flash_row's rows: r = w.block0 + i).
    for (var e = lid; e < BR * DMAX; e += BR) {
        let qf = flash_row(w, w.block0 + e / DMAX);
        qs[e] = to_half(ld_q(flash_q_row(w, qf), e % DMAX));
    }

//?!PV:    var acc: array<vec4<f32>, DV>;
//?!PV:    for (var cv = 0u; cv < DV; cv++) {
//?!PV:        acc[cv] = vec4(0.0);
//?!PV:    }
//?PV:    for (var c = 0u; c < DMAX; c++) {
//?PV:        os[lid * DMAX + c] = 0.0;
//?PV:    }
    var m = NEG_BIG;
    var l = 0.0;
    let f = flash_row(w, w.row0);
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
        for (var e = lid; e < BC * DMAX; e += BR) {
            let j = min(u32(j0) + e / DMAX, p.nk - 1u);
            ks[e] = to_half(ld_k(kbase + flash_key(w, j) * p.k_sn, e % DMAX));
        }
//?!PV:        for (var e = lid; e < BC * DV; e += BR) {
//?!PV:            let j = min(u32(j0) + e / DV, p.nk - 1u);
//?!PV:            let c = 4u * (e % DV);
//?!PV:            let vr = vbase + flash_key(w, j) * p.v_sn;
//?!PV:            vt[e] = vec4(ld_v(vr, c), ld_v(vr, c + 1u), ld_v(vr, c + 2u), ld_v(vr, c + 3u));
//?!PV:        }
//?PV:        for (var e = lid; e < BC * DMAX; e += BR) {
//?PV:            let j = min(u32(j0) + e / DMAX, p.nk - 1u);
//?PV:            vs[e] = to_half(ld_v(vbase + flash_key(w, j) * p.v_sn, e % DMAX));
//?PV:        }
        workgroupBarrier();
        for (var slab = sg; slab < BR / T; slab += nsg) {
            let arow = slab * T * DMAX;
            for (var nt = 0u; nt < BC / T; nt++) {
                let brow = nt * T * DMAX;
                var c = coop_mat8x8<f32, C>();
                for (var kt = 0u; kt < DMAX / T; kt++) {
                    let ai = arow + kt * T;
                    let bi = brow + kt * T;
                    let a = coopLoadT<coop_mat8x8<f16, A>>(&qs[ai], DMAX);
                    let b = coopLoad<coop_mat8x8<f16, B>>(&ks[bi], DMAX);
                    c = coopMultiplyAdd(a, b, c);
                }
                let si = slab * T * BC + nt * T;
                let stride = BC;
                coopStoreT(c, &ss[si], stride);
            }
        }
        workgroupBarrier();
//?!PV:        for (var t = 0u; t < BC; t++) {
//?!PV:            let j = u32(j0) + t;
//?!PV:            let x = flash_score(ss[lid * BC + t] * p.scale, w, f, j, flash_bias(f, j));
//?!PV:            let m_new = max(m, x);
//?!PV:            let corr = exp(m - m_new);
//?!PV:            let pr = select(0.0, exp(x - m_new), x > MASKED);
//?!PV:            l = l * corr + pr;
//?!PV:            m = m_new;
//?!PV:            for (var cv = 0u; cv < DV; cv++) {
//?!PV:                acc[cv] = acc[cv] * corr + pr * vt[t * DV + cv];
//?!PV:            }
//?!PV:        }
//?PV:        // The row's scores after the transform (kept in ss) and their maximum.
//?PV:        var m_new = m;
//?PV:        for (var t = 0u; t < BC; t++) {
//?PV:            let j = u32(j0) + t;
//?PV:            let x = flash_score(ss[lid * BC + t] * p.scale, w, f, j, flash_bias(f, j));
//?PV:            ss[lid * BC + t] = x;
//?PV:            m_new = max(m_new, x);
//?PV:        }
//?PV:        let corr = exp(m - m_new);
//?PV:        l *= corr;
//?PV:        for (var t = 0u; t < BC; t++) {
//?PV:            let x = ss[lid * BC + t];
//?PV:            let ph = f16(select(0.0, exp(x - m_new), x > MASKED));
//?PV:            ps[lid * BC + t] = ph;
//?PV:            l += f32(ph); // the weights as rounded, so they sum to l
//?PV:        }
//?PV:        m = m_new;
//?PV:        for (var c = 0u; c < DMAX; c++) {
//?PV:            os[lid * DMAX + c] *= corr;
//?PV:        }
//?PV:        workgroupBarrier();
//?PV:        for (var slab = sg; slab < BR / T; slab += nsg) {
//?PV:            for (var dt = 0u; dt < DMAX / T; dt++) {
//?PV:                let oi = slab * T * DMAX + dt * T;
//?PV:                var o = coopLoadT<coop_mat8x8<f32, C>>(&os[oi], DMAX);
//?PV:                for (var kt = 0u; kt < BC / T; kt++) {
//?PV:                    let pi = slab * T * BC + kt * T;
//?PV:                    let vi = kt * T * DMAX + dt * T;
//?PV:                    let a = coopLoadT<coop_mat8x8<f16, A>>(&ps[pi], BC);
//?PV:                    let b = coopLoadT<coop_mat8x8<f16, B>>(&vs[vi], DMAX);
//?PV:                    o = coopMultiplyAdd(a, b, o);
//?PV:                }
//?PV:                let stride = DMAX;
//?PV:                coopStoreT(o, &os[oi], stride);
//?PV:            }
//?PV:        }
        workgroupBarrier();
    }
    if (w.valid) {
//?!PV:        for (var cv = 0u; cv < (p.d + 3u) / 4u; cv++) {
//?!PV:            flash_store4(w, f, 4u * cv, acc[cv], m, l);
//?!PV:        }
//?PV:        for (var cv = 0u; cv < (p.d + 3u) / 4u; cv++) {
//?PV:            let r = lid * DMAX + 4u * cv;
//?PV:            flash_store4(w, f, 4u * cv, vec4(os[r], os[r + 1u], os[r + 2u], os[r + 3u]), m, l);
//?PV:        }
        flash_store_lse(w, f, m, l);
    }
}

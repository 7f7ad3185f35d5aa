// flash_attention: fused O = softmax(scale·QKᵀ (+ masks, ALiBi, softcap)) · V with
// an online softmax (running max m and sum l per row, rescaled as keys stream
// by), f32 accumulation; writes O (through strides) and LSE [B, Hq, Nq]. Never
// builds the Nq×Nk matrix: memory is O(N). The generic variant: any adapter,
// loops over the D/4 vec4 chunks of a row (flash_attention_cpu.wgsl is the
// straight-line variant for CPU drivers).
//
// Work split (shared/flash_common.wgsl): one workgroup per (batch·head, key split,
// block of WG·R query rows); invocation `lid` owns R consecutive rows. All
// invocations walk the same keys in lockstep. Key ranges no row of the block can
// see (causal, window, key length) are skipped whole. A row that sees no key
// writes O = 0 and LSE = −inf.

#import shared/grid
#import shared/mask
#import shared/flash_common

override R: u32 = 4u;   // rows per invocation, <= RMAX
override WG: u32 = 8u;  // invocations per workgroup

const RMAX: u32 = 8u;
const DMAX: u32 = 256u;
const DV: u32 = DMAX / 4u; // vec4 chunks of a row

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = flash_work(linear_workgroup(wg, nwg), lid, WG, R);
    if (!w.valid) {
        return;
    }
    var qr: array<array<vec4<f32>, DV>, RMAX>;
    var acc: array<array<vec4<f32>, DV>, RMAX>;
    var m: array<f32, RMAX>;
    var l: array<f32, RMAX>;
    var fr: array<FlashRow, RMAX>;
    for (var r = 0u; r < R; r++) {
        fr[r] = flash_row(w, w.row0 + r);
        let qrow = flash_q_row(w, fr[r]);
        for (var c = 0u; c < p.d; c++) {
            qr[r][c / 4u][c % 4u] = q_at(qrow + c * p.q_sd) * p.scale;
        }
        m[r] = NEG_BIG;
        l[r] = 0.0;
    }
    let kbase = p.k_off + w.b * p.k_sb + w.hk * p.k_sh;
    let vbase = p.v_off + w.b * p.v_sb + w.hk * p.v_sh;
    for (var jj = w.j_lo; jj < w.j_hi; jj++) {
        let j = u32(jj);
        // The caller's block mask (src/mods.rs): at each key block, skip it when
        // mask_mod excludes it for every row, note when it includes it whole.
//?MOD_BLOCKS:        if (jj == w.j_lo || (j + p.kv_base) % MOD_BK == 0u) {
//?MOD_BLOCKS:            let mc = flash_mod_class(w, j, j);
//?MOD_BLOCKS:            if (mc == TILE_EMPTY) {
//?MOD_BLOCKS:                jj += i32(flash_mod_skip(j, 1u));
//?MOD_BLOCKS:                continue;
//?MOD_BLOCKS:            }
//?MOD_BLOCKS:            mod_full = mc == TILE_FULL;
//?MOD_BLOCKS:        }
        // A pool split over bindings: at each block of the sequence, skip the
        // run of blocks that lie in other parts.
        if (PAGED_PARTS && (jj == w.j_lo || j % p.block_size == 0u) && !flash_in_part(w, j, j)) {
            jj += i32(flash_part_skip(w, j, 1u));
            continue;
        }
        let kj = flash_key(w, j);
        let kr = kbase + kj * p.k_sn;
        // Zeroed explicitly: WGSL zero-initializes a loop-local `var` on every
        // iteration, but SwiftShader through Chromium's compiler kept the sums of the
        // previous key (measured: LSE 12.3 instead of 4.8).
        var s: array<f32, RMAX>;
        for (var r = 0u; r < R; r++) {
            s[r] = 0.0;
        }
        for (var cv = 0u; cv < DV; cv++) {
            let c = 4u * cv;
            let kv = vec4(ld_k(kr, c), ld_k(kr, c + 1u), ld_k(kr, c + 2u), ld_k(kr, c + 3u));
            for (var r = 0u; r < R; r++) {
                s[r] += dot(qr[r][cv], kv);
            }
        }
        var pr: array<f32, RMAX>;
        var corr: array<f32, RMAX>;
        for (var r = 0u; r < R; r++) {
            let x = flash_score(s[r], w, fr[r], j, flash_bias(fr[r], j));
            let m_new = max(m[r], x);
            corr[r] = exp(m[r] - m_new);
            pr[r] = select(0.0, exp(x - m_new), x > MASKED);
            l[r] = l[r] * corr[r] + pr[r];
            m[r] = m_new;
        }
        let vr = vbase + kj * p.v_sn;
        for (var cv = 0u; cv < DV; cv++) {
            let c = 4u * cv;
            let vv = vec4(ld_v(vr, c), ld_v(vr, c + 1u), ld_v(vr, c + 2u), ld_v(vr, c + 3u));
            for (var r = 0u; r < R; r++) {
                acc[r][cv] = acc[r][cv] * corr[r] + pr[r] * vv;
            }
        }
    }
    for (var r = 0u; r < R; r++) {
        for (var cv = 0u; cv < (p.d + 3u) / 4u; cv++) {
            flash_store4(w, fr[r], 4u * cv, acc[r][cv], m[r], l[r]);
        }
        flash_store_lse(w, fr[r], m[r], l[r]);
    }
}

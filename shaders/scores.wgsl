// scores: S[b,h,i,j] = softcap(scale · Σ_d Q[b,h,i,d] K[b,h/g,j,d])
//                      (+ additive bias[b|1,h|1,i|1,j|1]) (− slope[h]·|i + diag_off − j| for ALiBi)
// Q and K are read through strides (any layout); S is contiguous [B, Hq, Nq, Nk].
// All batches and heads in one dispatch: workgroup w handles tile (w % tiles) of
// head-batch (w / tiles).

#import shared/grid
#import shared/mask
#import shared/mask_words
#import shared/tile_mm

struct Params {
    b: u32, hq: u32, group: u32, nq: u32,
    nk: u32, d: u32, tiles_m: u32, tiles_n: u32,
    q_off: u32, q_sb: u32, q_sh: u32, q_sn: u32,
    q_sd: u32, k_off: u32, k_sb: u32, k_sh: u32,
    k_sn: u32, k_sd: u32, scale: f32, bias_kind: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
    alibi: u32, diag_off: i32, softcap: f32, m_off: u32,
    mod_b0: u32, mod_h0: u32, kv_base: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#storage 1 q read
#storage 2 k read
@group(0) @binding(3) var<storage, read> mask_words: array<u32>;
@group(0) @binding(4) var<storage, read> slopes: array<f32>;
@group(0) @binding(5) var<storage, read_write> s: array<f32>;

// A = Q[b, h] (rows i, k = d); B = K[b, h/g]ᵀ (k = d, cols j).
fn a_base(bh: u32, row: u32) -> u32 { return p.q_off + (bh / p.hq) * p.q_sb + (bh % p.hq) * p.q_sh + row * p.q_sn; }
fn a_kstride() -> u32 { return p.q_sd; }
fn a_at(i: u32) -> f32 { return q_at(i); }
fn b_base(bh: u32, col: u32) -> u32 { return p.k_off + (bh / p.hq) * p.k_sb + ((bh % p.hq) / p.group) * p.k_sh + col * p.k_sn; }
fn b_kstride() -> u32 { return p.k_sd; }
fn b_at(i: u32) -> f32 { return k_at(i); }

@compute @workgroup_size(8, WG_Y, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let wid = linear_workgroup(wg, nwg);
    let per_bh = p.tiles_m * p.tiles_n;
    let bh = wid / per_bh;
    if (bh >= p.b * p.hq) {
        return;
    }
    let t = wid % per_bh;
    let row0 = (t / p.tiles_n) * tile_m();
    let col0 = (t % p.tiles_n) * tile_n();
    let acc = mm_block(bh, row0, col0, lid, p.nq, p.nk, p.d);
    let b = bh / p.hq;
    let h = bh % p.hq;
    var accv = acc;
    let rpi = rows_per_invocation();
    for (var ii = 0u; ii < rpi; ii++) {
        let row = row0 + lid.y * rpi + ii;
        for (var jj = 0u; jj < cols_per_invocation(); jj++) {
            let col = col0 + lid.x + 8u * jj;
            if (row < p.nq && col < p.nk) {
                var v = p.scale * acc_at(&accv, ii, jj);
                if (p.softcap > 0.0) {
                    v = soft_cap(v, p.softcap);
                }
                let midx = p.m_off + b * p.m_sb + h * p.m_sh + row * p.m_sq + col * p.m_sk;
                if (p.bias_kind == MASK_ADDITIVE) {
                    v += mask_additive_at(midx);
                } else if (p.bias_kind == MASK_ADDITIVE_F16) {
                    v += mask_additive_f16_at(midx);
                }
                if (p.alibi != 0u) {
                    v -= slopes[h] * abs(f32(i32(row) + p.diag_off - i32(col)));
                }
                // A caller's mods (src/mods.rs), at the problem's (b, h) and key
                // position; an excluded entry is left for the softmax to drop.
//?SCORE_MOD:                if (v > MASKED) {
//?SCORE_MOD:                    let y = score_mod(v, p.mod_b0 + b, p.mod_h0 + h, row, col + p.kv_base);
//?SCORE_MOD:                    v = select(NEG_BIG, min(y, 1.0e38), y > MASKED);
//?SCORE_MOD:                }
//?MASK_MOD:                if (!mask_mod(p.mod_b0 + b, p.mod_h0 + h, row, col + p.kv_base)) {
//?MASK_MOD:                    v = NEG_BIG;
//?MASK_MOD:                }
                s[(bh * p.nq + row) * p.nk + col] = v;
            }
        }
    }
}

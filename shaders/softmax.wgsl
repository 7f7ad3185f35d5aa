// softmax: P[b,h,i,:] = softmax over visible keys of S[b,h,i,:] (+ additive mask),
// stable (running max), optional LSE. One workgroup per row: each invocation keeps
// an online (max, sum) over its strided share of the row, the pairs are merged in
// workgroup memory, then a second pass writes the weights.
// A fully masked row gets all-zero weights and LSE = -inf (written as bits from the
// host, never computed). With attention sinks (p.sink) the head's sink joins the
// row's denominator as one more logit that receives no weight: the weights sum
// to less than 1 and the LSE includes it (finite on every row).

#import shared/grid
#import shared/mask
#import shared/mask_words

override WG: u32 = 64u; // power of two, at most 256

struct Params {
    b: u32, h: u32, nq: u32, nk: u32,
    causal: u32, window: u32, left: u32, right: u32,
    diag_off: i32, has_lengths: u32, mask_kind: u32, write_lse: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
    neg_inf_bits: u32, m_off: u32, lse_off: u32, sink: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<f32>;
@group(0) @binding(2) var<storage, read> mask_words: array<u32>;
@group(0) @binding(3) var<storage, read> key_lengths: array<u32>;
@group(0) @binding(4) var<storage, read_write> pw: array<f32>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<storage, read> sinks: array<f32>; // [H], when p.sink

var<workgroup> red_m: array<f32, 256>;
var<workgroup> red_s: array<f32, 256>;

// The score of key j with every mask applied, or NEG_BIG when excluded.
fn masked_score(base: u32, b: u32, h: u32, i: u32, j: u32, key_len: u32) -> f32 {
    if (!rule_visible(i, j, p.causal, p.window, p.left, p.right, p.diag_off, key_len)) {
        return NEG_BIG;
    }
    var v = s[base + j];
    let midx = p.m_off + b * p.m_sb + h * p.m_sh + i * p.m_sq + j * p.m_sk;
    if (p.mask_kind == MASK_ADDITIVE) {
        v += mask_additive_at(midx);
    } else if (p.mask_kind == MASK_ADDITIVE_F16) {
        v += mask_additive_f16_at(midx);
    } else if (p.mask_kind == MASK_BOOL && !mask_bool_at(midx)) {
        return NEG_BIG;
    }
    return select(NEG_BIG, v, v > MASKED);
}

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= p.b * p.h * p.nq) {
        return;
    }
    let i = row % p.nq;
    let bh = row / p.nq;
    let b = bh / p.h;
    let h = bh % p.h;
    let base = row * p.nk;
    var key_len = p.nk;
    if (p.has_lengths != 0u) {
        key_len = key_lengths[b];
    }

    var m = NEG_BIG;
    var sum = 0.0;
    for (var j = lid; j < p.nk; j += WG) {
        let v = masked_score(base, b, h, i, j, key_len);
        if (v > MASKED) {
            if (v > m) {
                sum = sum * exp(m - v) + 1.0;
                m = v;
            } else {
                sum += exp(v - m);
            }
        }
    }
    red_m[lid] = m;
    red_s[lid] = sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let m1 = red_m[lid];
            let m2 = red_m[lid + stride];
            let mm = max(m1, m2);
            red_s[lid] = red_s[lid] * exp(m1 - mm) + red_s[lid + stride] * exp(m2 - mm);
            red_m[lid] = mm;
        }
        workgroupBarrier();
    }
    m = red_m[0];
    sum = red_s[0];
    if (p.sink != 0u) {
        let sk = sinks[h];
        let mm = max(m, sk);
        sum = sum * exp(m - mm) + exp(sk - mm);
        m = mm;
    }
    let inv = select(0.0, 1.0 / sum, sum > 0.0);
    for (var j = lid; j < p.nk; j += WG) {
        let v = masked_score(base, b, h, i, j, key_len);
        pw[base + j] = select(0.0, exp(v - m) * inv, v > MASKED);
    }
    if (lid == 0u && p.write_lse != 0u) {
        lse[p.lse_off + row] = select(bitcast<f32>(p.neg_inf_bits), m + log(sum), sum > 0.0);
    }
}

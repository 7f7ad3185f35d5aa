// flash_attention: fused O = softmax(scale·QKᵀ (+ masks, ALiBi, softcap)) · V with
// an online softmax (running max m and sum l per row, rescaled as keys stream
// by), f32 accumulation; writes O (through strides) and LSE [B, Hq, Nq]. Never
// builds the Nq×Nk matrix: memory is O(N).
//
// Work split: one workgroup per (batch·head, block of WG·R query rows); invocation
// `lid` owns R consecutive rows. All invocations walk the same keys in lockstep,
// so K/V addresses are uniform across the workgroup. Key ranges that no row of
// the block can see (causal, window, key length) are skipped whole.
//
// Per key: s = scale·q·k → softcap c·tanh(s/c) → + additive mask − ALiBi →
// excluded by rules / bool mask / s <= MASKED. A row that sees no key writes O = 0
// and LSE = -inf (bits from the host).

#import shared/grid
#import shared/mask

override R: u32 = 4u;   // rows per invocation, <= RMAX
override WG: u32 = 8u;  // invocations per workgroup

const RMAX: u32 = 8u;
const DMAX: u32 = 256u;
const DV: u32 = DMAX / 4u; // vec4 chunks of a row

struct Params {
    b: u32, hq: u32, group: u32, nq: u32,
    nk: u32, d: u32, blocks_q: u32, scale: f32,
    q_off: u32, q_sb: u32, q_sh: u32, q_sn: u32,
    q_sd: u32, k_off: u32, k_sb: u32, k_sh: u32,
    k_sn: u32, k_sd: u32, v_off: u32, v_sb: u32,
    v_sh: u32, v_sn: u32, v_sd: u32, o_off: u32,
    o_sb: u32, o_sh: u32, o_sn: u32, o_sd: u32,
    causal: u32, window: u32, left: u32, right: u32,
    diag_off: i32, has_lengths: u32, mask_kind: u32, write_lse: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
    alibi: u32, neg_inf_bits: u32, softcap: f32, splits: u32,
    split_len: u32, o_ss: u32, lse_ss: u32, lane_splits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask_words: array<u32>;
@group(0) @binding(5) var<storage, read> key_lengths: array<u32>;
@group(0) @binding(6) var<storage, read> slopes: array<f32>;
@group(0) @binding(7) var<storage, read_write> o: array<f32>;
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wid = linear_workgroup(wg, nwg);
    // Workgroup = (batch·head, key split, query block). With splits > 1 each split
    // covers keys [split·split_len, (split+1)·split_len) and writes a partial O and
    // LSE at split·o_ss / split·lse_ss, merged by decode.wgsl (flash-decoding).
    // lane_splits = 1 (few queries, nq <= R): lanes take different key splits and
    // every lane owns all query rows, instead of lanes over row blocks (which would
    // leave most rows of a block empty).
    var split: u32;
    var bh: u32;
    if (p.lane_splits != 0u) {
        let groups = (p.splits + WG - 1u) / WG;
        split = (wid % groups) * WG + lid;
        bh = wid / groups;
        if (split >= p.splits) {
            return;
        }
    } else {
        let t = wid / p.blocks_q;
        split = t % p.splits;
        bh = t / p.splits;
    }
    if (bh >= p.b * p.hq) {
        return;
    }
    let b = bh / p.hq;
    let h = bh % p.hq;
    let hk = h / p.group;
    var block0 = (wid % p.blocks_q) * WG * R;
    var row0 = block0 + lid * R;
    if (p.lane_splits != 0u) {
        block0 = 0u;
        row0 = 0u;
    }

    // Keys any row of this block may see (uniform across the workgroup).
    let block_last = min(block0 + WG * R, p.nq) - 1u;
    var j_lo = i32(split * p.split_len);
    var j_hi = min(i32(p.nk), i32((split + 1u) * p.split_len));
    if (p.has_lengths != 0u) {
        j_hi = min(j_hi, i32(key_lengths[b]));
    }
    if (p.causal != 0u) {
        j_hi = min(j_hi, i32(block_last) + p.diag_off + 1);
    }
    if (p.window != 0u) {
        j_hi = min(j_hi, i32(block_last) + p.diag_off + i32(p.right) + 1);
        j_lo = max(j_lo, i32(block0) + p.diag_off - i32(p.left));
    }
    var key_len = p.nk;
    if (p.has_lengths != 0u) {
        key_len = key_lengths[b];
    }

    var qr: array<array<vec4<f32>, DV>, RMAX>;
    var acc: array<array<vec4<f32>, DV>, RMAX>;
    var m: array<f32, RMAX>;
    var l: array<f32, RMAX>;
    let qbase = p.q_off + b * p.q_sb + h * p.q_sh;
    for (var r = 0u; r < R; r++) {
        let row = min(row0 + r, p.nq - 1u);
        for (var c = 0u; c < p.d; c++) {
            qr[r][c / 4u][c % 4u] = q[qbase + row * p.q_sn + c * p.q_sd] * p.scale;
        }
        m[r] = NEG_BIG;
        l[r] = 0.0;
    }

    // Element c of a K/V row, clamped so the zero-padded tail of q reads valid memory.
    let dl = p.d - 1u;
    let kbase = p.k_off + b * p.k_sb + hk * p.k_sh;
    let vbase = p.v_off + b * p.v_sb + hk * p.v_sh;
    for (var jj = j_lo; jj < j_hi; jj++) {
        let j = u32(jj);
        let kr = kbase + j * p.k_sn;
        var s: array<f32, RMAX>;
        for (var cv = 0u; cv < DV; cv++) {
            let c = 4u * cv;
            let kv = vec4(k[kr + min(c, dl) * p.k_sd], k[kr + min(c + 1u, dl) * p.k_sd], k[kr + min(c + 2u, dl) * p.k_sd], k[kr + min(c + 3u, dl) * p.k_sd]);
            for (var r = 0u; r < R; r++) {
                s[r] += dot(qr[r][cv], kv);
            }
        }
        var pr: array<f32, RMAX>;
        var corr: array<f32, RMAX>;
        for (var r = 0u; r < R; r++) {
            let row = row0 + r;
            var x = s[r];
            if (p.softcap > 0.0) {
                x = soft_cap(x, p.softcap);
            }
            let midx = b * p.m_sb + h * p.m_sh + row * p.m_sq + j * p.m_sk;
            var visible = row < p.nq && rule_visible(row, j, p.causal, p.window, p.left, p.right, p.diag_off, key_len);
            if (p.mask_kind == MASK_ADDITIVE) {
                x += mask_additive_at(midx);
            } else if (p.mask_kind == MASK_BOOL) {
                visible = visible && mask_bool_at(midx);
            }
            if (p.alibi != 0u) {
                x -= slopes[h] * abs(f32(i32(row) + p.diag_off - i32(j)));
            }
            visible = visible && x > MASKED;
            let m_new = select(m[r], max(m[r], x), visible);
            corr[r] = exp(m[r] - m_new);
            pr[r] = select(0.0, exp(x - m_new), visible);
            l[r] = l[r] * corr[r] + pr[r];
            m[r] = m_new;
        }
        let vr = vbase + j * p.v_sn;
        for (var cv = 0u; cv < DV; cv++) {
            let c = 4u * cv;
            let vv = vec4(v[vr + min(c, dl) * p.v_sd], v[vr + min(c + 1u, dl) * p.v_sd], v[vr + min(c + 2u, dl) * p.v_sd], v[vr + min(c + 3u, dl) * p.v_sd]);
            for (var r = 0u; r < R; r++) {
                acc[r][cv] = acc[r][cv] * corr[r] + pr[r] * vv;
            }
        }
    }

    let obase = p.o_off + split * p.o_ss + b * p.o_sb + h * p.o_sh;
    for (var r = 0u; r < R; r++) {
        let row = row0 + r;
        if (row < p.nq) {
            let inv = select(0.0, 1.0 / l[r], l[r] > 0.0);
            for (var c = 0u; c < p.d; c++) {
                o[obase + row * p.o_sn + c * p.o_sd] = acc[r][c / 4u][c % 4u] * inv;
            }
            if (p.write_lse != 0u) {
                lse[split * p.lse_ss + bh * p.nq + row] = select(bitcast<f32>(p.neg_inf_bits), m[r] + log(l[r]), l[r] > 0.0);
            }
        }
    }
}

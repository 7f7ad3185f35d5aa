// decode: merges the split-KV partials of flash_attention (flash-decoding):
//   M = max_s LSE_s,  w_s = exp(LSE_s − M),
//   O = Σ_s w_s·O_s / Σ_s w_s,  LSE = M + log Σ_s w_s.
// A split that saw no key has LSE_s = −inf (its bits, set by the host) and weight
// 0; a row no split saw gets O = 0 and LSE = −inf. No arithmetic on infinities.
// With attention sinks (p.sink) the head's sink joins as one more term with
// LSE = sink and O = 0: it adds to Σ w_s and to the LSE, and to no value.
// One invocation per query row.

#import shared/half
#import shared/grid

struct Params {
    rows: u32, d: u32, splits: u32, hq: u32,
    nq: u32, o_off: u32, o_sb: u32, o_sh: u32,
    o_sn: u32, o_sd: u32, write_lse: u32, neg_inf_bits: u32,
    part_ss: u32, lse_ss: u32, lse_off: u32, sink: u32,
    packed: u32, cuq_off: u32, lse_sb: u32, lse_sh: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> o_part: array<f32>;   // [S, rows, D]
@group(0) @binding(2) var<storage, read> lse_part: array<f32>; // [S, rows]
#storage 3 o read_write
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;
@group(0) @binding(5) var<storage, read> sinks: array<f32>;    // [Hq], when p.sink
// Packed outputs (crate::seqs): cu_seqlens_q [B + 1] at cuq_off; sequence b's
// rows go to rows cu_q[b].. of O [total_q, Hq, D] and LSE [Hq, total_q], its
// rows past its length are skipped.
@group(0) @binding(6) var<storage, read> seq_index: array<u32>;

const NEG_BIG: f32 = -3.0e38;

fn seen(x: f32) -> bool {
    return bitcast<u32>(x) != p.neg_inf_bits;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = linear_workgroup(wg, nwg) * 64u + lid;
    if (row >= p.rows) {
        return;
    }
    let n = row % p.nq;
    let bh = row / p.nq;
    var q0 = 0u;
    if (p.packed != 0u) {
        let lo = seq_index[p.cuq_off + bh / p.hq];
        let hi = seq_index[p.cuq_off + bh / p.hq + 1u];
        if (n >= hi - min(lo, hi)) {
            return;
        }
        q0 = lo;
    }
    var mx = NEG_BIG;
    var sink = NEG_BIG;
    if (p.sink != 0u) {
        sink = sinks[bh % p.hq];
        mx = sink;
    }
    for (var s = 0u; s < p.splits; s++) {
        let x = lse_part[s * p.lse_ss + row];
        if (seen(x)) {
            mx = max(mx, x);
        }
    }
    var wsum = select(0.0, exp(sink - mx), p.sink != 0u);
    for (var s = 0u; s < p.splits; s++) {
        let x = lse_part[s * p.lse_ss + row];
        if (seen(x)) {
            wsum += exp(x - mx);
        }
    }
    let obase = p.o_off + (bh / p.hq) * p.o_sb + (bh % p.hq) * p.o_sh + (q0 + n) * p.o_sn;
    let inv = select(0.0, 1.0 / wsum, wsum > 0.0);
    for (var c = 0u; c < p.d; c++) {
        var acc = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            let x = lse_part[s * p.lse_ss + row];
            if (seen(x)) {
                acc += exp(x - mx) * o_part[s * p.part_ss + row * p.d + c];
            }
        }
        o_put(obase + c * p.o_sd, acc * inv);
    }
    if (p.write_lse != 0u) {
        lse[p.lse_off + (bh / p.hq) * p.lse_sb + (bh % p.hq) * p.lse_sh + q0 + n] = select(bitcast<f32>(p.neg_inf_bits), mx + log(wsum), wsum > 0.0);
    }
}

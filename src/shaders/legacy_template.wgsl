// flash_attention_cpu: the fused kernel (same semantics and bindings as
// flash_attention.wgsl, via shared/flash_common.wgsl) written for CPU drivers such
// as lavapipe/llvmpipe, after ../shared/PERF-NOTES.md:
//   - a workgroup is one SIMD batch of WG lanes; each lane owns R query rows, so
//     each K/V element loaded feeds R rows;
//   - keys go in blocks of KB with one online-softmax update per block;
//   - straight-line code: every line below containing @R, @T, @C or @G is
//     repeated by shaders::source_with for r in 0..R, t in 0..KB, c in 0..DV
//     (DV = vec4 chunks of the head-dim bucket), g in 0..NG, so rows, keys and
//     chunks live in named registers, not private arrays indexed in loops. The
//     only loop left is the one over key blocks, which also keeps these drivers'
//     cap of 65535 loop iterations per invocation (Gpu::loop_budget) at ~65535·KB
//     keys.
//
// Two ways to load K and V, chosen by the host with S (lines prefixed if(S)
// are kept only when S > 0, those prefixed if(!S) only when S = 0; the same for
// B4 below):
//   - S = 0: every lane loads whole K/V rows. On gallivm (lavapipe/llvmpipe) a
//     storage load indexed by the key loop is a gather of WG scalar loads even
//     when every lane asks for the same address (only loads from constant or
//     push-constant addresses outside loops are scalarized), so each element
//     costs WG loads for one value. Used without subgroups (llvmpipe GL), and for
//     decode, where the lanes take different key splits (each gather is useful).
//   - S > 0 (the adapter's fixed subgroup size, WG = S, the workgroup is one
//     subgroup): lane sl loads elements G·S + sl of each row (S distinct values
//     per gather) and subgroupBroadcast hands each to every lane (an extract and a
//     splat): 3x faster on lavapipe (BENCHMARKS.md, v7). Lanes never take
//     different key splits then (the host does not ask for it), so w.valid and
//     the key range are the same for the whole subgroup.

#import shared/grid
#import shared/mask
#import shared/flash_common

override WG: u32 = 8u;

// Substituted by the host: rows per invocation, keys per block, vec4 chunks of D,
// subgroup size (0 = no subgroup operations), elements of a row per lane (D/S).
const R: u32 = 8u;
const KB: u32 = 4u;
const DV: u32 = 16u;
const S: u32 = 0u;
const NG: u32 = 0u;
// 1: the additive mask comes as one vec4 per row and block of 4 keys
// (flash_bias4; KB = 4, the host checks the mask's alignment); lines prefixed
// if(B4) / if(!B4) as for S.
const B4: u32 = 0u;

@compute @workgroup_size(WG, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
@if(S)        @builtin(subgroup_invocation_id) sl: u32,
        ) {
    let w = flash_work(linear_workgroup(wg, nwg), lid, WG, R);
    if (!w.valid) {
        return;
    }
    let f@R = flash_row(w, w.row0 + @Ru);
    let qr@R = flash_q_row(w, f@R);
    let q@R_@C = vec4(ld_q(qr@R, 4u * @Cu), ld_q(qr@R, 4u * @Cu + 1u), ld_q(qr@R, 4u * @Cu + 2u), ld_q(qr@R, 4u * @Cu + 3u)) * p.scale;
    var o@R_@C = vec4(0.0);
    var m@R = NEG_BIG;
    var l@R = 0.0;
    let kbase = p.k_off + w.b * p.k_sb + w.hk * p.k_sh;
    let vbase = p.v_off + w.b * p.v_sb + w.hk * p.v_sh;
@if(!B4)    let j_start = w.j_lo;
    // Aligned blocks: the keys added below j_lo are below every row's f.lo (a
    // window), or the host's split length is a multiple of 4 and there are none.
@if(B4)    let j_start = w.j_lo & ~3;
    for (var j0 = j_start; j0 < w.j_hi; j0 += i32(KB)) {
        let j@T = u32(j0) + @Tu;
@if(B4)        let bias@R = flash_bias4(f@R, u32(j0));
        let kr@T = kbase + min(j@T, p.nk - 1u) * p.k_sn;
        let vr@T = vbase + min(j@T, p.nk - 1u) * p.v_sn;
@if(!S)        let k@T_@C = vec4(ld_k(kr@T, 4u * @Cu), ld_k(kr@T, 4u * @Cu + 1u), ld_k(kr@T, 4u * @Cu + 2u), ld_k(kr@T, 4u * @Cu + 3u));
@if(S)        let kl@T_@G = ld_k(kr@T, @Gu * S + sl);
@if(S)        let k@T_@C = vec4(subgroupBroadcast(kl@T_@{4*@C/@S}, @{4*@C%@S}u), subgroupBroadcast(kl@T_@{(4*@C+1)/@S}, @{(4*@C+1)%@S}u), subgroupBroadcast(kl@T_@{(4*@C+2)/@S}, @{(4*@C+2)%@S}u), subgroupBroadcast(kl@T_@{(4*@C+3)/@S}, @{(4*@C+3)%@S}u));
        var s@R_@T = 0.0;
        s@R_@T += dot(q@R_@C, k@T_@C);
@if(B4)        s@R_@T = flash_score(s@R_@T, w, f@R, j@T, bias@R[@T]);
@if(!B4)        s@R_@T = flash_score(s@R_@T, w, f@R, j@T, flash_bias(f@R, j@T));
        var mb@R = m@R;
        mb@R = max(mb@R, s@R_@T);
        let cr@R = exp(m@R - mb@R);
        let p@R_@T = select(0.0, exp(s@R_@T - mb@R), s@R_@T > MASKED);
        l@R = l@R * cr@R;
        l@R += p@R_@T;
        m@R = mb@R;
@if(!S)        let v@T_@C = vec4(ld_v(vr@T, 4u * @Cu), ld_v(vr@T, 4u * @Cu + 1u), ld_v(vr@T, 4u * @Cu + 2u), ld_v(vr@T, 4u * @Cu + 3u));
@if(S)        let vl@T_@G = ld_v(vr@T, @Gu * S + sl);
@if(S)        let v@T_@C = vec4(subgroupBroadcast(vl@T_@{4*@C/@S}, @{4*@C%@S}u), subgroupBroadcast(vl@T_@{(4*@C+1)/@S}, @{(4*@C+1)%@S}u), subgroupBroadcast(vl@T_@{(4*@C+2)/@S}, @{(4*@C+2)%@S}u), subgroupBroadcast(vl@T_@{(4*@C+3)/@S}, @{(4*@C+3)%@S}u));
        o@R_@C *= cr@R;
        o@R_@C += p@R_@T * v@T_@C;
    }
    flash_store4(w, f@R, 4u * @Cu, o@R_@C, l@R);
    flash_store_lse(w, f@R, m@R, l@R);
}

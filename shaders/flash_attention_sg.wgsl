// flash_attention_sg: the straight-line fused kernel for CPU drivers
// (flash_attention_cpu.wgsl) with K/V loads shared across the subgroup.
//
// Why: a CPU driver such as lavapipe runs a subgroup of S lanes as one SIMD
// batch, and a storage load whose address depends on a loop variable is a
// gather of S scalar loads even when every lane asks for the same address
// (Mesa's gallivm only scalarizes loads from constant or push-constant
// addresses). In flash_attention_cpu.wgsl every lane loads the whole K and V
// row, so each element costs S scalar loads for one distinct value. Here lane
// `sl` loads elements G·S + sl (G in 0..NG) of the row, S distinct values per
// gather, and subgroupBroadcast hands each element to every lane (an extract
// and a splat). Everything else is the straight-line kernel: R rows per lane,
// blocks of KB keys, one online-softmax update per block.
//
// Only chosen when the adapter reports one fixed subgroup size S that divides
// the head-dim bucket; the workgroup is exactly one subgroup (WG = S). Lanes
// never take different key splits (the key range is per workgroup, uniform).

#import shared/grid
#import shared/mask
#import shared/flash_common

// Substituted by the host (rows per invocation, keys per block, vec4 chunks of
// D, subgroup size, elements of a row per lane).
const R: u32 = 8u;
const KB: u32 = 4u;
const DV: u32 = 16u;
const S: u32 = 8u;
const NG: u32 = 8u;

@compute @workgroup_size(S, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) sl: u32) {
    // w.valid is the same for the whole workgroup (no lane splits), so a surplus
    // workgroup returns as one and the subgroup operations below see all S lanes.
    let w = flash_work(linear_workgroup(wg, nwg), lid, S, R);
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
    for (var j0 = w.j_lo; j0 < w.j_hi; j0 += i32(KB)) {
        let j@T = u32(j0) + @Tu;
        let kr@T = kbase + min(j@T, p.nk - 1u) * p.k_sn;
        let vr@T = vbase + min(j@T, p.nk - 1u) * p.v_sn;
        let kl@T_@G = ld_k(kr@T, @Gu * S + sl);
        let k@T_@C = vec4(subgroupBroadcast(kl@T_@{4*@C/@S}, @{4*@C%@S}u), subgroupBroadcast(kl@T_@{(4*@C+1)/@S}, @{(4*@C+1)%@S}u), subgroupBroadcast(kl@T_@{(4*@C+2)/@S}, @{(4*@C+2)%@S}u), subgroupBroadcast(kl@T_@{(4*@C+3)/@S}, @{(4*@C+3)%@S}u));
        var s@R_@T = 0.0;
        s@R_@T += dot(q@R_@C, k@T_@C);
        s@R_@T = flash_score(s@R_@T, w, f@R, j@T);
        var mb@R = m@R;
        mb@R = max(mb@R, s@R_@T);
        let cr@R = exp(m@R - mb@R);
        let p@R_@T = select(0.0, exp(s@R_@T - mb@R), s@R_@T > MASKED);
        l@R = l@R * cr@R;
        l@R += p@R_@T;
        m@R = mb@R;
        let vl@T_@G = ld_v(vr@T, @Gu * S + sl);
        let v@T_@C = vec4(subgroupBroadcast(vl@T_@{4*@C/@S}, @{4*@C%@S}u), subgroupBroadcast(vl@T_@{(4*@C+1)/@S}, @{(4*@C+1)%@S}u), subgroupBroadcast(vl@T_@{(4*@C+2)/@S}, @{(4*@C+2)%@S}u), subgroupBroadcast(vl@T_@{(4*@C+3)/@S}, @{(4*@C+3)%@S}u));
        o@R_@C *= cr@R;
        o@R_@C += p@R_@T * v@T_@C;
    }
    flash_store4(w, f@R, 4u * @Cu, o@R_@C, l@R);
    flash_store_lse(w, f@R, m@R, l@R);
}

// posenc: out[b,n,c] = x[b,n,c] + PE[offset + n, c], PE = sin(pos·ω_i) on even
// c = 2i, cos(pos·ω_i) on odd c = 2i + 1, ω_i = 10000^(-2i/d_model).
//
// Accuracy without f64: the phase pos·ω_i/(2π) is computed exactly modulo one turn
// in 0.64 fixed point (freq[i] holds ω_i/(2π)·2^64 as two u32 words, prepared on
// the host), then reduced to [-π/4, π/4] and evaluated with minimax polynomials.
// The builtin sin/cos are not used: WGSL only promises 2^-11 absolute error for
// them, and nothing outside [-π, π].

#import shared/grid

struct Params {
    b: u32, n: u32, dm: u32, offset: u32,
    x_off: u32, x_sb: u32, x_sn: u32, x_sc: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> freq: array<vec2<u32>>; // (hi, lo)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// 32x32 -> 64-bit product as (lo, hi).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2(lo, hi);
}

// (sin, cos) of an angle given in turns as 0.64 fixed point (hi, lo words).
fn sincos_turns(hi: u32, lo: u32) -> vec2<f32> {
    // Shift by 1/8 turn so the quadrant is the top two bits and the remainder is
    // centred: angle = q·π/2 + r, |r| <= π/4.
    let v = hi + 0x20000000u;
    let q = v >> 30u;
    let rem = i32(v & 0x3fffffffu) - 0x20000000;
    // 2π / 2^32 radians per unit of the high word.
    let r = (f32(rem) + f32(lo) * 2.3283064e-10) * 1.4629180792671596e-9;
    let r2 = r * r;
    let sr = r + r * r2 * (-1.6666654611e-1 + r2 * (8.3321608736e-3 + r2 * -1.9515295891e-4));
    let cr = 1.0 - 0.5 * r2 + r2 * r2 * (4.166664568298827e-2 + r2 * (-1.388731625493765e-3 + r2 * 2.443315711809948e-5));
    switch q {
        case 0u: { return vec2(sr, cr); }
        case 1u: { return vec2(cr, -sr); }
        case 2u: { return vec2(-sr, -cr); }
        default: { return vec2(-cr, sr); }
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = linear_workgroup(wg, nwg) * 64u + lid;
    if (idx >= p.b * p.n * p.dm) {
        return;
    }
    let c = idx % p.dm;
    let t = idx / p.dm;
    let n = t % p.n;
    let b = t / p.n;
    let pos = p.offset + n;
    let f = freq[c / 2u];
    // pos · (hi·2^-32 + lo·2^-64) modulo 1 turn.
    let p1 = mul_wide(pos, f.x);
    let p2 = mul_wide(pos, f.y);
    let sc = sincos_turns(p1.x + p2.y, p2.x);
    let pe = select(sc.y, sc.x, (c & 1u) == 0u);
    out[idx] = x[p.x_off + b * p.x_sb + n * p.x_sn + c * p.x_sc] + pe;
}

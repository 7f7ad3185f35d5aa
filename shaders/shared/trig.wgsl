// sin/cos of position-dependent angles pos·ω without f64 and without the builtin
// sin/cos (WGSL promises them only 2^-11 absolute error, and nothing outside
// [-π, π]). The host prepares ω/(2π) in 0.64 fixed point (two u32 words, from f64);
// the phase pos·ω/(2π) is then exact modulo one turn in integer arithmetic,
// reduced to [-π/4, π/4] and evaluated with minimax polynomials (≈1e-7).

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

// (sin, cos) of pos·ω where freq = ω/(2π)·2^64 as (hi, lo) words.
fn sincos_position(pos: u32, freq: vec2<u32>) -> vec2<f32> {
    // pos · (hi·2^-32 + lo·2^-64) modulo 1 turn.
    let p1 = mul_wide(pos, freq.x);
    let p2 = mul_wide(pos, freq.y);
    return sincos_turns(p1.x + p2.y, p2.x);
}

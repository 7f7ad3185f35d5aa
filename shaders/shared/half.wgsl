// Rounding f32 to the half-precision storage types, in integer arithmetic so
// every driver rounds alike: to nearest, ties to even, as IEEE conversion (and
// the `half` crate) does. Used by the `_put` accessors of `#storage` bindings
// (src/shaders/mod.rs, Elem). Kernels never produce NaN; one is kept a NaN.

// The binary16 bits of x in the low 16 bits: ±inf from 65 520 on (the first
// value that rounds past 65 504), subnormals below 2^-14.
fn half_bits_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u;
    }
    if (a >= 0x38800000u) {
        // Normal: drop 13 mantissa bits with round-to-nearest-even, rebias 127 → 15.
        let r = a + 0x0fffu + ((a >> 13u) & 1u);
        return sign | ((r - 0x38000000u) >> 13u);
    }
    // Subnormal (or zero): units of 2^-24, exact scaling, round() ties to even;
    // 1024 units is the smallest normal's encoding.
    return sign | u32(round(bitcast<f32>(a) * 16777216.0));
}

// The bfloat16 bits of x in the low 16 bits: the top half of f32 rounded to
// nearest even (overflow reaches inf by itself).
fn half_bits_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x0040u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

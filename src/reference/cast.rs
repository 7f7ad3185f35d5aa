//! CPU twin of `shaders/cast.wgsl`: each element rounded to `dtype` (to
//! nearest, ties to even, by the `half` crate), in f64 like every reference.

use crate::dtype::DType;

/// `x` rounded to `dtype`, widened to f64.
pub fn cast(x: &[f32], dtype: DType) -> Vec<f64> {
    x.iter().map(|&v| dtype.round(v) as f64).collect()
}

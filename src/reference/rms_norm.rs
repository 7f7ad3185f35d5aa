use crate::weights::RmsNorm;

/// RMSNorm of each row of `x` (logical `[B, H, N, D]`, contiguous) over its
/// first `count` channels, in f64: `y_c = x_c / sqrt(mean(x²) + eps) · (w_c +
/// offset)` for `c < count`, `y_c = x_c` past it.
///
/// # Panics
/// If `w` has fewer than `count` weights or `x` fewer than `B·H·N·D` values.
pub fn rms_norm<T: Copy + Into<f64>>(
    x: &[T],
    dims: [usize; 4],
    count: usize,
    w: &[f32],
    norm: &RmsNorm,
) -> Vec<f64> {
    let d = dims[3];
    let rows: usize = dims[..3].iter().product();
    let mut out: Vec<f64> = x[..rows * d].iter().map(|&v| v.into()).collect();
    for row in out.chunks_mut(d) {
        let ms = row[..count].iter().map(|v| v * v).sum::<f64>() / count as f64;
        let inv = 1.0 / (ms + norm.eps as f64).sqrt();
        for (c, v) in row[..count].iter_mut().enumerate() {
            *v *= inv * (w[c] as f64 + norm.weight_offset as f64);
        }
    }
    out
}

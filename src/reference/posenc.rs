/// The sinusoidal encoding `PE[pos, c]`: `sin(pos / 10000^(2i/d))` for even
/// `c = 2i`, `cos(pos / 10000^(2i/d))` for odd `c = 2i + 1`.
pub fn posenc_value(pos: usize, c: usize, d_model: usize) -> f64 {
    let i = (c / 2) as f64;
    let angle = pos as f64 / 10000f64.powf(2.0 * i / d_model as f64);
    if c.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// `x + PE` for embeddings `x` of shape `[B, N, d_model]`, positions starting at
/// `offset`.
pub fn posenc(x: &[f32], b: usize, n: usize, d_model: usize, offset: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(b * n * d_model);
    for _ in 0..b {
        for p in 0..n {
            for c in 0..d_model {
                let xi = x[out.len()] as f64;
                out.push(xi + posenc_value(offset + p, c, d_model));
            }
        }
    }
    out
}

use crate::positional::{Pairing, Rope};

/// RoPE of `x` (logical `[B, H, N, D]`, contiguous) in f64.
///
/// # Panics
/// If `cfg.rotary(d)` is invalid (the GPU path returns that as an error).
pub fn rope<T: Copy + Into<f64>>(x: &[T], dims: [usize; 4], cfg: &Rope) -> Vec<f64> {
    let [b, h, n, d] = dims;
    let r = cfg.rotary(d).expect("valid RoPE config");
    let mut out: Vec<f64> = x.iter().map(|&v| v.into()).collect();
    for row in 0..b * h * n {
        let pos = cfg.offset as f64 + (row % n) as f64;
        let base = row * d;
        for i in 0..r / 2 {
            let (c1, c2) = match cfg.pairing {
                Pairing::HalfSplit => (i, i + r / 2),
                Pairing::Interleaved => (2 * i, 2 * i + 1),
            };
            let (x1, x2): (f64, f64) = (x[base + c1].into(), x[base + c2].into());
            let (s, c) = (pos * cfg.theta(i, r)).sin_cos();
            out[base + c1] = x1 * c - x2 * s;
            out[base + c2] = x1 * s + x2 * c;
        }
    }
    out
}

use crate::positional::{Pairing, Rope};

/// RoPE of `x` (logical `[B, H, N, D]`, contiguous) in f64, row `n` at
/// position `cfg.offset + n`.
///
/// # Panics
/// If `cfg.rotary(d)` is invalid (the GPU path returns that as an error).
pub fn rope<T: Copy + Into<f64>>(x: &[T], dims: [usize; 4], cfg: &Rope) -> Vec<f64> {
    rope_at(x, dims, cfg, None)
}

/// [`rope`] with a position per token: `positions` `[B, N]` (row-major), or
/// `cfg.offset + n` when `None`. The frequencies are [`Rope::frequencies`] for
/// the sequence length `max position + 1`, and the rotated channels are
/// multiplied by its attention factor (YaRN, LongRoPE).
///
/// # Panics
/// If `cfg.rotary(d)` is invalid or `positions` is shorter than `B·N`.
pub fn rope_at<T: Copy + Into<f64>>(
    x: &[T],
    dims: [usize; 4],
    cfg: &Rope,
    positions: Option<&[u32]>,
) -> Vec<f64> {
    let [b, h, n, d] = dims;
    let pos = |bi: usize, ni: usize| -> f64 {
        match positions {
            Some(p) => p[bi * n + ni] as f64,
            None => cfg.offset as f64 + ni as f64,
        }
    };
    let seq_len = match positions {
        Some(p) => p[..b * n].iter().max().map_or(0, |&m| m as usize + 1),
        None => cfg.offset as usize + n,
    };
    let r = cfg.rotary(d).expect("valid RoPE config");
    let (freqs, attn) = cfg.frequencies(d, seq_len).expect("valid RoPE config");
    let mut out: Vec<f64> = x.iter().map(|&v| v.into()).collect();
    for row in 0..b * h * n {
        let p = pos(row / (h * n), row % n);
        let base = row * d;
        for (i, w) in freqs.iter().enumerate() {
            let (c1, c2) = match cfg.pairing {
                Pairing::HalfSplit => (i, i + r / 2),
                Pairing::Interleaved => (2 * i, 2 * i + 1),
            };
            let (x1, x2): (f64, f64) = (x[base + c1].into(), x[base + c2].into());
            let (s, c) = (p * w).sin_cos();
            out[base + c1] = (x1 * c - x2 * s) * attn;
            out[base + c2] = (x1 * s + x2 * c) * attn;
        }
    }
    out
}

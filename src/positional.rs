//! Position-dependent parameters shared by kernels and reference: RoPE settings,
//! ALiBi slopes, and the fixed-point frequency tables the trig shaders take.

use crate::error::{Error, Result};

/// Which channels RoPE rotates together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Pairing {
    /// Channel `i` with `i + R/2` (GPT-NeoX, Llama).
    #[default]
    HalfSplit,
    /// Channel `2i` with `2i + 1` (GPT-J).
    Interleaved,
}

/// Rotary position embedding: pair `i` rotates by `pos · base^(-2i/R)`.
///
/// Applied to Q and K by [`crate::kernels::rope::rope`] (or
/// [`crate::MhaOptions::rope`]); the CPU twin is [`crate::reference::rope`].
///
/// ```
/// use wgpu_attention::{Pairing, Rope};
/// // Llama-style: half-split pairs, base 10 000, every channel rotated.
/// let r = Rope::default();
/// assert_eq!(r.rotary(64)?, 64);
/// assert_eq!(r.theta(0, 64), 1.0); // the first pair turns one radian per position
/// // GPT-J: interleaved pairs over the first 32 of 64 channels, continuing a
/// // KV cache of 100 positions.
/// let gptj = Rope { pairing: Pairing::Interleaved, rotary_dims: Some(32), offset: 100, ..r };
/// assert_eq!(gptj.rotary(64)?, 32);
/// assert!(Rope { rotary_dims: Some(33), ..r }.rotary(64).is_err()); // odd
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    /// Which channels rotate together ([`Pairing::HalfSplit`] by default).
    pub pairing: Pairing,
    /// 10 000 in the RoPE paper and most models.
    pub base: f64,
    /// Rotated channels `R` (even, at most D); `None` = D rounded down to even.
    /// Channels from `R` on pass through unchanged (partial rotary).
    pub rotary_dims: Option<usize>,
    /// Position of the first row (KV-cache decoding continues at the cache length).
    pub offset: u32,
}

impl Default for Rope {
    fn default() -> Self {
        Rope {
            pairing: Pairing::HalfSplit,
            base: 10000.0,
            rotary_dims: None,
            offset: 0,
        }
    }
}

impl Rope {
    /// The rotated channel count `R` for head dim `d`:
    /// [`Error::InvalidArgument`] when `R` is odd or above `d`, or the base is
    /// not finite and above 1.
    pub fn rotary(&self, d: usize) -> Result<usize> {
        let r = self.rotary_dims.unwrap_or(d - d % 2);
        if !r.is_multiple_of(2) || r > d {
            return Err(Error::InvalidArgument(format!(
                "RoPE rotary_dims = {r} must be even and at most the head dim {d}"
            )));
        }
        if !(self.base.is_finite() && self.base > 1.0) {
            return Err(Error::InvalidArgument(format!(
                "RoPE base = {} must be finite and > 1",
                self.base
            )));
        }
        Ok(r)
    }

    /// `θ_i = base^(-2i/R)` for pair `i` of `r` rotated channels: the angle in
    /// radians that pair turns per position.
    pub fn theta(&self, i: usize, r: usize) -> f64 {
        self.base.powf(-2.0 * i as f64 / r as f64)
    }
}

/// The ALiBi slopes of the ALiBi paper for `n` heads: `2^(-8h/n)` for
/// `h = 1..n` when `n` is a power of two; otherwise the slopes of the largest
/// power of two `m < n`, then every other slope of `2m` heads for the rest.
/// Empty for `n = 0`.
///
/// ```
/// use wgpu_attention::alibi_slopes;
/// assert_eq!(alibi_slopes(4), [0.25, 0.0625, 0.015625, 0.00390625]);
/// // 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head set.
/// assert_eq!(alibi_slopes(6)[4..], [0.5, 0.125]);
/// ```
pub fn alibi_slopes(n: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|h| start.powi(h as i32)).collect()
    }
    if n == 0 {
        return Vec::new();
    }
    let m = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let mut s = pow2(m);
    if m < n {
        s.extend(pow2(2 * m).into_iter().step_by(2).take(n - m));
    }
    s.into_iter().map(|v| v as f32).collect()
}

/// `ω_i / 2π` as 0.64 fixed point `[hi, lo]` for each angular frequency, so a
/// shader can reduce `pos · ω_i` modulo a turn exactly with integer arithmetic
/// (`shaders/shared/trig.wgsl`).
pub(crate) fn frequency_table(omegas: impl Iterator<Item = f64>) -> Vec<[u32; 2]> {
    omegas
        .map(|w| {
            let scaled = w / std::f64::consts::TAU * 4294967296.0;
            let hi = scaled.floor();
            let lo = ((scaled - hi) * 4294967296.0).round().min(4294967295.0);
            [hi as u32, lo as u32]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_match_the_paper() {
        // Powers of two: geometric from 2^(-8/n).
        let s8 = alibi_slopes(8);
        let want8: Vec<f32> = (1..=8).map(|h| 2f32.powi(-h)).collect();
        assert_eq!(s8, want8);
        assert_eq!(alibi_slopes(4), vec![0.25, 0.0625, 0.015625, 0.00390625]);
        // 6 heads: the 4-head slopes, then slopes 1 and 3 of the 8-head set.
        assert_eq!(
            alibi_slopes(6),
            vec![0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]
        );
        // 12 heads: 8-head slopes, then every other of the 16-head set (2^-0.5, 2^-1.5, ...).
        let s12 = alibi_slopes(12);
        assert_eq!(&s12[..8], &want8[..]);
        for (i, v) in s12[8..].iter().enumerate() {
            assert!(
                (v - 2f32.powf(-0.5 - 2.0 * i as f32 * 0.5)).abs() < 1e-7,
                "{i}: {v}"
            );
        }
    }

    #[test]
    fn frequency_table_is_exact_in_turns() {
        let t = frequency_table([std::f64::consts::TAU / 4.0].into_iter());
        assert_eq!(t, vec![[1 << 30, 0]]); // a quarter turn per position
    }

    #[test]
    fn rope_rotary_dims_are_checked() {
        assert_eq!(Rope::default().rotary(7).unwrap(), 6);
        assert!(Rope {
            rotary_dims: Some(3),
            ..Default::default()
        }
        .rotary(8)
        .is_err());
        assert!(Rope {
            rotary_dims: Some(10),
            ..Default::default()
        }
        .rotary(8)
        .is_err());
        assert!(Rope {
            base: 1.0,
            ..Default::default()
        }
        .rotary(8)
        .is_err());
    }
}

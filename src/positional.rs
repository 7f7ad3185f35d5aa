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

/// Rotary position embedding: pair `i` rotates by `pos · ω_i`, with
/// `ω_i = base^(-2i/R)` before any [`RopeScaling`].
///
/// Applied to Q and K by [`crate::kernels::rope::rope`] (or
/// [`crate::MhaOptions::rope`]); the CPU twin is [`crate::reference::rope`].
///
/// ```
/// use wgpu_attention::{Pairing, Rope, RopeScaling};
/// // Llama-style: half-split pairs, base 10 000, every channel rotated.
/// let r = Rope::default();
/// assert_eq!(r.rotary(64)?, 64);
/// assert_eq!(r.theta(0, 64), 1.0); // the first pair turns one radian per position
/// // GPT-J: interleaved pairs over the first 32 of 64 channels, continuing a
/// // KV cache of 100 positions.
/// let gptj = Rope { pairing: Pairing::Interleaved, rotary_dims: Some(32), offset: 100, ..r.clone() };
/// assert_eq!(gptj.rotary(64)?, 32);
/// assert!(Rope { rotary_dims: Some(33), ..r.clone() }.rotary(64).is_err()); // odd
/// // Llama 3.1's frequency scaling: the lowest frequencies slowed by 8.
/// let l3 = Rope {
///     base: 500000.0,
///     scaling: RopeScaling::Llama3 {
///         factor: 8.0,
///         low_freq_factor: 1.0,
///         high_freq_factor: 4.0,
///         original_max_position: 8192,
///     },
///     ..r
/// };
/// let (freqs, attention_factor) = l3.frequencies(128, 1)?;
/// assert_eq!((freqs.len(), attention_factor), (64, 1.0));
/// assert_eq!(freqs[0], 1.0); // high frequencies keep theirs
/// assert!((freqs[63] - 500000f64.powf(-126.0 / 128.0) / 8.0).abs() < 1e-18);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// Which channels rotate together ([`Pairing::HalfSplit`] by default).
    pub pairing: Pairing,
    /// 10 000 in the RoPE paper and most models (`rope_theta`).
    pub base: f64,
    /// Rotated channels `R` (even, at most D); `None` = D rounded down to even.
    /// Channels from `R` on pass through unchanged (partial rotary).
    pub rotary_dims: Option<usize>,
    /// Position of the first row (KV-cache decoding continues at the cache
    /// length), unless position ids are given per token
    /// ([`crate::kernels::rope::record_rope_at`], [`crate::MhaOptions::position_ids`]).
    pub offset: u32,
    /// Frequency scaling of long-context checkpoints ([`RopeScaling::None`]
    /// by default).
    pub scaling: RopeScaling,
}

impl Default for Rope {
    fn default() -> Self {
        Rope {
            pairing: Pairing::HalfSplit,
            base: 10000.0,
            rotary_dims: None,
            offset: 0,
            scaling: RopeScaling::None,
        }
    }
}

/// RoPE frequency scaling, as Hugging Face's `rope_scaling` /
/// `rope_parameters` entries define it (`rope_type` names in brackets). Each
/// changes the frequencies `ω_i` (and YaRN and LongRoPE an attention factor
/// that multiplies the rotated channels of Q and K, so the scores by its
/// square, as the reference implementations apply it to cos and sin).
/// [`Rope::frequencies`] computes them in f64.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`default`).
    #[default]
    None,
    /// Positions interpolated: `ω_i / factor` (`linear`).
    Linear {
        /// The interpolation factor (> 0).
        factor: f64,
    },
    /// Dynamic NTK (`dynamic`): for sequences longer than `max_position`
    /// (`max_position_embeddings`), the base grows to
    /// `base · (factor·L/max_position − (factor − 1))^(R/(R−2))` with `L` the
    /// sequence length (the largest position + 1 of the call).
    Dynamic {
        /// The NTK factor (≥ 1).
        factor: f64,
        /// `max_position_embeddings` of the checkpoint.
        max_position: usize,
    },
    /// Llama 3.1's (`llama3`): wavelengths longer than
    /// `original_max_position / low_freq_factor` slowed by `factor`, shorter
    /// than `original_max_position / high_freq_factor` kept, a smooth blend
    /// between.
    Llama3 {
        /// Slow-down of the low frequencies.
        factor: f64,
        /// Wavelength threshold of the low frequencies (as a divisor).
        low_freq_factor: f64,
        /// Wavelength threshold of the high frequencies (as a divisor).
        high_freq_factor: f64,
        /// The pre-training context (`original_max_position_embeddings`).
        original_max_position: usize,
    },
    /// YaRN (`yarn`): each frequency blended between `ω_i` (extrapolation)
    /// and `ω_i / factor` (interpolation) by a linear ramp over the pairs
    /// between the correction dims of `beta_fast` and `beta_slow` rotations
    /// in `original_max_position`; the attention factor is
    /// `attention_factor`, else `m(factor, mscale) / m(factor, mscale_all_dim)`
    /// when both are given, else `m(factor, 1)`, with `m(s, a) = 0.1·a·ln s + 1`
    /// (1 for `s ≤ 1`).
    Yarn {
        /// The context extension factor.
        factor: f64,
        /// The pre-training context.
        original_max_position: usize,
        /// Rotations of the fast end of the ramp (32 by default).
        beta_fast: f64,
        /// Rotations of the slow end of the ramp (1 by default).
        beta_slow: f64,
        /// Explicit attention factor (`attention_factor`).
        attention_factor: Option<f64>,
        /// `mscale` (DeepSeek-style attention factor).
        mscale: Option<f64>,
        /// `mscale_all_dim`.
        mscale_all_dim: Option<f64>,
        /// Round the ramp's ends outwards to whole pairs (`truncate`, true by
        /// default; gpt-oss sets false).
        truncate: bool,
    },
    /// LongRoPE (`longrope`, Phi-3): per-pair divisors of the frequencies,
    /// `short` while the sequence (largest position + 1) is at most
    /// `original_max_position`, else `long`; the attention factor as given
    /// (Hugging Face's default: `sqrt(1 + ln(s)/ln(original_max_position))`
    /// with `s = max_position_embeddings / original_max_position`).
    LongRope {
        /// Divisors for short sequences, one per rotated pair.
        short: Vec<f64>,
        /// Divisors for long sequences, one per rotated pair.
        long: Vec<f64>,
        /// The pre-training context.
        original_max_position: usize,
        /// Multiplies the rotated channels.
        attention_factor: f64,
    },
}

impl Rope {
    /// The rotated channel count `R` for head dim `d`:
    /// [`Error::InvalidArgument`] when `R` is odd or above `d`, the base is
    /// not finite and above 1, or the scaling's parameters are out of range.
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
        self.scaling.validate(r)?;
        Ok(r)
    }

    /// `θ_i = base^(-2i/R)` for pair `i` of `r` rotated channels: the angle in
    /// radians that pair turns per position, before any scaling.
    pub fn theta(&self, i: usize, r: usize) -> f64 {
        self.base.powf(-2.0 * i as f64 / r as f64)
    }

    /// The `R/2` angular frequencies (radians per position) for head dim `d`
    /// and a sequence of `seq_len` positions (the largest position + 1: only
    /// [`RopeScaling::Dynamic`] and [`RopeScaling::LongRope`] depend on it),
    /// and the attention factor the rotated channels are multiplied by.
    pub fn frequencies(&self, d: usize, seq_len: usize) -> Result<(Vec<f64>, f64)> {
        let r = self.rotary(d)?;
        let half = r / 2;
        let plain = |base: f64| -> Vec<f64> {
            (0..half)
                .map(|i| base.powf(-2.0 * i as f64 / r as f64))
                .collect()
        };
        Ok(match &self.scaling {
            RopeScaling::None => (plain(self.base), 1.0),
            RopeScaling::Linear { factor } => (
                plain(self.base).into_iter().map(|w| w / factor).collect(),
                1.0,
            ),
            RopeScaling::Dynamic {
                factor,
                max_position,
            } => {
                let base = if seq_len > *max_position && r > 2 {
                    let l = seq_len as f64;
                    self.base
                        * (factor * l / *max_position as f64 - (factor - 1.0))
                            .powf(r as f64 / (r as f64 - 2.0))
                } else {
                    self.base
                };
                (plain(base), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let old = *original_max_position as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let freqs = plain(self.base)
                    .into_iter()
                    .map(|w| {
                        let wavelen = 2.0 * std::f64::consts::PI / w;
                        if wavelen < high_wavelen {
                            w
                        } else if wavelen > low_wavelen {
                            w / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * w / factor + smooth * w
                        }
                    })
                    .collect();
                (freqs, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                attention_factor,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let m = |s: f64, a: f64| {
                    if s <= 1.0 {
                        1.0
                    } else {
                        0.1 * a * s.ln() + 1.0
                    }
                };
                let attn = match (attention_factor, mscale, mscale_all_dim) {
                    (Some(a), _, _) => *a,
                    (None, Some(ms), Some(ma)) if *ms != 0.0 && *ma != 0.0 => {
                        m(*factor, *ms) / m(*factor, *ma)
                    }
                    _ => m(*factor, 1.0),
                };
                let dim = r as f64;
                let orig = *original_max_position as f64;
                let correction = |rot: f64| {
                    dim * (orig / (rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * self.base.ln())
                };
                let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let (low, mut high) = (low.max(0.0), high.min(dim - 1.0));
                if low == high {
                    high += 0.001;
                }
                let freqs = plain(self.base)
                    .into_iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (w / factor) * (1.0 - extrapolation) + w * extrapolation
                    })
                    .collect();
                (freqs, attn)
            }
            RopeScaling::LongRope {
                short,
                long,
                original_max_position,
                attention_factor,
            } => {
                let ext = if seq_len > *original_max_position {
                    long
                } else {
                    short
                };
                let freqs = plain(self.base)
                    .into_iter()
                    .zip(ext)
                    .map(|(w, e)| w / e)
                    .collect();
                (freqs, *attention_factor)
            }
        })
    }
}

impl RopeScaling {
    /// Checks the parameters for `r` rotated channels
    /// ([`Error::InvalidArgument`] naming the parameter).
    pub fn validate(&self, r: usize) -> Result<()> {
        let positive = |name: &str, v: f64| -> Result<()> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "RoPE scaling: {name} = {v} must be finite and > 0"
                )))
            }
        };
        let context = |name: &str, v: usize| -> Result<()> {
            if v == 0 {
                Err(Error::InvalidArgument(format!(
                    "RoPE scaling: {name} must be at least 1"
                )))
            } else {
                Ok(())
            }
        };
        match self {
            RopeScaling::None => Ok(()),
            RopeScaling::Linear { factor } => positive("factor", *factor),
            RopeScaling::Dynamic {
                factor,
                max_position,
            } => {
                positive("factor", *factor)?;
                context("max_position_embeddings", *max_position)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive("high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(Error::InvalidArgument(format!(
                        "RoPE scaling: high_freq_factor ({high_freq_factor}) must be above low_freq_factor ({low_freq_factor})"
                    )));
                }
                context("original_max_position_embeddings", *original_max_position)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position,
                beta_fast,
                beta_slow,
                attention_factor,
                ..
            } => {
                positive("factor", *factor)?;
                positive("beta_fast", *beta_fast)?;
                positive("beta_slow", *beta_slow)?;
                if let Some(a) = attention_factor {
                    positive("attention_factor", *a)?;
                }
                context("original_max_position_embeddings", *original_max_position)
            }
            RopeScaling::LongRope {
                short,
                long,
                original_max_position,
                attention_factor,
            } => {
                for (name, f) in [("short_factor", short), ("long_factor", long)] {
                    if f.len() != r / 2 {
                        return Err(Error::InvalidArgument(format!(
                            "RoPE scaling: {name} has {} entries; {r} rotated channels need {} (one per pair)",
                            f.len(),
                            r / 2
                        )));
                    }
                    for &v in f {
                        positive(name, v)?;
                    }
                }
                positive("attention_factor", *attention_factor)?;
                context("original_max_position_embeddings", *original_max_position)
            }
        }
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
            // Whole turns per position do not change the angle at an integer
            // position: only the fraction of a turn is kept.
            let scaled = (w / std::f64::consts::TAU).rem_euclid(1.0) * 4294967296.0;
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

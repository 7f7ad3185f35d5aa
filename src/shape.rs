//! The logical shape of one attention problem, shared by kernels and reference.

use crate::error::{Error, Result};

/// Logical sizes of an attention problem: Q is `[B, Hq, Nq, D]`, K and V are
/// `[B, Hkv, Nk, D]`, scores and weights `[B, Hq, Nq, Nk]`, O is `[B, Hq, Nq, D]`.
///
/// ```
/// use wgpu_attention::AttnShape;
/// // Grouped-query attention: 8 query heads share 2 K/V heads.
/// let sh = AttnShape { b: 1, hq: 8, hkv: 2, nq: 16, nk: 32, d: 64 };
/// sh.validate()?;
/// assert_eq!(sh.group(), 4);
/// assert_eq!(sh.q_len(), 8 * 16 * 64);
/// assert_eq!(sh.kv_len(), 2 * 32 * 64);
/// assert_eq!(sh.default_scale(), 0.125);
/// // 8 query heads cannot share 3 K/V heads.
/// assert!(AttnShape { hkv: 3, ..sh }.validate().is_err());
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttnShape {
    /// Batch size `B`.
    pub b: usize,
    /// Query heads `Hq` (a multiple of `hkv`).
    pub hq: usize,
    /// Key/value heads `Hkv`: `hq` for multi-head attention, fewer for
    /// grouped-query, 1 for multi-query.
    pub hkv: usize,
    /// Query positions `Nq` (rows of the scores).
    pub nq: usize,
    /// Key/value positions `Nk` (columns of the scores).
    pub nk: usize,
    /// Head dimension `D`, shared by Q, K, V and O.
    pub d: usize,
}

impl AttnShape {
    /// Query heads per key/value head (1 for plain multi-head attention).
    pub fn group(&self) -> usize {
        self.hq / self.hkv
    }

    /// Elements of Q (and O).
    pub fn q_len(&self) -> usize {
        self.b * self.hq * self.nq * self.d
    }

    /// Elements of K (and V).
    pub fn kv_len(&self) -> usize {
        self.b * self.hkv * self.nk * self.d
    }

    /// Elements of the score / weight matrix.
    pub fn scores_len(&self) -> usize {
        self.b * self.hq * self.nq * self.nk
    }

    /// Rejects a zero size ([`crate::Error::ZeroSized`], naming it) and a `hq`
    /// that is not a multiple of `hkv` ([`crate::Error::Heads`]).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("B", self.b),
            ("Hq", self.hq),
            ("Hkv", self.hkv),
            ("Nq", self.nq),
            ("Nk", self.nk),
            ("D", self.d),
        ] {
            if v == 0 {
                return Err(Error::ZeroSized(name.to_string()));
            }
        }
        if !self.hq.is_multiple_of(self.hkv) {
            return Err(Error::Heads {
                hq: self.hq,
                hkv: self.hkv,
            });
        }
        Ok(())
    }

    /// The default softmax scale `1/sqrt(D)`.
    pub fn default_scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }
}

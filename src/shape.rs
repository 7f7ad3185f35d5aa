//! The logical shape of one attention problem, shared by kernels and reference.

use crate::error::{Error, Result};

/// Logical sizes of an attention problem: Q is `[B, Hq, Nq, D]`, K and V are
/// `[B, Hkv, Nk, D]`, scores and weights `[B, Hq, Nq, Nk]`, O is `[B, Hq, Nq, D]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttnShape {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
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

    /// Rejects zero dims and head counts that do not divide.
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

//! A case's inputs and options, made from its seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Case, MASK_KINDS};
use crate::attention::AttentionOptions;
use crate::error::{Error, Result};
use crate::mask::{HostMask, Masking, Window};
use crate::mask_tensor::MaskTensor;
use crate::positional::alibi_slopes;
use crate::reference::ReferenceOptions;

/// The inputs and score options of a case, built from its seed by
/// [`inputs`]: what [`super::run_case`] uploads and gives the reference, for a
/// caller that runs the case its own way (the browser page times it and draws
/// the weights).
#[derive(Clone, Debug)]
pub struct CaseInputs {
    /// Q `[B, Hq, Nq, D]`, K and V `[B, Hkv, Nk, D]`, logical BHND order, each
    /// value exactly representable in the case's dtype (rounded to it), so the
    /// reference reads what the GPU reads from a tensor of that dtype.
    pub q: Vec<f32>,
    /// K `[B, Hkv, Nk, D]`, drawn after Q from the same stream.
    pub k: Vec<f32>,
    /// V `[B, Hkv, Nk, D]`, drawn after K.
    pub v: Vec<f32>,
    /// The causal flag and the `key-padding` / `window` rules.
    pub masking: Masking,
    /// The dense mask of `additive` / `bool`.
    pub mask: Option<HostMask>,
    /// The slopes of `alibi`.
    pub alibi: Option<Vec<f32>>,
    /// The cap of `softcap`.
    pub softcap: Option<f32>,
}

impl CaseInputs {
    /// The score options for the GPU, with `mask` the upload of
    /// [`CaseInputs::mask`]; path, outputs and tuning left at their defaults.
    pub fn attention_options<'a>(&'a self, mask: Option<&'a MaskTensor>) -> AttentionOptions<'a> {
        AttentionOptions {
            masking: self.masking.clone(),
            mask,
            alibi: self.alibi.as_deref(),
            softcap: self.softcap,
            ..Default::default()
        }
    }

    /// The same options for the f64 reference.
    pub fn reference_options(&self) -> ReferenceOptions<'_> {
        ReferenceOptions {
            masking: self.masking.clone(),
            mask: self.mask.as_ref(),
            alibi: self.alibi.as_deref(),
            softcap: self.softcap.map(f64::from),
            ..Default::default()
        }
    }
}

/// The inputs and score options of `case` from its seed; fails on an invalid
/// shape or an unknown mask kind (before any GPU work).
pub fn inputs(case: &Case) -> Result<CaseInputs> {
    let sh = case.shape();
    sh.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let dtype = case.dtype;
    let mut uniform = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| dtype.round(rng.random_range(-1.0..1.0)))
            .collect()
    };
    let q = uniform(sh.q_len());
    let k = uniform(sh.kv_len());
    let v = uniform(sh.kv_len());
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed ^ 0x6d61_736b);
    let mut p = CaseInputs {
        q,
        k,
        v,
        masking: Masking {
            causal: case.causal,
            ..Default::default()
        },
        mask: None,
        alibi: None,
        softcap: None,
    };
    let (nq, nk) = (sh.nq, sh.nk);
    match case.mask.as_str() {
        "none" | "" => {}
        "additive" => {
            let off = nk as i64 - nq as i64 + 1;
            let vals = (0..nq * nk)
                .map(|x| {
                    let (i, j) = ((x / nk) as i64, (x % nk) as i64);
                    if j > i + off {
                        f32::NEG_INFINITY
                    } else if rng.random_range(0..8) == 0 {
                        // Strongly negative but f32-exact enough: with -1e4 a row whose
                        // visible keys all carry it has scores rounded to 1e-3 (the ulp
                        // at 1e4), an error of 1e-4 in O that no f32 kernel avoids.
                        -8.0
                    } else {
                        0.5 * (j % 3) as f32
                    }
                })
                .collect();
            p.mask = Some(HostMask::additive(vals, [1, 1, nq, nk])?);
        }
        "key-padding" => {
            // Batch 0 sees every key, later ones fewer, the last (for B > 1) none.
            let b = sh.b;
            let lens = (0..b)
                .map(|i| {
                    if b > 1 && i == b - 1 {
                        0
                    } else {
                        (nk - i * nk / b.max(1)) as u32
                    }
                })
                .collect();
            p.masking.key_lengths = Some(lens);
        }
        "bool" => {
            let vals = (0..sh.b * nq * nk)
                .map(|_| rng.random_range(0..4) != 0)
                .collect();
            p.mask = Some(HostMask::bool(vals, [sh.b, 1, nq, nk])?);
        }
        "window" => {
            p.masking.window = Some(Window { left: 3, right: 1 });
        }
        "alibi" => p.alibi = Some(alibi_slopes(sh.hq)),
        "softcap" => p.softcap = Some(2.0),
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown mask kind {other:?}: use one of {}",
                MASK_KINDS.join(", ")
            )))
        }
    }
    Ok(p)
}

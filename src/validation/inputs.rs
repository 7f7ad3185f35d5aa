//! A case's inputs and options, made from its seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Case, MASK_KINDS};
use crate::attention::AttentionOptions;
use crate::error::{Error, Result};
use crate::mask::{HostMask, Masking, Window};
use crate::mask_tensor::MaskTensor;
use crate::mods::{MaskMod, ModData, ModIndex, Mods, ScoreMod};
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
    /// The mods of `document` and `score-mod` ([`crate::mods`]).
    pub mods: Option<crate::mods::Mods>,
    /// The attention sinks of `sinks`, one per query head.
    pub sinks: Option<Vec<f32>>,
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
            mods: self.mods.as_ref(),
            sinks: self.sinks.as_deref(),
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
            mods: self.mods.as_ref(),
            sinks: self.sinks.as_deref(),
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
        mods: None,
        sinks: None,
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
        "key-padding" | "sinks" => {
            if case.mask == "sinks" {
                // Logits around the scores' range, so the sink takes a visible
                // share; with the key lengths below, the last batch's rows see
                // only the sink (O = 0, LSE = the sink).
                p.sinks = Some((0..sh.hq).map(|_| rng.random_range(-1.0f32..2.0)).collect());
            }
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
        "document" => p.mods = Some(document_mods(sh.b, nq, nk)?),
        "score-mod" => p.mods = Some(score_mods(sh.hq)?),
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown mask kind {other:?}: use one of {}",
                MASK_KINDS.join(", ")
            )))
        }
    }
    Ok(p)
}

/// `document`: a mask_mod attending within documents (per batch, lengths 1–12
/// from a fixed pattern over the key positions, queries aligned to the last
/// keys), read from two u32 buffers; the block mask on. The documents follow
/// from the shape alone, so a shape's mods compile once (small buffers are
/// compiled into the kernels: a seeded layout would build new pipelines per
/// case).
fn document_mods(b: usize, nq: usize, nk: usize) -> Result<Mods> {
    let mut kdoc = Vec::with_capacity(b * nk);
    let mut qdoc = Vec::with_capacity(b * nq);
    for bi in 0..b {
        let (mut doc, mut left) = (0u32, 1 + bi % 12);
        let row: Vec<u32> = (0..nk)
            .map(|_| {
                if left == 0 {
                    doc += 1;
                    left = 1 + (doc as usize * 7 + bi * 5) % 12;
                }
                left -= 1;
                doc
            })
            .collect();
        // Query i sits at key position i + nk - nq (before key 0: document 0).
        qdoc.extend((0..nq).map(|i| row[(i + nk).saturating_sub(nq).min(nk - 1)]));
        kdoc.extend(row);
    }
    let (cq, ck) = (qdoc.clone(), kdoc.clone());
    let wgsl = format!(
        "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {{\n    return qdoc(b * {nq}u + q) == kdoc(b * {nk}u + kv);\n}}\n"
    );
    Mods::builder()
        .mask_mod(MaskMod::new(wgsl, move |i: ModIndex| {
            cq[i.b * nq + i.q] == ck[i.b * nk + i.kv]
        }))
        .buffer("qdoc", ModData::U32(qdoc))
        .buffer("kdoc", ModData::U32(kdoc))
        .build()
}

/// `score-mod`: a score_mod scaling each head by an f32 table entry (fixed per
/// head count, see [`document_mods`]) and adding a bias from the indices, with
/// a helper function of its own.
fn score_mods(hq: usize) -> Result<Mods> {
    let table: Vec<f32> = (0..hq).map(|h| 0.5 + (h * 5 % 8) as f32 / 8.0).collect();
    let t = table.clone();
    let wgsl = "fn my_bias(b: u32, q: u32, kv: u32) -> f32 {\n    return 0.25 * f32((q + 2u * kv) % 5u) - 0.5 * f32(b);\n}\n\nfn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {\n    return score * head_scale(h) + my_bias(b, q, kv);\n}\n";
    Mods::builder()
        .score_mod(ScoreMod::new(wgsl, move |s, i: ModIndex| {
            s * t[i.h] as f64 + 0.25 * ((i.q + 2 * i.kv) % 5) as f64 - 0.5 * i.b as f64
        }))
        .buffer("head_scale", ModData::F32(table))
        .build()
}

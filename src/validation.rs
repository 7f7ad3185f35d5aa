//! The validation case matrix: attention problems × options × paths, each run on a
//! GPU and compared with the f64 reference. One matrix for the `attn validate`
//! command, the browser page and anyone checking their own adapter.
//!
//! ```no_run
//! use wgpu_attention::{validation, Gpu};
//! # fn main() -> wgpu_attention::Result<()> {
//! let gpu = Gpu::new_blocking(&Default::default())?;
//! let failed = validation::matrix(false)
//!     .iter()
//!     .map(|case| validation::run_case_blocking(&gpu, case))
//!     .filter(|r| !r.pass)
//!     .count();
//! assert_eq!(failed, 0);
//! # Ok(()) }
//! ```
//!
//! Inputs are uniform in [-1, 1) from the case's seed (ChaCha8), so a failing case
//! is reproduced by its JSON alone. Outputs are poisoned before every run
//! ([`Gpu::set_poison_outputs`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use web_time::Instant;

use crate::attention::{attention, AttentionOptions, AttentionPath};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::mask::{HostMask, Masking, Window};
use crate::mask_tensor::MaskTensor;
use crate::positional::alibi_slopes;
use crate::reference::{self, ReferenceOptions};
use crate::shape::AttnShape;
use crate::tensor::{Layout, Tensor};
use crate::verify::{verify, Report, Tolerance};

/// The pass criterion for every output (O, LSE, weights): relative L2 error against
/// the f64 reference, with no NaN and every `-inf` LSE matched. f32 storage and
/// accumulation over ≤ a few thousand terms measure 1e-7…1e-6 on lavapipe,
/// llvmpipe, SwiftShader; 1e-5 leaves an order of magnitude while still catching
/// any wrong mask, scale or index (those give errors ≥ 1e-2).
pub const REL_L2_TOL: f64 = Tolerance::F32.rel_l2;

/// The extra option a case exercises, besides the `causal` flag.
pub const MASK_KINDS: [&str; 7] = [
    "none",
    "additive",
    "key-padding",
    "bool",
    "window",
    "alibi",
    "softcap",
];

/// One attention problem with its options, path and kernel variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Case {
    /// Label, unique within a matrix.
    pub name: String,
    pub b: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads (`hq % hkv == 0`).
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    /// The causal rule, bottom-right aligned.
    pub causal: bool,
    /// One of [`MASK_KINDS`]: `additive` = a dense float mask (−inf above a
    /// diagonal shifted by one, −8 at random, else 0, 0.5 or 1), `key-padding` =
    /// per-batch key lengths (the last batch sees none), `bool` = a random dense
    /// bool mask (3 in 4 visible, per batch, broadcast over heads), `window` = a
    /// sliding window (3 left, 1 right), `alibi` = the paper's slopes, `softcap` = 2.
    pub mask: String,
    /// `bhnd` or `bnhd`: memory order of Q, K, V (O follows Q).
    pub layout: String,
    /// `auto`, `fused`, `unfused` or `decode`.
    pub path: String,
    /// The kernel variant: `None` = the adapter's default, else
    /// [`Tuning::staged`] forced.
    pub staged: Option<bool>,
    pub seed: u64,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            name: String::new(),
            b: 1,
            hq: 1,
            hkv: 1,
            nq: 1,
            nk: 1,
            d: 1,
            causal: false,
            mask: "none".into(),
            layout: "bhnd".into(),
            path: "auto".into(),
            staged: None,
            seed: 1,
        }
    }
}

impl Case {
    /// `B2 H4/2 N17x33 D7 bhnd fused mask=bool +causal [staged]`.
    pub fn label(&self) -> String {
        format!(
            "B{} H{}/{} N{}x{} D{} {} {} mask={}{}{}",
            self.b,
            self.hq,
            self.hkv,
            self.nq,
            self.nk,
            self.d,
            self.layout,
            self.path,
            self.mask,
            if self.causal { " +causal" } else { "" },
            match self.staged {
                None => "",
                Some(true) => " staged",
                Some(false) => " direct",
            }
        )
    }

    /// The attention shape.
    pub fn shape(&self) -> AttnShape {
        AttnShape {
            b: self.b,
            hq: self.hq,
            hkv: self.hkv,
            nq: self.nq,
            nk: self.nk,
            d: self.d,
        }
    }
}

/// The outcome of one [`Case`].
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub case: Case,
    /// Every output within [`REL_L2_TOL`] and no error.
    pub pass: bool,
    /// Why the case could not run (a typed library error, as text).
    pub error: Option<String>,
    /// Largest relative L2 error over the outputs (`inf` when it did not run).
    pub worst_rel_l2: f64,
    /// Largest absolute error over the outputs.
    pub worst_max_abs: f64,
    /// Per output: `"o"`, `"lse"` and, on the unfused path, `"weights"`.
    pub reports: Vec<(String, Report)>,
    /// Wall time of the GPU run including upload and readback (not the reference).
    pub ms: f64,
}

impl CaseResult {
    fn failed(case: &Case, e: impl ToString) -> CaseResult {
        CaseResult {
            case: case.clone(),
            pass: false,
            error: Some(e.to_string()),
            worst_rel_l2: f64::INFINITY,
            worst_max_abs: f64::INFINITY,
            reports: Vec::new(),
            ms: 0.0,
        }
    }
}

/// Parses a path name: `auto`, `fused`, `unfused` or `decode`.
pub fn parse_path(name: &str) -> Result<AttentionPath> {
    match name.to_ascii_lowercase().as_str() {
        "auto" => Ok(AttentionPath::Auto),
        "fused" => Ok(AttentionPath::Fused),
        "unfused" => Ok(AttentionPath::Unfused),
        "decode" => Ok(AttentionPath::Decode),
        other => Err(Error::InvalidArgument(format!(
            "unknown path {other:?}: use auto, fused, unfused or decode"
        ))),
    }
}

/// Parses a layout name: `bhnd` or `bnhd`.
pub fn parse_layout(name: &str) -> Result<Layout> {
    match name.to_ascii_lowercase().as_str() {
        "bhnd" => Ok(Layout::Bhnd),
        "bnhd" => Ok(Layout::Bnhd),
        other => Err(Error::InvalidArgument(format!(
            "unknown layout {other:?}: use bhnd or bnhd"
        ))),
    }
}

/// The case matrix. The default (`full = false`, 126 cases) runs every mask kind ×
/// every path on six shapes: head dims 1, 7, 64 and 80 (no tile divides them all),
/// GQA and MQA, Nq < Nk, Nq > Nk (bottom-right causal masks whole rows), a decode
/// shape (1 query, 1100 keys: several splits, the last partial), with the causal
/// rule and the layout rotated through. `full = true` adds head dims 32, 96, 128,
/// 200, 256, every layout and both kernel variants (staged and direct) per case.
pub fn matrix(full: bool) -> Vec<Case> {
    // (b, hq, hkv, nq, nk, d)
    let mut shapes = vec![
        (2, 4, 2, 17, 17, 7),
        (1, 4, 1, 33, 33, 64),
        (2, 2, 2, 1, 33, 1),
        (1, 2, 1, 33, 17, 64),
        (2, 3, 3, 5, 40, 80),
        (1, 2, 2, 1, 1100, 64),
    ];
    if full {
        shapes.extend([
            (1, 2, 2, 19, 19, 32),
            (2, 4, 2, 9, 23, 96),
            (1, 2, 1, 21, 21, 128),
            (1, 1, 1, 13, 29, 200),
            (1, 2, 2, 7, 35, 256),
            (1, 8, 2, 3, 2000, 128),
        ]);
    }
    let paths = ["fused", "unfused", "decode"];
    let layouts: &[&str] = if full { &["bhnd", "bnhd"] } else { &["bhnd"] };
    let variants: &[Option<bool>] = if full {
        &[Some(false), Some(true)]
    } else {
        &[None]
    };
    let mut cases = Vec::new();
    let mut i = 0u64;
    for &(b, hq, hkv, nq, nk, d) in &shapes {
        for mask in MASK_KINDS {
            for path in paths {
                for &staged in variants {
                    for (li, &layout) in layouts.iter().enumerate() {
                        // Rotate the causal rule and (default matrix) the layout.
                        let layout = if full {
                            layout
                        } else {
                            ["bhnd", "bnhd"][(i as usize / 3 + li) % 2]
                        };
                        let mut c = Case {
                            name: String::new(),
                            b,
                            hq,
                            hkv,
                            nq,
                            nk,
                            d,
                            causal: i % 3 == 1,
                            mask: mask.into(),
                            layout: layout.into(),
                            path: path.into(),
                            staged,
                            seed: 1000 + i,
                        };
                        c.name = c.label();
                        cases.push(c);
                        i += 1;
                    }
                }
            }
        }
    }
    cases
}

/// The inputs and score options of a case, built from its seed by
/// [`inputs`]: what [`run_case`] uploads and gives the reference, for a
/// caller that runs the case its own way (the browser page times it and draws
/// the weights).
#[derive(Clone, Debug)]
pub struct CaseInputs {
    /// Q `[B, Hq, Nq, D]`, K and V `[B, Hkv, Nk, D]`, logical BHND order.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
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
    let mut uniform =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
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

/// Runs `case` on `gpu` (all downloads asynchronous: works in a browser) and
/// compares O, LSE and (unfused) the weights with the f64 reference, under the
/// case's tuning. Outputs are poisoned for the run and the setting restored after.
pub async fn run_case(gpu: &Gpu, case: &Case) -> CaseResult {
    let poison = gpu.poison_outputs();
    gpu.set_poison_outputs(true);
    let out = run_inner(gpu, case).await;
    gpu.set_poison_outputs(poison);
    out.unwrap_or_else(|e| CaseResult::failed(case, e))
}

/// [`run_case`], blocking (native only).
pub fn run_case_blocking(gpu: &Gpu, case: &Case) -> CaseResult {
    pollster::block_on(run_case(gpu, case))
}

async fn run_inner(gpu: &Gpu, case: &Case) -> Result<CaseResult> {
    let sh = case.shape();
    let path = parse_path(&case.path)?;
    let layout = parse_layout(&case.layout)?;
    let p = inputs(case)?;
    let weights = path == AttentionPath::Unfused;

    let t0 = Instant::now();
    let q = Tensor::from_bhnd(gpu, &p.q, [sh.b, sh.hq, sh.nq, sh.d], layout)?;
    let k = Tensor::from_bhnd(gpu, &p.k, [sh.b, sh.hkv, sh.nk, sh.d], layout)?;
    let v = Tensor::from_bhnd(gpu, &p.v, [sh.b, sh.hkv, sh.nk, sh.d], layout)?;
    let mask = p
        .mask
        .as_ref()
        .map(|m| MaskTensor::upload(gpu, m))
        .transpose()?;
    let opts = AttentionOptions {
        return_weights: weights,
        return_lse: true,
        path,
        tuning: case.staged.map(|s| gpu.tuning().with_staged(s)),
        ..p.attention_options(mask.as_ref())
    };
    let out = attention(&q, &k, &v, &opts)?;
    let o = out.o.to_vec().await?; // logical BHND order whatever the layout
    let lse = match &out.lse {
        Some(t) => t.to_vec().await?,
        None => return Err(Error::InvalidArgument("no LSE returned".into())),
    };
    let w = match &out.weights {
        Some(t) => Some(t.to_vec().await?),
        None => None,
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;

    let want = reference::attention(&p.q, &p.k, &p.v, &sh, &p.reference_options());
    let mut reports = vec![
        ("o".to_string(), verify(&o, &want.o)),
        ("lse".to_string(), verify(&lse, &want.lse)),
    ];
    if let Some(w) = w {
        reports.push(("weights".to_string(), verify(&w, &want.p)));
    }
    let pass = reports.iter().all(|(_, r)| r.passes(REL_L2_TOL));
    let worst = |f: fn(&Report) -> f64| reports.iter().map(|(_, r)| f(r)).fold(0.0, f64::max);
    Ok(CaseResult {
        case: case.clone(),
        pass,
        error: None,
        worst_rel_l2: worst(|r| r.rel_l2),
        worst_max_abs: worst(|r| r.max_abs),
        reports,
        ms,
    })
}

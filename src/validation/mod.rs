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
//! [`matrix`] is f32; [`matrix_with`] adds a few representative cases per half
//! dtype ([`half_cases`]: Q, K, V and O in f16 or bf16, the reference on the
//! rounded values, O judged with [`Tolerance::stored`]).
//!
//! Inputs are uniform in [-1, 1) from the case's seed (ChaCha8), rounded to the
//! case's dtype, so a failing case is reproduced by its JSON alone. Outputs are poisoned before every run
//! ([`crate::gpu::Gpu::set_poison_outputs`]).

mod inputs;
mod run;

pub use inputs::{inputs, CaseInputs};
pub use run::{run_case, run_case_blocking};

use serde::{Deserialize, Serialize};

use crate::attention::AttentionPath;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Coop;
use crate::shape::AttnShape;
use crate::tensor::Layout;
use crate::verify::{Report, Tolerance};

/// The pass criterion for every f32 output (O, LSE, weights): relative L2 error against
/// the f64 reference, with no NaN and every `-inf` LSE matched. f32 storage and
/// accumulation over ≤ a few thousand terms measure 1e-7…1e-6 on lavapipe,
/// llvmpipe, SwiftShader; 1e-5 leaves an order of magnitude while still catching
/// any wrong mask, scale or index (those give errors ≥ 1e-2).
pub const REL_L2_TOL: f64 = Tolerance::F32.rel_l2;

/// The extra option a case exercises, besides the `causal` flag.
pub const MASK_KINDS: [&str; 10] = [
    "none",
    "additive",
    "key-padding",
    "bool",
    "window",
    "alibi",
    "softcap",
    "document",
    "score-mod",
    "sinks",
];

/// One attention problem with its options, path and kernel variant.
///
/// Every field has a default (a 1×1×1×1 f32 problem, no mask, path `auto`),
/// so a case is written with the fields it changes, in Rust or as JSON:
///
/// ```
/// use wgpu_attention::validation::{self, Case};
/// let case: Case = serde_json::from_str(
///     r#"{"name": "gqa", "b": 2, "hq": 4, "hkv": 2, "nq": 3, "nk": 9, "d": 8,
///         "causal": true, "mask": "key-padding", "path": "fused"}"#,
/// )
/// .unwrap();
/// assert_eq!(case.label(), "B2 H4/2 N3x9 D8 bhnd fused mask=key-padding +causal");
/// // The inputs come from the seed alone: the same values everywhere.
/// let p = validation::inputs(&case)?;
/// assert_eq!(p.q.len(), 2 * 4 * 3 * 8);
/// assert_eq!(p.masking.key_lengths, Some(vec![9, 0])); // the last batch sees no key
/// assert_eq!(validation::inputs(&case)?.q, p.q);
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Case {
    /// Label, unique within a matrix.
    pub name: String,
    /// Batch size.
    pub b: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads (`hq % hkv == 0`).
    pub hkv: usize,
    /// Query positions.
    pub nq: usize,
    /// Key/value positions.
    pub nk: usize,
    /// Head dimension (at most [`crate::plan::MAX_HEAD_DIM`] on the fused and
    /// decode paths).
    pub d: usize,
    /// The causal rule, bottom-right aligned.
    pub causal: bool,
    /// One of [`MASK_KINDS`]: `additive` = a dense float mask (−inf above a
    /// diagonal shifted by one, −8 at random, else 0, 0.5 or 1), `key-padding` =
    /// per-batch key lengths (the last batch sees none), `bool` = a random dense
    /// bool mask (3 in 4 visible, per batch, broadcast over heads), `window` = a
    /// sliding window (3 left, 1 right), `alibi` = the paper's slopes, `softcap` = 2,
    /// `document` = a WGSL `mask_mod` attending within random documents (two
    /// u32 buffers, block skipping on), `score-mod` = a WGSL `score_mod` with an
    /// f32 per-head table ([`crate::mods`]), `sinks` = an attention sink per
    /// query head with the key lengths of `key-padding`.
    pub mask: String,
    /// `bhnd` or `bnhd`: memory order of Q, K, V (O follows Q).
    pub layout: String,
    /// `auto`, `fused`, `unfused` or `decode`.
    pub path: String,
    /// The kernel variant: `None` = the adapter's default, else
    /// [`crate::gpu::Tuning::staged`] forced.
    pub staged: Option<bool>,
    /// The cooperative-matrix kernel: `None` = the tuning's own choice, else
    /// [`crate::gpu::Tuning::coop`] forced (`on` runs the fused and decode
    /// paths on it, rounding Q and K to f16 for the products).
    pub coop: Option<Coop>,
    /// Seed of the inputs (ChaCha8, [`inputs`]): the case's JSON alone
    /// reproduces a failure.
    pub seed: u64,
    /// Q, K, V and O stored in this dtype (LSE and weights are f32); the inputs
    /// are rounded to it before the reference reads them ([`inputs`]).
    pub dtype: DType,
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
            coop: None,
            seed: 1,
            dtype: DType::F32,
        }
    }
}

impl Case {
    /// `B2 H4/2 N17x33 D7 bhnd fused mask=bool +causal [staged] [coop=on]
    /// [f16]` (the dtype named unless f32).
    pub fn label(&self) -> String {
        format!(
            "B{} H{}/{} N{}x{} D{} {} {} mask={}{}{}{}{}",
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
            },
            match self.coop {
                None => String::new(),
                Some(c) => format!(" coop={}", format!("{c:?}").to_ascii_lowercase()),
            },
            match self.dtype {
                DType::F32 => String::new(),
                d => format!(" {d}"),
            }
        )
    }

    /// The relative L2 tolerance of `output` (`"o"`, `"lse"`, `"weights"`):
    /// [`Tolerance::stored`] of the case's dtype for O, f32's for the LSE and
    /// the weights (always f32).
    pub fn tolerance(&self, output: &str) -> f64 {
        // The coop kernel rounds Q and K to f16 for its products (exact for f16
        // data, f16's half ulp for f32 and bf16 data) and with Coop::Full the
        // weights P to f16 as well: each rounding adds f16's 2⁻¹¹ to the bound.
        // Measured on Mesa 26's lavapipe over coop_cases(false): worst rel L2
        // 2.9e-4 (f32 data, f16 scores), 6.1e-4 (f16 data with Full: P and O
        // rounded), 2.7e-3 (bf16, within its own stored tolerance).
        let half = Tolerance::stored(DType::F16).rel_l2 - REL_L2_TOL;
        let scores = match self.coop {
            Some(Coop::On | Coop::Full) if self.dtype != DType::F16 => half,
            _ => 0.0,
        };
        let weights = if self.coop == Some(Coop::Full) {
            half
        } else {
            0.0
        };
        if output == "o" {
            Tolerance::stored(self.dtype).rel_l2 + scores + weights
        } else {
            REL_L2_TOL + scores
        }
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
    /// The case that ran.
    pub case: Case,
    /// Every output within its tolerance ([`Case::tolerance`]: [`REL_L2_TOL`],
    /// plus the dtype's rounding for O) and no error.
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

/// Parses a path name: `auto`, `fused`, `unfused` or `decode` (any case);
/// [`Error::InvalidArgument`] otherwise.
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

/// Parses a layout name: `bhnd` or `bnhd` (any case); [`Error::InvalidArgument`]
/// otherwise.
pub fn parse_layout(name: &str) -> Result<Layout> {
    match name.to_ascii_lowercase().as_str() {
        "bhnd" => Ok(Layout::Bhnd),
        "bnhd" => Ok(Layout::Bnhd),
        other => Err(Error::InvalidArgument(format!(
            "unknown layout {other:?}: use bhnd or bnhd"
        ))),
    }
}

/// The f32 case matrix ([`matrix_with`] `(full, &[DType::F32])`). The default (`full = false`, 180 cases) runs every mask kind ×
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
                            coop: None,
                            seed: 1000 + i,
                            dtype: DType::F32,
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

/// The cases of the cooperative-matrix kernel: the fused and decode cases of
/// [`matrix`] `(full)` (every mask kind on shapes no tile divides, Nq = 1, odd
/// head dims, GQA and MQA, whole rows masked) with [`Coop::On`], in f16 (the
/// dtype the kernel reads exactly), plus f32 and bf16 ones (rounded to f16 for
/// the products: judged by f16's tolerance, [`Case::tolerance`]).
pub fn coop_cases(full: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, c) in matrix(full)
        .into_iter()
        .filter(|c| c.path != "unfused")
        .enumerate()
    {
        let mut c = Case {
            // Every other case with P·V on the matrices too.
            coop: Some(if (i / 6) % 2 == 0 {
                Coop::On
            } else {
                Coop::Full
            }),
            dtype: [
                DType::F16,
                DType::F16,
                DType::F16,
                DType::F32,
                DType::F16,
                DType::BF16,
            ][i % 6],
            ..c
        };
        c.name = c.label();
        out.push(c);
    }
    out
}

/// The matrix for each of `dtypes`: f32 runs [`matrix`] `(full)`; f16 and bf16
/// each run [`half_cases`] `(full, dtype)`, a few representative cases (every
/// new dtype compiles its own kernels), in the order of `dtypes`.
pub fn matrix_with(full: bool, dtypes: &[DType]) -> Vec<Case> {
    let mut cases = Vec::new();
    for &dtype in dtypes {
        match dtype {
            DType::F32 => cases.extend(matrix(full)),
            d => cases.extend(half_cases(full, d)),
        }
    }
    cases
}

/// The cases of a half `dtype` (Q, K, V and O in it): every path once or more,
/// each storage-sensitive shape of the f32 matrix (odd head dims 7 and 1, whose
/// rows start mid-`u32` when packed; the BNHD layout; GQA and MQA; one query
/// against 1100 keys in several splits; Nq > Nk with whole rows masked), and a
/// different mask kind on each. Six cases; `full` adds head dims 128 and 256
/// and runs each case with both kernel variants (staged and direct).
pub fn half_cases(full: bool, dtype: DType) -> Vec<Case> {
    // (b, hq, hkv, nq, nk, d, path, mask, causal, layout)
    type Spec = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        &'static str,
        &'static str,
        bool,
        &'static str,
    );
    let mut specs: Vec<Spec> = vec![
        (2, 4, 2, 17, 17, 7, "fused", "none", true, "bhnd"),
        (1, 2, 1, 33, 17, 64, "unfused", "bool", true, "bnhd"),
        (1, 2, 2, 1, 1100, 64, "decode", "key-padding", false, "bhnd"),
        (2, 3, 3, 5, 40, 80, "fused", "alibi", false, "bnhd"),
        (2, 2, 2, 1, 33, 1, "decode", "softcap", false, "bnhd"),
        (1, 4, 1, 33, 33, 64, "fused", "additive", false, "bhnd"),
    ];
    if full {
        specs.extend([
            (1, 2, 1, 21, 21, 128, "fused", "window", true, "bnhd"),
            (1, 2, 2, 7, 35, 256, "unfused", "none", false, "bhnd"),
        ]);
    }
    let variants: &[Option<bool>] = if full {
        &[Some(false), Some(true)]
    } else {
        &[None]
    };
    let salt = match dtype {
        DType::F32 => 0,
        DType::F16 => 16_000,
        DType::BF16 => 32_000,
    };
    let mut cases = Vec::new();
    for (i, &(b, hq, hkv, nq, nk, d, path, mask, causal, layout)) in specs.iter().enumerate() {
        for &staged in variants {
            let mut c = Case {
                name: String::new(),
                b,
                hq,
                hkv,
                nq,
                nk,
                d,
                causal,
                mask: mask.into(),
                layout: layout.into(),
                path: path.into(),
                staged,
                coop: None,
                seed: salt + i as u64,
                dtype,
            };
            c.name = c.label();
            cases.push(c);
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_with_each_dtype() {
        let all = matrix_with(false, &DType::ALL);
        let f32_cases: Vec<Case> = all
            .iter()
            .filter(|c| c.dtype == DType::F32)
            .cloned()
            .collect();
        assert_eq!(f32_cases, matrix(false));
        for d in [DType::F16, DType::BF16] {
            let half: Vec<&Case> = all.iter().filter(|c| c.dtype == d).collect();
            assert_eq!(half.len(), 6, "{d}");
            for path in ["fused", "unfused", "decode"] {
                assert!(half.iter().any(|c| c.path == path), "{d} {path}");
            }
            assert!(half.iter().all(|c| c.name.ends_with(&format!(" {d}"))));
            // The inputs are exact in the dtype: the reference reads what the GPU stores.
            let p = inputs(half[0]).unwrap();
            assert!(p.q.iter().chain(&p.k).chain(&p.v).all(|&x| d.round(x) == x));
            assert!(p.q.iter().any(|&x| x != 0.0));
        }
        let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len(), "labels are unique");
        assert_eq!(matrix_with(true, &[DType::F16]).len(), 16);
        // A case without a dtype (an older report) is f32.
        let c: Case = serde_json::from_str(r#"{"name": "x", "d": 4}"#).unwrap();
        assert_eq!(c.dtype, DType::F32);
        assert_eq!(c.tolerance("o"), REL_L2_TOL);
        let h = Case {
            dtype: DType::BF16,
            ..c
        };
        assert_eq!(h.tolerance("o"), Tolerance::stored(DType::BF16).rel_l2);
        assert_eq!(h.tolerance("lse"), REL_L2_TOL);
    }
}

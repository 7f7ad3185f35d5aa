//! `attn run`: attention on Q, K, V from files, optionally with WGSL mods from
//! files, optionally checked against the f64 CPU reference (with mods, which
//! have no CPU twin: against a second GPU path).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::{
    alibi_slopes, attention, AttentionOptions, AttentionPath, AttentionProblem, DType, DTypes,
    Tensor,
};

use crate::args::{
    check_softcap, dtype_arg, f16_storage_name, upload_mask, value_name, DeviceArgs, InputArgs,
    LayoutArg, MaskArgs, ModArgs, TuningArgs,
};
use crate::check::{judge_against, judge_each};
use crate::error::bad_input;
use crate::io;

/// Which kernels compute attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PathArg {
    /// Chosen per shape and device (unfused when weights are asked for).
    #[default]
    Auto,
    /// One flash-attention kernel (online softmax), O(N) memory.
    Fused,
    /// scores → softmax → weighted sum; materializes [B, Hq, Nq, Nk]; the one that returns weights.
    Unfused,
    /// Split-KV for few queries against a long KV.
    Decode,
}

impl PathArg {
    pub fn path(self) -> AttentionPath {
        match self {
            PathArg::Auto => AttentionPath::Auto,
            PathArg::Fused => AttentionPath::Fused,
            PathArg::Unfused => AttentionPath::Unfused,
            PathArg::Decode => AttentionPath::Decode,
        }
    }
}

#[derive(Args)]
#[command(after_help = "Examples:
  attn run --q q.npy --k k.npy --v v.npy --out o.npy
  attn run --q q.npy --k k.npy --v v.npy --causal top-left --lse lse.npy --check
  attn run --safetensors qkv.safetensors --q-name q --k-name k --v-name v --layout bnhd --out o.npy
  attn run --safetensors qkv_bf16.safetensors --out o.safetensors --check
  attn run --q q.npy --k k.npy --v v.npy --dtype f16 --out o16.npy --check
  attn run --q q.npy --k k.npy --v v.npy --mask keep.npy --kv-lengths 5,7 --weights p.npy
  attn run --q q.npy --k k.npy --v v.npy --mask-mod doc_mask.wgsl --mod-buffer doc=doc.npy --check
  attn run --q qp.npy --k kp.npy --v vp.npy --cu-seqlens-q 0,5,12 --cu-seqlens-k 0,7,20 --causal bottom-right --out op.npy --lse lse.npy --check

Q is [B, Hq, Nq, D] and K, V are [B, Hkv, Nk, D] (with --layout bnhd: [B, N, H, D]);
Hq must be a multiple of Hkv. O is written in Q's layout, LSE as [B, Hq, Nq]
(-inf for rows with no visible key), weights as [B, Hq, Nq, Nk].
Inputs are used in their stored dtype (float32/float16 .npy; F32/F16/BF16
.safetensors; float64 is rounded to f32), or all converted to --dtype. Kernels
widen every element to f32, accumulate in f32 and round O once to the compute
dtype (--dtype, else Q's); LSE and weights are always f32. O goes to .npy as
float32 or float16; a bf16 O needs --out FILE.safetensors (tensor \"o\"), as
NumPy has no bfloat16. Any output whose name ends in .safetensors is written
that way (tensors \"o\", \"lse\", \"weights\").
--check compares every output with the f64 CPU reference computed on the exact
values the GPU read (the rounded halves): relative L2 error <= 1e-5 for f32
outputs, 1e-5 + 2^-11 for an f16 O and 1e-5 + 2^-8 for a bf16 O (its one
rounding; --tol overrides all), no NaN, every -inf matched; exit 1 otherwise.
Where the cooperative-matrix kernel ran (--coop on/full, or auto's choice on a
GPU) each of its f16 roundings adds 2^-11: Q and K unless stored in f16 (O,
LSE), the weights with P·V on the matrices (O).
Outputs are written to a temporary file in the same directory and renamed, so a
failed run leaves no partial file (they are written when --check fails: they are
what the GPU computed).
--score-mod and --mask-mod splice WGSL functions into every path's kernels
(programmable attention); --mod-buffer NAME=FILE.npy gives them tables, e.g.
  fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool { return doc(q) == doc(kv); }
A mod that does not parse or type-check is bad input naming FILE:LINE:COL.
Mods from files have no CPU twin, so the f64 reference cannot apply them: with
mods --check compares the requested path with the unfused path (scores,
softmax and weighted sum as separate kernels, each applying the mods), or,
when the unfused path ran, with the fused path, within the same tolerances
(O's rounding counted for both; no weights to compare on the fused path).")]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub masks: MaskArgs,
    #[command(flatten)]
    pub mods: ModArgs,
    /// Soft-capping c·tanh(s/c) of the scaled scores (Gemma-2 style).
    #[arg(long, value_name = "C")]
    pub softcap: Option<f32>,
    /// Kernels to use; asking for --weights needs unfused (auto picks it).
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    pub path: PathArg,
    /// Keys per split on the decode path [default: the library's choice].
    #[arg(long, value_name = "N")]
    pub kv_split: Option<usize>,
    /// Compute dtype: Q, K and V converted to it on upload, O stored in it [default: the inputs' own dtypes, O in Q's].
    #[arg(long, value_name = "f32|f16|bf16", value_parser = dtype_arg)]
    pub dtype: Option<DType>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Output O in the input's layout: .npy (float32 or float16, the compute dtype) or .safetensors (tensor "o" in the compute dtype, also bf16).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Log-sum-exp per row, f32 [B, Hq, Nq] (-inf where a row sees no key), .npy or .safetensors.
    #[arg(long, value_name = "FILE")]
    pub lse: Option<PathBuf>,
    /// Attention weights, f32 [B, Hq, Nq, Nk] (unfused path), .npy or .safetensors.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Compare with the f64 CPU reference (with mods: with a second GPU path); exit 1 when outside the tolerance.
    #[arg(long)]
    pub check: bool,
    /// Relative L2 tolerance of --check for every output [default: 1e-5, plus the unit roundoff of O's dtype for O].
    #[arg(long, value_name = "TOL")]
    pub tol: Option<f64>,
    /// Packed variable-length sequences: prefix sums of the query rows, B + 1 integers ("0,5,12" or a file: an integer .npy or text); --q, --k, --v are then [total, H, D], O is written packed the same way and --lse as [Hq, total_q].
    #[arg(long, value_name = "LIST|FILE")]
    pub cu_seqlens_q: Option<String>,
    /// Prefix sums of the key rows [default: --cu-seqlens-q].
    #[arg(long, value_name = "LIST|FILE", requires = "cu_seqlens_q")]
    pub cu_seqlens_k: Option<String>,
}

pub fn run_main(a: RunArgs) -> Result<()> {
    for (p, flag) in [
        (&a.out, "--out"),
        (&a.lse, "--lse"),
        (&a.weights, "--weights"),
    ] {
        if let Some(p) = p {
            io::check_output(p, flag)?;
        }
    }
    if a.weights.is_some() && matches!(a.path, PathArg::Fused | PathArg::Decode) {
        return Err(bad_input!(
            "--weights needs the unfused path: use --path unfused (or auto), not --path {:?}",
            a.path
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        ));
    }
    check_softcap(a.softcap)?;
    if a.kv_split == Some(0) {
        return Err(bad_input!(
            "--kv-split 0: expected at least 1 key per split"
        ));
    }
    if let Some(cu) = &a.cu_seqlens_q {
        return crate::varlen::varlen_main(&a, cu);
    }
    // Mods are read and checked before the inputs and the device.
    let mods = a.mods.load()?;
    if let (Some(p), Some(d)) = (&a.out, a.dtype) {
        // Before reading the inputs.
        io::check_output_dtype(p, "--out", d, &format!("--dtype {d}"))?;
    }
    let inputs = a.input.load()?;
    let sh = inputs.shape;
    let o_dtype = a.dtype.unwrap_or(inputs.q.dtype);
    if let Some(p) = &a.out {
        io::check_output_dtype(
            p,
            "--out",
            o_dtype,
            "Q is stored as bf16 and no --dtype converts it",
        )?;
    }
    let masking = a.masks.masking(sh.b, sh.nk)?;
    let host_mask = a.masks.host_mask([sh.b, sh.hq, sh.nq, sh.nk])?;
    let slopes = a.masks.alibi.then(|| alibi_slopes(sh.hq));
    let sinks = a.masks.sinks(sh.hq)?;

    let gpu = a.device.open()?;
    println!("adapter: {}", gpu.describe());
    println!(
        "shape: Q [B={}, Hq={}, Nq={}, D={}], K/V [Hkv={}, Nk={}], layout {}, path {}",
        sh.b,
        sh.hq,
        sh.nq,
        sh.d,
        sh.hkv,
        sh.nk,
        value_name(inputs.layout),
        value_name(a.path)
    );
    if let Some(m) = &mods {
        println!("mods: {}", m.summary);
    }
    let t0 = Instant::now();
    let [q, k, v] = inputs.upload(&gpu, a.dtype)?;
    let dtypes = DTypes {
        q: q.dtype(),
        k: k.dtype(),
        v: v.dtype(),
        o: o_dtype,
    };
    let all = [dtypes.q, dtypes.k, dtypes.v, dtypes.o];
    println!(
        "dtype: {}{}{}",
        dtypes.describe(),
        match a.dtype {
            Some(d) if inputs.dtypes().iter().any(|&f| f != d) => format!(
                " (converted from the files' {} by --dtype)",
                inputs.dtypes().map(DType::name).join("/")
            ),
            _ => String::new(),
        },
        if all.contains(&DType::F16) {
            format!(", f16 storage {}", f16_storage_name(&gpu))
        } else {
            String::new()
        }
    );
    let mask = upload_mask(&gpu, host_mask.as_ref())?;
    let want_lse = a.lse.is_some() || a.check;
    let want_weights = a.weights.is_some();
    let mut opts = AttentionOptions {
        scale: a.masks.scale,
        masking: masking.clone(),
        mask: mask.as_ref(),
        alibi: slopes.as_deref(),
        softcap: a.softcap,
        return_weights: want_weights,
        return_lse: want_lse,
        path: a.path.path(),
        kv_split: a.kv_split,
        tuning: a.tuning.mode(),
        out_dtype: Some(o_dtype),
        mods: mods.as_ref().map(|m| &m.mods),
        sinks: sinks.as_deref(),
    };
    // --coop fixes the variants (a problem the library refuses is reported by
    // the call itself).
    let problem = AttentionProblem::new(&q, &k, &v, &opts).ok();
    opts.tuning = a.tuning.mode_on(&gpu, problem.as_ref());
    let out = attention(&q, &k, &v, &opts)?;
    // O in the file's order (Q's layout) and its dtype: the logical [B, H, N, D]
    // viewed as [B, N, H, D] for bnhd, downloaded in row-major order.
    let o_file = match inputs.layout {
        LayoutArg::Bhnd => out.o.clone(),
        LayoutArg::Bnhd => out.o.transpose(1, 2)?,
    };
    let o_bytes = pollster::block_on(o_file.to_bytes())?;
    let lse = out.lse.as_ref().map(Tensor::to_vec_blocking).transpose()?;
    let weights = out
        .weights
        .as_ref()
        .map(Tensor::to_vec_blocking)
        .transpose()?;
    println!(
        "gpu: {:.1} ms (upload, compile on first use{}, run, readback) on the {} path",
        t0.elapsed().as_secs_f64() * 1e3,
        if opts.tuning == wgpu_attention::TuningMode::Autotune {
            ", autotuning on a class's first use"
        } else {
            ""
        },
        format!("{:?}", out.path).to_lowercase()
    );
    println!("kernels ({}): {}", a.tuning.describe(), out.kernels);

    let q_dims = [sh.b, sh.hq, sh.nq, sh.d];
    let mut writes: Vec<(PathBuf, &str, io::RawArray)> = Vec::new();
    if let Some(p) = &a.out {
        writes.push((
            p.clone(),
            "o",
            io::RawArray {
                shape: inputs.layout.file_shape(q_dims).to_vec(),
                dtype: out.o.dtype(),
                bytes: o_bytes,
            },
        ));
    }
    if let (Some(p), Some(l)) = (&a.lse, &lse) {
        writes.push((
            p.clone(),
            "lse",
            io::RawArray::f32(vec![sh.b, sh.hq, sh.nq], l),
        ));
    }
    if let (Some(p), Some(w)) = (&a.weights, &weights) {
        writes.push((
            p.clone(),
            "weights",
            io::RawArray::f32(vec![sh.b, sh.hq, sh.nq, sh.nk], w),
        ));
    }

    let verdict = if !a.check {
        Ok(())
    } else if mods.as_ref().is_some_and(|m| !m.mods.has_cpu_twins()) {
        // The f64 reference cannot run the mods: a second GPU path, whose
        // kernels apply the same mods on their own, is the comparison.
        println!(
            "check: the mods have no CPU twin: checked against {}, not the f64 reference",
            if out.path == AttentionPath::Unfused {
                "the fused path (the unfused path ran)"
            } else {
                "the unfused path (scores → softmax → weighted sum, separate kernels)"
            }
        );
        cross_check(&a, &opts, [&q, &k, &v], &out, &lse, &weights)
    } else {
        // The reference reads exactly what the GPU read: the uploaded tensors,
        // downloaded in logical BHND order and widened (exactly) to f32.
        let [qr, kr, vr] = [&q, &k, &v].map(Tensor::to_vec_blocking);
        let (qr, kr, vr) = (qr?, kr?, vr?);
        let o_bhnd = out.o.to_vec_blocking()?;
        let t = Instant::now();
        let want = reference::attention(
            &qr,
            &kr,
            &vr,
            &sh,
            &ReferenceOptions {
                scale: a.masks.scale.map(f64::from),
                masking,
                mask: host_mask.as_ref(),
                alibi: slopes.as_deref(),
                softcap: a.softcap.map(f64::from),
                // With CPU twins only (checked above).
                mods: mods.as_ref().map(|m| &m.mods),
                sinks: sinks.as_deref(),
            },
        );
        println!(
            "reference: f64 CPU on the values the GPU read, {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let (qk_round, p_round) = coop_rounding(&out.kernels, &dtypes);
        if a.tol.is_none() && qk_round + p_round > 0.0 {
            print_coop_tolerance(qk_round, p_round);
        }
        let f32_tol = a.tol.unwrap_or(Tolerance::F32.rel_l2 + qk_round);
        let o_tol = a
            .tol
            .unwrap_or(Tolerance::stored(out.o.dtype()).rel_l2 + qk_round + p_round);
        let mut reports = vec![("o", verify(&o_bhnd, &want.o), o_tol)];
        if let Some(l) = &lse {
            reports.push(("lse", verify(l, &want.lse), f32_tol));
        }
        if let Some(w) = &weights {
            reports.push(("weights", verify(w, &want.p), f32_tol));
        }
        judge_each(&reports)
    };
    // Results are written even when the check fails (they are what the GPU computed).
    for (path, name, raw) in &writes {
        io::write_output(path, name, raw)?;
        println!("wrote {} {:?} {}", path.display(), raw.shape, raw.dtype);
    }
    verdict
}

/// The tolerance the cooperative-matrix kernel adds where it ran (as
/// validation::Case::tolerance): it rounds Q and K to f16 for Q·Kᵀ (exact when
/// they are f16) and, with P·V on the matrices, the weights too; each rounding
/// adds f16's unit roundoff. (Q·K rounding, weights rounding.)
fn coop_rounding(kernels: &str, dtypes: &DTypes) -> (f64, f64) {
    let coop = kernels.contains("flash_attention_coop");
    let half = Tolerance::stored(DType::F16).rel_l2 - Tolerance::F32.rel_l2;
    let qk = if coop && (dtypes.q != DType::F16 || dtypes.k != DType::F16) {
        half
    } else {
        0.0
    };
    let p = if coop && kernels.contains("P·V on") {
        half
    } else {
        0.0
    };
    (qk, p)
}

fn print_coop_tolerance(qk_round: f64, p_round: f64) {
    println!(
        "tolerance: the cooperative-matrix kernel ran: + {:.1e} for its f16 roundings ({})",
        qk_round + p_round,
        [(qk_round > 0.0, "Q and K"), (p_round > 0.0, "the weights")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, w)| *w)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// `--check` with mods that have no CPU twin: the outputs of the path that ran
/// against a second GPU path with the same options and mods, the unfused path
/// (its `scores` kernel applies the mods per key, no block mask), or the fused
/// path when the unfused one ran (the decode path where the fused kernel is
/// refused). Tolerances as against the reference, with O's rounding to its
/// dtype and the cooperative-matrix kernel's roundings counted for both runs.
fn cross_check(
    a: &RunArgs,
    opts: &AttentionOptions,
    [q, k, v]: [&Tensor; 3],
    out: &wgpu_attention::Attention,
    lse: &Option<Vec<f32>>,
    weights: &Option<Vec<f32>>,
) -> Result<()> {
    let mut other = AttentionOptions {
        path: if out.path == AttentionPath::Unfused {
            AttentionPath::Fused
        } else {
            AttentionPath::Unfused
        },
        return_weights: false,
        return_lse: lse.is_some(),
        // Deterministic variants, nothing measured, for the comparison.
        tuning: wgpu_attention::TuningMode::Heuristic,
        ..opts.clone()
    };
    let t = Instant::now();
    let want = match attention(q, k, v, &other) {
        Err(e) if other.path == AttentionPath::Fused && !gpu_failure(&e) => {
            println!("check: the fused path refused this problem ({e}): the decode path instead");
            other.path = AttentionPath::Decode;
            attention(q, k, v, &other)
        }
        r => r,
    };
    let want = want.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "--check: the {} path (the comparison for the mods)",
            format!("{:?}", other.path).to_lowercase()
        ))
    })?;
    let want_o = want.o.to_vec_blocking()?;
    let want_lse = want.lse.as_ref().map(Tensor::to_vec_blocking).transpose()?;
    println!(
        "comparison: the {} path on the same GPU, {:.0} ms; kernels: {}",
        format!("{:?}", want.path).to_lowercase(),
        t.elapsed().as_secs_f64() * 1e3,
        want.kernels
    );
    let dtypes = DTypes {
        q: q.dtype(),
        k: k.dtype(),
        v: v.dtype(),
        o: out.o.dtype(),
    };
    let (qk1, p1) = coop_rounding(&out.kernels, &dtypes);
    let (qk2, p2) = coop_rounding(&want.kernels, &dtypes);
    let (qk_round, p_round) = (qk1 + qk2, p1 + p2);
    if a.tol.is_none() && qk_round + p_round > 0.0 {
        print_coop_tolerance(qk_round, p_round);
    }
    let f32_tol = a.tol.unwrap_or(Tolerance::F32.rel_l2 + qk_round);
    // Both O are rounded to O's dtype: its unit roundoff counts twice.
    let o_round = Tolerance::stored(out.o.dtype()).rel_l2 - Tolerance::F32.rel_l2;
    let o_tol = a
        .tol
        .unwrap_or(Tolerance::F32.rel_l2 + 2.0 * o_round + qk_round + p_round);
    let wide = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    let o = out.o.to_vec_blocking()?;
    let mut reports = vec![("o", verify(&o, &wide(&want_o)), o_tol)];
    if let (Some(l), Some(w)) = (lse, &want_lse) {
        reports.push(("lse", verify(l, &wide(w)), f32_tol));
    }
    if weights.is_some() {
        println!(
            "check weights not checked: the {} path returns no weights",
            format!("{:?}", want.path).to_lowercase()
        );
    }
    let against = format!(
        "the {} path (not the f64 reference: the mods have no CPU twin{})",
        format!("{:?}", want.path).to_lowercase(),
        if weights.is_some() {
            "; weights not compared"
        } else {
            ""
        }
    );
    judge_against(&reports, &against)
}

/// Whether a library error is the GPU failing (not a refusal of the problem).
fn gpu_failure(e: &wgpu_attention::Error) -> bool {
    use wgpu_attention::Error as E;
    matches!(
        e,
        E::Gpu(_) | E::DeviceLost(_) | E::Readback(_) | E::RequestDevice { .. }
    )
}

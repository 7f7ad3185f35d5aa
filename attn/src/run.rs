//! `attn run`: attention on Q, K, V from files, optionally checked against the
//! f64 CPU reference.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::{alibi_slopes, attention, AttentionOptions, AttentionPath, Tensor};

use crate::args::{
    check_softcap, from_bhnd, upload_mask, value_name, DeviceArgs, InputArgs, MaskArgs, TuningArgs,
};
use crate::check::judge;
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
  attn run --q q.npy --k k.npy --v v.npy --mask keep.npy --kv-lengths 5,7 --weights p.npy

Q is [B, Hq, Nq, D] and K, V are [B, Hkv, Nk, D] (with --layout bnhd: [B, N, H, D]);
Hq must be a multiple of Hkv. O is written in Q's layout, LSE as [B, Hq, Nq]
(-inf for rows with no visible key), weights as [B, Hq, Nq, Nk].
--check compares every output with the f64 CPU reference: relative L2 error
<= 1e-5 (--tol), no NaN, every -inf matched; exit 1 otherwise.
Outputs are written to a temporary file in the same directory and renamed, so a
failed run leaves no partial file (they are written when --check fails: they are
what the GPU computed).")]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub masks: MaskArgs,
    /// Soft-capping c·tanh(s/c) of the scaled scores (Gemma-2 style).
    #[arg(long, value_name = "C")]
    pub softcap: Option<f32>,
    /// Kernels to use; asking for --weights needs unfused (auto picks it).
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    pub path: PathArg,
    /// Keys per split on the decode path [default: the library's choice].
    #[arg(long, value_name = "N")]
    pub kv_split: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Output O as .npy (f32), in the input's layout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Log-sum-exp per row as .npy [B, Hq, Nq] (-inf where a row sees no key).
    #[arg(long, value_name = "FILE")]
    pub lse: Option<PathBuf>,
    /// Attention weights as .npy [B, Hq, Nq, Nk] (unfused path).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Compare with the f64 CPU reference; exit 1 when outside the tolerance.
    #[arg(long)]
    pub check: bool,
    /// Relative L2 tolerance of --check.
    #[arg(long, value_name = "TOL", default_value_t = Tolerance::F32.rel_l2)]
    pub tol: f64,
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
    let inputs = a.input.load()?;
    let sh = inputs.shape;
    let masking = a.masks.masking(sh.b, sh.nk)?;
    let host_mask = a.masks.host_mask([sh.b, sh.hq, sh.nq, sh.nk])?;
    let slopes = a.masks.alibi.then(|| alibi_slopes(sh.hq));

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
    let t0 = Instant::now();
    let [q, k, v] = inputs.upload(&gpu)?;
    let mask = upload_mask(&gpu, host_mask.as_ref())?;
    let want_lse = a.lse.is_some() || a.check;
    let want_weights = a.weights.is_some();
    let opts = AttentionOptions {
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
        out_dtype: None,
    };
    let out = attention(&q, &k, &v, &opts)?;
    let o_bhnd = out.o.to_vec_blocking()?;
    let lse = out.lse.as_ref().map(Tensor::to_vec_blocking).transpose()?;
    let weights = out
        .weights
        .as_ref()
        .map(Tensor::to_vec_blocking)
        .transpose()?;
    println!(
        "gpu: {:.1} ms (upload, compile on first use{}, run, readback) on the {} path",
        t0.elapsed().as_secs_f64() * 1e3,
        if a.tuning.mode() == wgpu_attention::TuningMode::Autotune {
            ", autotuning on a class's first use"
        } else {
            ""
        },
        format!("{:?}", out.path).to_lowercase()
    );
    println!("kernels ({}): {}", value_name(a.tuning.tuning), out.kernels);

    let q_dims = [sh.b, sh.hq, sh.nq, sh.d];
    let mut writes: Vec<(PathBuf, Vec<usize>, Vec<f32>)> = Vec::new();
    if let Some(p) = &a.out {
        writes.push((
            p.clone(),
            inputs.layout.file_shape(q_dims).to_vec(),
            from_bhnd(&o_bhnd, q_dims, inputs.layout),
        ));
    }
    if let (Some(p), Some(l)) = (&a.lse, &lse) {
        writes.push((p.clone(), vec![sh.b, sh.hq, sh.nq], l.clone()));
    }
    if let (Some(p), Some(w)) = (&a.weights, &weights) {
        writes.push((p.clone(), vec![sh.b, sh.hq, sh.nq, sh.nk], w.clone()));
    }

    let verdict = if a.check {
        let t = Instant::now();
        let [qr, kr, vr] = inputs.bhnd();
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
            },
        );
        println!(
            "reference: f64 CPU, {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        let mut reports = vec![("o", verify(&o_bhnd, &want.o))];
        if let Some(l) = &lse {
            reports.push(("lse", verify(l, &want.lse)));
        }
        if let Some(w) = &weights {
            reports.push(("weights", verify(w, &want.p)));
        }
        judge(&reports, a.tol)
    } else {
        Ok(())
    };
    // Results are written even when the check fails (they are what the GPU computed).
    for (path, shape, data) in &writes {
        io::write_npy(path, shape, data)?;
        println!("wrote {} {shape:?}", path.display());
    }
    verdict
}

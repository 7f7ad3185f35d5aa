//! `attn mha`: the multi-head attention layer with weights from a
//! `.safetensors` file, optionally checked against the f64 reference layer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use wgpu_attention::reference::{self, MhaReferenceOptions};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::{
    Biases, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Pairing, Rope, Tensor,
};

use crate::args::{upload_mask, DeviceArgs, MaskArgs, TuningArgs};
use crate::check::judge;
use crate::error::bad_input;
use crate::io;

/// Positional encoding added to the embeddings before the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeArg {
    /// The sinusoidal encoding of "Attention Is All You Need".
    Sinusoidal,
}

/// Rotary embedding of Q and K inside the layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RopeArg {
    /// Channel i with i + R/2 (GPT-NeoX, Llama).
    HalfSplit,
    /// Channel 2i with 2i + 1 (GPT-J).
    Interleaved,
}

#[derive(Args)]
#[command(after_help = "Examples:
  attn mha --weights layer.safetensors --heads 8 --x x.npy --out y.npy --check
  attn mha --weights model.safetensors --prefix model.layers.0.self_attn. --heads 32 \\
           --x tokens.npy --pe sinusoidal --causal bottom-right --out y.npy

The weights are PyTorch-style {prefix}{q,k,v,o}_proj.weight [out, in] (and .bias
when present), F32/F16/BF16. d_model is the last dim of --x; the head dim and the
key/value heads follow from the q_proj and k_proj shapes and --heads.
--check compares with the f64 reference layer (relative L2 <= --tol, exit 1 otherwise).")]
pub struct MhaArgs {
    /// Layer weights (.safetensors).
    #[arg(long, value_name = "FILE")]
    pub weights: PathBuf,
    /// Prefix of the tensor names, e.g. "model.layers.0.self_attn.".
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Query heads.
    #[arg(long, value_name = "H")]
    pub heads: usize,
    /// Input [B, N, d_model] (.npy, float32/float16).
    #[arg(long, value_name = "FILE")]
    pub x: PathBuf,
    /// Key/value input [B, Nk, d_model] for cross-attention (default: --x).
    #[arg(long, value_name = "FILE")]
    pub x_kv: Option<PathBuf>,
    /// Add a positional encoding to the inputs first (they are then embeddings).
    #[arg(long, value_enum)]
    pub pe: Option<PeArg>,
    /// Position of the first row for --pe and --rope.
    #[arg(long, default_value_t = 0)]
    pub pos_offset: u32,
    /// Rotary embedding of Q and K.
    #[arg(long, value_enum)]
    pub rope: Option<RopeArg>,
    /// RoPE base.
    #[arg(long, default_value_t = 10000.0)]
    pub rope_base: f64,
    #[command(flatten)]
    pub masks: MaskArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Output [B, Nq, d_model] as .npy (f32).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Compare with the f64 CPU reference; exit 1 when outside the tolerance.
    #[arg(long)]
    pub check: bool,
    /// Relative L2 tolerance of --check.
    #[arg(long, value_name = "TOL", default_value_t = Tolerance::F32.rel_l2)]
    pub tol: f64,
}

/// The layer configuration implied by the weight shapes and `--heads`.
fn mha_config(
    file: &io::SafeFile,
    prefix: &str,
    d_model: usize,
    heads: usize,
) -> Result<MhaConfig> {
    let wname = format!("{prefix}q_proj.weight");
    let src = file.path.display().to_string();
    let q = file.shape(&wname).ok_or_else(|| {
        bad_input!(
            "--weights {src}: no tensor {wname:?} (check --prefix); the file has {:?}",
            file.names()
        )
    })?;
    let kname = format!("{prefix}k_proj.weight");
    let k = file
        .shape(&kname)
        .ok_or_else(|| bad_input!("--weights {src}: no tensor {kname:?} (check --prefix)"))?;
    if heads == 0 {
        return Err(bad_input!("--heads 0: expected at least 1"));
    }
    if q.len() != 2 || k.len() != 2 {
        return Err(bad_input!(
            "--weights {src}: {wname} is {q:?} and {kname} is {k:?}; expected 2-D [out, in]"
        ));
    }
    if q[1] != d_model {
        return Err(bad_input!(
            "--x: d_model (last dim) is {d_model} but {wname} in {src} is {q:?}, expecting inputs of width {}",
            q[1]
        ));
    }
    if q[0] % heads != 0 {
        return Err(bad_input!(
            "--heads {heads}: {wname} has {} rows, not a multiple of the heads",
            q[0]
        ));
    }
    let head_dim = q[0] / heads;
    if k[0] % head_dim != 0 || k[0] == 0 {
        return Err(bad_input!(
            "--heads {heads}: {kname} has {} rows, not a multiple of the head dim {head_dim}",
            k[0]
        ));
    }
    let has = |p: &str| file.shape(&format!("{prefix}{p}.bias")).is_some();
    let cfg = MhaConfig::new(heads * head_dim, heads)
        .and_then(|c| c.with_kv_heads(k[0] / head_dim))
        .map(|c| MhaConfig { d_model, ..c })
        .and_then(|c| {
            c.validate()?;
            Ok(c)
        })
        .map_err(|e| bad_input!("--heads {heads} with --weights {src}: {e}"))?
        .with_bias(Biases {
            q: has("q_proj"),
            k: has("k_proj"),
            v: has("v_proj"),
            o: has("o_proj"),
        });
    Ok(cfg)
}

fn read_x(path: &Path, flag: &str) -> Result<(io::Array<f32>, [usize; 3])> {
    let x = io::read_f32(path, flag)?;
    let dims: [usize; 3] = x.shape.as_slice().try_into().map_err(|_| {
        bad_input!(
            "{flag} {}: shape {:?}; expected a 3-D array [B, N, d_model]",
            path.display(),
            x.shape
        )
    })?;
    if dims.contains(&0) {
        return Err(bad_input!(
            "{flag} {}: shape {:?} has a zero dimension",
            path.display(),
            x.shape
        ));
    }
    Ok((x, dims))
}

pub fn mha_main(a: MhaArgs) -> Result<()> {
    if let Some(p) = &a.out {
        io::check_output(p, "--out")?;
    }
    let (x, [b, nq, dm]) = read_x(&a.x, "--x")?;
    let xkv = match &a.x_kv {
        Some(p) => {
            let (xk, [bk, nk, dk]) = read_x(p, "--x-kv")?;
            if bk != b || dk != dm {
                return Err(bad_input!(
                    "--x-kv {}: shape {:?}; expected [B = {b}, Nk, d_model = {dm}] as --x",
                    p.display(),
                    xk.shape
                ));
            }
            Some((xk, nk))
        }
        None => None,
    };
    let nk = xkv.as_ref().map_or(nq, |(_, n)| *n);
    let file = io::SafeFile::open(&a.weights, "--weights")?;
    let cfg = mha_config(&file, &a.prefix, dm, a.heads)?;
    let weights = MhaWeights::from_safetensors(file.bytes(), &cfg, &a.prefix)
        .map_err(|e| bad_input!("--weights {}: {e}", a.weights.display()))?;
    let rope = a
        .rope
        .map(|r| -> Result<Rope> {
            let rope = Rope {
                pairing: match r {
                    RopeArg::HalfSplit => Pairing::HalfSplit,
                    RopeArg::Interleaved => Pairing::Interleaved,
                },
                base: a.rope_base,
                rotary_dims: None,
                offset: a.pos_offset,
                ..Default::default()
            };
            rope.rotary(cfg.head_dim)
                .map_err(|e| bad_input!("--rope: {e}"))?;
            Ok(rope)
        })
        .transpose()?;
    let masking = a.masks.masking(b, nk)?;
    let host_mask = a.masks.host_mask([b, cfg.num_heads, nq, nk])?;

    let gpu = a.device.open()?;
    println!("adapter: {}", gpu.describe());
    println!(
        "layer: d_model {dm}, {} heads ({} kv) of dim {}, bias {}, weights {} (kept in their dtype on the GPU); input [B={b}, Nq={nq}, Nk={nk}]{}",
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.bias,
        weights.dtype().map_or("of mixed dtypes".to_string(), |d| d.to_string()),
        if a.pe.is_some() { ", + sinusoidal PE" } else { "" }
    );
    let t0 = Instant::now();
    let layer = MultiHeadAttention::new(&gpu, cfg, &weights)?;
    let mask = upload_mask(&gpu, host_mask.as_ref())?;
    let xt = Tensor::from_slice(&gpu, &x.data, &[b, nq, dm])?;
    let xkvt = xkv
        .as_ref()
        .map(|(xk, nk)| Tensor::from_slice(&gpu, &xk.data, &[b, *nk, dm]))
        .transpose()?;
    let opts = MhaOptions {
        masking: masking.clone(),
        mask: mask.as_ref(),
        rope: rope.clone(),
        alibi: a.masks.alibi,
        scale: a.masks.scale,
        tuning: a.tuning.mode_on(&gpu, None),
        ..Default::default()
    };
    let mut rec = gpu.recorder();
    let (xq_in, xkv_in) = match a.pe {
        Some(PeArg::Sinusoidal) => {
            use wgpu_attention::kernels::posenc::record_posenc;
            let xq = record_posenc(&mut rec, &xt, a.pos_offset)?;
            let xk = xkvt
                .as_ref()
                .map(|t| record_posenc(&mut rec, t, a.pos_offset))
                .transpose()?;
            (xq, xk)
        }
        None => (xt.clone(), xkvt.clone()),
    };
    let y = layer.record_forward(&mut rec, &xq_in, xkv_in.as_ref(), &opts)?;
    rec.submit()?;
    let y = y.to_vec_blocking()?;
    println!(
        "gpu: {:.1} ms (upload, compile on first use, run, readback)",
        t0.elapsed().as_secs_f64() * 1e3
    );

    let verdict = if a.check {
        let t = Instant::now();
        let pe = |data: &[f32], n: usize| -> Vec<f64> {
            match a.pe {
                Some(PeArg::Sinusoidal) => reference::posenc(data, b, n, dm, a.pos_offset as usize),
                None => data.iter().map(|&v| v as f64).collect(),
            }
        };
        let xq = pe(&x.data, nq);
        let xk = match &xkv {
            Some((xk, n)) => pe(&xk.data, *n),
            None => xq.clone(),
        };
        let want = reference::multi_head_attention(
            &xq,
            &xk,
            [b, nq, nk],
            &cfg,
            &weights,
            &MhaReferenceOptions {
                masking,
                mask: host_mask.as_ref(),
                rope,
                alibi: a.masks.alibi,
                scale: a.masks.scale.map(f64::from),
                ..Default::default()
            },
        );
        println!(
            "reference: f64 CPU, {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        judge(&[("y", verify(&y, &want))], a.tol)
    } else {
        Ok(())
    };
    if let Some(p) = &a.out {
        io::write_npy(p, &[b, nq, dm], &y)?;
        println!("wrote {} [{b}, {nq}, {dm}]", p.display());
    }
    verdict
}

//! `attn mha`: the multi-head attention layer with weights from a
//! `.safetensors` file or one layer of a Hugging Face checkpoint, optionally
//! checked against the f64 reference layer.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use wgpu_attention::hf::{rope_from_hf, Checkpoint, HfConfig, LayerKind};
use wgpu_attention::reference::{self, MhaReferenceOptions};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::{
    Biases, Masking, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Pairing, QkNorm,
    RmsNorm, Rope, Tensor,
};

use crate::args::{check_softcap, upload_mask, DeviceArgs, MaskArgs, ModArgs, TuningArgs};
use crate::check::{judge, judge_against};
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
  attn mha --hf ~/models/Qwen3-0.6B --layer 3 --x x.npy --out y.npy --check
  attn mha --weights oss.safetensors --heads 8 --x x.npy --sinks sinks.npy --qk-norm \\
           --rope half-split --rope-scaling '{\"rope_type\": \"yarn\", \"factor\": 32}' \\
           --max-position-embeddings 131072 --causal bottom-right --window 127,0 --softcap 30

--hf DIR reads DIR/config.json (llama, mistral, qwen2, qwen3, gemma2, gemma3, gpt_oss,
phi3, gpt_neox, gptj) and layer I's attention weights from its .safetensors (single or
sharded, only that layer's tensors): heads, RoPE and its scaling, the layer's window,
softcap, scale, QK-norm, sinks and biases come from the checkpoint; --mask,
--kv-lengths and --position-ids may be added.

--weights FILE is a plain layer: PyTorch-style {prefix}{q,k,v,o}_proj.weight [out, in]
(and .bias on any of them), F32/F16/BF16; d_model is the last dim of --x; the head
dim and the key/value heads follow from q_proj, k_proj and --heads (v_proj's rows give
the value head dim). --qk-norm reads {prefix}q_norm.weight and k_norm.weight.
--check compares with the f64 reference layer (relative L2 <= --tol, exit 1 otherwise).")]
pub struct MhaArgs {
    /// Layer weights (.safetensors).
    #[arg(long, value_name = "FILE", conflicts_with = "hf")]
    pub weights: Option<PathBuf>,
    /// A Hugging Face checkpoint directory (config.json + .safetensors).
    #[arg(long, value_name = "DIR", requires = "layer")]
    pub hf: Option<PathBuf>,
    /// The layer of --hf to run.
    #[arg(long, value_name = "I", requires = "hf")]
    pub layer: Option<usize>,
    /// Prefix of the tensor names of --weights, e.g. "model.layers.0.self_attn.".
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Query heads (--weights).
    #[arg(long, value_name = "H")]
    pub heads: Option<usize>,
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
    /// The position of each token, B·N integers row-major ([B, N]): "0,1,2,..." or a
    /// 1-D .npy (self-attention with RoPE).
    #[arg(long, value_name = "LIST|FILE")]
    pub position_ids: Option<String>,
    /// Rotary embedding of Q and K (--weights).
    #[arg(long, value_enum)]
    pub rope: Option<RopeArg>,
    /// RoPE base (--weights).
    #[arg(long, default_value_t = 10000.0)]
    pub rope_base: f64,
    /// Rotated channels per head, even (partial rotary; default: the head dim).
    #[arg(long, value_name = "R")]
    pub rotary_dims: Option<usize>,
    /// RoPE frequency scaling as a Hugging Face rope_scaling entry (JSON text or a .json
    /// file): linear, dynamic, llama3, yarn, longrope.
    #[arg(long, value_name = "JSON|FILE", requires = "rope")]
    pub rope_scaling: Option<String>,
    /// max_position_embeddings, for the scalings that need it (dynamic; yarn and
    /// longrope without original_max_position_embeddings).
    #[arg(long, value_name = "N")]
    pub max_position_embeddings: Option<usize>,
    /// QK-norm (Qwen3, Gemma 3): RMSNorm of each Q and K head with {prefix}q_norm.weight
    /// and k_norm.weight ([head_dim], or [H·head_dim] for the whole projection).
    #[arg(long)]
    pub qk_norm: bool,
    /// eps of --qk-norm.
    #[arg(long, value_name = "E", default_value_t = 1e-6, requires = "qk_norm")]
    pub qk_norm_eps: f32,
    /// Added to each --qk-norm weight (Gemma's (1 + w): 1).
    #[arg(long, value_name = "O", default_value_t = 0.0, requires = "qk_norm")]
    pub qk_norm_offset: f32,
    /// Soft-capping c·tanh(s/c) of the scaled scores (Gemma 2).
    #[arg(long, value_name = "C")]
    pub softcap: Option<f32>,
    #[command(flatten)]
    pub masks: MaskArgs,
    #[command(flatten)]
    pub mods: ModArgs,
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

/// The layer configuration implied by the weight shapes, `--heads` and the
/// flags that add parts (QK-norm, sinks).
fn mha_config(
    file: &io::SafeFile,
    prefix: &str,
    d_model: usize,
    heads: usize,
    a: &MhaArgs,
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
    let vname = format!("{prefix}v_proj.weight");
    let v = file
        .shape(&vname)
        .ok_or_else(|| bad_input!("--weights {src}: no tensor {vname:?} (check --prefix)"))?;
    if heads == 0 {
        return Err(bad_input!("--heads 0: expected at least 1"));
    }
    if q.len() != 2 || k.len() != 2 || v.len() != 2 {
        return Err(bad_input!(
            "--weights {src}: {wname} is {q:?}, {kname} is {k:?} and {vname} is {v:?}; expected 2-D [out, in]"
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
    let kv_heads = k[0] / head_dim;
    if v[0] % kv_heads != 0 || v[0] == 0 {
        return Err(bad_input!(
            "--weights {src}: {vname} has {} rows, not a multiple of the {kv_heads} key/value heads",
            v[0]
        ));
    }
    let has = |p: &str| file.shape(&format!("{prefix}{p}.bias")).is_some();
    let qk_norm = if a.qk_norm {
        let name = format!("{prefix}q_norm.weight");
        let n = file
            .shape(&name)
            .ok_or_else(|| bad_input!("--qk-norm: no tensor {name:?} in {src} (check --prefix)"))?;
        let per_head = match n[..] {
            [l] if l == head_dim => true,
            [l] if l == q[0] => false,
            _ => {
                return Err(bad_input!(
                    "--qk-norm: {name} is {n:?}; expected [{head_dim}] (per head) or [{}] (the whole projection)",
                    q[0]
                ))
            }
        };
        Some(QkNorm {
            norm: RmsNorm {
                eps: a.qk_norm_eps,
                weight_offset: a.qk_norm_offset,
            },
            per_head,
        })
    } else {
        None
    };
    let cfg = MhaConfig::new(heads * head_dim, heads)
        .and_then(|c| c.with_kv_heads(kv_heads))
        .and_then(|c| c.with_v_head_dim(v[0] / kv_heads))
        .map(|c| MhaConfig { d_model, ..c })
        .and_then(|c| c.with_qk_norm(qk_norm))
        .map_err(|e| bad_input!("--heads {heads} with --weights {src}: {e}"))?
        .with_bias(Biases {
            q: has("q_proj"),
            k: has("k_proj"),
            v: has("v_proj"),
            o: has("o_proj"),
        })
        .with_sinks(a.masks.sinks.is_some());
    Ok(cfg)
}

/// `--position-ids`: `b·n` positions.
fn position_ids(spec: &str, b: usize, n: usize) -> Result<Vec<u32>> {
    let ids = crate::args::parse_kv_lengths(spec).map_err(|e| {
        bad_input!(
            "{}",
            e.to_string().replace("--kv-lengths", "--position-ids")
        )
    })?;
    if ids.len() != b * n {
        return Err(bad_input!(
            "--position-ids: {} values; expected one per token, B·N = {b}·{n} = {}",
            ids.len(),
            b * n
        ));
    }
    Ok(ids)
}

/// `--rope-scaling`: JSON text, or a file holding it.
fn rope_scaling_text(spec: &str) -> Result<String> {
    if spec.trim_start().starts_with('{') {
        return Ok(spec.to_string());
    }
    std::fs::read_to_string(spec).map_err(|e| {
        bad_input!("--rope-scaling {spec}: neither JSON text nor a readable file: {e}")
    })
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

/// The layer to run: its config, weights and per-call options (and the
/// reference's), and a line describing where it came from.
struct Layer {
    cfg: MhaConfig,
    weights: MhaWeights,
    masking: Masking,
    rope: Option<Rope>,
    scale: Option<f32>,
    softcap: Option<f32>,
    describe: String,
}

/// Flags a checkpoint's config decides for its layers.
fn refuse_with_hf(a: &MhaArgs, layer: usize) -> Result<()> {
    let m = &a.masks;
    let given = [
        ("--heads", a.heads.is_some()),
        ("--prefix", !a.prefix.is_empty()),
        ("--rope", a.rope.is_some()),
        ("--rotary-dims", a.rotary_dims.is_some()),
        ("--rope-scaling", a.rope_scaling.is_some()),
        ("--qk-norm", a.qk_norm),
        ("--sinks", m.sinks.is_some()),
        ("--softcap", a.softcap.is_some()),
        ("--causal", m.causal.is_some()),
        ("--window", m.window.is_some()),
        ("--align", m.align.is_some()),
        ("--scale", m.scale.is_some()),
        ("--alibi", m.alibi),
        ("--pe", a.pe.is_some()),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
        return Err(bad_input!(
            "{flag}: with --hf the checkpoint's config.json gives layer {layer}'s heads, RoPE, window, scale, softcap, QK-norm and sinks; drop {flag}"
        ));
    }
    Ok(())
}

fn hf_layer(
    a: &MhaArgs,
    dir: &Path,
    layer: usize,
    dm: usize,
    b: usize,
    nk: usize,
) -> Result<Layer> {
    refuse_with_hf(a, layer)?;
    let src = dir.display();
    let cfg = HfConfig::from_dir(dir).map_err(|e| bad_input!("--hf {src}: {e}"))?;
    let kind = cfg
        .layer_kind(layer)
        .map_err(|e| bad_input!("--layer {layer}: {e}"))?;
    if cfg.mha.d_model != dm {
        return Err(bad_input!(
            "--x: d_model (last dim) is {dm} but the model in {src} has hidden_size {}",
            cfg.mha.d_model
        ));
    }
    let ckpt = Checkpoint::open(dir).map_err(|e| bad_input!("--hf {src}: {e}"))?;
    let weights = ckpt
        .layer_weights(&cfg, layer)
        .map_err(|e| bad_input!("--hf {src} --layer {layer}: {e}"))?;
    let mut masking = cfg.layer_masking(layer)?;
    masking.key_lengths = a.masks.masking(b, nk)?.key_lengths;
    let rope = cfg.layer_rope(layer)?;
    let describe = format!(
        "{} layer {layer} of {} ({}), {:.1} MiB read; RoPE base {} {:?}",
        cfg.model_type,
        cfg.num_layers,
        match kind {
            LayerKind::Full => "full attention".to_string(),
            LayerKind::Sliding(w) => format!("sliding window {w}"),
        },
        ckpt.bytes_read() as f64 / (1 << 20) as f64,
        rope.base,
        rope.scaling,
    );
    Ok(Layer {
        cfg: cfg.mha,
        weights,
        masking,
        rope: Some(rope),
        scale: cfg.scale,
        softcap: cfg.softcap,
        describe,
    })
}

fn plain_layer(a: &MhaArgs, path: &Path, dm: usize, b: usize, nk: usize) -> Result<Layer> {
    let heads = a
        .heads
        .ok_or_else(|| bad_input!("--weights needs --heads H (the query heads)"))?;
    check_softcap(a.softcap)?;
    let file = io::SafeFile::open(path, "--weights")?;
    let cfg = mha_config(&file, &a.prefix, dm, heads, a)?;
    let sinks = a.masks.sinks(heads)?;
    let mut weights = MhaWeights::from_safetensors(file.bytes(), &cfg.with_sinks(false), &a.prefix)
        .map_err(|e| bad_input!("--weights {}: {e}", path.display()))?;
    weights.sinks = sinks;
    let rope = a
        .rope
        .map(|r| -> Result<Rope> {
            let base = Rope {
                pairing: match r {
                    RopeArg::HalfSplit => Pairing::HalfSplit,
                    RopeArg::Interleaved => Pairing::Interleaved,
                },
                base: a.rope_base,
                rotary_dims: a.rotary_dims,
                offset: a.pos_offset,
                ..Default::default()
            };
            let rope = match &a.rope_scaling {
                Some(spec) => rope_from_hf(
                    &rope_scaling_text(spec)?,
                    &base,
                    cfg.head_dim,
                    a.max_position_embeddings,
                )
                .map_err(|e| bad_input!("--rope-scaling: {e}"))?,
                None => base,
            };
            rope.rotary(cfg.head_dim)
                .map_err(|e| bad_input!("--rope: {e}"))?;
            Ok(rope)
        })
        .transpose()?;
    let describe = format!(
        "d_model {dm}, {} heads ({} kv) of dim {}{}, biases {}{}{}, weights {} (kept in their dtype on the GPU)",
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        if cfg.v_head_dim != cfg.head_dim {
            format!(" (values {})", cfg.v_head_dim)
        } else {
            String::new()
        },
        cfg.bias,
        if cfg.qk_norm.is_some() { ", QK-norm" } else { "" },
        if cfg.sinks { ", sinks" } else { "" },
        weights
            .dtype()
            .map_or("of mixed dtypes".to_string(), |d| d.to_string()),
    );
    Ok(Layer {
        cfg,
        weights,
        masking: a.masks.masking(b, nk)?,
        rope,
        scale: a.masks.scale,
        softcap: a.softcap,
        describe,
    })
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
    let layer = match (&a.weights, &a.hf, a.layer) {
        (Some(p), None, _) => plain_layer(&a, p, dm, b, nk)?,
        (None, Some(dir), Some(i)) => hf_layer(&a, dir, i, dm, b, nk)?,
        _ => {
            return Err(bad_input!(
                "give the layer as --weights FILE --heads H, or --hf DIR --layer I"
            ))
        }
    };
    let ids = a
        .position_ids
        .as_deref()
        .map(|s| position_ids(s, b, nq))
        .transpose()?;
    if ids.is_some() && xkv.is_some() {
        return Err(bad_input!(
            "--position-ids with --x-kv: position ids give the keys' positions too (self-attention only)"
        ));
    }
    let cfg = layer.cfg;
    let host_mask = a.masks.host_mask([b, cfg.num_heads, nq, nk])?;
    let mods = a.mods.load()?;

    let gpu = a.device.open()?;
    println!("adapter: {}", gpu.describe());
    println!(
        "layer: {}; input [B={b}, Nq={nq}, Nk={nk}]{}",
        layer.describe,
        if a.pe.is_some() {
            ", + sinusoidal PE"
        } else {
            ""
        }
    );
    if let Some(m) = &mods {
        println!("mods: {}", m.summary);
    }
    let t0 = Instant::now();
    let gpu_layer = MultiHeadAttention::new(&gpu, cfg, &layer.weights)?;
    let mask = upload_mask(&gpu, host_mask.as_ref())?;
    let xt = Tensor::from_slice(&gpu, &x.data, &[b, nq, dm])?;
    let xkvt = xkv
        .as_ref()
        .map(|(xk, nk)| Tensor::from_slice(&gpu, &xk.data, &[b, *nk, dm]))
        .transpose()?;
    let opts = MhaOptions {
        masking: layer.masking.clone(),
        mask: mask.as_ref(),
        rope: layer.rope.clone(),
        position_ids: ids.as_deref(),
        alibi: a.masks.alibi,
        scale: layer.scale,
        softcap: layer.softcap,
        mods: mods.as_ref().map(|m| &m.mods),
        path: Default::default(),
        tuning: a.tuning.mode_on(&gpu, None),
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
    let y = gpu_layer.record_forward(&mut rec, &xq_in, xkv_in.as_ref(), &opts)?;
    rec.submit()?;
    let y = y.to_vec_blocking()?;
    println!(
        "gpu: {:.1} ms (upload, compile on first use, run, readback)",
        t0.elapsed().as_secs_f64() * 1e3
    );

    let verdict = if a.check && mods.as_ref().is_some_and(|m| !m.mods.has_cpu_twins()) {
        // The f64 layer cannot run mods without CPU twins: the same layer with
        // the unfused attention path (scores, softmax, weighted sum, each
        // applying the mods) is the comparison.
        let unfused = MhaOptions {
            path: wgpu_attention::AttentionPath::Unfused,
            ..opts.clone()
        };
        let mut rec = gpu.recorder();
        let y2 = gpu_layer.record_forward(&mut rec, &xq_in, xkv_in.as_ref(), &unfused)?;
        rec.submit()?;
        let y2: Vec<f64> = y2.to_vec_blocking()?.into_iter().map(f64::from).collect();
        println!("check: the mods have no CPU twin: checked against the layer on the unfused path, not the f64 reference");
        judge_against(&[("y", verify(&y, &y2), a.tol)], "the unfused path")
    } else if a.check {
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
            &layer.weights,
            &MhaReferenceOptions {
                masking: layer.masking.clone(),
                mask: host_mask.as_ref(),
                rope: layer.rope.clone(),
                position_ids: ids.as_deref(),
                alibi: a.masks.alibi,
                scale: layer.scale.map(f64::from),
                softcap: layer.softcap.map(f64::from),
                mods: mods.as_ref().map(|m| &m.mods),
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

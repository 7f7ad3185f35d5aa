//! Greedy generation with a small decoder: the attention of one model family
//! (from a built-in config of that family, or from a Hugging Face checkpoint
//! directory) on the GPU with a KV cache per layer and the split-KV decode
//! path, around a plain SwiGLU MLP and RMSNorms on the host, with random
//! (seeded) embeddings, MLP and LM head. Every step's logits are checked
//! against a full recompute of the whole sequence by the f64 reference.
//!
//! ```text
//! cargo run --release --example generate                          # gpt_oss family, 16 tokens
//! cargo run --release --example generate -- --family qwen3 --tokens 32 --batch 2
//! cargo run --release --example generate -- --hf ~/models/Qwen3-0.6B --layers 2 --tokens 8
//! ```
//!
//! Per step and layer the new token's K and V are normed, rotated and appended
//! to that layer's cache and its query attends to every cached position
//! (`MultiHeadAttention::forward_cached`), one submission; the MLP runs on the
//! host, so each layer reads its attention output back (tokens/s counts that
//! round trip). With `--hf` the attention weights of the first `--layers`
//! layers are the checkpoint's (read tensor by tensor), the rest stays random:
//! the example exercises attention, not a full model. The last line is `PASS`
//! when every step's logits are within tolerance and the greedy tokens match
//! the reference's (or a near-tie decides differently).

use std::time::Instant;

use clap::Parser;
use rand::{Rng, SeedableRng};
use wgpu_attention::hf::{Checkpoint, HfConfig};
use wgpu_attention::reference::{self};
use wgpu_attention::verify::verify;
use wgpu_attention::{
    AttentionPath, DType, Gpu, KvCache, MhaOptions, MhaWeights, MultiHeadAttention, RmsNorm, Tensor,
};

#[derive(Parser)]
struct Args {
    /// A built-in small config of this family: llama, mistral, qwen2, qwen3,
    /// gemma2, gemma3, gpt_oss, phi3, gpt_neox, gptj.
    #[arg(long, default_value = "gpt_oss")]
    family: String,
    /// A Hugging Face checkpoint directory instead (config.json + .safetensors).
    #[arg(long)]
    hf: Option<std::path::PathBuf>,
    /// Decoder layers (at most the config's).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Prompt tokens (random ids from the seed).
    #[arg(long, default_value_t = 6)]
    prompt: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 16)]
    tokens: usize,
    /// Sequences generated side by side.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the random weights and prompt.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Vocabulary of the stand-in embedding and LM head (capped by the config's).
    #[arg(long, default_value_t = 512)]
    vocab: usize,
}

/// Small configs in each family's real field names.
fn family_config(name: &str) -> Option<&'static str> {
    Some(match name {
        "llama" => {
            r#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "intermediate_size": 128, "rope_theta": 500000.0, "max_position_embeddings": 2048,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 16}}"#
        }
        "mistral" => {
            r#"{"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
            "num_hidden_layers": 2, "intermediate_size": 128, "sliding_window": 8}"#
        }
        "qwen2" => {
            r#"{"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "intermediate_size": 128, "rope_theta": 1000000.0}"#
        }
        "qwen3" => {
            r#"{"model_type": "qwen3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 32, "num_hidden_layers": 2, "intermediate_size": 128, "rope_theta": 1000000.0}"#
        }
        "gemma2" => {
            r#"{"model_type": "gemma2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "num_hidden_layers": 2, "intermediate_size": 128, "query_pre_attn_scalar": 16,
            "sliding_window": 8, "attn_logit_softcapping": 50.0}"#
        }
        "gemma3" => {
            r#"{"model_type": "gemma3_text", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
            "head_dim": 16, "num_hidden_layers": 2, "intermediate_size": 128, "query_pre_attn_scalar": 16,
            "sliding_window": 8, "sliding_window_pattern": 2, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}"#
        }
        "gpt_oss" => {
            r#"{"model_type": "gpt_oss", "hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 2,
            "head_dim": 16, "num_hidden_layers": 2, "intermediate_size": 128, "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                             "truncate": false, "original_max_position_embeddings": 4096}}"#
        }
        "phi3" => {
            r#"{"model_type": "phi3", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "intermediate_size": 128, "partial_rotary_factor": 0.5,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.0, 1.1, 1.2], "long_factor": [1.5, 2.0, 4.0, 8.0]}}"#
        }
        "gpt_neox" => {
            r#"{"model_type": "gpt_neox", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
            "intermediate_size": 128, "rotary_pct": 0.25}"#
        }
        "gptj" => {
            r#"{"model_type": "gptj", "n_embd": 64, "n_head": 4, "n_layer": 2, "rotary_dim": 8}"#
        }
        _ => return None,
    })
}

/// A linear map `[out, in]` row-major.
struct Mat {
    out: usize,
    inp: usize,
    w: Vec<f32>,
}

impl Mat {
    fn random(r: &mut impl Rng, out: usize, inp: usize) -> Mat {
        let bound = 1.0 / (inp as f32).sqrt();
        Mat {
            out,
            inp,
            w: (0..out * inp)
                .map(|_| r.random_range(-bound..bound))
                .collect(),
        }
    }

    /// `x·Wᵀ` for rows of `x`, in f32 (the host path) or f64 (the reference).
    fn apply<T: Copy + Into<f64>>(&self, x: &[T]) -> Vec<f64> {
        x.chunks(self.inp)
            .flat_map(|row| {
                (0..self.out).map(move |o| {
                    let w = &self.w[o * self.inp..(o + 1) * self.inp];
                    row.iter()
                        .zip(w)
                        .map(|(&a, &b)| a.into() * b as f64)
                        .sum::<f64>()
                })
            })
            .collect()
    }
}

/// One pre-norm block: `x += attn(norm(x)); x += mlp(norm(x))`.
struct Block {
    weights: MhaWeights,
    layer: MultiHeadAttention,
    ln1: Vec<f32>,
    ln2: Vec<f32>,
    gate: Mat,
    up: Mat,
    down: Mat,
}

struct Decoder {
    cfg: HfConfig,
    embed: Vec<f32>,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    head: Mat,
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// RMSNorm of each row (the decoders' norm), in f64.
fn rms(x: &[f64], w: &[f32], eps: f32) -> Vec<f64> {
    let d = w.len();
    reference::rms_norm(
        x,
        [1, 1, x.len() / d, d],
        d,
        w,
        &RmsNorm {
            eps,
            weight_offset: 0.0,
        },
    )
}

impl Decoder {
    /// The SwiGLU MLP of block `b` on rows `x`.
    fn mlp(&self, b: &Block, x: &[f64]) -> Vec<f64> {
        let g = b.gate.apply(x);
        let u = b.up.apply(x);
        let h: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| silu(g) * u).collect();
        b.down.apply(&h)
    }

    fn embed(&self, tokens: &[usize]) -> Vec<f64> {
        let dm = self.cfg.mha.d_model;
        tokens
            .iter()
            .flat_map(|&t| self.embed[t * dm..(t + 1) * dm].iter().map(|&v| v as f64))
            .collect()
    }

    fn logits(&self, last: &[f64]) -> Vec<f64> {
        self.head
            .apply(&rms(last, &self.norm, self.cfg.rms_norm_eps))
    }

    /// One step on the GPU: the new tokens `[B, n]` through every block with
    /// the caches; the logits of each sequence's last new token `[B, vocab]`.
    fn step(
        &self,
        gpu: &Gpu,
        caches: &mut [KvCache],
        tokens: &[usize],
        b: usize,
        decode: bool,
    ) -> wgpu_attention::Result<Vec<f64>> {
        let dm = self.cfg.mha.d_model;
        let n = tokens.len() / b;
        let eps = self.cfg.rms_norm_eps;
        let mut x = self.embed(tokens);
        for (l, (blk, cache)) in self.blocks.iter().zip(caches.iter_mut()).enumerate() {
            let xn: Vec<f32> = rms(&x, &blk.ln1, eps).iter().map(|&v| v as f32).collect();
            let xt = Tensor::from_slice(gpu, &xn, &[b, n, dm])?;
            let opts = MhaOptions {
                // One new token: the split-KV decode path over the cache.
                path: if decode {
                    AttentionPath::Decode
                } else {
                    AttentionPath::Auto
                },
                ..self.cfg.layer_options(l)?
            };
            let y = blk
                .layer
                .forward_cached(&xt, cache, &opts)?
                .to_vec_blocking()?;
            for (a, v) in x.iter_mut().zip(&y) {
                *a += *v as f64;
            }
            let m = self.mlp(blk, &rms(&x, &blk.ln2, eps));
            for (a, v) in x.iter_mut().zip(&m) {
                *a += v;
            }
        }
        let last: Vec<f64> = (0..b)
            .flat_map(|s| x[((s + 1) * n - 1) * dm..(s + 1) * n * dm].to_vec())
            .collect();
        Ok(self.logits(&last))
    }

    /// The f64 reference: the whole sequences `[B, T]` recomputed, the logits
    /// of each one's last position.
    fn reference(&self, seqs: &[Vec<usize>]) -> Vec<f64> {
        let (b, t, dm) = (seqs.len(), seqs[0].len(), self.cfg.mha.d_model);
        let eps = self.cfg.rms_norm_eps;
        let mut x = self.embed(&seqs.concat());
        for (l, blk) in self.blocks.iter().enumerate() {
            let xn = rms(&x, &blk.ln1, eps);
            let ropts = self.cfg.layer_reference_options(l).expect("layer");
            let a = reference::multi_head_attention(
                &xn,
                &xn,
                [b, t, t],
                &self.cfg.mha,
                &blk.weights,
                &ropts,
            );
            for (v, d) in x.iter_mut().zip(&a) {
                *v += d;
            }
            let m = self.mlp(blk, &rms(&x, &blk.ln2, eps));
            for (v, d) in x.iter_mut().zip(&m) {
                *v += d;
            }
        }
        let last: Vec<f64> = (0..b)
            .flat_map(|s| x[((s + 1) * t - 1) * dm..(s + 1) * t * dm].to_vec())
            .collect();
        self.logits(&last)
    }
}

fn argmax(row: &[f64]) -> (usize, f64) {
    let mut best = (0, f64::NEG_INFINITY, f64::NEG_INFINITY); // index, top, second
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v, best.1);
        } else if v > best.2 {
            best.2 = v;
        }
    }
    (best.0, best.1 - best.2)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let gpu = Gpu::new_blocking(&Default::default())?;
    println!("adapter : {}", gpu.describe());
    let cfg = match &a.hf {
        Some(dir) => HfConfig::from_dir(dir)?,
        None => HfConfig::from_json(family_config(&a.family).ok_or_else(|| {
            format!("unknown family {:?}: use llama, mistral, qwen2, qwen3, gemma2, gemma3, gpt_oss, phi3, gpt_neox or gptj", a.family)
        })?)?,
    };
    let layers = a.layers.min(cfg.num_layers).max(1);
    let dm = cfg.mha.d_model;
    let ff = cfg.intermediate_size.unwrap_or(4 * dm).min(4 * dm);
    let vocab = a.vocab.min(cfg.vocab_size.unwrap_or(a.vocab)).max(2);
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let ckpt = a.hf.as_ref().map(Checkpoint::open).transpose()?;
    let mut blocks = Vec::new();
    for l in 0..layers {
        let weights = match &ckpt {
            Some(c) => c.layer_weights(&cfg, l)?,
            None => MhaWeights::random(&cfg.mha, r.random())?,
        };
        let norm_w = |r: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            (0..dm).map(|_| 1.0 + r.random_range(-0.1..0.1)).collect()
        };
        blocks.push(Block {
            layer: MultiHeadAttention::new(&gpu, cfg.mha, &weights)?,
            weights,
            ln1: norm_w(&mut r),
            ln2: norm_w(&mut r),
            gate: Mat::random(&mut r, ff, dm),
            up: Mat::random(&mut r, ff, dm),
            down: Mat::random(&mut r, dm, ff),
        });
    }
    let dec = Decoder {
        embed: (0..vocab * dm).map(|_| r.random_range(-1.0..1.0)).collect(),
        norm: (0..dm).map(|_| 1.0).collect(),
        head: Mat::random(&mut r, vocab, dm),
        blocks,
        cfg,
    };
    let m = &dec.cfg.mha;
    println!(
        "decoder : {} attention ({} heads, {} kv, head dim {}{}{}{}), {layers} layers, d_model {dm}, MLP {ff}, vocab {vocab}{}",
        dec.cfg.model_type,
        m.num_heads,
        m.num_kv_heads,
        m.head_dim,
        if m.sinks { ", sinks" } else { "" },
        if m.qk_norm.is_some() { ", QK-norm" } else { "" },
        match dec.cfg.layer_kind(0)? {
            wgpu_attention::hf::LayerKind::Sliding(w) => format!(", layer 0 window {w}"),
            _ => String::new(),
        },
        if a.hf.is_some() { "; attention weights from the checkpoint" } else { "; random weights" },
    );
    let b = a.batch.max(1);
    let total = a.prompt.max(1) + a.tokens;
    let mut caches = (0..layers)
        .map(|l| dec.blocks[l].layer.new_cache(b, total, DType::F32))
        .collect::<wgpu_attention::Result<Vec<_>>>()?;
    let mut seqs: Vec<Vec<usize>> = (0..b)
        .map(|_| {
            (0..a.prompt.max(1))
                .map(|_| r.random_range(0..vocab))
                .collect()
        })
        .collect();
    // The project's f32 tolerance: the logits measured 1e-7 relative L2
    // against the f64 recompute (2 layers, every family, lavapipe and GL); a
    // wrong position, mask or cache entry gives 1e-2 and more.
    let tol = wgpu_attention::verify::Tolerance::F32.rel_l2;
    // Dynamic NTK and LongRoPE change every frequency once the sequence passes
    // a length: keys cached before were rotated with the old ones (as in
    // Hugging Face's cache), a full recompute rotates them with the new, so
    // past that length the two differ by design and are shown, not judged.
    let judged_until = (0..layers)
        .filter_map(|l| match dec.cfg.layer_rope(l).ok()?.scaling {
            wgpu_attention::RopeScaling::Dynamic { max_position, .. } => Some(max_position),
            wgpu_attention::RopeScaling::LongRope {
                original_max_position,
                ..
            } => Some(original_max_position),
            _ => None,
        })
        .min()
        .unwrap_or(usize::MAX);
    if total > judged_until {
        println!("note    : the RoPE scaling changes its frequencies past {judged_until} positions: steps past it are shown, not judged");
    }
    let (mut worst, mut ties, mut fails) = (0.0f64, 0, 0);
    let (mut prefill_secs, mut decode_secs) = (0.0, 0.0);
    let mut input: Vec<usize> = seqs.concat();
    for step in 0..=a.tokens {
        let t0 = Instant::now();
        let logits = dec.step(&gpu, &mut caches, &input, b, step > 0)?;
        if step == 0 {
            prefill_secs = t0.elapsed().as_secs_f64();
        } else {
            decode_secs += t0.elapsed().as_secs_f64();
        }
        let want = dec.reference(&seqs);
        let rep = verify(&logits.iter().map(|&v| v as f32).collect::<Vec<_>>(), &want);
        let judged = seqs[0].len() <= judged_until;
        if judged {
            worst = worst.max(rep.rel_l2);
        }
        let mut next = Vec::new();
        for s in 0..b {
            let (tok, _) = argmax(&logits[s * vocab..(s + 1) * vocab]);
            let (want_tok, margin) = argmax(&want[s * vocab..(s + 1) * vocab]);
            if tok != want_tok && judged {
                if margin < 1e3 * rep.max_abs.max(1e-12) {
                    ties += 1;
                } else {
                    fails += 1;
                }
            }
            next.push(tok);
        }
        let ok = rep.rel_l2 <= tol || !judged;
        fails += usize::from(!ok);
        println!(
            "step {step:>3}: {} tokens at position {:>3}, next {next:?}, logits vs f64 recompute: rel_l2 {:.2e} max_abs {:.2e}{}",
            input.len() / b,
            seqs[0].len() - input.len() / b,
            rep.rel_l2,
            rep.max_abs,
            if !judged { "  (not judged)" } else if ok { "" } else { "  FAIL" }
        );
        if step == a.tokens {
            break;
        }
        for (s, t) in seqs.iter_mut().zip(&next) {
            s.push(*t);
        }
        input = next;
    }
    let generated = a.tokens * b;
    println!(
        "prompt: {} tokens in {:.3} s; generated {generated} tokens ({b} sequences × {}) in {:.3} s of decode steps: {:.1} tokens/s (host MLP and one readback per layer included; the f64 checks not)",
        b * a.prompt.max(1),
        prefill_secs,
        a.tokens,
        decode_secs,
        generated as f64 / decode_secs.max(1e-9),
    );
    println!("worst logits rel_l2 {worst:.2e} (tolerance {tol:.0e}); greedy tokens differing from the reference: {fails} (near-ties: {ties})");
    if fails == 0 {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        std::process::exit(1)
    }
}

//! The multi-head attention layer `MultiHead(Q,K,V) = Concat(head_1..head_h)·W^O`
//! with `head_i = Attention(X_q W_i^Q, X_kv W_i^K, X_kv W_i^V)`.
//!
//! Data flow (one command encoder, one submission):
//!
//! ```text
//! X_q [B,Nq,d_model] ─matmul W_Qᵀ(+b)─▶ [B,Nq,Hq·D] ═view═▶ Q [B,Hq,Nq,D] (BNHD strides) ─rope─┐
//! X_kv [B,Nk,d_model] ─matmul W_Kᵀ─▶ K [B,Hkv,Nk,D] ─rope─┐   ─matmul W_Vᵀ─▶ V                  │
//!                                   attention(Q, K, V; masks, ALiBi, GQA) ◀──────────────────────┘
//!  O [B,Hq,Nq,D] in BNHD = [B,Nq,Hq·D] ═view═▶ ─matmul W_Oᵀ(+b)─▶ Y [B,Nq,d_model]
//! ```
//! Heads are split and merged by strides only: no transpose kernel.
//!
//! Each projection's weights stay on the GPU in their dtype ([`Linear::dtype`]:
//! f16/bf16 checkpoints are not widened); the activations (Q, K, V, O, Y) are in
//! `x_q`'s dtype, every GEMM and the attention accumulating in f32.

use std::sync::{Arc, Mutex};

use crate::attention::{record_attention_into, AttentionOptions, AttentionOutputs, TuningMode};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Recorder;
use crate::kernels::matmul::record_matmul_to;
use crate::kernels::rope::{record_rope_to, rope_table};
use crate::mask::Masking;
use crate::mask_tensor::MaskTensor;
use crate::positional::{alibi_slopes, Rope};
use crate::tensor::Tensor;
use crate::weights::{Linear, MhaConfig, MhaWeights};

/// Per-call options of [`MultiHeadAttention::forward`].
#[derive(Clone, Debug, Default)]
pub struct MhaOptions<'a> {
    /// Causal / window / key-padding rules.
    pub masking: Masking,
    /// Dense mask broadcastable to `[B, Hq, Nq, Nk]`.
    pub mask: Option<&'a MaskTensor>,
    /// Rotary embedding of Q and K (rows at positions `offset + n`).
    pub rope: Option<Rope>,
    /// ALiBi with the paper's slopes for `num_heads`.
    pub alibi: bool,
    /// Softmax scale; `None` = `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// How the attention's kernel variants are chosen (the projections' GEMM
    /// keeps the recorder's tiles).
    pub tuning: TuningMode,
}

/// A RoPE frequency table and the buffer holding it.
type RopeTable = (Vec<[u32; 2]>, Arc<wgpu::Buffer>);

struct GpuLinear {
    /// `[in, out]`: `x·Wᵀ` with the weight stored transposed once at upload, so
    /// the GEMM reads it row-major.
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl GpuLinear {
    fn upload(gpu: &Gpu, lin: &Linear) -> Result<GpuLinear> {
        Ok(GpuLinear {
            weight_t: Tensor::from_slice_as(
                gpu,
                &lin.weight_t(),
                &[lin.in_features, lin.out_features],
                lin.dtype,
            )?,
            bias: lin
                .bias
                .as_ref()
                .map(|b| Tensor::from_slice_as(gpu, b, &[b.len()], lin.dtype))
                .transpose()?,
        })
    }

    /// `x·Wᵀ + b` into `out`, or a new tensor.
    fn record(&self, rec: &mut Recorder<'_>, x: &Tensor, out: Option<&Tensor>) -> Result<Tensor> {
        record_matmul_to(rec, x, &self.weight_t, self.bias.as_ref(), out)
    }
}

/// A multi-head (or grouped-/multi-query) attention layer with its weights on the GPU.
///
/// ```
/// use wgpu_attention::reference::{self, MhaReferenceOptions};
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// use wgpu_attention::{Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let cfg = MhaConfig::new(16, 4)?.with_kv_heads(2)?; // 4 heads of 4, GQA
/// let weights = MhaWeights::random(&cfg, 1)?;
/// let layer = MultiHeadAttention::new(&gpu, cfg, &weights)?;
/// let (b, n) = (2, 5);
/// let x: Vec<f32> = (0..b * n * 16).map(|i| (i as f32 * 0.1).sin()).collect();
/// let xt = Tensor::from_slice(&gpu, &x, &[b, n, 16])?; // [B, N, d_model]
/// let mut opts = MhaOptions::default();
/// opts.masking.causal = true;
/// let y = layer.forward(&xt, None, &opts)?; // self-attention
/// assert_eq!(y.shape(), [b, n, 16]);
/// // The f64 twin of the whole layer.
/// let ropts = MhaReferenceOptions { masking: opts.masking.clone(), ..Default::default() };
/// let want = reference::multi_head_attention(&x, &x, [b, n, n], &cfg, &weights, &ropts);
/// assert_close(&y.to_vec_blocking()?, &want, Tolerance::F32, "layer");
/// # Ok(()) }
/// ```
pub struct MultiHeadAttention {
    cfg: MhaConfig,
    gpu: Gpu,
    q: GpuLinear,
    k: GpuLinear,
    v: GpuLinear,
    o: GpuLinear,
    slopes: Vec<f32>,
    /// The last RoPE frequency table uploaded and its buffer: a decode step
    /// changes only the offset, which is a uniform, so the table is reused.
    rope_table: Mutex<Option<RopeTable>>,
}

impl MultiHeadAttention {
    /// Uploads `weights` (checked against `cfg`: [`Error::Weights`] or
    /// [`Error::Config`] on a mismatch), each projection in its own dtype.
    pub fn new(gpu: &Gpu, cfg: MhaConfig, weights: &MhaWeights) -> Result<Self> {
        weights.check(&cfg)?;
        Ok(MultiHeadAttention {
            cfg,
            gpu: gpu.clone(),
            q: GpuLinear::upload(gpu, &weights.q)?,
            k: GpuLinear::upload(gpu, &weights.k)?,
            v: GpuLinear::upload(gpu, &weights.v)?,
            o: GpuLinear::upload(gpu, &weights.o)?,
            slopes: alibi_slopes(cfg.num_heads),
            rope_table: Mutex::new(None),
        })
    }

    /// Bytes the weights take on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        [&self.q, &self.k, &self.v, &self.o]
            .iter()
            .map(|l| l.weight_t.buffer().size() + l.bias.as_ref().map_or(0, |b| b.buffer().size()))
            .sum()
    }

    /// The layer's shape, as given to [`MultiHeadAttention::new`].
    pub fn config(&self) -> &MhaConfig {
        &self.cfg
    }

    /// Self-attention when `x_kv` is `None`, cross-attention otherwise:
    /// `x_q` `[B, Nq, d_model]`, `x_kv` `[B, Nk, d_model]` → `[B, Nq, d_model]`
    /// (contiguous, in `x_q`'s dtype), in one submission. Inputs of another
    /// rank or width, or batches that differ, are [`Error::Shape`]; the masks
    /// and options are checked as by [`crate::attention()`].
    pub fn forward(
        &self,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
    ) -> Result<Tensor> {
        let mut rec = self.gpu.recorder();
        let y = self.record_forward(&mut rec, x_q, x_kv, opts)?;
        rec.submit()?;
        Ok(y)
    }

    /// Records [`MultiHeadAttention::forward`] without submitting. The
    /// projections, rotated Q/K and the attention output are scratch: from the
    /// recorder's [`crate::Workspace`] when it has one.
    pub fn record_forward(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
    ) -> Result<Tensor> {
        self.record_forward_to(rec, x_q, x_kv, opts, None)
    }

    /// [`MultiHeadAttention::record_forward`] writing Y into the caller's
    /// tensor (contiguous `[B, Nq, d_model]` from element 0, in `x_q`'s
    /// dtype). With a [`crate::Workspace`] on the recorder (e.g. over the
    /// caller's encoder, [`Gpu::recorder_for`]) a step of the same shapes
    /// allocates nothing once the workspace has grown.
    pub fn record_forward_into(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
        y: &Tensor,
    ) -> Result<()> {
        self.record_forward_to(rec, x_q, x_kv, opts, Some(y))
            .map(|_| ())
    }

    fn record_forward_to(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mark = rec.scratch_mark();
        let out = self.record_steps(rec, x_q, x_kv, opts, y);
        rec.release_scratch(mark);
        out
    }

    fn record_steps(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let x_kv = x_kv.unwrap_or(x_q);
        let (b, nq) = self.input_dims(x_q, "x_q")?;
        let (bk, nk) = self.input_dims(x_kv, "x_kv")?;
        if b != bk {
            return Err(Error::Shape(format!(
                "x_q has batch {b} but x_kv has batch {bk}"
            )));
        }
        let (h, hkv, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let (xd, kvd) = (x_q.dtype(), x_kv.dtype());
        // [B, N, H·D] seen as [B, H, N, D]: the BNHD strides of a projection output.
        let heads =
            |t: &Tensor, n: usize, h: usize| t.view(&[b, h, n, d], &[n * h * d, d, h * d, 1], 0);
        let project = |rec: &mut Recorder<'_>, lin: &GpuLinear, x: &Tensor, n, h, dt| {
            let out = rec.scratch("projection", &[b, n, h * d], dt)?;
            heads(&lin.record(rec, x, Some(&out))?, n, h)
        };
        let mut q = project(rec, &self.q, x_q, nq, h, xd)?;
        let mut k = project(rec, &self.k, x_kv, nk, hkv, kvd)?;
        let v = project(rec, &self.v, x_kv, nk, hkv, kvd)?;
        if let Some(rope) = &opts.rope {
            let table = self.rope_table(rope)?;
            let rotate = |rec: &mut Recorder<'_>, x: &Tensor, n: usize, h: usize| {
                let out = heads(&rec.scratch("rope", &[b, n, h * d], x.dtype())?, n, h)?;
                record_rope_to(rec, x, rope, Some(&out), Some(&table))
            };
            q = rotate(rec, &q, nq, h)?;
            k = rotate(rec, &k, nk, hkv)?;
        }
        let attn = AttentionOptions {
            scale: opts.scale,
            masking: opts.masking.clone(),
            mask: opts.mask,
            alibi: opts.alibi.then_some(&self.slopes[..]),
            tuning: opts.tuning,
            ..Default::default()
        };
        // O in BNHD, so its buffer is [B, Nq, H·D]: the merge is a view.
        let o_buf = rec.scratch("attention output", &[b, nq, h * d], xd)?;
        let o = heads(&o_buf, nq, h)?;
        let outs = AttentionOutputs {
            o: Some(&o),
            lse: None,
        };
        record_attention_into(rec, &q, &k, &v, &attn, outs)?;
        self.o.record(rec, &o_buf, y)
    }

    /// The frequency table of `rope` for this layer's head dim, uploaded once
    /// per distinct table.
    fn rope_table(&self, rope: &Rope) -> Result<Arc<wgpu::Buffer>> {
        let want = rope_table(rope, self.cfg.head_dim)?;
        let mut slot = self.rope_table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((have, buf)) = slot.as_ref() {
            if *have == want {
                return Ok(buf.clone());
            }
        }
        let buf = Arc::new(self.gpu.upload(
            "rope frequencies",
            bytemuck::cast_slice(&want),
            wgpu::BufferUsages::STORAGE,
        )?);
        *slot = Some((want, buf.clone()));
        Ok(buf)
    }

    fn input_dims(&self, x: &Tensor, what: &str) -> Result<(usize, usize)> {
        match *x.shape() {
            [b, n, dm] if dm == self.cfg.d_model => Ok((b, n)),
            _ => Err(Error::Shape(format!(
                "{what} must be [B, N, d_model = {}], got {:?}",
                self.cfg.d_model,
                x.shape()
            ))),
        }
    }
}

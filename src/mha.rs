//! The multi-head attention layer `MultiHead(Q,K,V) = Concat(head_1..head_h)·W^O`
//! with `head_i = Attention(X_q W_i^Q, X_kv W_i^K, X_kv W_i^V)`, as real model
//! families define it: biases on any subset of the projections, QK-norm,
//! RoPE with frequency scaling and position ids, ALiBi, softcap, sliding
//! windows, attention sinks, GQA, value heads of another width.
//!
//! Data flow (one command encoder, one submission):
//!
//! ```text
//! X [B,N,d_model] ─matmul [W_Q;W_K;W_V]ᵀ(+b)─▶ [B,N,Wq+Wk+Wv] ═views═▶ Q [B,Hq,N,D'] K [B,Hkv,N,D'] V [B,Hkv,N,D']
//!   (cross-attention: X_q · W_Qᵀ and X_kv · [W_K;W_V]ᵀ, views of the same fused weight)
//! Q, K ─rms_norm (QK-norm)─▶ ─rope (scaling, position ids)─▶
//!                    attention(Q, K, V; masks, window, ALiBi, softcap, sinks, GQA)   or, with a
//!                    KvCache: append K, V at the cache's end, attend Q against the whole cache
//!  O [B,Hq,Nq,D'] in BNHD = [B,Nq,Hq·D'] ═view═▶ ─matmul W_Oᵀ(+b)─▶ Y [B,Nq,d_model]
//! ```
//! Heads are split and merged by strides only: no transpose kernel. On the
//! GPU every head is `D' = max(head_dim, v_head_dim)` channels wide: a
//! narrower Q/K or V head is padded with zero rows of its projection (and the
//! output projection with zero columns), which adds nothing to a score or an
//! output; QK-norm and RoPE see only the `head_dim` real channels and the
//! default scale is `1/sqrt(head_dim)`.
//!
//! Each projection's weights stay on the GPU in their dtype ([`Linear::dtype`]:
//! f16/bf16 checkpoints are not widened; q, k and v of different dtypes share
//! an f32 fused weight); the activations (Q, K, V, O, Y) are in `x_q`'s
//! dtype, every GEMM and the attention accumulating in f32.

use std::sync::{Arc, Mutex};

use crate::attention::{
    record_attention_into, AttentionOptions, AttentionOutputs, AttentionPath, TuningMode,
};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::gpu::Recorder;
use crate::kernels::matmul::record_matmul_to;
use crate::kernels::rms_norm::record_rms_norm_to;
use crate::kernels::rope::{record_rope_to, rope_seq_len, rope_table, RopeInputs};
use crate::kv_cache::KvCache;
use crate::mask::Masking;
use crate::mask_tensor::MaskTensor;
use crate::positional::{alibi_slopes, Rope};
use crate::tensor::Tensor;
use crate::weights::{Linear, MhaConfig, MhaWeights};
use crate::DType;

/// Per-call options of [`MultiHeadAttention::forward`].
#[derive(Clone, Debug, Default)]
pub struct MhaOptions<'a> {
    /// Causal / window / key-padding rules.
    pub masking: Masking,
    /// Dense mask broadcastable to `[B, Hq, Nq, Nk]`.
    pub mask: Option<&'a MaskTensor>,
    /// Rotary embedding of Q and K (rows at positions `offset + n`, or
    /// [`MhaOptions::position_ids`]); its rotary dims count the layer's
    /// `head_dim`.
    pub rope: Option<Rope>,
    /// The position of each query token, `[B, Nq]` row-major (Hugging Face's
    /// `position_ids`), instead of `rope.offset + n`: left-padded batches,
    /// packed sequences. In self-attention the keys take the same positions;
    /// cross-attention with RoPE takes none (an error). One small buffer is
    /// uploaded per call.
    pub position_ids: Option<&'a [u32]>,
    /// ALiBi with the paper's slopes for `num_heads`.
    pub alibi: bool,
    /// Softmax scale; `None` = `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// `c·tanh(s/c)` on the scaled scores (Gemma 2).
    pub softcap: Option<f32>,
    /// A caller's WGSL `score_mod` / `mask_mod` ([`crate::mods`]): `q` is
    /// the query's index in the call, `kv` the key's position (in a cache:
    /// in the whole sequence).
    pub mods: Option<&'a crate::mods::Mods>,
    /// Which attention kernels run ([`AttentionPath::Auto`] by default).
    pub path: AttentionPath,
    /// How the attention's kernel variants are chosen (the projections' GEMM
    /// keeps the recorder's tiles).
    pub tuning: TuningMode,
}

/// A RoPE frequency table (fixed-point words and attention factor) and the
/// buffer holding it.
type RopeTable = ((Vec<[u32; 2]>, f32), Arc<wgpu::Buffer>);

/// A linear map on the GPU: `[in, out]` (`x·Wᵀ` with the weight stored
/// transposed once at upload, so the GEMM reads it row-major), and its bias.
struct GpuLinear {
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

    /// Columns `c0..c0 + n` of the map (a view of the weight and bias).
    fn columns(&self, c0: usize, n: usize) -> Result<GpuLinear> {
        let [inp, out] = [self.weight_t.shape()[0], self.weight_t.shape()[1]];
        Ok(GpuLinear {
            weight_t: self.weight_t.view(&[inp, n], &[out, 1], c0)?,
            bias: self
                .bias
                .as_ref()
                .map(|b| b.view(&[n], &[1], c0))
                .transpose()?,
        })
    }

    /// `x·Wᵀ + b` into `out`, or a new tensor.
    fn record(&self, rec: &mut Recorder<'_>, x: &Tensor, out: Option<&Tensor>) -> Result<Tensor> {
        record_matmul_to(rec, x, &self.weight_t, self.bias.as_ref(), out)
    }
}

/// `lin`'s rows (its outputs) regrouped in `heads` heads of `dim` rows, each
/// padded with zero rows to `width`: `[heads·width, in]`, and its bias alike.
fn pad_rows(lin: &Linear, heads: usize, dim: usize, width: usize) -> (Vec<f32>, Option<Vec<f32>>) {
    let inp = lin.in_features;
    let mut w = vec![0.0; heads * width * inp];
    let mut b = lin.bias.as_ref().map(|_| vec![0.0; heads * width]);
    for h in 0..heads {
        for r in 0..dim {
            let (src, dst) = (h * dim + r, h * width + r);
            w[dst * inp..(dst + 1) * inp].copy_from_slice(&lin.weight[src * inp..(src + 1) * inp]);
            if let (Some(b), Some(lb)) = (b.as_mut(), lin.bias.as_ref()) {
                b[dst] = lb[src];
            }
        }
    }
    (w, b)
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
    /// Q, K and V in one map `[d_model, Wq + Wk + Wv]`, each head `D'` wide.
    qkv: GpuLinear,
    /// `[Hq·D', d_model]` (zero rows for padded channels).
    o: GpuLinear,
    /// QK-norm weights of Q and K.
    norms: Option<(wgpu::Buffer, wgpu::Buffer)>,
    sinks: Option<Vec<f32>>,
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
        let (hq, hkv, d, dv) = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.v_head_dim,
        );
        let hd = d.max(dv);
        let dm = cfg.d_model;
        // [W_Q; W_K; W_V] with every head hd rows, then transposed.
        let parts = [
            pad_rows(&weights.q, hq, d, hd),
            pad_rows(&weights.k, hkv, d, hd),
            pad_rows(&weights.v, hkv, dv, hd),
        ];
        let rows = (hq + 2 * hkv) * hd;
        let mut weight = Vec::with_capacity(rows * dm);
        let mut bias = Vec::with_capacity(rows);
        let any_bias = parts.iter().any(|(_, b)| b.is_some());
        for (w, b) in &parts {
            weight.extend_from_slice(w);
            bias.extend(b.clone().unwrap_or_else(|| vec![0.0; w.len() / dm]));
        }
        let qkv_dtype = match (weights.q.dtype, weights.k.dtype, weights.v.dtype) {
            (a, b, c) if a == b && b == c => a,
            // Widening is exact: a mix shares an f32 weight.
            _ => DType::F32,
        };
        let qkv = Linear {
            out_features: rows,
            in_features: dm,
            weight,
            bias: any_bias.then_some(bias),
            dtype: qkv_dtype,
        };
        // W_O's columns per head padded to hd: the transpose of padding rows.
        let o_t = Linear {
            out_features: weights.o.in_features,
            in_features: dm,
            weight: weights.o.weight_t(),
            bias: None,
            dtype: weights.o.dtype,
        };
        let (o_rows, _) = pad_rows(&o_t, hq, dv, hd);
        let o = Linear {
            out_features: dm,
            in_features: hq * hd,
            weight: transpose(&o_rows, hq * hd, dm),
            bias: weights.o.bias.clone(),
            dtype: weights.o.dtype,
        };
        let norms = match (&weights.q_norm, &weights.k_norm) {
            (Some(qn), Some(kn)) => Some((
                gpu.upload(
                    "q_norm",
                    bytemuck::cast_slice(qn),
                    wgpu::BufferUsages::STORAGE,
                )?,
                gpu.upload(
                    "k_norm",
                    bytemuck::cast_slice(kn),
                    wgpu::BufferUsages::STORAGE,
                )?,
            )),
            _ => None,
        };
        Ok(MultiHeadAttention {
            cfg,
            gpu: gpu.clone(),
            qkv: GpuLinear::upload(gpu, &qkv)?,
            o: GpuLinear::upload(gpu, &o)?,
            norms,
            sinks: weights.sinks.clone(),
            slopes: alibi_slopes(cfg.num_heads),
            rope_table: Mutex::new(None),
        })
    }

    /// Bytes the weights take on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        [&self.qkv, &self.o]
            .iter()
            .map(|l| l.weight_t.buffer().size() + l.bias.as_ref().map_or(0, |b| b.buffer().size()))
            .sum()
    }

    /// The layer's shape, as given to [`MultiHeadAttention::new`].
    pub fn config(&self) -> &MhaConfig {
        &self.cfg
    }

    /// Channels of each K/V head on the GPU (`max(head_dim, v_head_dim)`):
    /// the head dim of a [`KvCache`] for [`MultiHeadAttention::forward_cached`].
    pub fn cache_head_dim(&self) -> usize {
        self.cfg.head_dim.max(self.cfg.v_head_dim)
    }

    /// A KV cache for this layer: `b` sequences of up to `capacity` positions,
    /// holding `dtype`.
    pub fn new_cache(&self, b: usize, capacity: usize, dtype: DType) -> Result<KvCache> {
        KvCache::new_with_dtype(
            &self.gpu,
            b,
            self.cfg.num_kv_heads,
            self.cache_head_dim(),
            capacity,
            dtype,
        )
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
    /// projections, normed and rotated Q/K and the attention output are
    /// scratch: from the recorder's [`crate::Workspace`] when it has one.
    pub fn record_forward(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
    ) -> Result<Tensor> {
        self.record_forward_to(rec, x_q, Kv::Input(x_kv), opts, None)
    }

    /// [`MultiHeadAttention::record_forward`] writing Y into the caller's
    /// tensor (contiguous `[B, Nq, d_model]` from element 0, in `x_q`'s
    /// dtype). With a [`crate::Workspace`] on the recorder (e.g. over the
    /// caller's encoder, [`Gpu::recorder_for`]) a step of the same shapes
    /// allocates nothing once the workspace has grown (position ids add one
    /// small buffer per call).
    pub fn record_forward_into(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        x_kv: Option<&Tensor>,
        opts: &MhaOptions,
        y: &Tensor,
    ) -> Result<()> {
        self.record_forward_to(rec, x_q, Kv::Input(x_kv), opts, Some(y))
            .map(|_| ())
    }

    /// Self-attention of new tokens `x` `[B, N, d_model]` against a KV cache:
    /// their K and V (normed and rotated at positions `cache.len() + n`, or
    /// [`MhaOptions::position_ids`]) are appended to `cache`, then their
    /// queries attend to every cached position, in one submission. The
    /// cache's head dim is [`MultiHeadAttention::cache_head_dim`]
    /// ([`MultiHeadAttention::new_cache`]). `opts.rope.offset` is ignored (the
    /// cache length is the offset); causal masks align bottom-right (the new
    /// tokens are the newest positions).
    ///
    /// ```
    /// use wgpu_attention::reference::{self, MhaReferenceOptions};
    /// use wgpu_attention::verify::{assert_close, Tolerance};
    /// use wgpu_attention::{DType, Gpu, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Rope, Tensor};
    /// # fn main() -> wgpu_attention::Result<()> {
    /// let gpu = Gpu::new_blocking(&Default::default())?;
    /// let cfg = MhaConfig::new(16, 4)?.with_kv_heads(2)?;
    /// let weights = MhaWeights::random(&cfg, 3)?;
    /// let layer = MultiHeadAttention::new(&gpu, cfg, &weights)?;
    /// let mut cache = layer.new_cache(1, 16, DType::F32)?;
    /// let x: Vec<f32> = (0..6 * 16).map(|i| (i as f32 * 0.3).cos()).collect();
    /// let mut opts = MhaOptions { rope: Some(Rope::default()), ..Default::default() };
    /// opts.masking.causal = true;
    /// // A prompt of 5 tokens, then one more: the last row equals the full pass's.
    /// layer.forward_cached(&Tensor::from_slice(&gpu, &x[..5 * 16], &[1, 5, 16])?, &mut cache, &opts)?;
    /// let y = layer.forward_cached(&Tensor::from_slice(&gpu, &x[5 * 16..], &[1, 1, 16])?, &mut cache, &opts)?;
    /// let ropts = MhaReferenceOptions { masking: opts.masking.clone(), rope: opts.rope.clone(), ..Default::default() };
    /// let full = reference::multi_head_attention(&x, &x, [1, 6, 6], &cfg, &weights, &ropts);
    /// assert_close(&y.to_vec_blocking()?, &full[5 * 16..], Tolerance::F32, "step");
    /// # Ok(()) }
    /// ```
    pub fn forward_cached(
        &self,
        x: &Tensor,
        cache: &mut KvCache,
        opts: &MhaOptions,
    ) -> Result<Tensor> {
        let mut rec = self.gpu.recorder();
        let y = self.record_forward_cached(&mut rec, x, cache, opts)?;
        rec.submit()?;
        Ok(y)
    }

    /// Records [`MultiHeadAttention::forward_cached`] without submitting
    /// (the cache counts the new positions as soon as they are recorded).
    pub fn record_forward_cached(
        &self,
        rec: &mut Recorder<'_>,
        x: &Tensor,
        cache: &mut KvCache,
        opts: &MhaOptions,
    ) -> Result<Tensor> {
        self.record_forward_to(rec, x, Kv::Cache(cache), opts, None)
    }

    fn record_forward_to(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        kv: Kv<'_, '_>,
        opts: &MhaOptions,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let mark = rec.scratch_mark();
        let out = self.record_steps(rec, x_q, kv, opts, y);
        rec.release_scratch(mark);
        out
    }

    fn record_steps(
        &self,
        rec: &mut Recorder<'_>,
        x_q: &Tensor,
        kv: Kv<'_, '_>,
        opts: &MhaOptions,
        y: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, nq) = self.input_dims(x_q, "x_q")?;
        let (h, hkv, d, dv) = (c.num_heads, c.num_kv_heads, c.head_dim, c.v_head_dim);
        let hd = d.max(dv);
        let (wq, wk) = (h * hd, hkv * hd);
        let xd = x_q.dtype();
        let cross = matches!(kv, Kv::Input(Some(_)));
        let (nk, kvd) = match &kv {
            Kv::Input(Some(x_kv)) => {
                let (bk, nk) = self.input_dims(x_kv, "x_kv")?;
                if b != bk {
                    return Err(Error::Shape(format!(
                        "x_q has batch {b} but x_kv has batch {bk}"
                    )));
                }
                (nk, x_kv.dtype())
            }
            _ => (nq, xd),
        };
        if let Some(ids) = opts.position_ids {
            if cross && opts.rope.is_some() {
                return Err(Error::InvalidArgument(
                    "position ids with RoPE are for self-attention (the keys take the queries' positions); cross-attention takes offsets only".into(),
                ));
            }
            if ids.len() != b * nq {
                return Err(Error::InvalidArgument(format!(
                    "position_ids has {} values for [B, Nq] = [{b}, {nq}]: give one per query token",
                    ids.len()
                )));
            }
        }
        // Projections: one GEMM into [B, N, Wq + Wk + Wv] (self), or Q and
        // [K; V] from views of the same map (cross); heads are views.
        let heads = |t: &Tensor, off: usize, n: usize, nh: usize| {
            let w = t.shape()[2];
            t.view(&[b, nh, n, hd], &[n * w, hd, w, 1], off)
        };
        let (q, k, v) = if let Kv::Input(Some(x_kv)) = &kv {
            let pq = rec.scratch("q projection", &[b, nq, wq], xd)?;
            let pq = self.qkv.columns(0, wq)?.record(rec, x_q, Some(&pq))?;
            let pkv = rec.scratch("kv projection", &[b, nk, 2 * wk], kvd)?;
            let pkv = self
                .qkv
                .columns(wq, 2 * wk)?
                .record(rec, x_kv, Some(&pkv))?;
            (
                heads(&pq, 0, nq, h)?,
                heads(&pkv, 0, nk, hkv)?,
                heads(&pkv, wk, nk, hkv)?,
            )
        } else {
            let p = rec.scratch("qkv projection", &[b, nq, wq + 2 * wk], xd)?;
            let p = self.qkv.record(rec, x_q, Some(&p))?;
            (
                heads(&p, 0, nq, h)?,
                heads(&p, wq, nq, hkv)?,
                heads(&p, wq + wk, nq, hkv)?,
            )
        };
        // QK-norm, then RoPE; each writes a contiguous BNHD scratch.
        let bnhd = |rec: &mut Recorder<'_>, what: &str, x: &Tensor, n: usize, nh: usize| {
            let t = rec.scratch(what, &[b, n, nh * hd], x.dtype())?;
            t.view(&[b, nh, n, hd], &[n * nh * hd, hd, nh * hd, 1], 0)
        };
        let (mut q, mut k) = (q, k);
        if let (Some(norm), Some((qw, kw))) = (c.qk_norm, &self.norms) {
            let apply =
                |rec: &mut Recorder<'_>, x: &Tensor, w: &wgpu::Buffer, n: usize, nh: usize| {
                    let out = bnhd(rec, "qk-norm", x, n, nh)?;
                    if norm.per_head {
                        record_rms_norm_to(rec, x, w, d, d, &norm.norm, Some(&out))
                    } else {
                        // The whole projection row: [B, 1, N, H·D] (hd == d here).
                        let s = x.strides();
                        let row =
                            x.view(&[b, 1, n, nh * hd], &[s[0], nh * hd, s[2], 1], x.offset())?;
                        let orow =
                            out.view(&[b, 1, n, nh * hd], &[n * nh * hd, nh * hd, nh * hd, 1], 0)?;
                        record_rms_norm_to(rec, &row, w, nh * d, nh * d, &norm.norm, Some(&orow))?;
                        Ok(out)
                    }
                };
            q = apply(rec, &q, qw, nq, h)?;
            k = apply(rec, &k, kw, nk, hkv)?;
        }
        let past = match &kv {
            Kv::Cache(cache) => cache.len(),
            _ => 0,
        };
        if let Some(rope) = &opts.rope {
            // RoPE over the head_dim real channels of each D'-wide head.
            let rope = Rope {
                rotary_dims: Some(rope.rotary(d)?),
                offset: if matches!(kv, Kv::Cache(_)) {
                    u32::try_from(past).map_err(|_| {
                        Error::InvalidArgument("KV cache longer than u32 positions".into())
                    })?
                } else {
                    rope.offset
                },
                ..rope.clone()
            };
            let q_in = self.rope_inputs(&rope, b, nq, opts.position_ids)?;
            let out = bnhd(rec, "rope q", &q, nq, h)?;
            q = record_rope_to(rec, &q, &rope, Some(&out), &q_in)?;
            // Cross-attention: the keys' own positions (offset + j).
            let k_in = if cross {
                self.rope_inputs(&rope, b, nk, None)?
            } else {
                q_in
            };
            let out = bnhd(rec, "rope k", &k, nk, hkv)?;
            k = record_rope_to(rec, &k, &rope, Some(&out), &k_in)?;
        }
        let attn = AttentionOptions {
            scale: Some(opts.scale.unwrap_or(1.0 / (d as f32).sqrt())),
            masking: opts.masking.clone(),
            mask: opts.mask,
            alibi: opts.alibi.then_some(&self.slopes[..]),
            softcap: opts.softcap,
            sinks: self.sinks.as_deref(),
            mods: opts.mods,
            path: opts.path,
            tuning: opts.tuning,
            ..Default::default()
        };
        // O in BNHD, so its buffer is [B, Nq, H·D']: the merge is a view.
        let o_buf = rec.scratch("attention output", &[b, nq, h * hd], xd)?;
        let o = o_buf.view(&[b, h, nq, hd], &[nq * h * hd, hd, h * hd, 1], 0)?;
        let outs = AttentionOutputs {
            o: Some(&o),
            lse: None,
        };
        match kv {
            Kv::Cache(cache) => {
                cache.record_append(rec, &k, &v)?;
                cache.record_attend_into(rec, &q, &attn, outs)?;
            }
            Kv::Input(_) => {
                record_attention_into(rec, &q, &k, &v, &attn, outs)?;
            }
        }
        self.o.record(rec, &o_buf, y)
    }

    /// The RoPE inputs of `rope` for `b` rows of `n` positions: the frequency
    /// table uploaded once per distinct table, position ids per call.
    fn rope_inputs(
        &self,
        rope: &Rope,
        b: usize,
        n: usize,
        ids: Option<&[u32]>,
    ) -> Result<RopeInputs> {
        let seq_len = rope_seq_len(rope, b, n, ids)?;
        let want = rope_table(rope, self.cfg.head_dim, seq_len)?;
        let table = {
            let mut slot = self.rope_table.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some((have, buf)) if *have == want => buf.clone(),
                _ => {
                    let buf = Arc::new(self.gpu.upload(
                        "rope frequencies",
                        bytemuck::cast_slice(&want.0),
                        wgpu::BufferUsages::STORAGE,
                    )?);
                    *slot = Some((want.clone(), buf.clone()));
                    buf
                }
            }
        };
        let ids = ids
            .map(|p| {
                self.gpu
                    .upload(
                        "rope positions",
                        bytemuck::cast_slice(p),
                        wgpu::BufferUsages::STORAGE,
                    )
                    .map(Arc::new)
            })
            .transpose()?;
        Ok(RopeInputs {
            table,
            mscale: want.1,
            ids,
        })
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

/// Where the keys and values of a forward pass come from.
enum Kv<'c, 'x> {
    /// Projected from `x_kv` (cross-attention) or from `x_q` (`None`: self-attention).
    Input(Option<&'x Tensor>),
    /// The new tokens' own, appended to a cache first.
    Cache(&'c mut KvCache),
}

/// `m` `[rows, cols]` row-major, transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

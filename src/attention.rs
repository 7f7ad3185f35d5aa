//! Attention composed from kernels: options → which kernels, recorded into one
//! command encoder and submitted once.
//!
//! The unfused path: `S = scale·QKᵀ (+ additive mask)` → masked softmax (→ LSE)
//! → `O = P·V`. It materializes the `[B, Hq, Nq, Nk]` weights, which is what
//! makes it the path that can return them. Without weights, a problem whose
//! scores exceed one storage binding runs in chunks of (batch, heads) through
//! two reused scratch buffers (see [`unfused_heads_per_pass`]).

use crate::dispatch::Recorder;
use crate::error::{Error, Result};
use crate::kernels::{
    attn_shape, decode, flash_attention, same_device, scores, softmax, weighted_sum, MaskRef,
};
use crate::mask::Masking;
use crate::mask_tensor::{MaskKind, MaskTensor};
use crate::shape::AttnShape;
use crate::tensor::Tensor;

/// What to compute besides `O`, and how to mask.
#[derive(Clone, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// Softmax scale; `None` = `1/sqrt(D)`.
    pub scale: Option<f32>,
    /// Causal / sliding-window / key-padding rules.
    pub masking: Masking,
    /// A dense bool or additive mask broadcastable to `[B, Hq, Nq, Nk]`.
    pub mask: Option<&'a MaskTensor>,
    /// ALiBi slopes, one per query head ([`crate::alibi_slopes`] gives the paper's):
    /// `− slope·|i + offset − j|`, distance from the diagonal aligned as `masking.alignment`.
    pub alibi: Option<&'a [f32]>,
    /// `c·tanh(s/c)` on the scaled scores before masks and biases (Gemma-2 style).
    pub softcap: Option<f32>,
    /// Also return the attention weights `P` `[B, Hq, Nq, Nk]` (unfused path only).
    pub return_weights: bool,
    /// Also return the log-sum-exp `[B, Hq, Nq]` (`-inf` for fully masked rows).
    pub return_lse: bool,
    /// Which kernels run; [`AttentionPath::Auto`] by default.
    pub path: AttentionPath,
    /// Keys per split of the decode path; `None` = 512, longer past 256 splits
    /// (`Nk / 256`), and shorter where the driver's loop budget requires.
    pub kv_split: Option<usize>,
}

/// The kernels that compute attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionPath {
    /// Unfused when the weights are requested; decode for few queries (≤ 16)
    /// against 1024 keys or more; otherwise fused (twice the unfused speed on
    /// lavapipe: BENCHMARKS.md), or decode where the fused kernel would exceed the
    /// driver's loop budget.
    #[default]
    Auto,
    /// One fused kernel with an online softmax: O(N) memory, no weights.
    Fused,
    /// `scores` → `softmax` → `weighted_sum`: materializes `[B, Hq, Nq, Nk]`.
    Unfused,
    /// Split-KV (flash-decoding): the fused kernel over chunks of keys in
    /// parallel, merged by LSE. For few queries against a long KV.
    Decode,
}

/// Results of [`attention()`].
#[derive(Clone, Debug)]
pub struct Attention {
    /// `[B, Hq, Nq, D]`, stored in the same layout as Q.
    pub o: Tensor,
    pub lse: Option<Tensor>,
    pub weights: Option<Tensor>,
    /// The path that ran (what [`AttentionPath::Auto`] resolved to).
    pub path: AttentionPath,
}

/// `softmax(scale·QKᵀ + mask)·V` for `q` `[B, Hq, Nq, D]`, `k` and `v`
/// `[B, Hkv, Nk, D]` (any strides, `Hq % Hkv == 0`), in one submission.
///
/// ```
/// use wgpu_attention::{attention, AttentionOptions, Gpu, Layout, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let dims = [1, 2, 5, 4]; // B, H, N, D
/// let x: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
/// let q = Tensor::from_bhnd(&gpu, &x, dims, Layout::Bhnd)?;
/// let mut opts = AttentionOptions::default();
/// opts.masking.causal = true;
/// let out = attention(&q, &q, &q, &opts)?;
/// let o = out.o.to_vec_blocking()?;
/// // The first query sees only the first key: its output is that key's value.
/// assert!((o[0] - x[0]).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Attention> {
    let mut rec = q.gpu().recorder();
    let out = record_attention(&mut rec, q, k, v, opts)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`attention()`] without submitting.
///
/// The unfused path without weights runs in chunks of (batch, query heads)
/// when the `[B, Hq, Nq, Nk]` scores exceed one storage binding (see
/// [`unfused_heads_per_pass`]); with weights it needs them in one tensor and
/// reports [`Error::BufferTooLarge`] instead.
pub fn record_attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Attention> {
    let sh = attn_shape(q, k)?;
    same_device(k, v, "K and V")?;
    let [bv, hv, nv, _] = v.dims4("V")?;
    if (bv, hv, nv) != (sh.b, sh.hkv, sh.nk) {
        return Err(Error::Shape(format!(
            "V is [{bv}, {hv}, {nv}, _] but K is [{}, {}, {}, _]: B, Hkv and Nk must match",
            sh.b, sh.hkv, sh.nk
        )));
    }
    opts.masking.validate(sh.b, sh.nk)?;
    let path = match opts.path {
        AttentionPath::Fused | AttentionPath::Decode if opts.return_weights => {
            return Err(Error::InvalidArgument(
                "only the unfused path builds the weights: use AttentionPath::Unfused (or Auto) with return_weights".into(),
            ));
        }
        AttentionPath::Auto => auto_path(q, &sh, opts, rec.tuning()),
        p => p,
    };
    if path != AttentionPath::Unfused {
        let fo = flash_attention::FusedOptions {
            scale: opts.scale,
            masking: &opts.masking,
            mask: opts.mask,
            alibi: opts.alibi,
            softcap: opts.softcap,
            want_lse: opts.return_lse,
            diag_offset: None,
        };
        let (o, lse) = if path == AttentionPath::Decode {
            decode::record_decode(rec, q, k, v, &fo, opts.kv_split)?
        } else {
            flash_attention::record_flash_attention(rec, q, k, v, &fo)?
        };
        return Ok(Attention {
            o,
            lse,
            weights: None,
            path,
        });
    }
    if !opts.return_weights {
        if let Some(heads) = unfused_chunk_heads(q.gpu(), &sh) {
            return record_unfused_chunked(rec, q, k, v, opts, &sh, heads);
        }
    }
    let (bias, dense) = split_mask(opts.mask);
    let alibi = opts.alibi.map(|slopes| scores::AlibiBias {
        slopes,
        diag_off: opts.masking.diagonal_offset(sh.nq, sh.nk),
    });
    let s = scores::record_scores(rec, q, k, opts.scale, bias, alibi, opts.softcap)?;
    let sm = softmax::record_softmax(rec, &s, &opts.masking, dense, opts.return_lse)?;
    let o = weighted_sum::record_weighted_sum(rec, &sm.p, v, q.layout())?;
    Ok(Attention {
        o,
        lse: sm.lse,
        weights: opts.return_weights.then_some(sm.p),
        path: AttentionPath::Unfused,
    })
}

/// Query heads whose scores the unfused path without weights holds at once on
/// `gpu`: all B·Hq when they fit one storage binding, else one chunk's (see
/// [`record_attention`]). For memory estimates.
pub fn unfused_heads_per_pass(gpu: &crate::Gpu, sh: &AttnShape) -> usize {
    unfused_chunk_heads(gpu, sh).unwrap_or(sh.b * sh.hq)
}

/// Query heads per chunk of the unfused path without weights, when its
/// `[B, Hq, Nq, Nk]` scores do not fit one storage binding (or buffer) but one
/// batch's share of some heads does: the largest divisor of Hq that fits and
/// keeps whole KV heads per chunk (a multiple or a divisor of the GQA group).
/// `None` when everything fits (one pass) or not even one head does (the
/// caller's allocation then reports the size and the limit).
fn unfused_chunk_heads(gpu: &crate::Gpu, sh: &AttnShape) -> Option<usize> {
    let limits = gpu.limits();
    let limit = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    let bytes = |heads: usize| (heads * sh.nq * sh.nk) as u64 * 4;
    if bytes(sh.b * sh.hq) <= limit {
        return None;
    }
    let g = sh.group();
    (1..=sh.hq).rev().find(|&h| {
        sh.hq.is_multiple_of(h) && (h.is_multiple_of(g) || g.is_multiple_of(h)) && bytes(h) <= limit
    })
}

/// The unfused path in chunks of (batch b, `heads` query heads from h0): each
/// chunk's scores and weights go to the same two scratch tensors (recorded in
/// order, so each chunk waits for the previous one), O to its view of the whole
/// output, LSE through a scratch copied into place.
fn record_unfused_chunked<'a>(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions<'a>,
    sh: &AttnShape,
    heads: usize,
) -> Result<Attention> {
    let gpu = q.gpu();
    let dims = [sh.b, sh.hq, sh.nq, sh.nk];
    let (bias, dense) = split_mask(opts.mask);
    let placed = |m: Option<&'a MaskTensor>| m.map(|m| MaskRef::whole(gpu, m, dims)).transpose();
    let (bias, dense) = (placed(bias)?, placed(dense)?);
    let o_dims = [sh.b, sh.hq, sh.nq, sh.d];
    let o = Tensor::output(
        gpu,
        "attention output",
        &o_dims,
        Some(q.layout().strides(o_dims).to_vec()),
    )?;
    let lse = opts
        .return_lse
        .then(|| Tensor::output(gpu, "lse", &[sh.b, sh.hq, sh.nq], None))
        .transpose()?;
    let chunk = [1, heads, sh.nq, sh.nk];
    let s = Tensor::output(gpu, "scores (chunk)", &chunk, None)?;
    let p = Tensor::output(gpu, "attention weights (chunk)", &chunk, None)?;
    let lse_part = lse
        .as_ref()
        .map(|_| Tensor::output(gpu, "lse (chunk)", &[1, heads, sh.nq], None))
        .transpose()?;
    let kv_heads = (heads / sh.group()).max(1);
    let diag_off = opts.masking.diagonal_offset(sh.nq, sh.nk);
    for b in 0..sh.b {
        let masking = Masking {
            key_lengths: opts.masking.key_lengths.as_ref().map(|l| vec![l[b]]),
            ..opts.masking.clone()
        };
        for h0 in (0..sh.hq).step_by(heads) {
            let at = |m: MaskRef<'a>| MaskRef {
                offset: m.offset + b as u32 * m.strides[0] + h0 as u32 * m.strides[1],
                ..m
            };
            let qc = heads_view(q, b, h0, heads)?;
            let kc = heads_view(k, b, h0 / sh.group(), kv_heads)?;
            let vc = heads_view(v, b, h0 / sh.group(), kv_heads)?;
            let alibi = opts.alibi.map(|slopes| scores::AlibiBias {
                slopes: &slopes[h0..h0 + heads],
                diag_off,
            });
            scores::record_scores_into(
                rec,
                &qc,
                &kc,
                opts.scale,
                bias.map(at),
                alibi,
                opts.softcap,
                &s,
            )?;
            softmax::record_softmax_into(rec, &s, &masking, dense.map(at), &p, lse_part.as_ref())?;
            weighted_sum::record_weighted_sum_into(rec, &p, &vc, &heads_view(&o, b, h0, heads)?)?;
            if let (Some(all), Some(part)) = (&lse, &lse_part) {
                rec.encoder().copy_buffer_to_buffer(
                    part.buffer(),
                    0,
                    all.buffer(),
                    ((b * sh.hq + h0) * sh.nq * 4) as u64,
                    (heads * sh.nq * 4) as u64,
                );
            }
        }
    }
    Ok(Attention {
        o,
        lse,
        weights: None,
        path: AttentionPath::Unfused,
    })
}

/// The unfused path's two uses of a dense mask: an additive one is a bias added
/// by the scores kernel, a bool one is applied by the softmax.
fn split_mask(mask: Option<&MaskTensor>) -> (Option<&MaskTensor>, Option<&MaskTensor>) {
    match mask {
        Some(m) if m.kind() == MaskKind::Additive => (Some(m), None),
        other => (None, other),
    }
}

/// `[1, n, N, D]`: heads h0..h0+n of batch b of a `[B, H, N, D]` tensor.
fn heads_view(t: &Tensor, b: usize, h0: usize, n: usize) -> Result<Tensor> {
    let st = t.strides();
    let shape = t.shape();
    t.view(
        &[1, n, shape[2], shape[3]],
        st,
        t.offset() + b * st[0] + h0 * st[1],
    )
}

/// What [`AttentionPath::Auto`] resolves to for this problem on this device.
fn auto_path(
    q: &Tensor,
    sh: &AttnShape,
    opts: &AttentionOptions,
    tuning: crate::gpu::Tuning,
) -> AttentionPath {
    if opts.return_weights {
        return AttentionPath::Unfused;
    }
    if sh.nq <= 16 && sh.nk >= 1024 {
        return AttentionPath::Decode;
    }
    let gpu = q.gpu();
    let fused_fits = gpu.loop_budget().is_none_or(|b| {
        flash_attention::FusedVariant::new(tuning, sh.d, gpu.limits())
            .is_ok_and(|v| v.loop_iterations(sh.nk, sh.d) + 256 <= b)
    });
    if fused_fits {
        AttentionPath::Fused
    } else {
        AttentionPath::Decode
    }
}

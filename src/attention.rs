//! Attention composed from kernels: options → which kernels, recorded into one
//! command encoder and submitted once.
//!
//! The unfused path: `S = scale·QKᵀ (+ additive mask)` → masked softmax (→ LSE)
//! → `O = P·V`. It materializes the `[B, Hq, Nq, Nk]` weights, which is what
//! makes it the path that can return them.

use crate::dispatch::Recorder;
use crate::error::{Error, Result};
use crate::kernels::{
    attn_shape, decode, flash_attention, same_device, scores, softmax, weighted_sum,
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

/// Results of [`attention`].
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

/// Records [`attention`] without submitting.
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
    let (bias, dense) = match opts.mask {
        Some(m) if m.kind() == MaskKind::Additive => (Some(m), None),
        other => (None, other),
    };
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

//! Attention as its plan says: the problem is validated, [`crate::plan()`]
//! decides the kernels, and this module records them into one command encoder.
//!
//! The unfused path: `S = scale·QKᵀ (+ additive mask)` → masked softmax (→ LSE)
//! → `O = P·V`. It materializes the `[B, Hq, Nq, Nk]` weights, which is what
//! makes it the path that can return them. Without weights, a problem whose
//! scores exceed one storage binding runs in chunks of (batch, heads) through
//! two reused scratch buffers ([`Plan::unfused_heads_per_pass`]).

use crate::error::Result;
use crate::gpu::Recorder;
use crate::plan::{plan, AttentionProblem, Plan};
pub use crate::record::AttentionOutputs;
use crate::record::{record_plan, KvSource};
use crate::tensor::Tensor;

pub use crate::plan::{AttentionOptions, AttentionPath, TuningMode};
pub use crate::record::Attention;

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

/// Records [`attention()`] without submitting, under `opts.tuning` or else the
/// recorder's.
///
/// The unfused path without weights runs in chunks of (batch, query heads)
/// when the `[B, Hq, Nq, Nk]` scores exceed one storage binding; with weights it
/// needs them in one tensor and reports [`crate::Error::BufferTooLarge`] instead.
pub fn record_attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Attention> {
    record_attention_into(rec, q, k, v, opts, AttentionOutputs::default())
}

/// [`record_attention`] writing O (and the LSE) into the caller's tensors,
/// e.g. [`Tensor::from_buffer`] views of their own buffers: nothing is
/// allocated for them, and with a [`crate::Workspace`] on the recorder nothing
/// is allocated at all once the workspace has grown. Giving an LSE tensor asks
/// for the LSE; O's dtype is the output dtype unless `opts.out_dtype` says
/// otherwise (then they must agree). An output may not share a buffer with an
/// input. The returned [`Attention`] holds handles to the same tensors.
///
/// ```
/// use wgpu_attention::{record_attention_into, AttentionOptions, AttentionOutputs, Gpu, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let x = Tensor::from_slice(&gpu, &[0.5f32; 2 * 3 * 8], &[1, 2, 3, 8])?;
/// let o = Tensor::from_slice(&gpu, &[0.0f32; 2 * 3 * 8], &[1, 2, 3, 8])?;
/// let lse = Tensor::from_slice(&gpu, &[0.0f32; 6], &[1, 2, 3])?;
/// let mut rec = gpu.recorder();
/// let outs = AttentionOutputs { o: Some(&o), lse: Some(&lse) };
/// record_attention_into(&mut rec, &x, &x, &x, &AttentionOptions::default(), outs)?;
/// rec.submit()?;
/// // Every key is the same: O is that value, LSE is the score plus ln 3.
/// assert!(o.to_vec_blocking()?.iter().all(|&v| (v - 0.5).abs() < 1e-6));
/// let s = 8.0 * 0.25 / (8f32).sqrt();
/// assert!((lse.to_vec_blocking()?[0] - (s + 3f32.ln())).abs() < 1e-5);
/// # Ok(()) }
/// ```
pub fn record_attention_into(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    outs: AttentionOutputs<'_>,
) -> Result<Attention> {
    let opts = opts_for_outputs(opts, outs);
    let problem = AttentionProblem::new(q, k, v, &opts)?;
    let plan = plan_for(rec, q, &problem, &opts)?;
    record_plan(
        rec,
        &plan,
        &problem,
        q,
        &KvSource::Tensors(k, v),
        opts.mask,
        outs,
    )
}

/// `opts` as the caller's outputs imply: an LSE tensor asks for the LSE, O's
/// dtype is the output dtype unless the options name one (a disagreement is
/// reported when the outputs are checked, before recording).
pub(crate) fn opts_for_outputs<'a>(
    opts: &AttentionOptions<'a>,
    outs: AttentionOutputs<'_>,
) -> AttentionOptions<'a> {
    let mut opts = opts.clone();
    if outs.lse.is_some() {
        opts.return_lse = true;
    }
    if let Some(o) = outs.o {
        opts.out_dtype = opts.out_dtype.or(Some(o.dtype()));
    }
    opts
}

/// The plan of `problem` on `q`'s device, under `opts.tuning` or the recorder's.
pub(crate) fn plan_for(
    rec: &Recorder<'_>,
    q: &Tensor,
    problem: &AttentionProblem,
    opts: &AttentionOptions,
) -> Result<Plan> {
    let gpu = q.gpu();
    let tuning = match opts.tuning {
        TuningMode::Heuristic => rec.tuning(),
        TuningMode::Fixed(t) => gpu.granted_tuning(t),
        // Measuring blocks: not inside the caller's encoder.
        TuningMode::Autotune if rec.is_caller_encoder() => {
            crate::tune::tuned_if_cached(gpu, problem, rec.tuning())?
        }
        TuningMode::Autotune => crate::tune::tuned(gpu, problem, rec.tuning())?,
    };
    plan(problem, gpu.caps(), tuning)
}

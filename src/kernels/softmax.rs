//! Masked, stable, row-wise softmax with optional LSE (`shaders/softmax.wgsl`,
//! CPU twin [`crate::reference::softmax`]).

use super::{upload_key_lengths, MaskFields};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::mask::Masking;
use crate::mask_tensor::MaskTensor;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;
use crate::transform::{MaskInfo, ScoreTransform};

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "softmax",
    storage_read_only: &[true, true, true, false, false, true],
};

crate::uniform! {
pub(super) struct Params {
    b: u32,
    h: u32,
    nq: u32,
    nk: u32,
    mask: MaskFields,
    write_lse: u32,
    m_s: [u32; 4],
    neg_inf_bits: u32,
    m_off: u32,
    lse_off: u32,
    sink: u32,
}}

/// Weights (and optionally LSE) of [`softmax`].
#[derive(Clone, Debug)]
pub struct SoftmaxOutput {
    /// `[B, H, Nq, Nk]`, contiguous; zero on masked keys and fully masked rows.
    pub p: Tensor,
    /// `[B, H, Nq]`; `-inf` on fully masked rows.
    pub lse: Option<Tensor>,
}

/// Row-wise softmax of contiguous scores `s` `[B, H, Nq, Nk]` under `masking` and
/// an optional dense `mask` (bool or additive, broadcastable to the scores),
/// with the LSE when `want_lse`.
///
/// ```
/// use wgpu_attention::{kernels::softmax::softmax, Gpu, Masking, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// // Scores [1, 1, 2, 3]. Bottom-right causal: row 0 sees keys 0 and 1.
/// let s = Tensor::from_slice(&gpu, &[0.0f32, 0.0, 5.0, 1.0, 2.0, 3.0], &[1, 1, 2, 3])?;
/// let causal = Masking { causal: true, ..Default::default() };
/// let out = softmax(&s, &causal, None, true)?;
/// let p = out.p.to_vec_blocking()?;
/// assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6);
/// assert_eq!(p[2], 0.0); // the masked key
/// let lse = out.lse.unwrap().to_vec_blocking()?;
/// assert!((lse[0] - 2f32.ln()).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn softmax(
    s: &Tensor,
    masking: &Masking,
    mask: Option<&MaskTensor>,
    want_lse: bool,
) -> Result<SoftmaxOutput> {
    let mut rec = s.gpu().recorder();
    let out = record_softmax(&mut rec, s, masking, mask, want_lse)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`softmax`] without submitting.
pub fn record_softmax(
    rec: &mut Recorder<'_>,
    s: &Tensor,
    masking: &Masking,
    mask: Option<&MaskTensor>,
    want_lse: bool,
) -> Result<SoftmaxOutput> {
    let gpu = s.gpu();
    let dims = s.dims4("scores")?;
    let [b, h, nq, nk] = dims;
    masking.validate(b, nk)?;
    let info = match mask {
        Some(m) => {
            m.check_device(gpu)?;
            Some(MaskInfo::of(m, dims)?)
        }
        None => None,
    };
    let t = ScoreTransform {
        scale: 1.0,
        softcap: None,
        alibi: None,
        masking: masking.clone(),
        diag_off: masking.diagonal_offset(nq, nk),
        mask: info,
        mods: None,
        sinks: None,
    };
    let p = Tensor::output(gpu, "attention weights", &dims, None)?;
    let lse = if want_lse {
        Some(Tensor::output(gpu, "lse", &[b, h, nq], None)?)
    } else {
        None
    };
    let wg = workgroup(gpu.limits(), rec.tuning());
    record_softmax_into(rec, s, &t, mask, &p, lse.as_ref(), wg)?;
    Ok(SoftmaxOutput { p, lse })
}

/// The softmax part of `t` (the rules, the attention sinks and, as a bool or
/// additive mask, `mask`;
/// checked by the caller) over contiguous scores `s`, into `p` (contiguous like
/// `s`) and `lse` (`[B, H, Nq]` contiguous, when wanted). An additive mask here is
/// added to the scores (the attention path adds it in the scores kernel instead
/// and gives the softmax only the bool part).
pub(crate) fn record_softmax_into(
    rec: &mut Recorder<'_>,
    s: &Tensor,
    t: &ScoreTransform,
    mask: Option<&MaskTensor>,
    p: &Tensor,
    lse: Option<&Tensor>,
    wg: u32,
) -> Result<()> {
    let gpu = s.gpu();
    let [b, h, nq, nk] = s.dims4("scores")?;
    if s.strides() != [h * nq * nk, nq * nk, nk, 1] || s.offset() != 0 {
        return Err(Error::Shape(
            "scores must be contiguous [B, H, Nq, Nk]".into(),
        ));
    }
    debug_assert!(p.shape() == s.shape() && p.offset() == 0);
    let lengths = upload_key_lengths(gpu, &t.masking)?;
    let params = Params {
        b: b as u32,
        h: h as u32,
        nq: nq as u32,
        nk: nk as u32,
        mask: MaskFields::of(t)?,
        write_lse: lse.is_some() as u32,
        m_s: t.mask.map_or([0; 4], |m| m.strides),
        neg_inf_bits: f32::NEG_INFINITY.to_bits(),
        m_off: t.mask.map_or(0, |m| m.offset),
        lse_off: lse.map_or(0, |t| t.offset() as u32),
        sink: t.sinks.is_some() as u32,
    };
    let sinks = super::upload_slopes(gpu, t.sinks.as_deref())?;
    gpu.check_loop_budget("softmax", loop_iterations(nk, wg))?;
    let kernel = gpu.kernel(&specialization(wg))?;
    rec.dispatch(
        &kernel,
        "softmax",
        &params,
        &[
            Some(s.buffer()),
            t.mask.and(mask).map(|m| &*m.buffer),
            lengths.as_ref(),
            Some(p.buffer()),
            lse.map(Tensor::buffer),
            sinks.as_ref(),
        ],
        (b * h * nq) as u64,
    )
}

/// Invocations per row: the tuning's, within the granted limits (and 256), as a
/// power of two for the tree reduction.
pub(crate) fn workgroup(limits: &wgpu::Limits, tuning: crate::gpu::Tuning) -> u32 {
    let max_wg = limits
        .max_compute_workgroup_size_x
        .min(limits.max_compute_invocations_per_workgroup)
        .min(256);
    let wg = tuning.softmax_workgroup().clamp(1, max_wg);
    1u32 << (31 - wg.leading_zeros())
}

/// The softmax kernel with `wg` invocations per row.
pub(crate) fn specialization(wg: u32) -> Specialization {
    Specialization::new(&SPEC).overrides(&[("WG", wg as f64)])
}

/// Loop iterations per invocation over rows of `nk` scores with `wg`
/// invocations per row: two strided passes, plus the reduction tree.
pub(crate) fn loop_iterations(nk: usize, wg: u32) -> u64 {
    2 * nk.div_ceil(wg as usize) as u64 + 9
}

//! Masked, stable, row-wise softmax with optional LSE (`shaders/softmax.wgsl`,
//! CPU twin [`crate::reference::softmax`]).

use super::{mask_setup_ref, MaskFields, MaskRef};
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::{Error, Result};
use crate::mask::Masking;
use crate::mask_tensor::MaskTensor;
use crate::tensor::Tensor;

const SPEC: KernelSpec = KernelSpec {
    name: "softmax",
    storage_read_only: &[true, true, true, false, false],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    h: u32,
    nq: u32,
    nk: u32,
    mask: MaskFields,
    write_lse: u32,
    m_s: [u32; 4],
    neg_inf_bits: u32,
    m_off: u32,
    _pad: [u32; 2],
}

/// Weights (and optionally LSE) of [`softmax`].
#[derive(Clone, Debug)]
pub struct SoftmaxOutput {
    /// `[B, H, Nq, Nk]`, contiguous; zero on masked keys and fully masked rows.
    pub p: Tensor,
    /// `[B, H, Nq]`; `-inf` on fully masked rows.
    pub lse: Option<Tensor>,
}

/// Row-wise softmax of contiguous scores `s` `[B, H, Nq, Nk]` under `masking` and
/// an optional dense `mask` (bool or additive, broadcastable to the scores).
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
    let [b, h, nq, _] = dims;
    let mask = mask.map(|m| MaskRef::whole(gpu, m, dims)).transpose()?;
    let p = Tensor::output(gpu, "attention weights", &dims, None)?;
    let lse = if want_lse {
        Some(Tensor::output(gpu, "lse", &[b, h, nq], None)?)
    } else {
        None
    };
    record_softmax_into(rec, s, masking, mask, &p, lse.as_ref())?;
    Ok(SoftmaxOutput { p, lse })
}

/// [`record_softmax`] into `p` (contiguous like `s`) and `lse` (`[B, H, Nq]`
/// contiguous, when wanted), with the mask already placed ([`MaskRef`]).
pub(crate) fn record_softmax_into(
    rec: &mut Recorder<'_>,
    s: &Tensor,
    masking: &Masking,
    mask: Option<MaskRef<'_>>,
    p: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let gpu = s.gpu();
    let [b, h, nq, nk] = s.dims4("scores")?;
    if s.strides() != [h * nq * nk, nq * nk, nk, 1] || s.offset() != 0 {
        return Err(Error::Shape(
            "scores must be contiguous [B, H, Nq, Nk]".into(),
        ));
    }
    debug_assert!(p.shape() == s.shape() && p.offset() == 0);
    let setup = mask_setup_ref(gpu, masking, mask, [b, h, nq, nk])?;
    let params = Params {
        b: b as u32,
        h: h as u32,
        nq: nq as u32,
        nk: nk as u32,
        mask: setup.fields,
        write_lse: lse.is_some() as u32,
        m_s: setup.strides,
        neg_inf_bits: f32::NEG_INFINITY.to_bits(),
        m_off: mask.map_or(0, |m| m.offset),
        _pad: [0; 2],
    };
    let limits = gpu.limits();
    let max_wg = limits
        .max_compute_workgroup_size_x
        .min(limits.max_compute_invocations_per_workgroup)
        .min(256);
    let wg = rec.tuning().softmax_workgroup.clamp(1, max_wg);
    let wg = 1u32 << (31 - wg.leading_zeros()); // power of two for the tree reduction
                                                // Two strided passes over the row, plus the reduction tree.
    gpu.check_loop_budget("softmax", 2 * nk.div_ceil(wg as usize) as u64 + 9)?;
    let kernel = gpu.kernel(&SPEC, &[("WG", wg as f64)])?;
    rec.dispatch(
        &kernel,
        "softmax",
        &params,
        &[
            Some(s.buffer()),
            mask.map(|m| &*m.tensor.buffer),
            setup.lengths.as_ref(),
            Some(p.buffer()),
            lse.map(Tensor::buffer),
        ],
        (b * h * nq) as u64,
    )
}

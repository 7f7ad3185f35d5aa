//! RMSNorm of each row of a `[B, H, N, D]` tensor over its first `count`
//! channels: QK-norm of each Q and K head (Qwen3, Gemma 3), the norm of a
//! whole projection row (OLMo 2), a decoder's RMSNorm (`shaders/rms_norm.wgsl`,
//! CPU twin [`crate::reference::rms_norm`]).

use super::{addressing, elem};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;
pub use crate::weights::RmsNorm;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "rms_norm",
    storage_read_only: &[true, true, false],
};

crate::uniform! {
pub(super) struct Params {
    b: u32,
    h: u32,
    n: u32,
    d: u32,
    count: u32,
    x_off: u32,
    eps: f32,
    w_offset: f32,
    x_s: [u32; 4],
    o_s: [u32; 3],
    _pad: u32,
}}

/// RMSNorm of each row (the last dim) of `x` `[B, H, N, D]` (any strides, any
/// dtype) with weight `w` `[D]` (f32). The result is contiguous in `x`'s
/// layout and dtype.
///
/// ```
/// use wgpu_attention::kernels::rms_norm::{rms_norm, RmsNorm};
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// use wgpu_attention::{reference, Gpu, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let dims = [1, 2, 3, 8]; // a head of 8 channels, 2 heads, 3 positions
/// let x: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin()).collect();
/// let w: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 / 8.0).collect();
/// let norm = RmsNorm { eps: 1e-6, weight_offset: 0.0 };
/// let y = rms_norm(&Tensor::from_slice(&gpu, &x, &dims)?, &w, &norm)?;
/// let want = reference::rms_norm(&x, dims, 8, &w, &norm);
/// assert_close(&y.to_vec_blocking()?, &want, Tolerance::F32, "rms_norm");
/// # Ok(()) }
/// ```
pub fn rms_norm(x: &Tensor, w: &[f32], norm: &RmsNorm) -> Result<Tensor> {
    let gpu = x.gpu();
    let wt = gpu.upload(
        "rms_norm weight",
        bytemuck::cast_slice(w),
        wgpu::BufferUsages::STORAGE,
    )?;
    let [_, _, _, d] = x.dims4("RMSNorm input")?;
    let mut rec = gpu.recorder();
    let out = record_rms_norm_to(&mut rec, x, &wt, w.len(), d, norm, None)?;
    rec.submit()?;
    Ok(out)
}

/// Records the norm of the first `count` channels of each row of `x` with the
/// weight buffer `w` (`count` f32), into `out` when given (shaped like `x`,
/// contiguous in `x`'s layout and dtype) or a new tensor.
pub(crate) fn record_rms_norm_to(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    w: &wgpu::Buffer,
    w_len: usize,
    count: usize,
    norm: &RmsNorm,
    out: Option<&Tensor>,
) -> Result<Tensor> {
    norm.validate()?;
    let gpu = x.gpu();
    let dims @ [b, h, n, d] = x.dims4("RMSNorm input")?;
    if count == 0 || count > d || w_len != count {
        return Err(Error::Shape(format!(
            "RMSNorm of {count} channels of rows of {d} with {w_len} weights: give one weight per normalized channel (1..={d})"
        )));
    }
    let out = super::output_like(x, out, "RMSNorm")?;
    let o_s = x.layout().strides(dims);
    let wg = workgroup(gpu.limits());
    gpu.check_loop_budget("rms_norm", loop_iterations(d, wg))?;
    let (x_off, x_s) = addressing(x);
    let params = Params {
        b: b as u32,
        h: h as u32,
        n: n as u32,
        d: d as u32,
        count: count as u32,
        x_off,
        eps: norm.eps,
        w_offset: norm.weight_offset,
        x_s,
        o_s: [o_s[0] as u32, o_s[1] as u32, o_s[2] as u32],
        _pad: 0,
    };
    let kernel = gpu.kernel(&specialization(wg).elems(&[("x", elem(x)), ("out", elem(&out))]))?;
    rec.dispatch(
        &kernel,
        "rms_norm",
        &params,
        &[Some(x.buffer()), Some(w), Some(out.buffer())],
        (b * h * n) as u64,
    )?;
    Ok(out)
}

/// Invocations per row: 64 within the granted limits, a power of two.
pub(crate) fn workgroup(limits: &wgpu::Limits) -> u32 {
    let max = limits
        .max_compute_workgroup_size_x
        .min(limits.max_compute_invocations_per_workgroup)
        .min(64);
    1u32 << (31 - max.leading_zeros())
}

/// The kernel with `wg` invocations per row.
pub(crate) fn specialization(wg: u32) -> Specialization {
    Specialization::new(&SPEC).overrides(&[("WG", wg as f64)])
}

/// Loop iterations per invocation for rows of `d` channels.
pub(crate) fn loop_iterations(d: usize, wg: u32) -> u64 {
    2 * d.div_ceil(wg as usize) as u64 + 9
}

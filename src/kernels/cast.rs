//! Element conversion between dtypes (`shaders/cast.wgsl`, CPU twin
//! [`crate::reference::cast`]): widened to f32, rounded once to nearest even.
//! Also the strided copy behind [`crate::KvCache`]'s appends.

use super::{addressing, elem, same_device};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "cast",
    storage_read_only: &[true, false],
};

crate::uniform! {
pub(super) struct Params {
    n: [u32; 4],
    x_off: u32,
    x_s: [u32; 4],
    o_off: u32,
    o_s: [u32; 4],
    total: u32,
    _pad: [u32; 1],
}}

/// `x` (rank 1–4, any strides) converted to `dtype`, contiguous.
///
/// ```
/// # fn main() -> wgpu_attention::Result<()> {
/// use wgpu_attention::{kernels::cast::cast, DType, Gpu, Tensor};
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let x = Tensor::from_slice(&gpu, &[1.0f32, 1.0 + 1e-3, -3.0], &[3])?;
/// let h = cast(&x, DType::BF16)?;
/// assert_eq!(h.to_vec_blocking()?, [1.0, 1.0, -3.0]); // bf16 keeps 8 bits
/// # Ok(()) }
/// ```
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let mut rec = x.gpu().recorder();
    let out = record_cast(&mut rec, x, dtype)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`cast`] without submitting.
pub fn record_cast(rec: &mut Recorder<'_>, x: &Tensor, dtype: DType) -> Result<Tensor> {
    let out = Tensor::output_as(x.gpu(), "cast", x.shape(), None, dtype)?;
    record_cast_into(rec, x, &out)?;
    Ok(out)
}

/// Records `out[i] = x[i]` over every element of their shape (equal, rank
/// 1–4), converting between their dtypes; `out` may be any view (a KV-cache
/// page's rows).
pub(crate) fn record_cast_into(rec: &mut Recorder<'_>, x: &Tensor, out: &Tensor) -> Result<()> {
    same_device(x, out, "cast input and output")?;
    if x.shape() != out.shape() || x.shape().len() > 4 {
        return Err(Error::Shape(format!(
            "cast of shape {:?} into {:?}: shapes must be equal, rank at most 4",
            x.shape(),
            out.shape()
        )));
    }
    let pad = 4 - x.shape().len();
    let mut n = [1u32; 4];
    for (d, &v) in n[pad..].iter_mut().zip(x.shape()) {
        *d = v as u32;
    }
    let shift = |s: [u32; 4]| {
        let mut o = [0u32; 4];
        o[pad..].copy_from_slice(&s[..4 - pad]);
        o
    };
    let (x_off, x_s) = addressing(x);
    let (o_off, o_s) = addressing(out);
    let total = x.len() as u64;
    if total > u32::MAX as u64 {
        return Err(Error::Shape(format!(
            "cast of {total} elements: at most 2³² − 1"
        )));
    }
    let params = Params {
        n,
        x_off,
        x_s: shift(x_s),
        o_off,
        o_s: shift(o_s),
        total: total as u32,
        _pad: [0],
    };
    let gpu = x.gpu();
    let kernel =
        gpu.kernel(&Specialization::new(&SPEC).elems(&[("x", elem(x)), ("out", elem(out))]))?;
    rec.dispatch(
        &kernel,
        "cast",
        &params,
        &[Some(x.buffer()), Some(out.buffer())],
        total.div_ceil(64),
    )
}

//! Sinusoidal positional encoding added to embeddings (`shaders/posenc.wgsl`, CPU
//! twin [`crate::reference::posenc`]).

use super::{addressing, elem};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::positional::frequency_table;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "posenc",
    storage_read_only: &[true, true, false],
};

crate::uniform! {
pub(super) struct Params {
    b: u32,
    n: u32,
    dm: u32,
    offset: u32,
    x_off: u32,
    x_s: [u32; 3],
}}

/// `x + PE` for embeddings `x` `[B, N, d_model]` (any strides), positions
/// `offset .. offset + N`. Output is contiguous `[B, N, d_model]`.
///
/// ```
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// use wgpu_attention::{kernels::posenc::posenc, reference, Gpu, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let x = vec![0.0f32; 2 * 3 * 8]; // [B = 2, N = 3, d_model = 8]: the output is PE alone
/// let y = posenc(&Tensor::from_slice(&gpu, &x, &[2, 3, 8])?, 5)?; // positions 5, 6, 7
/// let want = reference::posenc(&x, 2, 3, 8, 5);
/// assert_eq!(want[0], 5f64.sin()); // PE[5, 0]
/// assert_close(&y.to_vec_blocking()?, &want, Tolerance::F32, "posenc");
/// # Ok(()) }
/// ```
pub fn posenc(x: &Tensor, offset: u32) -> Result<Tensor> {
    let mut rec = x.gpu().recorder();
    let out = record_posenc(&mut rec, x, offset)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`posenc`] without submitting.
pub fn record_posenc(rec: &mut Recorder<'_>, x: &Tensor, offset: u32) -> Result<Tensor> {
    let gpu = x.gpu();
    let [b, n, dm]: [usize; 3] = x.shape().try_into().map_err(|_| {
        Error::Shape(format!(
            "embeddings must be 3-D [B, N, d_model], got {:?}",
            x.shape()
        ))
    })?;
    if offset as u64 + n as u64 > u32::MAX as u64 {
        return Err(Error::InvalidArgument(format!(
            "positions {offset}..{offset}+{n} exceed u32"
        )));
    }
    let (x_off, s) = addressing(x);
    let params = Params {
        b: b as u32,
        n: n as u32,
        dm: dm as u32,
        offset,
        x_off,
        x_s: [s[0], s[1], s[2]],
    };
    let table = gpu.upload(
        "posenc frequencies",
        bytemuck::cast_slice(&frequency_table(
            (0..dm.div_ceil(2)).map(|i| 10000f64.powf(-2.0 * i as f64 / dm as f64)),
        )),
        wgpu::BufferUsages::STORAGE,
    )?;
    let out = Tensor::output_as(gpu, "posenc", &[b, n, dm], None, x.dtype())?;
    let kernel =
        gpu.kernel(&Specialization::new(&SPEC).elems(&[("x", elem(x)), ("out", elem(&out))]))?;
    let total = ((b * n * dm) as u64).div_ceil(64);
    rec.dispatch(
        &kernel,
        "posenc",
        &params,
        &[Some(x.buffer()), Some(&table), Some(out.buffer())],
        total,
    )?;
    Ok(out)
}

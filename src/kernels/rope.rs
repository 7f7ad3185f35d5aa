//! Rotary position embedding of Q or K (`shaders/rope.wgsl`, CPU twin
//! [`crate::reference::rope`]).

use super::{addressing, elem};
use crate::error::Result;
use crate::gpu::Recorder;
use crate::positional::{frequency_table, Pairing, Rope};
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "rope",
    storage_read_only: &[true, true, false],
};

crate::uniform! {
pub(super) struct Params {
    b: u32,
    h: u32,
    n: u32,
    d: u32,
    offset: u32,
    rot: u32,
    interleaved: u32,
    x_off: u32,
    x_s: [u32; 4],
    o_s: [u32; 3],
    _pad: u32,
}}

/// RoPE applied to `x` `[B, H, N, D]` (any strides). The result is contiguous in
/// `x`'s layout (BHND stays BHND, BNHD stays BNHD). Row `n` is at position
/// `cfg.offset + n`; an invalid `cfg` for `D` is [`crate::Error::InvalidArgument`]
/// ([`Rope::rotary`]).
///
/// ```
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// use wgpu_attention::{kernels::rope::rope, reference, Gpu, Rope, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let dims = [1, 2, 4, 8]; // B, H, N, D
/// let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
/// let xt = Tensor::from_slice(&gpu, &x, &dims)?;
/// let cfg = Rope { offset: 10, ..Default::default() }; // positions 10..14
/// let y = rope(&xt, &cfg)?.to_vec_blocking()?;
/// assert_close(&y, &reference::rope(&x, dims, &cfg), Tolerance::F32, "rope");
/// # Ok(()) }
/// ```
pub fn rope(x: &Tensor, cfg: &Rope) -> Result<Tensor> {
    let mut rec = x.gpu().recorder();
    let out = record_rope(&mut rec, x, cfg)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`rope`] without submitting.
pub fn record_rope(rec: &mut Recorder<'_>, x: &Tensor, cfg: &Rope) -> Result<Tensor> {
    let gpu = x.gpu();
    let dims @ [b, h, n, d] = x.dims4("RoPE input")?;
    let r = cfg.rotary(d)?;
    if cfg.offset as u64 + n as u64 > u32::MAX as u64 {
        return Err(crate::Error::InvalidArgument(format!(
            "RoPE positions {}..+{n} exceed u32",
            cfg.offset
        )));
    }
    let layout = x.layout();
    let o_s = layout.strides(dims);
    let out = Tensor::output_as(gpu, "rope", &dims, Some(o_s.to_vec()), x.dtype())?;
    let (x_off, x_s) = addressing(x);
    let params = Params {
        b: b as u32,
        h: h as u32,
        n: n as u32,
        d: d as u32,
        offset: cfg.offset,
        rot: r as u32,
        interleaved: (cfg.pairing == Pairing::Interleaved) as u32,
        x_off,
        x_s,
        o_s: [o_s[0] as u32, o_s[1] as u32, o_s[2] as u32],
        _pad: 0,
    };
    // At least one entry: the binding may not be empty when R = 0.
    let table = frequency_table((0..(r / 2).max(1)).map(|i| cfg.theta(i, r.max(2))));
    let table = gpu.upload(
        "rope frequencies",
        bytemuck::cast_slice(&table),
        wgpu::BufferUsages::STORAGE,
    )?;
    let kernel =
        gpu.kernel(&Specialization::new(&SPEC).elems(&[("x", elem(x)), ("out", elem(&out))]))?;
    let total = ((b * h * n * d) as u64).div_ceil(64);
    rec.dispatch(
        &kernel,
        "rope",
        &params,
        &[Some(x.buffer()), Some(&table), Some(out.buffer())],
        total,
    )?;
    Ok(out)
}

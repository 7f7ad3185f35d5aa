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
    record_rope_to(rec, x, cfg, None, None)
}

/// The frequency table `cfg` rotates a head dim of `d` with (positions are a
/// uniform, so one table serves every offset).
pub(crate) fn rope_table(cfg: &Rope, d: usize) -> Result<Vec<[u32; 2]>> {
    let r = cfg.rotary(d)?;
    // At least one entry: the binding may not be empty when R = 0.
    Ok(frequency_table(
        (0..(r / 2).max(1)).map(|i| cfg.theta(i, r.max(2))),
    ))
}

/// [`record_rope`] into `out` when given (shaped like `x`, strides of `x`'s
/// layout, `x`'s dtype), reading the frequencies from `table` when given (a
/// buffer holding [`rope_table`]), else uploading them.
pub(crate) fn record_rope_to(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    cfg: &Rope,
    out: Option<&Tensor>,
    table: Option<&wgpu::Buffer>,
) -> Result<Tensor> {
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
    let out = match out {
        Some(o) => {
            // Strides of dims of size 1 address nothing.
            let same = o
                .strides()
                .iter()
                .zip(&o_s)
                .zip(dims)
                .all(|((a, b), n)| n == 1 || a == b);
            if o.shape() != dims || !same || o.offset() != 0 || o.dtype() != x.dtype() {
                return Err(crate::Error::Shape(format!(
                    "RoPE output must be {} {dims:?} with strides {o_s:?} from element 0",
                    x.dtype()
                )));
            }
            o.clone()
        }
        None => Tensor::output_as(gpu, "rope", &dims, Some(o_s.to_vec()), x.dtype())?,
    };
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
    let uploaded;
    let table = match table {
        Some(t) => t,
        None => {
            uploaded = gpu.upload(
                "rope frequencies",
                bytemuck::cast_slice(&rope_table(cfg, d)?),
                wgpu::BufferUsages::STORAGE,
            )?;
            &uploaded
        }
    };
    let kernel =
        gpu.kernel(&Specialization::new(&SPEC).elems(&[("x", elem(x)), ("out", elem(&out))]))?;
    let total = ((b * h * n * d) as u64).div_ceil(64);
    rec.dispatch(
        &kernel,
        "rope",
        &params,
        &[Some(x.buffer()), Some(table), Some(out.buffer())],
        total,
    )?;
    Ok(out)
}

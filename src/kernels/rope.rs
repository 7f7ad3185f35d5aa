//! Rotary position embedding of Q or K (`shaders/rope.wgsl`, CPU twin
//! [`crate::reference::rope`]).

use std::sync::Arc;

use super::{addressing, elem};
use crate::error::Result;
use crate::gpu::Recorder;
use crate::positional::{frequency_table, Pairing, Rope};
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "rope",
    storage_read_only: &[true, true, false, true],
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
    has_ids: u32,
    mscale: f32,
    _pad: [u32; 3],
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
    let [b, _, n, d] = x.dims4("RoPE input")?;
    let inputs = RopeInputs::new(x.gpu(), cfg, d, b, n, None)?;
    record_rope_to(rec, x, cfg, None, &inputs)
}

/// [`rope`] with a position per token: `positions` `[B, N]` row-major (as
/// Hugging Face's `position_ids`), instead of `cfg.offset + n`. A frequency
/// scaling that depends on the sequence length takes `max position + 1`.
///
/// ```
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// use wgpu_attention::{kernels::rope::rope_at, reference, Gpu, Rope, RopeScaling, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let dims = [2, 1, 3, 8];
/// let x: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).sin()).collect();
/// let xt = Tensor::from_slice(&gpu, &x, &dims)?;
/// let cfg = Rope { scaling: RopeScaling::Linear { factor: 4.0 }, ..Default::default() };
/// let positions = [0, 1, 2, 7, 3, 9]; // batch 1 is left-padded and reordered
/// let y = rope_at(&xt, &cfg, &positions)?.to_vec_blocking()?;
/// let want = reference::rope_at(&x, dims, &cfg, Some(&positions));
/// assert_close(&y, &want, Tolerance::F32, "rope_at");
/// # Ok(()) }
/// ```
pub fn rope_at(x: &Tensor, cfg: &Rope, positions: &[u32]) -> Result<Tensor> {
    let mut rec = x.gpu().recorder();
    let out = record_rope_at(&mut rec, x, cfg, positions)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`rope_at`] without submitting.
pub fn record_rope_at(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    cfg: &Rope,
    positions: &[u32],
) -> Result<Tensor> {
    let [b, _, n, d] = x.dims4("RoPE input")?;
    let inputs = RopeInputs::new(x.gpu(), cfg, d, b, n, Some(positions))?;
    record_rope_to(rec, x, cfg, None, &inputs)
}

/// The frequency table of `cfg` for head dim `d` and a sequence of `seq_len`
/// positions (0.64 fixed point turns per position, at least one entry: the
/// binding may not be empty when R = 0), and its attention factor.
pub(crate) fn rope_table(cfg: &Rope, d: usize, seq_len: usize) -> Result<(Vec<[u32; 2]>, f32)> {
    let (freqs, attn) = cfg.frequencies(d, seq_len)?;
    let table = if freqs.is_empty() {
        frequency_table([0.0].into_iter())
    } else {
        frequency_table(freqs.into_iter())
    };
    Ok((table, attn as f32))
}

/// What a RoPE dispatch reads besides `x`: the frequency table and attention
/// factor for its sequence length, and the position ids when given.
#[derive(Clone)]
pub(crate) struct RopeInputs {
    pub table: Arc<wgpu::Buffer>,
    pub mscale: f32,
    pub ids: Option<Arc<wgpu::Buffer>>,
}

impl RopeInputs {
    /// Checks `positions` (`[B, N]`) and the positions' range, and uploads
    /// what `cfg` needs for `b` sequences of `n` rows of head dim `d`.
    pub(crate) fn new(
        gpu: &crate::Gpu,
        cfg: &Rope,
        d: usize,
        b: usize,
        n: usize,
        positions: Option<&[u32]>,
    ) -> Result<RopeInputs> {
        let seq_len = rope_seq_len(cfg, b, n, positions)?;
        let (table, mscale) = rope_table(cfg, d, seq_len)?;
        let table = Arc::new(gpu.upload(
            "rope frequencies",
            bytemuck::cast_slice(&table),
            wgpu::BufferUsages::STORAGE,
        )?);
        let ids = positions
            .map(|p| {
                gpu.upload(
                    "rope positions",
                    bytemuck::cast_slice(p),
                    wgpu::BufferUsages::STORAGE,
                )
                .map(Arc::new)
            })
            .transpose()?;
        Ok(RopeInputs { table, mscale, ids })
    }
}

/// The sequence length (largest position + 1) of `b` rows of `n` positions:
/// from `positions` (`[B, N]`, checked) or `cfg.offset + n`.
pub(crate) fn rope_seq_len(
    cfg: &Rope,
    b: usize,
    n: usize,
    positions: Option<&[u32]>,
) -> Result<usize> {
    match positions {
        Some(p) => {
            if p.len() != b * n {
                return Err(crate::Error::InvalidArgument(format!(
                    "RoPE position ids: {} values for [B, N] = [{b}, {n}]: give one per token",
                    p.len()
                )));
            }
            Ok(p.iter().max().map_or(0, |&m| m as usize + 1))
        }
        None => {
            if cfg.offset as u64 + n as u64 > u32::MAX as u64 {
                return Err(crate::Error::InvalidArgument(format!(
                    "RoPE positions {}..+{n} exceed u32",
                    cfg.offset
                )));
            }
            Ok(cfg.offset as usize + n)
        }
    }
}

/// [`record_rope`] into `out` when given (shaped like `x`, strides of `x`'s
/// layout, `x`'s dtype), with the table, attention factor and positions of
/// `inputs` ([`RopeInputs`]).
pub(crate) fn record_rope_to(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    cfg: &Rope,
    out: Option<&Tensor>,
    inputs: &RopeInputs,
) -> Result<Tensor> {
    let gpu = x.gpu();
    let dims @ [b, h, n, d] = x.dims4("RoPE input")?;
    let r = cfg.rotary(d)?;
    let out = super::output_like(x, out, "RoPE")?;
    let o_s = x.layout().strides(dims);
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
        has_ids: inputs.ids.is_some() as u32,
        mscale: inputs.mscale,
        _pad: [0; 3],
    };
    let kernel =
        gpu.kernel(&Specialization::new(&SPEC).elems(&[("x", elem(x)), ("out", elem(&out))]))?;
    let total = ((b * h * n * d) as u64).div_ceil(64);
    rec.dispatch(
        &kernel,
        "rope",
        &params,
        &[
            Some(x.buffer()),
            Some(&inputs.table),
            Some(out.buffer()),
            inputs.ids.as_deref(),
        ],
        total,
    )?;
    Ok(out)
}

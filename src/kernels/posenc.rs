//! Sinusoidal positional encoding added to embeddings (`shaders/posenc.wgsl`, CPU
//! twin [`crate::reference::posenc`]).

use super::addressing;
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const SPEC: KernelSpec = KernelSpec {
    name: "posenc",
    storage_read_only: &[true, true, false],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    n: u32,
    dm: u32,
    offset: u32,
    x_off: u32,
    x_s: [u32; 3],
}

/// `ω_i / 2π` for each channel pair as 0.64 fixed point `[hi, lo]`, so the shader
/// can reduce `pos · ω_i` modulo a turn exactly with integer arithmetic.
fn frequency_table(d_model: usize) -> Vec<[u32; 2]> {
    (0..d_model.div_ceil(2))
        .map(|i| {
            let turns =
                1.0 / (std::f64::consts::TAU * 10000f64.powf(2.0 * i as f64 / d_model as f64));
            let scaled = turns * 4294967296.0;
            let hi = scaled.floor();
            let lo = ((scaled - hi) * 4294967296.0).round().min(4294967295.0);
            [hi as u32, lo as u32]
        })
        .collect()
}

/// `x + PE` for embeddings `x` `[B, N, d_model]` (any strides), positions
/// `offset .. offset + N`. Output is contiguous `[B, N, d_model]`.
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
        bytemuck::cast_slice(&frequency_table(dm)),
        wgpu::BufferUsages::STORAGE,
    )?;
    let out = Tensor::output(gpu, "posenc", &[b, n, dm], None)?;
    let kernel = gpu.kernel(&SPEC, &[])?;
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

//! New tokens' K or V into their slots of a paged pool, vLLM's
//! `reshape_and_cache` (`shaders/cache_write.wgsl`, CPU twin
//! [`crate::reference::cache_write`]).

use super::{elem, same_device};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "cache_write",
    storage_read_only: &[true, true, false],
};

crate::uniform! {
pub(super) struct Params {
    n: u32,
    hkv: u32,
    d: u32,
    x_off: u32,
    x_sn: u32,
    x_sh: u32,
    x_sd: u32,
    row0: u32,
    rows: u32,
    total: u32,
    _pad: [u32; 2],
}}

/// Writes `x` `[n, Hkv, D]` (any strides and dtype) into `pool` (the rows
/// `row0 .. row0 + rows` of a pool `[rows / block_size, block_size, Hkv, D]`,
/// contiguous), token `t` at pool row `slots[t]` (a buffer of `n` u32);
/// tokens whose row lies outside the part are skipped.
pub(crate) fn record_cache_write(
    rec: &mut Recorder<'_>,
    x: &Tensor,
    slots: &wgpu::Buffer,
    pool: &Tensor,
    row0: u32,
) -> Result<()> {
    same_device(x, pool, "cache write input and pool")?;
    let [n, hkv, d] = match *x.shape() {
        [n, h, d] => [n, h, d],
        _ => {
            return Err(Error::Shape(format!(
                "the new keys/values must be [n, Hkv, D], got {:?}",
                x.shape()
            )))
        }
    };
    let ps = pool.shape();
    if ps.len() != 4 || ps[2] != hkv || ps[3] != d || pool.offset() != 0 {
        return Err(Error::Shape(format!(
            "a pool part [blocks, block_size, {hkv}, {d}] from element 0 takes [n, {hkv}, {d}]; got pool {ps:?}"
        )));
    }
    let s = x.strides();
    let params = Params {
        n: n as u32,
        hkv: hkv as u32,
        d: d as u32,
        x_off: x.offset() as u32,
        x_sn: s[0] as u32,
        x_sh: s[1] as u32,
        x_sd: s[2] as u32,
        row0,
        rows: (ps[0] * ps[1]) as u32,
        total: (n * hkv * d) as u32,
        _pad: [0; 2],
    };
    if n == 0 {
        return Ok(());
    }
    let gpu = x.gpu();
    let kernel = gpu.kernel(&specialization(elem(x), elem(pool)))?;
    rec.dispatch(
        &kernel,
        "cache write",
        &params,
        &[Some(x.buffer()), Some(slots), Some(pool.buffer())],
        ((n * hkv * d) as u64).div_ceil(64),
    )
}

pub(crate) fn specialization(
    x: crate::shaders::Elem,
    pool: crate::shaders::Elem,
) -> Specialization {
    Specialization::new(&SPEC).elems(&[("x", x), ("pool", pool)])
}

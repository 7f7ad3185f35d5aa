//! `O = P·V` for all batches and heads in one dispatch (`shaders/weighted_sum.wgsl`,
//! CPU twin [`crate::reference::weighted_sum`]).

use super::{addressing, elem, require_f32, same_device, TileConfig};
use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::shaders::{KernelSpec, Specialization};
use crate::shape::AttnShape;
use crate::tensor::{Layout, Tensor};

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "weighted_sum",
    storage_read_only: &[true, true, false],
};

crate::uniform! {
pub(super) struct Params {
    b: u32,
    hq: u32,
    group: u32,
    nq: u32,
    nk: u32,
    d: u32,
    tiles_m: u32,
    tiles_n: u32,
    v_off: u32,
    v_s: [u32; 4],
    o_off: u32,
    o_s: [u32; 4],
    _pad: [u32; 2],
}}

/// `O[b,h] = P[b,h] · V[b, h/g]` with `p` contiguous `[B, Hq, Nq, Nk]` and `v`
/// `[B, Hkv, Nk, D]` (any strides). O is `[B, Hq, Nq, D]` stored in `out_layout`.
///
/// ```
/// use wgpu_attention::{kernels::weighted_sum::weighted_sum, Gpu, Layout, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// // P [1, 1, 2, 3] (rows of weights) and V [1, 1, 3, 2].
/// let p = Tensor::from_slice(&gpu, &[1.0f32, 0.0, 0.0, 0.25, 0.25, 0.5], &[1, 1, 2, 3])?;
/// let v = Tensor::from_slice(&gpu, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 1, 3, 2])?;
/// let o = weighted_sum(&p, &v, Layout::Bhnd)?;
/// assert_eq!(o.to_vec_blocking()?, [1.0, 2.0, 3.5, 4.5]);
/// # Ok(()) }
/// ```
pub fn weighted_sum(p: &Tensor, v: &Tensor, out_layout: Layout) -> Result<Tensor> {
    let mut rec = p.gpu().recorder();
    let o = record_weighted_sum(&mut rec, p, v, out_layout)?;
    rec.submit()?;
    Ok(o)
}

/// Records [`weighted_sum`] without submitting.
pub fn record_weighted_sum(
    rec: &mut Recorder<'_>,
    p: &Tensor,
    v: &Tensor,
    out_layout: Layout,
) -> Result<Tensor> {
    let sh = checked_shape(p, v)?;
    let dims = [sh.b, sh.hq, sh.nq, sh.d];
    let out = Tensor::output_as(
        p.gpu(),
        "attention output",
        &dims,
        Some(out_layout.strides(dims).to_vec()),
        v.dtype(),
    )?;
    record_weighted_sum_into(rec, p, v, &out, &TileConfig::new(rec.tuning()))?;
    Ok(out)
}

/// The problem `p` and `v` make, checked: same device, P contiguous, matching
/// batch and key count, heads that divide.
fn checked_shape(p: &Tensor, v: &Tensor) -> Result<AttnShape> {
    same_device(p, v, "P and V")?;
    require_f32(p, "P")?;
    let [b, hq, nq, nk] = p.dims4("P")?;
    let [bv, hkv, nkv, d] = v.dims4("V")?;
    if p.strides() != [hq * nq * nk, nq * nk, nk, 1] || p.offset() != 0 {
        return Err(Error::Shape(
            "P must be contiguous [B, Hq, Nq, Nk] (as the softmax kernel writes it)".into(),
        ));
    }
    if bv != b || nkv != nk {
        return Err(Error::Shape(format!("P is [{b}, {hq}, {nq}, {nk}] but V is [{bv}, {hkv}, {nkv}, {d}]: batch and key count must match")));
    }
    let sh = AttnShape {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
    };
    sh.validate()?;
    Ok(sh)
}

/// [`record_weighted_sum`] into `out` `[B, Hq, Nq, D]` (any strides: a view of a
/// larger output for a chunk of heads).
pub(crate) fn record_weighted_sum_into(
    rec: &mut Recorder<'_>,
    p: &Tensor,
    v: &Tensor,
    out: &Tensor,
    tile: &TileConfig,
) -> Result<()> {
    let sh = checked_shape(p, v)?;
    let AttnShape {
        b, hq, nq, nk, d, ..
    } = sh;
    debug_assert_eq!(out.shape(), [b, hq, nq, d]);
    let gpu = p.gpu();
    let (v_off, v_s) = addressing(v);
    let (o_off, o_s) = addressing(out);
    gpu.check_loop_budget("weighted_sum", tile.loop_iterations(nk))?;
    let (tiles_m, tiles_n) = tile.tiles(nq, d);
    let params = Params {
        b: b as u32,
        hq: hq as u32,
        group: sh.group() as u32,
        nq: nq as u32,
        nk: nk as u32,
        d: d as u32,
        tiles_m,
        tiles_n,
        v_off,
        v_s,
        o_off,
        o_s,
        _pad: [0; 2],
    };
    let kernel = gpu.kernel(
        &Specialization::new(&SPEC)
            .overrides(&tile.constants)
            .elems(&[("v", elem(v)), ("o", elem(out))]),
    )?;
    let total = (b * hq) as u64 * params.tiles_m as u64 * params.tiles_n as u64;
    rec.dispatch(
        &kernel,
        "weighted_sum",
        &params,
        &[Some(p.buffer()), Some(v.buffer()), Some(out.buffer())],
        total,
    )
}

//! The block mask of a caller's `mask_mod` (`shaders/block_mask.wgsl`; CPU
//! twin [`crate::mods::Mods::block_mask_reference`]): one class per (batch,
//! head, query block, key block), written after the caller's buffers in the
//! mods binding, which the fused kernels then read to skip blocks.

use crate::error::Result;
use crate::gpu::Recorder;
use crate::mods::{Mods, BLOCK_K, BLOCK_Q};
use crate::shaders::{KernelSpec, Specialization};

/// No storage bindings of its own: the mods binding (read-write here) is the
/// only one.
pub const SPEC: KernelSpec = KernelSpec {
    name: "block_mask",
    storage_read_only: &[],
};

const WORKGROUP: u64 = 64;

crate::uniform! {
pub(super) struct Params {
    b: u32,
    hq: u32,
    nq: u32,
    nk: u32,
    nqb: u32,
    nkb: u32,
    _pad: [u32; 2],
}}

/// Records the classification of `mods`' `mask_mod` over `[B, Hq, Nq, Nk]`
/// into `buf` (the mods binding with room for the classes).
pub(crate) fn record(
    rec: &mut Recorder<'_>,
    mods: &Mods,
    buf: &wgpu::Buffer,
    [b, hq, nq, nk]: [usize; 4],
) -> Result<()> {
    let gpu = rec.gpu();
    let (nqb, nkb) = (nq.div_ceil(BLOCK_Q), nk.div_ceil(BLOCK_K));
    let blocks = (b * hq * nqb * nkb) as u64;
    let spec = Specialization::new(&SPEC).mods(Some(mods.wgsl().clone()));
    // Per invocation: one block's BLOCK_Q × BLOCK_K predicates.
    gpu.check_loop_budget("block mask", (BLOCK_Q * (BLOCK_K + 1)) as u64)?;
    let kernel = gpu.kernel(&spec)?;
    let params = Params {
        b: b as u32,
        hq: hq as u32,
        nq: nq as u32,
        nk: nk as u32,
        nqb: nqb as u32,
        nkb: nkb as u32,
        _pad: [0; 2],
    };
    rec.dispatch(
        &kernel,
        "block_mask",
        &params,
        &[Some(buf)],
        blocks.div_ceil(WORKGROUP),
    )
}

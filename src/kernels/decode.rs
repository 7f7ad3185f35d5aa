//! The merge of split-KV decoding (flash-decoding): the fused kernel runs once
//! per chunk of keys, in parallel, writing a partial O and LSE per chunk
//! (the plan chooses the chunks, [`mod@crate::plan`]); `shaders/decode.wgsl` merges
//! them by LSE (CPU twin [`crate::reference::decode_combine`]).

use super::addressing;
use crate::error::Result;
use crate::gpu::Recorder;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "decode",
    storage_read_only: &[true, true, false, false, true, true],
};

crate::uniform! {
pub(super) struct Params {
    rows: u32,
    d: u32,
    splits: u32,
    hq: u32,
    nq: u32,
    o_off: u32,
    o_s: [u32; 4],
    write_lse: u32,
    neg_inf_bits: u32,
    part_ss: u32,
    lse_ss: u32,
    lse_off: u32,
    sink: u32,
    packed: u32,
    cuq_off: u32,
    lse_sb: u32,
    lse_sh: u32,
}}

/// Loop iterations per invocation of the merge of `splits` partials of dim `d`.
pub(crate) fn combine_loop_iterations(splits: usize, d: usize) -> u64 {
    2 * splits as u64 + d as u64 * (splits as u64 + 1)
}

/// Merges `splits` partial results (`o_part` `[splits, B, Hq, Nq, D]`, `lse_part`
/// `[splits, B·Hq·Nq]`, both f32) by LSE into `out` (`[B, Hq, Nq, D]`, any
/// strides and dtype) and, if given, `lse` (f32 `[B·Hq·Nq]` contiguous, at its
/// offset). `sinks` (one per query head) join every row's denominator.
/// `packed` = (the sequences' index, where `cu_seqlens_q` starts in it,
/// `total_q`): `out` is a `[1, Hq, total_q, D]` view of packed O and `lse`
/// `[Hq, total_q]`.
#[expect(
    clippy::too_many_arguments,
    reason = "the partials, their shape, the sinks and the two outputs"
)]
pub(crate) fn record_combine(
    rec: &mut Recorder<'_>,
    o_part: &Tensor,
    lse_part: &Tensor,
    splits: usize,
    sh: &crate::shape::AttnShape,
    sinks: Option<&[f32]>,
    out: &Tensor,
    lse: Option<&Tensor>,
    packed: Option<(&wgpu::Buffer, u32, usize)>,
) -> Result<()> {
    let gpu = o_part.gpu();
    let rows = sh.b * sh.hq * sh.nq;
    let want_lse = lse.is_some();
    gpu.check_loop_budget("decode combine", combine_loop_iterations(splits, sh.d))?;
    let (o_off, mut o_s) = addressing(out);
    if packed.is_some() {
        o_s[0] = 0;
    }
    let params = Params {
        rows: rows as u32,
        d: sh.d as u32,
        splits: splits as u32,
        hq: sh.hq as u32,
        nq: sh.nq as u32,
        o_off,
        o_s,
        write_lse: want_lse as u32,
        neg_inf_bits: f32::NEG_INFINITY.to_bits(),
        part_ss: sh.q_len() as u32,
        lse_ss: rows as u32,
        lse_off: lse.map_or(0, |t| t.offset() as u32),
        sink: sinks.is_some() as u32,
        packed: packed.is_some() as u32,
        cuq_off: packed.map_or(0, |p| p.1),
        lse_sb: if packed.is_some() {
            0
        } else {
            (sh.hq * sh.nq) as u32
        },
        lse_sh: packed.map_or(sh.nq, |p| p.2) as u32,
    };
    let sinks = super::upload_slopes(gpu, sinks)?;
    let kernel = gpu.kernel(&Specialization::new(&SPEC).elems(&[("o", super::elem(out))]))?;
    rec.dispatch(
        &kernel,
        "decode combine",
        &params,
        &[
            Some(o_part.buffer()),
            Some(lse_part.buffer()),
            Some(out.buffer()),
            lse.map(Tensor::buffer),
            sinks.as_ref(),
            packed.map(|p| p.0),
        ],
        (rows as u64).div_ceil(64),
    )
}

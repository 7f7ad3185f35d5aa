//! Split-KV decoding (flash-decoding) for few queries against a long KV: the
//! fused kernel runs once per chunk of keys, in parallel, writing a partial O and
//! LSE per chunk; `shaders/decode.wgsl` merges them by LSE (CPU twin
//! [`crate::reference::decode_combine`]). Each chunk also stays within the loop
//! budget of Mesa's CPU drivers, so long KV works there too.

use super::addressing;
use super::flash_attention::{record_fused, FusedOptions, FusedVariant, SplitKv};
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::Result;
use crate::tensor::Tensor;

const SPEC: KernelSpec = KernelSpec {
    name: "decode",
    storage_read_only: &[true, true, false, false],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
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
    _pad: [u32; 2],
}

/// Keys per split: at most `preferred`, and few enough for the driver's loop budget.
pub(crate) fn split_len(
    gpu: &crate::Gpu,
    variant: &FusedVariant,
    nk: usize,
    d: usize,
    preferred: usize,
) -> usize {
    let mut len = preferred.clamp(1, nk.max(1));
    if let Some(budget) = gpu.loop_budget() {
        while len > 1 && variant.loop_iterations(len, d) + 256 > budget {
            len /= 2;
        }
    }
    len
}

/// Default keys per split.
pub const DEFAULT_SPLIT: usize = 512;

/// Splits the default split length aims at, at most: more adds little parallelism
/// and lengthens the combine (its loops run ≈ D·splits iterations, which Mesa's
/// loop budget caps).
pub const TARGET_SPLITS: usize = 256;

/// The preferred split length for `nq` queries against `nk` keys: few queries get
/// many short splits (parallelism), many queries one split per loop budget.
pub(crate) fn preferred_split(nq: usize, nk: usize) -> usize {
    if nq <= 16 {
        DEFAULT_SPLIT.max(nk.div_ceil(TARGET_SPLITS))
    } else {
        nk
    }
}

/// The keys per split and the number of splits the decode path uses for `nq`
/// queries against `nk` keys of dim `d` on `gpu` under `tuning`; `split` is an
/// explicit split length ([`crate::AttentionOptions::kv_split`]). Few queries get
/// many short splits (parallelism), many queries splits as long as the driver's
/// loop budget allows (to keep the partials, splits·B·Hq·Nq·(D+1) floats, small).
pub fn split_plan(
    gpu: &crate::Gpu,
    tuning: crate::Tuning,
    nq: usize,
    nk: usize,
    d: usize,
    split: Option<usize>,
) -> Result<(usize, usize)> {
    let len = match split {
        Some(s) => s.max(1),
        None => {
            let variant = FusedVariant::new(tuning, d, gpu.limits())?;
            split_len(gpu, &variant, nk, d, preferred_split(nq, nk)).max(1)
        }
    };
    Ok((len, nk.div_ceil(len)))
}

/// Split-KV attention: same inputs and results as the fused path (O in Q's
/// layout, LSE if asked), computed as `ceil(Nk / split)` partials and a merge.
pub fn record_decode(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &FusedOptions,
    split: Option<usize>,
) -> Result<(Tensor, Option<Tensor>)> {
    let gpu = q.gpu();
    let sh = super::attn_shape(q, k)?;
    let (split_len, splits) = split_plan(gpu, rec.tuning(), sh.nq, sh.nk, sh.d, split)?;
    let rows = sh.b * sh.hq * sh.nq;
    let o_part = Tensor::output(
        gpu,
        "decode partial O",
        &[splits, sh.b, sh.hq, sh.nq, sh.d],
        None,
    )?;
    let lse_part = Tensor::output(gpu, "decode partial LSE", &[splits, rows], None)?;
    let first = o_part.view(
        &[sh.b, sh.hq, sh.nq, sh.d],
        &[sh.hq * sh.nq * sh.d, sh.nq * sh.d, sh.d, 1],
        0,
    )?;
    record_fused(
        rec,
        q,
        k,
        v,
        opts,
        Some(SplitKv {
            splits,
            split_len,
            o_part: &first,
            lse_part: &lse_part,
        }),
    )?;

    record_combine(
        rec,
        &o_part,
        &lse_part,
        splits,
        &sh,
        q.layout(),
        opts.want_lse,
    )
}

/// Merges `splits` partial results (`o_part` `[splits, B, Hq, Nq, D]`, `lse_part`
/// `[splits, B·Hq·Nq]`) by LSE into O (in `layout`) and, if `want_lse`, the LSE.
pub(crate) fn record_combine(
    rec: &mut Recorder<'_>,
    o_part: &Tensor,
    lse_part: &Tensor,
    splits: usize,
    sh: &crate::AttnShape,
    layout: crate::Layout,
    want_lse: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let gpu = o_part.gpu();
    let rows = sh.b * sh.hq * sh.nq;
    let dims = [sh.b, sh.hq, sh.nq, sh.d];
    let out = Tensor::output(
        gpu,
        "attention output",
        &dims,
        Some(layout.strides(dims).to_vec()),
    )?;
    let lse = if want_lse {
        Some(Tensor::output(gpu, "lse", &[sh.b, sh.hq, sh.nq], None)?)
    } else {
        None
    };
    gpu.check_loop_budget(
        "decode combine",
        2 * splits as u64 + sh.d as u64 * (splits as u64 + 1),
    )?;
    let (o_off, o_s) = addressing(&out);
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
        _pad: [0; 2],
    };
    let kernel = gpu.kernel(&SPEC, &[])?;
    rec.dispatch(
        &kernel,
        "decode combine",
        &params,
        &[
            Some(o_part.buffer()),
            Some(lse_part.buffer()),
            Some(out.buffer()),
            lse.as_ref().map(Tensor::buffer),
        ],
        (rows as u64).div_ceil(64),
    )?;
    Ok((out, lse))
}

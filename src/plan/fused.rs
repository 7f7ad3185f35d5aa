//! The fused kernel's variant for a problem on a device, and how its work is
//! laid out: rows per lane, GQA head sharing, lane splits, the vec4 bias, grid.

use crate::error::{Error, Result};
use crate::gpu::{DeviceCaps, Tuning};
use crate::kernels::flash_attention::{head_dim_bucket, FusedLaunch, FusedVariant, Kind};
use crate::shape::AttnShape;
use crate::transform::ScoreTransform;

use super::problem::MAX_HEAD_DIM;

/// Lanes (= query rows) per workgroup of the tiled kernel, at most.
const TILED_WORKGROUP: u32 = 64;

/// Keys per tile of the tiled kernel, at most.
const TILED_MAX_KEYS: u32 = 64;

/// Query rows per invocation of the lane-split kernel, at most: with 8 the kernel
/// compiled in 14 s on lavapipe (4 rows: 6.5 s); Nq 5–8 takes two blocks of 4.
pub(crate) const FEW_QUERY_ROWS: u32 = 4;

/// The many-query variant of head dim `d` under `tuning` (already granted).
/// Staged tuning (real GPUs): the tiled kernel, with tiles sized from the
/// granted workgroup memory; the generic kernel if not even one key fits.
/// Unstaged (CPU drivers): the straight-line kernel unless
/// [`Tuning::straight_line`] is off, else the generic one.
pub(crate) fn base_variant(tuning: Tuning, d: usize, limits: &wgpu::Limits) -> FusedVariant {
    let bucket = head_dim_bucket(d);
    let generic = FusedVariant {
        kind: Kind::Generic,
        rows: 4,
        bucket,
        bias4: false,
        pairs: false,
    };
    if tuning.staged() {
        // K and V tiles: 2 · keys · bucket · 4 bytes, plus the 16 bytes of the
        // shared key range (llvmpipe-GL counts it: 32 776 of 32 768 failed).
        let want_keys = match tuning.tile_keys() {
            0 => TILED_MAX_KEYS,
            k => k,
        };
        let keys = (limits.max_compute_workgroup_storage_size.saturating_sub(16) / (8 * bucket))
            .min(want_keys);
        let want_lanes = match tuning.tile_lanes() {
            0 => TILED_WORKGROUP,
            l => l,
        };
        let lanes = want_lanes
            .min(limits.max_compute_invocations_per_workgroup)
            .min(limits.max_compute_workgroup_size_x);
        if keys == 0 || lanes == 0 {
            return generic;
        }
        return FusedVariant {
            kind: Kind::Tiled {
                keys,
                lanes,
                split: 1,
            },
            rows: 1,
            bucket,
            bias4: false,
            pairs: false,
        };
    }
    if !tuning.straight_line() {
        return generic;
    }
    // The straight-line kernel has R·KB·D/4 lines per update: cap R·D/4 at 128
    // (about 1000 lines) so a variant compiles in under 10 s on these drivers
    // (8 rows at D = 64, 2 rows at D = 256). Asking for more than 8 rows lifts
    // the cap to 256: 16 rows at D = 64 run faster but compile 3x longer
    // (BENCHMARKS.md).
    let cap = if tuning.fused_rows() > 8 { 256 } else { 128 };
    let rows = tuning.fused_rows().min(cap / (bucket / 4)).max(1);
    // K/V loads shared across the subgroup when its size is known, a multiple
    // of 4 (a vec4 chunk comes from one register) and divides the bucket.
    let size = tuning.subgroup();
    let kind = if size >= 4 && size.is_multiple_of(4) && bucket.is_multiple_of(size) {
        Kind::Subgroup { size }
    } else {
        Kind::StraightLine
    };
    FusedVariant {
        kind,
        rows,
        bucket,
        bias4: false,
        pairs: false,
    }
}

/// A query count that stands for "many queries" where a variant is asked for
/// without a problem (specializations, autotune candidates, `attn info`).
pub(crate) const MANY_QUERIES: usize = 1024;

/// The many-query variant for head dim `d` and `nq` queries over Q and K of
/// `qk_f16` (both f16): the cooperative-matrix kernel where the tuning's
/// [`crate::gpu::Coop`] takes it ([`super::coop::coop_variant`]), else
/// [`base_variant`].
pub(crate) fn variant_for(
    caps: &DeviceCaps,
    tuning: Tuning,
    d: usize,
    nq: usize,
    qk_f16: bool,
) -> Result<FusedVariant> {
    match super::coop::coop_variant(caps, tuning, d, nq, qk_f16)? {
        Some(v) => Ok(v),
        None => tiled_family(caps, tuning, base_variant(tuning, d, &caps.limits)),
    }
}

/// Vec4 chunks per lane the tiled family aims at: with Q and O in registers
/// that is 4·2·8 = 64 floats per row, so two rows fit a GPU lane's registers
/// (255 on NVIDIA) with room for the rest.
const TILED_LANE_CHUNKS: u32 = 8;

/// The tiled kernel's family member on this device: lanes per row group
/// (`split`, dividing D's chunks so each lane holds about
/// [`TILED_LANE_CHUNKS`], at most the device's smallest subgroup and 8, 1
/// without `SUBGROUP` or on CPU drivers) and rows per group (2 on discrete
/// GPUs when a lane's chunks fit twice, else 1); either forced by the tuning
/// ([`Tuning::tile_split`], [`Tuning::tile_rows`]) and then checked against the
/// device. Other kernels pass through.
pub(crate) fn tiled_family(
    caps: &DeviceCaps,
    tuning: Tuning,
    v: FusedVariant,
) -> Result<FusedVariant> {
    let Kind::Tiled { keys, lanes, .. } = v.kind else {
        return Ok(v);
    };
    let dv = v.bucket / 4;
    let subgroups = caps.features.contains(wgpu::Features::SUBGROUP)
        && caps.subgroup_min >= 2
        && caps.subgroup_max <= lanes
        && lanes.is_multiple_of(caps.subgroup_max);
    let split = match tuning.tile_split() {
        0 if subgroups && caps.device_type != wgpu::DeviceType::Cpu => {
            let mut s = 1;
            while dv / s > TILED_LANE_CHUNKS
                && s * 2 <= caps.subgroup_min.min(8)
                && dv.is_multiple_of(s * 2)
            {
                s *= 2;
            }
            s
        }
        0 | 1 => 1,
        s => {
            if !subgroups || s > caps.subgroup_min || !dv.is_multiple_of(s) {
                return Err(Error::InvalidArgument(format!(
                    "Tuning tile_split = {s}: lanes splitting a row sum with subgroup shuffles, so {s} must divide the head-dim bucket's {dv} vec4 chunks and be at most the device's smallest subgroup ({}, SUBGROUP {}granted, {lanes} lanes a multiple of its largest, {}); use 0 (the plan's choice) or 1",
                    caps.subgroup_min,
                    if caps.features.contains(wgpu::Features::SUBGROUP) { "" } else { "not " },
                    caps.subgroup_max
                )));
            }
            s
        }
    };
    let rows = match tuning.tile_rows() {
        0 if caps.device_type == wgpu::DeviceType::DiscreteGpu
            && dv / split <= TILED_LANE_CHUNKS =>
        {
            2
        }
        0 => 1,
        r => r,
    };
    Ok(FusedVariant {
        kind: Kind::Tiled { keys, lanes, split },
        rows,
        ..v
    })
}

/// The variant for split-KV with `nq` queries, at most `v.rows`: on CPU drivers
/// without subgroup sharing the straight-line kernel with lanes over key splits
/// (each lane loads its own split's keys, so its gathers are all useful) and
/// only as many rows as there are queries, rounded up to a power of two (fewer
/// specializations) and at most FEW_QUERY_ROWS. Decode at Nq = 1 then does one
/// row of work per key instead of 8 (BENCHMARKS.md, decode).
pub(crate) fn for_few_queries(v: FusedVariant, nq: usize) -> FusedVariant {
    if !v.straight() {
        return v;
    }
    FusedVariant {
        kind: Kind::StraightLine,
        rows: (nq.max(1).next_power_of_two() as u32)
            .min(v.rows)
            .min(FEW_QUERY_ROWS),
        ..v
    }
}

/// The straight-line kernels with no more rows per lane than `nq` queries need
/// (rounded up to a power of two): a workgroup covers lanes·rows query rows, so
/// Nq = 16 on 8 lanes takes 2 rows instead of 8 and computes 16 rows per key,
/// not 64 (4× less work for the same result).
pub(crate) fn fit_rows(v: FusedVariant, nq: usize) -> FusedVariant {
    if !v.straight() {
        return v;
    }
    FusedVariant {
        rows: (nq.div_ceil(v.lanes() as usize).max(1).next_power_of_two() as u32).min(v.rows),
        ..v
    }
}

/// Reads an additive mask as vec4s (one load per row and 4 keys instead of 4)
/// when `aligned`: the mask is contiguous along keys, every row starts at a
/// multiple of 4 elements, and key splits start at multiples of 4. Straight-line
/// kernels with 4-key blocks only. With the mask kind compiled in, this took the
/// bias overhead on lavapipe at B1 H8 N1024 D64 from +33–42% to a median of
/// +6.5% (BENCHMARKS.md, v10).
pub(crate) fn with_bias4(v: FusedVariant, aligned: bool) -> FusedVariant {
    FusedVariant {
        bias4: aligned && v.straight() && v.key_block().is_multiple_of(4),
        ..v
    }
}

/// Loads K and V as words of two halves in the subgroup kernel when `ok`
/// (both packed, every row at an even element with unit stride:
/// [`crate::AttentionProblem::kv_pairs`]) and each lane loads an even number of
/// elements per row (NG = bucket / S even).
pub(crate) fn with_pairs(v: FusedVariant, ok: bool) -> FusedVariant {
    let fits = match v.kind {
        Kind::Subgroup { size } => (v.bucket / size).is_multiple_of(2),
        _ => false,
    };
    FusedVariant {
        pairs: ok && fits,
        ..v
    }
}

/// Key splits of a launch: `splits` chunks of `len` keys (1 chunk = no split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Splits {
    pub splits: usize,
    pub len: usize,
}

/// The launch of the fused kernel for `sh` (its `nk` the keys of this launch)
/// under transform `t`, with `split` key splits when they write partials, over
/// the tensors of `problem` (their dtypes and K/V alignment:
/// [`crate::AttentionProblem::elems`]).
pub(crate) fn launch(
    sh: &AttnShape,
    t: &ScoreTransform,
    caps: &DeviceCaps,
    tuning: Tuning,
    split: Option<Splits>,
    problem: &crate::AttentionProblem,
) -> Result<FusedLaunch> {
    if sh.d > MAX_HEAD_DIM {
        return Err(Error::Shape(format!(
            "head dim {} is over the fused kernel's {MAX_HEAD_DIM}",
            sh.d
        )));
    }
    let base = variant_for(caps, tuning, sh.d, sh.nq, problem.qk_f16())?;
    let splits = split.map_or(1, |s| s.splits);
    // Few queries and several splits, on kernels whose lanes may take different
    // splits (no subgroup sharing): lanes over splits, each lane owning all rows
    // of its block (see the shader). With subgroups the row path is faster at
    // every Nq: on lavapipe at B1 H8 Nk32768 D64, Nq 1/4/8 took 28.0/29.0/28.1 ms
    // against 31.1/36.1/36.0 ms lane-split (BENCHMARKS.md, decode v10).
    let lane_splits = splits > 1 && base.lanes_may_split() && sh.nq <= base.rows as usize;
    // GQA: one workgroup serves a KV head's whole group of query heads (or the
    // largest divisor of it) when their rows fit one block, so each K/V element
    // is loaded once per group instead of once per query head (decode is
    // load-bound).
    let block_cap = if lane_splits {
        FEW_QUERY_ROWS.min(base.rows)
    } else {
        base.block_rows()
    } as usize;
    let group = sh.group();
    let head_rows = (1..=group.min(block_cap / sh.nq.max(1)).max(1))
        .rev()
        .find(|h| group.is_multiple_of(*h))
        .unwrap_or(1);
    let variant = if lane_splits {
        for_few_queries(base, head_rows * sh.nq)
    } else {
        fit_rows(base, head_rows * sh.nq)
    };
    let block_rows = if lane_splits {
        variant.rows
    } else {
        variant.block_rows()
    };
    let blocks_q = (head_rows * sh.nq).div_ceil(block_rows as usize) as u32;
    debug_assert!(head_rows == 1 || blocks_q == 1);
    let split_len = split.map_or(sh.nk, |s| s.len);
    let variant = with_bias4(
        variant,
        t.mask.is_some_and(|m| m.vec4_aligned()) && (splits == 1 || split_len.is_multiple_of(4)),
    );
    // Halves of K and V as words of two where the subgroup kernel can: then
    // read packed even where the device has native f16 (half the gathers and
    // broadcasts: BENCHMARKS.md, half precision).
    let variant = with_pairs(variant, problem.kv_pairs());
    let elems = problem.elems(caps.native_f16(), split.is_some(), variant.pairs);
    let loop_iterations = variant.loop_iterations(split_len, sh.d);
    caps.check_loop_budget("flash_attention", loop_iterations)?;
    let heads = (sh.b * sh.hq / head_rows) as u64;
    let workgroups = if lane_splits {
        heads * (splits as u64).div_ceil(variant.lanes() as u64) * blocks_q as u64
    } else {
        heads * splits as u64 * blocks_q as u64
    };
    Ok(FusedLaunch {
        spec: {
            let s = variant.specialization(t.fused_overrides());
            // Keys through a block table compile in only where a pool is read.
            let s = match problem.seqs.and_then(|q| q.paged) {
                Some(p) if p.split => s.overrides(&[("PAGED", 1.0), ("PAGED_PARTS", 1.0)]),
                Some(_) => s.overrides(&[("PAGED", 1.0)]),
                None => s,
            };
            s.elems(&elems)
                .mods(t.mods.as_ref().map(|m| m.mods.wgsl().clone()))
        },
        variant,
        lane_splits,
        head_rows,
        blocks_q,
        splits,
        split_len,
        workgroups,
        loop_iterations,
        // A CPU driver that hands each thread a contiguous range of the grid:
        // deal the work items out over its threads.
        spread_cols: match caps.cpu_threads {
            0 | 1 => 0,
            n => n,
        },
    })
}

/// Whether the unsplit fused kernel's key loop over `nk` keys fits the driver's
/// loop budget (else the decode path's splits keep each invocation within it).
pub(crate) fn fits_unsplit(
    caps: &DeviceCaps,
    tuning: Tuning,
    problem: &crate::AttentionProblem,
) -> Result<bool> {
    let sh = &problem.shape;
    let v = variant_for(caps, tuning, sh.d, sh.nq, problem.qk_f16())?;
    Ok(caps.fits_loop_budget(v.loop_iterations(sh.nk, sh.d)))
}

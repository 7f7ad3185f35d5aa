//! Fused attention with an online softmax (`shaders/flash_attention.wgsl`; its CPU
//! twin is [`crate::reference::attention`], which computes the same O and LSE).
//! Never materializes the `[B, Hq, Nq, Nk]` matrix.

use super::{
    addressing, alibi_buffer, attn_shape, check_softcap, mask_setup, same_device, MaskFields,
};
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::{Error, Result};
use crate::mask::Masking;
use crate::mask_tensor::{MaskKind, MaskTensor};
use crate::tensor::{Layout, Tensor};

/// The bindings of every fused kernel (`shared/flash_common.wgsl`): Q, K, V, mask,
/// key lengths, ALiBi slopes read-only; O and LSE written.
const FUSED_BINDINGS: &[bool] = &[true, true, true, true, true, true, false, false];

const SPEC: KernelSpec = KernelSpec {
    name: "flash_attention",
    storage_read_only: FUSED_BINDINGS,
};

const SPEC_CPU: KernelSpec = KernelSpec {
    name: "flash_attention_cpu",
    storage_read_only: FUSED_BINDINGS,
};

const SPEC_TILED: KernelSpec = KernelSpec {
    name: "flash_attention_tiled",
    storage_read_only: FUSED_BINDINGS,
};

/// Invocations per workgroup of the generic and straight-line kernels (one SIMD
/// batch on CPU drivers).
const WORKGROUP: u32 = 8;

/// Lanes (= query rows) per workgroup of the tiled kernel, at most.
const TILED_WORKGROUP: u32 = 64;

/// Keys per tile of the tiled kernel, at most.
const TILED_MAX_KEYS: u32 = 64;

type SourceConsts = Vec<(&'static str, u32)>;
type Overrides = Vec<(&'static str, f64)>;

/// Query rows per invocation of the lane-split kernel, at most (see record_fused):
/// Nq 5–8 takes two blocks of 4 rows.
const FEW_QUERY_ROWS: u32 = 4;

/// Keys per step of the key loop in the straight-line kernel.
const KEY_BLOCK: u32 = 4;

/// The fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `flash_attention_cpu.wgsl`: straight-line code for CPU drivers.
    StraightLine,
    /// `flash_attention_cpu.wgsl` with `S = size`: K/V loads shared across a
    /// subgroup of `size` lanes (CPU drivers with subgroups).
    Subgroup { size: u32 },
    /// `flash_attention.wgsl`: loops, no workgroup memory; runs anywhere.
    Generic,
    /// `flash_attention_tiled.wgsl`: K/V tiles of `keys` keys in workgroup memory,
    /// one row per lane, `lanes` lanes (real GPUs).
    Tiled { keys: u32, lanes: u32 },
}

/// Which fused kernel runs, and its shape.
pub(crate) struct FusedVariant {
    kind: Kind,
    /// Query rows per invocation.
    pub rows: u32,
    bucket: u32,
    /// Straight-line kernels: the additive mask is read as one vec4 per row and
    /// block of 4 keys (`B4`, see [`FusedVariant::with_bias4`]).
    bias4: bool,
}

impl FusedVariant {
    /// Staged tuning (real GPUs): the tiled kernel, with tiles sized from the
    /// granted workgroup memory (`limits`); the generic kernel if not even one key
    /// fits. Unstaged (CPU drivers): the straight-line kernel unless
    /// [`Tuning::straight_line`](crate::Tuning::straight_line) is off or D > 128,
    /// else the generic one.
    pub(crate) fn new(tuning: crate::gpu::Tuning, d: usize, limits: &wgpu::Limits) -> Result<Self> {
        let bucket = head_dim_bucket(d);
        let generic = FusedVariant {
            kind: Kind::Generic,
            rows: 4,
            bucket,
            bias4: false,
        };
        if tuning.staged {
            // K and V tiles: 2 · keys · bucket · 4 bytes, plus the 16 bytes of the
            // shared key range (llvmpipe-GL counts it: 32 776 of 32 768 failed).
            let keys = (limits.max_compute_workgroup_storage_size.saturating_sub(16)
                / (8 * bucket))
                .min(TILED_MAX_KEYS);
            let lanes = TILED_WORKGROUP
                .min(limits.max_compute_invocations_per_workgroup)
                .min(limits.max_compute_workgroup_size_x);
            if keys == 0 || lanes == 0 {
                return Ok(generic);
            }
            return Ok(FusedVariant {
                kind: Kind::Tiled { keys, lanes },
                rows: 1,
                bucket,
                bias4: false,
            });
        }
        if !tuning.straight_line {
            return Ok(generic);
        }
        if !(1..=32).contains(&tuning.fused_rows) {
            return Err(Error::InvalidArgument(format!(
                "Tuning::fused_rows = {}: use 1 to 32",
                tuning.fused_rows
            )));
        }
        // The straight-line kernel has R·KB·D/4 lines per update: cap R·D/4 at 128
        // (about 1000 lines) so a variant compiles in under 10 s on these drivers
        // (8 rows at D = 64, 2 rows at D = 256). Asking for more than 8 rows lifts
        // the cap to 256: 16 rows at D = 64 run faster but compile 3x longer
        // (BENCHMARKS.md).
        let cap = if tuning.fused_rows > 8 { 256 } else { 128 };
        let rows = tuning.fused_rows.min(cap / (bucket / 4)).max(1);
        // K/V loads shared across the subgroup when its size is known, a multiple
        // of 4 (a vec4 chunk comes from one register) and divides the bucket.
        let size = tuning.subgroup;
        let kind = if size >= 4 && size.is_multiple_of(4) && bucket.is_multiple_of(size) {
            Kind::Subgroup { size }
        } else {
            Kind::StraightLine
        };
        Ok(FusedVariant {
            kind,
            rows,
            bucket,
            bias4: false,
        })
    }

    /// The variant for split-KV with `nq` queries, at most [`Self::rows`]: on CPU
    /// drivers without subgroups the straight-line kernel with lanes over key
    /// splits (each lane loads its own split's keys, so its gathers are all
    /// useful) and only as many rows as there are queries, rounded up to a power
    /// of two (fewer specializations) and at most FEW_QUERY_ROWS. Decode at
    /// Nq = 1 then does one row of work per key instead of 8 (BENCHMARKS.md,
    /// decode).
    fn for_few_queries(self, nq: usize) -> Self {
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => FusedVariant {
                kind: Kind::StraightLine,
                rows: (nq.max(1).next_power_of_two() as u32)
                    .min(self.rows)
                    .min(FEW_QUERY_ROWS),
                ..self
            },
            _ => self,
        }
    }

    /// Keys per step of the straight-line kernels' key loop: KEY_BLOCK, halved for
    /// the 256 bucket, whose 2 rows × 4 keys compiled in 11 s on lavapipe.
    fn key_block(&self) -> u32 {
        if self.bucket > 128 {
            KEY_BLOCK / 2
        } else {
            KEY_BLOCK
        }
    }

    /// The straight-line kernels with no more rows per lane than `nq` queries need
    /// (rounded up to a power of two): a workgroup covers lanes·rows query rows, so
    /// Nq = 16 on 8 lanes takes 2 rows instead of 8 and computes 16 rows per key,
    /// not 64 (4× less work for the same result).
    fn fit_rows(self, nq: usize) -> Self {
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => FusedVariant {
                rows: (nq
                    .div_ceil(self.lanes() as usize)
                    .max(1)
                    .next_power_of_two() as u32)
                    .min(self.rows),
                ..self
            },
            _ => self,
        }
    }

    /// Reads an additive mask as vec4s (one load per row and 4 keys instead of 4)
    /// when `aligned`: the caller checked that the mask is contiguous along keys,
    /// every row starts at a multiple of 4 elements, and key splits start at
    /// multiples of 4. Straight-line kernels with 4-key blocks only; a no-op for
    /// the others. With the mask kind compiled in, this took the bias overhead on
    /// lavapipe at B1 H8 N1024 D64 from +33–42% to a median of +6.5%
    /// (BENCHMARKS.md, v10).
    fn with_bias4(self, aligned: bool) -> Self {
        let straight = matches!(self.kind, Kind::StraightLine | Kind::Subgroup { .. });
        FusedVariant {
            bias4: aligned && straight && self.key_block().is_multiple_of(4),
            ..self
        }
    }

    fn spec(&self) -> &'static KernelSpec {
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => &SPEC_CPU,
            Kind::Generic => &SPEC,
            Kind::Tiled { .. } => &SPEC_TILED,
        }
    }

    /// Invocations per workgroup.
    pub(crate) fn lanes(&self) -> u32 {
        match self.kind {
            Kind::Tiled { lanes, .. } => lanes,
            Kind::Subgroup { size } => size,
            _ => WORKGROUP,
        }
    }

    /// Whether the lanes of a workgroup may take different key splits (few
    /// queries): not in the tiled kernel, whose key range is per workgroup.
    fn lanes_may_split(&self) -> bool {
        !matches!(self.kind, Kind::Tiled { .. } | Kind::Subgroup { .. })
    }

    /// Loop iterations per invocation for `keys` keys (see [`crate::Gpu::loop_budget`]).
    /// Generic: per key two loops over the bucket's D/4 chunks (the small row loops
    /// unroll), R loops over D around them. Straight-line: one per block of keys,
    /// plus the 4-element store loops. Tiled: per tile its load loop and, per key,
    /// two loops over D/4 plus the key loop. Pinned in tests/gpu/driver_limits.rs.
    pub(crate) fn loop_iterations(&self, keys: usize, d: usize) -> u64 {
        let dv = self.bucket as u64 / 4;
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => {
                (keys as u64).div_ceil(self.key_block() as u64)
                    + self.rows as u64 * (dv * 4 + 1)
                    + 16
            }
            Kind::Generic => keys as u64 * (2 * dv + 1) + 2 * self.rows as u64 * (d as u64 + 1),
            Kind::Tiled { keys: bc, lanes } => {
                let tiles = (keys as u64).div_ceil(bc as u64) + 1;
                let load = (bc as u64 * dv).div_ceil(lanes as u64);
                tiles * (1 + load + bc as u64 * (2 * dv + 1)) + dv + 2 * (d as u64 + 1)
            }
        }
    }

    fn constants(&self) -> (SourceConsts, Overrides) {
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => {
                let mut consts = vec![
                    ("R", self.rows),
                    ("KB", self.key_block()),
                    ("DV", self.bucket / 4),
                ];
                if let Kind::Subgroup { size } = self.kind {
                    consts.extend([("S", size), ("NG", self.bucket / size)]);
                }
                consts.push(("B4", self.bias4 as u32));
                (consts, vec![("WG", self.lanes() as f64)])
            }
            Kind::Generic => (
                vec![("DMAX", self.bucket), ("RMAX", self.rows)],
                vec![("R", self.rows as f64), ("WG", WORKGROUP as f64)],
            ),
            Kind::Tiled { keys, lanes } => (
                vec![("DMAX", self.bucket), ("BC", keys)],
                vec![("WG", lanes as f64)],
            ),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    hq: u32,
    group: u32,
    nq: u32,
    nk: u32,
    d: u32,
    blocks_q: u32,
    scale: f32,
    q_off: u32,
    q_s: [u32; 4],
    k_off: u32,
    k_s: [u32; 4],
    v_off: u32,
    v_s: [u32; 4],
    o_off: u32,
    o_s: [u32; 4],
    mask: MaskFields,
    write_lse: u32,
    m_s: [u32; 4],
    alibi: u32,
    neg_inf_bits: u32,
    softcap: f32,
    splits: u32,
    split_len: u32,
    o_ss: u32,
    lse_ss: u32,
    lane_splits: u32,
    head_rows: u32,
    lse_off: u32,
    _pad: [u32; 2],
}

/// Where split-KV partials go (see [`crate::kernels::decode`]): `splits` chunks of
/// `split_len` keys, partial O `[S, B, Hq, Nq, D]` and LSE `[S, B·Hq·Nq]`, contiguous;
/// `o_part` is the `[B, Hq, Nq, D]` view of split 0, `lse_part` the `[S, B·Hq·Nq]`
/// LSE (both may be views at an offset into a larger stack, as the KV cache's
/// pages use).
pub(crate) struct SplitKv<'a> {
    pub splits: usize,
    pub split_len: usize,
    pub o_part: &'a Tensor,
    pub lse_part: &'a Tensor,
}

/// Everything the fused kernel applies besides Q, K, V.
#[derive(Clone, Copy, Debug)]
pub struct FusedOptions<'a> {
    pub scale: Option<f32>,
    pub masking: &'a Masking,
    pub mask: Option<&'a MaskTensor>,
    /// One ALiBi slope per query head.
    pub alibi: Option<&'a [f32]>,
    /// `c·tanh(s/c)` on the scaled scores before masks, when `Some(c)` (c > 0).
    pub softcap: Option<f32>,
    pub want_lse: bool,
    /// Replaces the aligned diagonal offset (`masking.diagonal_offset`): for keys
    /// that are a slice of a longer sequence (a page of a KV cache) starting at key
    /// `p0`, the whole sequence's offset minus `p0`.
    pub diag_offset: Option<i64>,
}

/// Largest head dim of this version (private row buffers are sized for it).
pub const MAX_HEAD_DIM: usize = 256;

/// The fused kernel `gpu` runs for head dim `d` under `tuning` with many queries,
/// in words: its shader and shape, e.g. `flash_attention_cpu: 8 rows × 4 keys per
/// lane, K/V shared across subgroups of 8, D bucket 64`. For `attn info` and logs.
pub fn describe_fused_kernel(gpu: &crate::Gpu, tuning: crate::Tuning, d: usize) -> Result<String> {
    let v = FusedVariant::new(gpu.granted_tuning(tuning), d, gpu.limits())?;
    let b = v.bucket;
    Ok(match v.kind {
        Kind::StraightLine | Kind::Subgroup { .. } => format!(
            "flash_attention_cpu: {} rows × {} keys per lane, {}, D bucket {b}",
            v.rows,
            v.key_block(),
            match v.kind {
                Kind::Subgroup { size } => format!("K/V shared across subgroups of {size}"),
                _ => "whole-row K/V loads".to_string(),
            }
        ),
        Kind::Generic => format!(
            "flash_attention: {} rows per lane, loops, D bucket {b}",
            v.rows
        ),
        Kind::Tiled { keys, lanes } => format!(
            "flash_attention_tiled: {lanes} lanes × 1 row, K/V tiles of {keys} keys in workgroup memory, D bucket {b}"
        ),
    })
}

/// Records fused attention; returns O (in Q's layout) and, if asked, LSE `[B, Hq, Nq]`.
pub fn record_flash_attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &FusedOptions,
) -> Result<(Tensor, Option<Tensor>)> {
    record_fused(rec, q, k, v, opts, None)
}

/// Private row buffers are sized for the head-dim bucket, not the maximum.
fn head_dim_bucket(d: usize) -> u32 {
    [32u32, 64, 80, 96, 128, 256]
        .into_iter()
        .find(|&b| b as usize >= d)
        .unwrap_or(MAX_HEAD_DIM as u32)
}

pub(crate) fn record_fused(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &FusedOptions,
    split: Option<SplitKv<'_>>,
) -> Result<(Tensor, Option<Tensor>)> {
    let sh = attn_shape(q, k)?;
    same_device(k, v, "K and V")?;
    let gpu = q.gpu();
    let base = FusedVariant::new(rec.tuning(), sh.d, gpu.limits())?;
    // Few queries and several splits, on kernels whose lanes may take different
    // splits (no subgroup sharing): lanes over splits, each lane owning all rows
    // of its block (see the shader). With subgroups the row path is faster at
    // every Nq: on lavapipe at B1 H8 Nk32768 D64, Nq 1/4/8 took 28.0/29.0/28.1 ms
    // against 31.1/36.1/36.0 ms lane-split (BENCHMARKS.md, decode v10).
    let lane_splits = split.as_ref().is_some_and(|s| s.splits > 1)
        && base.lanes_may_split()
        && sh.nq <= base.rows as usize;
    // GQA: one workgroup serves a KV head's whole group of query heads (or the
    // largest divisor of it) when their rows fit one block, so each K/V element
    // is loaded once per group instead of once per query head (decode is
    // load-bound). Lane-split blocks hold at most FEW_QUERY_ROWS rows: with 8 the
    // kernel compiled in 14 s on lavapipe (4 rows: 6.5 s).
    let block_cap = if lane_splits {
        FEW_QUERY_ROWS.min(base.rows)
    } else {
        base.rows * base.lanes()
    } as usize;
    let head_rows = (1..=sh.group().min(block_cap / sh.nq.max(1)).max(1))
        .rev()
        .find(|h| sh.group() % h == 0)
        .unwrap_or(1);
    let mut variant = if lane_splits {
        base.for_few_queries(head_rows * sh.nq)
    } else {
        base.fit_rows(head_rows * sh.nq)
    };
    let block_rows = if lane_splits {
        variant.rows
    } else {
        variant.rows * variant.lanes()
    };
    let blocks_q = (head_rows * sh.nq).div_ceil(block_rows as usize) as u32;
    debug_assert!(head_rows == 1 || blocks_q == 1);
    let [bv, hv, nv, dv] = v.dims4("V")?;
    if (bv, hv, nv, dv) != (sh.b, sh.hkv, sh.nk, sh.d) {
        return Err(Error::Shape(format!(
            "V is {:?} but K is {:?}: the fused path needs V shaped like K",
            v.shape(),
            k.shape()
        )));
    }
    if sh.d > MAX_HEAD_DIM {
        return Err(Error::Shape(format!(
            "head dim {} is over the fused kernel's {MAX_HEAD_DIM}",
            sh.d
        )));
    }
    let masking = opts.masking;
    let mut setup = mask_setup(gpu, masking, opts.mask, [sh.b, sh.hq, sh.nq, sh.nk])?;
    if let Some(off) = opts.diag_offset {
        setup.fields.set_diag_off(i32::try_from(off).map_err(|_| {
            Error::InvalidArgument(format!("diagonal offset {off} does not fit in i32"))
        })?);
    }
    check_softcap(opts.softcap)?;
    let [m_sb, m_sh, m_sq, m_sk] = setup.strides;
    variant = variant.with_bias4(
        opts.mask.is_some_and(|m| m.kind() == MaskKind::Additive)
            && m_sk == 1
            && [m_sb, m_sh, m_sq].iter().all(|s| s.is_multiple_of(4))
            && split
                .as_ref()
                .is_none_or(|s| s.splits == 1 || s.split_len.is_multiple_of(4)),
    );
    let slopes = alibi_buffer(gpu, opts.alibi, sh.hq)?;
    let dims = [sh.b, sh.hq, sh.nq, sh.d];
    let layout: Layout = q.layout();
    let (out, lse) = match &split {
        Some(s) => (s.o_part.clone(), Some(s.lse_part.clone())),
        None => (
            Tensor::output(
                gpu,
                "attention output",
                &dims,
                Some(layout.strides(dims).to_vec()),
            )?,
            if opts.want_lse {
                Some(Tensor::output(gpu, "lse", &[sh.b, sh.hq, sh.nq], None)?)
            } else {
                None
            },
        ),
    };
    let (q_off, q_s) = addressing(q);
    let (k_off, k_s) = addressing(k);
    let (v_off, v_s) = addressing(v);
    let (o_off, o_s) = addressing(&out);
    let params = Params {
        b: sh.b as u32,
        hq: sh.hq as u32,
        group: sh.group() as u32,
        nq: sh.nq as u32,
        nk: sh.nk as u32,
        d: sh.d as u32,
        blocks_q,
        scale: opts.scale.unwrap_or(sh.default_scale() as f32),
        q_off,
        q_s,
        k_off,
        k_s,
        v_off,
        v_s,
        o_off,
        o_s,
        mask: setup.fields,
        write_lse: (opts.want_lse || split.is_some()) as u32,
        m_s: setup.strides,
        alibi: opts.alibi.is_some() as u32,
        neg_inf_bits: f32::NEG_INFINITY.to_bits(),
        softcap: opts.softcap.unwrap_or(0.0),
        splits: split.as_ref().map_or(1, |s| s.splits as u32),
        split_len: split.as_ref().map_or(sh.nk as u32, |s| s.split_len as u32),
        o_ss: split.as_ref().map_or(0, |_| sh.q_len() as u32),
        lse_ss: split.as_ref().map_or(0, |_| (sh.b * sh.hq * sh.nq) as u32),
        lane_splits: lane_splits as u32,
        head_rows: head_rows as u32,
        lse_off: lse.as_ref().map_or(0, |t| t.offset() as u32),
        _pad: [0; 2],
    };
    let keys_per_invocation = split.as_ref().map_or(sh.nk, |s| s.split_len);
    gpu.check_loop_budget(
        "flash_attention",
        variant.loop_iterations(keys_per_invocation, sh.d),
    )?;
    let (source_consts, mut overrides) = variant.constants();
    // Only what this call uses is compiled into the per-key transform.
    let uses_rules = masking.causal || masking.window.is_some() || masking.key_lengths.is_some();
    for (name, on) in [
        ("USE_RULES", uses_rules as u32),
        ("MASK_MODE", setup.fields.mask_kind()),
        ("USE_ALIBI", opts.alibi.is_some() as u32),
        ("USE_SOFTCAP", opts.softcap.is_some() as u32),
    ] {
        overrides.push((name, on as f64));
    }
    let kernel = gpu.kernel_sized(variant.spec(), &source_consts, &overrides)?;
    let splits = split.as_ref().map_or(1, |s| s.splits) as u64;
    let heads = (sh.b * sh.hq / head_rows) as u64;
    let total = if lane_splits {
        heads * splits.div_ceil(variant.lanes() as u64) * blocks_q as u64
    } else {
        heads * splits * blocks_q as u64
    };
    rec.dispatch(
        &kernel,
        "flash_attention",
        &params,
        &[
            Some(q.buffer()),
            Some(k.buffer()),
            Some(v.buffer()),
            opts.mask.map(|m| &*m.buffer),
            setup.lengths.as_ref(),
            slopes.as_ref(),
            Some(out.buffer()),
            lse.as_ref().map(Tensor::buffer),
        ],
        total,
    )?;
    Ok((out, lse))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_tuning(subgroup: u32) -> crate::gpu::Tuning {
        crate::gpu::Tuning {
            staged: false,
            softmax_workgroup: 8,
            cpu_rows: 8,
            fused_rows: 8,
            straight_line: true,
            subgroup,
        }
    }

    /// Which kernel and shape CPU drivers get: the subgroup kernel where the size
    /// divides the bucket, rows capped by the bucket, fitted to Nq, and the plain
    /// straight-line kernel with one row per query for decode.
    #[test]
    fn cpu_driver_variants() {
        let limits = wgpu::Limits::default();
        let v = |sg, d| FusedVariant::new(cpu_tuning(sg), d, &limits).unwrap();
        let d64 = v(8, 64);
        assert_eq!(
            (d64.kind, d64.rows, d64.key_block()),
            (Kind::Subgroup { size: 8 }, 8, 4)
        );
        assert_eq!(v(0, 64).kind, Kind::StraightLine);
        // Buckets and rows: 80 → 6 rows, 96 → 5, 128 → 4, 256 → 2 with 2 keys.
        for (d, bucket, rows) in [
            (33, 64, 8),
            (80, 80, 6),
            (90, 96, 5),
            (100, 128, 4),
            (256, 256, 2),
        ] {
            let x = v(8, d);
            assert_eq!((x.bucket, x.rows), (bucket, rows), "d={d}");
        }
        assert_eq!(v(8, 256).key_block(), 2);
        // A subgroup that does not divide the bucket: no subgroup kernel.
        assert_eq!(v(32, 80).kind, Kind::StraightLine);
        assert_eq!(v(16, 80).kind, Kind::Subgroup { size: 16 });
        // Rows fitted to Nq over 8 lanes.
        for (nq, rows) in [(1, 1), (8, 1), (9, 2), (16, 2), (17, 4), (33, 8), (1000, 8)] {
            assert_eq!(v(8, 64).fit_rows(nq).rows, rows, "nq={nq}");
        }
        // Few queries: the plain kernel, lanes over splits, next_pow2(Nq) rows.
        let few = v(8, 64).for_few_queries(3);
        assert_eq!((few.kind, few.rows), (Kind::StraightLine, 4));
        assert!(few.lanes_may_split() && !v(8, 64).lanes_may_split());
    }

    /// The tiled kernel's K/V tiles plus its shared key range fit the granted
    /// workgroup memory, including the 16 KiB WebGPU default, for every head dim.
    #[test]
    fn tiles_fit_the_granted_workgroup_memory() {
        let staged = crate::gpu::Tuning {
            staged: true,
            softmax_workgroup: 128,
            cpu_rows: 8,
            fused_rows: 8,
            straight_line: false,
            subgroup: 0,
        };
        for limit in [16_384u32, 32_768, 49_152, 1 << 20] {
            let limits = wgpu::Limits {
                max_compute_workgroup_storage_size: limit,
                ..wgpu::Limits::default()
            };
            for d in [1usize, 7, 32, 64, 80, 128, 200, 256] {
                let v = FusedVariant::new(staged, d, &limits).unwrap();
                let Kind::Tiled { keys, lanes } = v.kind else {
                    panic!("d={d} limit={limit}: not tiled");
                };
                let bytes = 2 * keys * v.bucket * 4 + 16;
                assert!(
                    keys >= 1 && bytes <= limit,
                    "d={d} limit={limit}: {keys} keys = {bytes} B"
                );
                assert!(lanes <= limits.max_compute_invocations_per_workgroup);
            }
        }
        // 16 KiB at D = 64: 31 keys per tile (32 would need 16 400 bytes with the range).
        let v = FusedVariant::new(staged, 64, &wgpu::Limits::default()).unwrap();
        assert_eq!(
            v.kind,
            Kind::Tiled {
                keys: 31,
                lanes: 64
            }
        );
    }
}

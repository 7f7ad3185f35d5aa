//! Fused attention with an online softmax (`shaders/flash_attention{,_cpu,_tiled}.wgsl`;
//! the CPU twin is [`crate::reference::attention`], which computes the same O and
//! LSE). Never materializes the `[B, Hq, Nq, Nk]` matrix.
//!
//! This module says what each variant of the fused kernel family is (its
//! shader, shape, constants, loop estimate) and records a launch; which variant
//! runs, and how the work is split, is the plan's decision ([`mod@crate::plan`]).

use super::{addressing, upload_key_lengths, upload_slopes, MaskFields};
use crate::error::Result;
use crate::gpu::Recorder;
use crate::mask_tensor::MaskTensor;
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;
use crate::transform::ScoreTransform;

/// The bindings of every fused kernel (`shared/flash_common.wgsl`): Q, K, V, mask,
/// key lengths, ALiBi slopes read-only; O and LSE written.
const FUSED_BINDINGS: &[bool] = &[true, true, true, true, true, true, false, false];

/// `flash_attention.wgsl`: the generic fused kernel (loops, no workgroup
/// memory); runs on any device.
pub const SPEC: KernelSpec = KernelSpec {
    name: "flash_attention",
    storage_read_only: FUSED_BINDINGS,
};

/// `flash_attention_cpu.wgsl`: straight-line code generated per shape for CPU
/// drivers, optionally sharing K/V loads across a subgroup.
pub const SPEC_CPU: KernelSpec = KernelSpec {
    name: "flash_attention_cpu",
    storage_read_only: FUSED_BINDINGS,
};

/// `flash_attention_tiled.wgsl`: K/V tiles staged in workgroup memory, one
/// query row per lane (GPUs).
pub const SPEC_TILED: KernelSpec = KernelSpec {
    name: "flash_attention_tiled",
    storage_read_only: FUSED_BINDINGS,
};

/// `flash_attention_coop.wgsl`: Q·Kᵀ on cooperative matrices (f16 × f16 →
/// f32), online softmax and P·V scalar per row in f32.
pub const SPEC_COOP: KernelSpec = KernelSpec {
    name: "flash_attention_coop",
    storage_read_only: FUSED_BINDINGS,
};

/// Invocations per workgroup of the generic and straight-line kernels (one SIMD
/// batch on CPU drivers).
pub(crate) const WORKGROUP: u32 = 8;

/// Keys per step of the key loop in the straight-line kernel.
const KEY_BLOCK: u32 = 4;

/// The head-dim buckets: private row buffers, registers and tiles are sized for
/// the bucket (Q is zero past D).
pub const HEAD_DIM_BUCKETS: [u32; 6] = [32, 64, 80, 96, 128, 256];

/// The bucket of head dim `d` (at most [`crate::plan::MAX_HEAD_DIM`]).
pub(crate) fn head_dim_bucket(d: usize) -> u32 {
    HEAD_DIM_BUCKETS
        .into_iter()
        .find(|&b| b as usize >= d)
        .unwrap_or(256)
}

/// The fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `flash_attention_cpu.wgsl`: straight-line code for CPU drivers.
    StraightLine,
    /// `flash_attention_cpu.wgsl` with `S = size`: K/V loads shared across a
    /// subgroup of `size` lanes (CPU drivers with subgroups).
    Subgroup { size: u32 },
    /// `flash_attention.wgsl`: loops, no workgroup memory; runs anywhere.
    Generic,
    /// `flash_attention_tiled.wgsl`: K/V tiles of `keys` keys in workgroup memory,
    /// `lanes` lanes in groups of `split` (each group owns `rows` query rows; its
    /// lanes split D and sum their dot products with subgroup shuffles when
    /// `split` > 1) (real GPUs).
    Tiled { keys: u32, lanes: u32, split: u32 },
    /// `flash_attention_coop.wgsl`: one row per lane, `lanes` lanes; each tile
    /// of `keys` keys is scored on `tile`×`tile` cooperative matrices, and with
    /// `pv` its P·V summed on them too.
    Coop {
        tile: u32,
        lanes: u32,
        keys: u32,
        pv: bool,
    },
}

/// One variant of the fused kernel family: which kernel, and its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FusedVariant {
    pub kind: Kind,
    /// Query rows per invocation.
    pub rows: u32,
    /// Head-dim bucket the registers and tiles are sized for.
    pub bucket: u32,
    /// Straight-line kernels: the additive mask is read as one vec4 per row and
    /// block of 4 keys (`B4`).
    pub bias4: bool,
    /// Subgroup kernel: K and V (packed halves) loaded as words of two
    /// elements (`P2`, see src/shaders/straight_line.rs).
    pub pairs: bool,
}

impl FusedVariant {
    /// Keys per step of the straight-line kernels' key loop: KEY_BLOCK, halved for
    /// the 256 bucket, whose 2 rows × 4 keys compiled in 11 s on lavapipe.
    pub(crate) fn key_block(&self) -> u32 {
        if self.bucket > 128 {
            KEY_BLOCK / 2
        } else {
            KEY_BLOCK
        }
    }

    /// Whether this is one of the straight-line kernels.
    pub(crate) fn straight(&self) -> bool {
        matches!(self.kind, Kind::StraightLine | Kind::Subgroup { .. })
    }

    fn spec(&self) -> &'static KernelSpec {
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => &SPEC_CPU,
            Kind::Generic => &SPEC,
            Kind::Tiled { .. } => &SPEC_TILED,
            Kind::Coop { .. } => &SPEC_COOP,
        }
    }

    /// Invocations per workgroup.
    pub(crate) fn lanes(&self) -> u32 {
        match self.kind {
            Kind::Tiled { lanes, .. } | Kind::Coop { lanes, .. } => lanes,
            Kind::Subgroup { size } => size,
            _ => WORKGROUP,
        }
    }

    /// Query rows one workgroup covers (per block).
    pub(crate) fn block_rows(&self) -> u32 {
        match self.kind {
            Kind::Tiled { lanes, split, .. } => lanes / split * self.rows,
            _ => self.lanes() * self.rows,
        }
    }

    /// Whether the lanes of a workgroup may take different key splits (few
    /// queries): not in the tiled kernel, whose key range is per workgroup, nor
    /// where the subgroup shares its loads.
    pub(crate) fn lanes_may_split(&self) -> bool {
        !matches!(
            self.kind,
            Kind::Tiled { .. } | Kind::Subgroup { .. } | Kind::Coop { .. }
        )
    }

    /// Loop iterations per invocation for `keys` keys (see [`crate::gpu::Gpu::loop_budget`]).
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
            // Per tile its load loop and, per key and row, two loops over the
            // lane's D/4/split chunks and the shuffle steps.
            Kind::Tiled {
                keys: bc,
                lanes,
                split,
            } => {
                let tiles = (keys as u64).div_ceil(bc as u64) + 1;
                let load = (bc as u64 * dv).div_ceil(lanes as u64);
                let dl = dv / split as u64;
                let r = self.rows as u64;
                let shuffle = split.trailing_zeros() as u64;
                tiles * (1 + load + bc as u64 * (1 + r * (2 * dl + 1 + shuffle)))
                    + r * (2 * dl + 2)
                    + 2 * (d as u64 + 1)
            }
            // Per tile: the K/V load loop, the score tiles (every slab on one
            // subgroup at worst: slabs · key tiles · k-steps), per key the V loop;
            // with pv two passes over the row's scores, the O row's rescale and
            // the P·V tiles instead of the V loop.
            Kind::Coop {
                tile,
                lanes,
                keys: bc,
                pv,
            } => {
                let tiles = (keys as u64).div_ceil(bc as u64) + 1;
                let b = self.bucket as u64;
                let load = (bc as u64 * b).div_ceil(lanes as u64);
                let slabs = (lanes / tile) as u64;
                let mm = slabs * (bc / tile) as u64 * (b / tile as u64 + 1);
                let q = (lanes as u64 * b).div_ceil(lanes as u64);
                let rows = if pv {
                    load + 2 * bc as u64 + b + slabs * (b / tile as u64) * (bc / tile) as u64
                } else {
                    load + bc as u64 * (dv + 1)
                };
                tiles * (1 + load + mm + rows) + q + b + dv + 2 * (d as u64 + 1)
            }
        }
    }

    /// The specialization: the variant's shape as defines and overrides, plus the
    /// score transform's `overrides` (what the per-key code compiles in).
    pub(crate) fn specialization(&self, transform: [(&'static str, f64); 4]) -> Specialization {
        let s = Specialization::new(self.spec());
        let s = match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => {
                let mut defines = vec![
                    ("R", self.rows),
                    ("KB", self.key_block()),
                    ("DV", self.bucket / 4),
                ];
                if let Kind::Subgroup { size } = self.kind {
                    defines.extend([("S", size), ("NG", self.bucket / size)]);
                }
                defines.push(("B4", self.bias4 as u32));
                if self.pairs {
                    defines.push(("P2", 1));
                }
                s.defines(&defines)
                    .overrides(&[("WG", self.lanes() as f64)])
            }
            Kind::Generic => s
                .defines(&[("DMAX", self.bucket), ("RMAX", self.rows)])
                .overrides(&[("R", self.rows as f64), ("WG", WORKGROUP as f64)]),
            Kind::Tiled { keys, lanes, split } => s
                .defines(&[
                    ("DMAX", self.bucket),
                    ("BC", keys),
                    ("R", self.rows),
                    ("G", split),
                    ("SG", (split > 1) as u32),
                ])
                .overrides(&[("WG", lanes as f64)]),
            Kind::Coop {
                tile,
                lanes,
                keys,
                pv,
            } => s.defines(&[
                ("DMAX", self.bucket),
                ("BC", keys),
                ("BR", lanes),
                ("T", tile),
                ("PV", pv as u32),
            ]),
        };
        s.overrides(&transform)
    }

    /// In words, e.g. `flash_attention_cpu: 8 rows × 4 keys per lane, K/V shared
    /// across subgroups of 8, D bucket 64`.
    pub(crate) fn describe(&self) -> String {
        let b = self.bucket;
        match self.kind {
            Kind::StraightLine | Kind::Subgroup { .. } => format!(
                "flash_attention_cpu: {} rows × {} keys per lane, {}, D bucket {b}",
                self.rows,
                self.key_block(),
                match self.kind {
                    Kind::Subgroup { size } if self.pairs => {
                        format!("K/V shared across subgroups of {size}, two halves per load")
                    }
                    Kind::Subgroup { size } => format!("K/V shared across subgroups of {size}"),
                    _ => "whole-row K/V loads".to_string(),
                }
            ),
            Kind::Generic => format!(
                "flash_attention: {} rows per lane, loops, D bucket {b}",
                self.rows
            ),
            Kind::Tiled { keys, lanes, split } => format!(
                "flash_attention_tiled: {lanes} lanes × {} row{} per {}, K/V tiles of {keys} keys in workgroup memory, D bucket {b}",
                self.rows,
                if self.rows == 1 { "" } else { "s" },
                if split > 1 {
                    format!("group of {split} lanes (D split, subgroup shuffles)")
                } else {
                    "lane".to_string()
                }
            ),
            Kind::Coop {
                tile,
                lanes,
                keys,
                pv,
            } => format!(
                "flash_attention_coop: {lanes} lanes × 1 row, Q·Kᵀ{} on {tile}x{tile}x{tile} f16→f32 cooperative matrices, tiles of {keys} keys, D bucket {b}",
                if pv { " and P·V" } else { "" }
            ),
        }
    }
}

/// One dispatch of a fused kernel, as the plan laid it out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FusedLaunch {
    pub variant: FusedVariant,
    /// Lanes take different key splits (few queries; each lane owns its block's rows).
    pub lane_splits: bool,
    /// Query heads one workgroup serves (a KV head's group, GQA), 1 otherwise.
    pub head_rows: usize,
    /// Query blocks per (batch, head group).
    pub blocks_q: u32,
    /// Key splits (1 = the whole key range; more writes split-KV partials).
    pub splits: usize,
    pub split_len: usize,
    /// Workgroups of the dispatch.
    pub workgroups: u64,
    /// Loop iterations per invocation (checked against the budget by the plan).
    pub loop_iterations: u64,
    /// The threads of a CPU driver that gives each one a contiguous range of
    /// the grid (`DeviceCaps::cpu_threads`): the kernel deals its work items
    /// out over them (`spread_workgroup` in `shared/flash_common.wgsl`); 0 keeps
    /// the grid's order.
    pub spread_cols: u32,
    pub spec: Specialization,
}

/// Where a launch writes: O and LSE, or with splits the partials of split 0
/// (`o` a `[B, Hq, Nq, D]` view, `lse` `[splits, B·Hq·Nq]`, both possibly at an
/// offset into a larger stack), the splits `o_ss` and `lse_ss` elements apart.
/// `partial`: split-KV partials, merged later (an attention sink is then
/// added by the merge, not here).
pub(crate) struct FusedOut<'a> {
    pub o: &'a Tensor,
    pub lse: Option<&'a Tensor>,
    pub o_ss: u32,
    pub lse_ss: u32,
    pub partial: bool,
}

crate::uniform! {
pub(super) struct Params {
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
    kv_base: u32,
    mod_nkb: u32,
    sink: u32,
    packed_out: u32,
    lse_sb: u32,
    lse_sh: u32,
    seqs: u32,
    cuq_off: u32,
    cuk_off: u32,
    seq_diag: u32,
    bt_off: u32,
    block_size: u32,
    max_blocks: u32,
    num_blocks: u32,
    seg_lo: u32,
    seg_hi: u32,
    spread: u32,
    spread_cols: u32,
}}

/// The sequences' u32 index a launch over packed or paged sequences binds in
/// place of the key lengths (`shared/flash_common.wgsl`, binding 5): the
/// sequence lengths from element 0 (paged keys), `cu_seqlens_q` /
/// `cu_seqlens_k` and the block table at their offsets.
pub(crate) struct SeqIndex<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub layout: crate::plan::SeqLayout,
    /// Key lengths per sequence from element 0.
    pub has_lengths: bool,
    pub cuq_off: Option<u32>,
    pub cuk_off: Option<u32>,
    pub bt_off: u32,
    /// The pool blocks `[lo, hi)` this launch's K/V binding holds (a pool
    /// split over bindings); `None`: the whole pool.
    pub part: Option<(u32, u32)>,
}

/// Records `launch` over `q` `[B, Hq, Nq, D]`, `k` and `v` `[B, Hkv, Nk, D]`
/// (checked by the problem) under transform `t`, whose dense mask is `mask`.
/// With `seqs`, the tensors are views over packed or paged rows
/// (`[1, H, rows, D]`) and `dims` gives the problem's `[B, Hq, max_q, D]` and
/// `[B, Hkv, max_k, D]`.
pub(crate) fn record_fused(
    rec: &mut Recorder<'_>,
    launch: &FusedLaunch,
    [q, k, v]: [&Tensor; 3],
    t: &ScoreTransform,
    mask: Option<&MaskTensor>,
    out: FusedOut<'_>,
    seqs: Option<(&SeqIndex<'_>, [usize; 4], [usize; 4])>,
) -> Result<()> {
    let gpu = q.gpu();
    let ([b, hq, nq, d], [_, hkv, nk, _]) = match seqs {
        Some((_, qd, kd)) => (qd, kd),
        None => (q.dims4("Q")?, k.dims4("K")?),
    };
    let lengths = match seqs {
        Some(_) => None,
        None => upload_key_lengths(gpu, &t.masking)?,
    };
    let index = seqs.map(|(s, ..)| s);
    let slopes = upload_slopes(gpu, t.head_table(hq).as_deref())?;
    let (q_off, mut q_s) = addressing(q);
    let (k_off, mut k_s) = addressing(k);
    let (v_off, mut v_s) = addressing(v);
    let (o_off, mut o_s) = addressing(out.o);
    let mut mask_fields = MaskFields::of(t)?;
    let layout = index.map(|s| s.layout);
    if let Some(l) = layout {
        // Sequences are found by offsets (packed) or the table (paged), not by
        // a batch stride.
        if l.packed_q {
            q_s[0] = 0;
            if !out.partial {
                o_s[0] = 0;
            }
        }
        if l.packed_k || l.paged.is_some() {
            k_s[0] = 0;
            v_s[0] = 0;
        }
        mask_fields.has_lengths = index.is_some_and(|s| s.has_lengths) as u32;
    }
    let packed_out = layout.is_some_and(|l| l.packed_q) && !out.partial;
    let paged = layout.and_then(|l| l.paged);
    let params = Params {
        b: b as u32,
        hq: hq as u32,
        group: (hq / hkv) as u32,
        nq: nq as u32,
        nk: nk as u32,
        d: d as u32,
        blocks_q: launch.blocks_q,
        scale: t.scale,
        q_off,
        q_s,
        k_off,
        k_s,
        v_off,
        v_s,
        o_off,
        o_s,
        mask: mask_fields,
        write_lse: out.lse.is_some() as u32,
        m_s: t.mask.map_or([0; 4], |m| m.strides),
        alibi: t.alibi.is_some() as u32,
        neg_inf_bits: f32::NEG_INFINITY.to_bits(),
        softcap: t.softcap.unwrap_or(0.0),
        splits: launch.splits as u32,
        split_len: launch.split_len as u32,
        o_ss: out.o_ss,
        lse_ss: out.lse_ss,
        lane_splits: launch.lane_splits as u32,
        head_rows: launch.head_rows as u32,
        lse_off: out.lse.map_or(0, |t| t.offset() as u32),
        kv_base: t.mods.as_ref().map_or(0, |m| m.kv0),
        mod_nkb: t
            .mods
            .as_ref()
            .filter(|m| m.mods.block_skipping())
            .map_or(0, |m| m.dims[3].div_ceil(crate::mods::BLOCK_K) as u32),
        sink: (t.sinks.is_some() && !out.partial) as u32,
        packed_out: packed_out as u32,
        // Packed final LSE: [Hq, total_q]; else [B, Hq, Nq] (partials too).
        lse_sb: if packed_out { 0 } else { (hq * nq) as u32 },
        lse_sh: match layout {
            Some(l) if packed_out => l.total_q as u32,
            _ => nq as u32,
        },
        seqs: index.map_or(0, |s| {
            s.cuq_off.is_some() as u32 | (s.cuk_off.is_some() as u32) << 1
        }),
        cuq_off: index.and_then(|s| s.cuq_off).unwrap_or(0),
        cuk_off: index.and_then(|s| s.cuk_off).unwrap_or(0),
        seq_diag: layout.is_some_and(|l| l.per_seq_diag) as u32,
        bt_off: index.map_or(0, |s| s.bt_off),
        block_size: paged.map_or(1, |p| p.block_size as u32),
        max_blocks: paged.map_or(1, |p| p.max_blocks as u32),
        num_blocks: match (paged, index.and_then(|s| s.part)) {
            (_, Some((lo, hi))) => hi - lo,
            (Some(p), None) => p.num_blocks as u32,
            (None, None) => 1,
        },
        seg_lo: index.and_then(|s| s.part).map_or(0, |p| p.0),
        seg_hi: index.and_then(|s| s.part).map_or(u32::MAX, |p| p.1),
        spread: match launch.spread_cols {
            0 => 0,
            _ => u32::try_from(launch.workgroups).unwrap_or(0),
        },
        spread_cols: launch.spread_cols,
    };
    let mods = match &t.mods {
        Some(m) => Some(
            m.mods
                .binding(gpu, m.mods.block_skipping().then_some(m.dims))?,
        ),
        None => None,
    };
    let kernel = gpu.kernel(&launch.spec)?;
    let mut buffers = vec![
        Some(q.buffer()),
        Some(k.buffer()),
        Some(v.buffer()),
        mask.map(|m| &*m.buffer),
        index.map(|s| s.buffer).or(lengths.as_ref()),
        slopes.as_ref(),
        Some(out.o.buffer()),
        out.lse.map(Tensor::buffer),
    ];
    if let Some(m) = &mods {
        buffers.push(Some(m));
    }
    rec.dispatch(
        &kernel,
        "flash_attention",
        &params,
        &buffers,
        launch.workgroups,
    )
}

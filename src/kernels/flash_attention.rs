//! Fused attention with an online softmax (`shaders/flash_attention.wgsl`; its CPU
//! twin is [`crate::reference::attention`], which computes the same O and LSE).
//! Never materializes the `[B, Hq, Nq, Nk]` matrix.

use super::{
    addressing, alibi_buffer, attn_shape, check_softcap, mask_setup, same_device, MaskFields,
};
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::{Error, Result};
use crate::mask::Masking;
use crate::mask_tensor::MaskTensor;
use crate::tensor::{Layout, Tensor};

const SPEC: KernelSpec = KernelSpec {
    name: "flash_attention",
    storage_read_only: &[true, true, true, true, true, true, false, false],
};

const SPEC_CPU: KernelSpec = KernelSpec {
    name: "flash_attention_cpu",
    storage_read_only: &[true, true, true, true, true, true, false, false],
};

/// Invocations per workgroup (one SIMD batch on CPU drivers).
const WORKGROUP: u32 = 8;

type SourceConsts = Vec<(&'static str, u32)>;
type Overrides = Vec<(&'static str, f64)>;

/// Keys per step of the key loop in the straight-line kernel.
const KEY_BLOCK: u32 = 4;

/// Which fused kernel runs, and its shape.
pub(crate) struct FusedVariant {
    /// `flash_attention_cpu.wgsl` (true) or the generic `flash_attention.wgsl`.
    straight_line: bool,
    /// Query rows per invocation.
    pub rows: u32,
    bucket: u32,
}

impl FusedVariant {
    /// The straight-line variant on adapters that take unstaged tiles (CPU
    /// drivers) unless [`Tuning::straight_line`](crate::Tuning::straight_line) is
    /// off, the generic one elsewhere.
    pub(crate) fn new(tuning: crate::gpu::Tuning, d: usize) -> Result<Self> {
        let bucket = head_dim_bucket(d);
        let generic = FusedVariant {
            straight_line: false,
            rows: 4,
            bucket,
        };
        if tuning.staged || !tuning.straight_line {
            return Ok(generic);
        }
        if !(1..=32).contains(&tuning.fused_rows) {
            return Err(Error::InvalidArgument(format!(
                "Tuning::fused_rows = {}: use 1 to 32",
                tuning.fused_rows
            )));
        }
        // The straight-line kernel has R·KB·D/4 lines per update: cap R·D/4 at 128
        // (about 1000 lines) so a variant compiles in ~15 s on these drivers; the
        // D = 256 bucket would need thousands and takes minutes, so it stays generic.
        // Asking for more than 8 rows lifts the cap to 256: 16 rows at D = 64 run
        // 1.6x faster on lavapipe but compile 3x longer (BENCHMARKS.md, v6).
        if bucket > 128 {
            return Ok(generic);
        }
        let cap = if tuning.fused_rows > 8 { 256 } else { 128 };
        let rows = tuning.fused_rows.min(cap / (bucket / 4)).max(1);
        Ok(FusedVariant {
            straight_line: true,
            rows,
            bucket,
        })
    }

    fn spec(&self) -> &'static KernelSpec {
        if self.straight_line {
            &SPEC_CPU
        } else {
            &SPEC
        }
    }

    /// Loop iterations per invocation for `keys` keys (see [`crate::Gpu::loop_budget`]).
    /// Generic: per key two loops over the bucket's D/4 chunks (the small row loops
    /// unroll), R loops over D around them. Straight-line: one per block of keys,
    /// plus the 4-element store loops. Pinned in tests/gpu/driver_limits.rs.
    pub(crate) fn loop_iterations(&self, keys: usize, d: usize) -> u64 {
        let dv = self.bucket as u64 / 4;
        if self.straight_line {
            (keys as u64).div_ceil(KEY_BLOCK as u64) + self.rows as u64 * (dv * 4 + 1) + 16
        } else {
            keys as u64 * (2 * dv + 1) + 2 * self.rows as u64 * (d as u64 + 1)
        }
    }

    fn constants(&self) -> (SourceConsts, Overrides) {
        if self.straight_line {
            (
                vec![("R", self.rows), ("KB", KEY_BLOCK), ("DV", self.bucket / 4)],
                vec![("WG", WORKGROUP as f64)],
            )
        } else {
            (
                vec![("DMAX", self.bucket), ("RMAX", self.rows)],
                vec![("R", self.rows as f64), ("WG", WORKGROUP as f64)],
            )
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
}

/// Where split-KV partials go (see [`crate::kernels::decode`]): `splits` chunks of
/// `split_len` keys, partial O `[S, B, Hq, Nq, D]` and LSE `[S, B·Hq·Nq]`, contiguous;
/// `o_part` is the `[B, Hq, Nq, D]` view of split 0, `lse_part` the whole LSE buffer.
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
    [32u32, 64, 128, 256]
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
    // Few queries and several splits: lanes over splits (see the shader).
    let variant = FusedVariant::new(rec.tuning(), sh.d)?;
    let lane_splits =
        split.as_ref().is_some_and(|s| s.splits > 1) && sh.nq <= variant.rows as usize;
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
    let blocks_q = sh.nq.div_ceil((variant.rows * WORKGROUP) as usize) as u32;
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
        ("USE_RULES", uses_rules),
        ("USE_MASK", opts.mask.is_some()),
        ("USE_ALIBI", opts.alibi.is_some()),
        ("USE_SOFTCAP", opts.softcap.is_some()),
    ] {
        overrides.push((name, on as u32 as f64));
    }
    let kernel = gpu.kernel_sized(variant.spec(), &source_consts, &overrides)?;
    let splits = split.as_ref().map_or(1, |s| s.splits) as u64;
    let total = if lane_splits {
        (sh.b * sh.hq) as u64 * splits.div_ceil(WORKGROUP as u64)
    } else {
        (sh.b * sh.hq) as u64 * splits * blocks_q as u64
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

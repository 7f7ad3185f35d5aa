//! Fused attention with an online softmax (`shaders/flash_attention.wgsl`; its CPU
//! twin is [`crate::reference::attention`], which computes the same O and LSE).
//! Never materializes the `[B, Hq, Nq, Nk]` matrix.

use super::{addressing, attn_shape, same_device};
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::{Error, Result};
use crate::mask::Masking;
use crate::mask_tensor::{MaskKind, MaskTensor};
use crate::tensor::{Layout, Tensor};

const SPEC: KernelSpec = KernelSpec {
    name: "flash_attention",
    storage_read_only: &[true, true, true, true, true, true, false, false],
};

/// Query rows per invocation and invocations per workgroup (fixed in this first
/// version; to become a per-adapter family).
const ROWS: u32 = 4;
const WORKGROUP: u32 = 8;

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
    causal: u32,
    window: u32,
    left: u32,
    right: u32,
    diag_off: i32,
    has_lengths: u32,
    mask_kind: u32,
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

/// Loop iterations per invocation of the fused kernel for `keys` keys at head dim
/// `d` (see [`crate::Gpu::loop_budget`]): per key, two loops over the DMAX/4 vec4
/// chunks of a row (the small R-row loops unroll); before and after, R loops over
/// D. Pinned from both sides in tests/gpu/driver_limits.rs.
pub(crate) fn loop_iterations(keys: usize, d: usize) -> u64 {
    let per_key = 2 * (head_dim_bucket(d) as u64 / 4) + 1;
    keys as u64 * per_key + 2 * ROWS as u64 * (d as u64 + 1)
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
    let lane_splits = split.as_ref().is_some_and(|s| s.splits > 1) && sh.nq <= ROWS as usize;
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
    masking.validate(sh.b, sh.nk)?;
    let m_s = match opts.mask {
        Some(m) => {
            m.check_device(gpu)?;
            m.broadcast_strides(sh.b, sh.hq, sh.nq, sh.nk)?
        }
        None => [0; 4],
    };
    if let Some(a) = opts.alibi {
        if a.len() != sh.hq || a.iter().any(|s| !s.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "ALiBi needs {} finite slopes (one per query head), got {}",
                sh.hq,
                a.len()
            )));
        }
    }
    if let Some(c) = opts.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "softcap must be finite and > 0, got {c}"
            )));
        }
    }
    let lengths = match &masking.key_lengths {
        Some(l) => Some(gpu.upload(
            "key lengths",
            bytemuck::cast_slice(l),
            wgpu::BufferUsages::STORAGE,
        )?),
        None => None,
    };
    let slopes = match opts.alibi {
        Some(a) => Some(gpu.upload(
            "alibi slopes",
            bytemuck::cast_slice(a),
            wgpu::BufferUsages::STORAGE,
        )?),
        None => None,
    };
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
    let window = masking
        .window
        .unwrap_or(crate::mask::Window { left: 0, right: 0 });
    let blocks_q = sh.nq.div_ceil((ROWS * WORKGROUP) as usize) as u32;
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
        causal: masking.causal as u32,
        window: masking.window.is_some() as u32,
        left: window.left.min(i32::MAX as u32),
        right: window.right.min(i32::MAX as u32),
        diag_off: masking.diagonal_offset(sh.nq, sh.nk) as i32,
        has_lengths: masking.key_lengths.is_some() as u32,
        mask_kind: match opts.mask.map(MaskTensor::kind) {
            None => 0,
            Some(MaskKind::Additive) => 1,
            Some(MaskKind::Bool) => 2,
        },
        write_lse: (opts.want_lse || split.is_some()) as u32,
        m_s,
        alibi: opts.alibi.is_some() as u32,
        neg_inf_bits: f32::NEG_INFINITY.to_bits(),
        softcap: opts.softcap.unwrap_or(0.0),
        splits: split.as_ref().map_or(1, |s| s.splits as u32),
        split_len: split.as_ref().map_or(sh.nk as u32, |s| s.split_len as u32),
        o_ss: split.as_ref().map_or(0, |_| sh.q_len() as u32),
        lse_ss: split.as_ref().map_or(0, |_| (sh.b * sh.hq * sh.nq) as u32),
        lane_splits: lane_splits as u32,
    };
    let dmax = head_dim_bucket(sh.d);
    let keys_per_invocation = split.as_ref().map_or(sh.nk, |s| s.split_len);
    gpu.check_loop_budget(
        "flash_attention",
        loop_iterations(keys_per_invocation, sh.d),
    )?;
    let kernel = gpu.kernel_sized(
        &SPEC,
        &[("DMAX", dmax), ("RMAX", ROWS)],
        &[("R", ROWS as f64), ("WG", WORKGROUP as f64)],
    )?;
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
            lengths.as_ref(),
            slopes.as_ref(),
            Some(out.buffer()),
            lse.as_ref().map(Tensor::buffer),
        ],
        total,
    )?;
    Ok((out, lse))
}

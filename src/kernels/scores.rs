//! `S = scale · QKᵀ (+ bias) (+ ALiBi)` for all batches and heads in one dispatch
//! (`shaders/scores.wgsl`, CPU twin [`crate::reference::scores`]).

use super::{addressing, alibi_buffer, attn_shape, check_softcap, MaskRef, TileConfig};
use crate::dispatch::{KernelSpec, Recorder};
use crate::error::Result;
use crate::mask_tensor::{MaskKind, MaskTensor};
use crate::tensor::Tensor;

const SPEC: KernelSpec = KernelSpec {
    name: "scores",
    storage_read_only: &[true, true, true, true, false],
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    b: u32,
    hq: u32,
    group: u32,
    nq: u32,
    nk: u32,
    d: u32,
    tiles_m: u32,
    tiles_n: u32,
    q_off: u32,
    q_s: [u32; 4],
    k_off: u32,
    k_s: [u32; 4],
    scale: f32,
    bias_kind: u32,
    m_s: [u32; 4],
    alibi: u32,
    diag_off: i32,
    softcap: f32,
    m_off: u32,
}

/// ALiBi inside the score path: `− slopes[h] · |i + diag_off − j|`, the distance
/// from the aligned diagonal (see [`crate::Masking::diagonal_offset`]).
#[derive(Clone, Copy, Debug)]
pub struct AlibiBias<'a> {
    /// One slope per query head (e.g. [`crate::alibi_slopes`]).
    pub slopes: &'a [f32],
    pub diag_off: i64,
}

/// Scores `[B, Hq, Nq, Nk]` of `q` `[B, Hq, Nq, D]` against `k` `[B, Hkv, Nk, D]`
/// (any strides; `Hq % Hkv == 0`). `scale` defaults to `1/sqrt(D)`; `bias` is an
/// additive mask broadcastable to the scores; `alibi` adds the ALiBi distance bias;
/// `softcap = Some(c)` maps the scaled dot product to `c·tanh(s/c)` before the biases.
pub fn scores(
    q: &Tensor,
    k: &Tensor,
    scale: Option<f32>,
    bias: Option<&MaskTensor>,
    alibi: Option<AlibiBias<'_>>,
    softcap: Option<f32>,
) -> Result<Tensor> {
    let mut rec = q.gpu().recorder();
    let s = record_scores(&mut rec, q, k, scale, bias, alibi, softcap)?;
    rec.submit()?;
    Ok(s)
}

/// Records [`scores`] without submitting.
pub fn record_scores(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    scale: Option<f32>,
    bias: Option<&MaskTensor>,
    alibi: Option<AlibiBias<'_>>,
    softcap: Option<f32>,
) -> Result<Tensor> {
    let sh = attn_shape(q, k)?;
    let dims = [sh.b, sh.hq, sh.nq, sh.nk];
    let bias = bias.map(|m| MaskRef::whole(q.gpu(), m, dims)).transpose()?;
    let out = Tensor::output(q.gpu(), "scores", &dims, None)?;
    record_scores_into(rec, q, k, scale, bias, alibi, softcap, &out)?;
    Ok(out)
}

/// [`record_scores`] into `out`, contiguous `[B, Hq, Nq, Nk]` (a reused scratch
/// tensor), with the bias already placed (a chunk of a larger problem reads its
/// part of the mask).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_scores_into(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    scale: Option<f32>,
    bias: Option<MaskRef<'_>>,
    alibi: Option<AlibiBias<'_>>,
    softcap: Option<f32>,
    out: &Tensor,
) -> Result<()> {
    let sh = attn_shape(q, k)?;
    check_softcap(softcap)?;
    let gpu = q.gpu();
    // (MaskRef::whole checked the device.)
    if let Some(m) = bias {
        m.tensor.expect_kind(MaskKind::Additive, "scores bias")?;
    }
    debug_assert_eq!(out.shape(), [sh.b, sh.hq, sh.nq, sh.nk]);
    debug_assert_eq!(out.offset(), 0);
    let slopes = alibi_buffer(gpu, alibi.map(|a| a.slopes), sh.hq)?;
    let (q_off, q_s) = addressing(q);
    let (k_off, k_s) = addressing(k);
    let tile = TileConfig::new(rec.tuning())?;
    gpu.check_loop_budget("scores", tile.loop_iterations(sh.d))?;
    let (tiles_m, tiles_n) = tile.tiles(sh.nq, sh.nk);
    let params = Params {
        b: sh.b as u32,
        hq: sh.hq as u32,
        group: sh.group() as u32,
        nq: sh.nq as u32,
        nk: sh.nk as u32,
        d: sh.d as u32,
        tiles_m,
        tiles_n,
        q_off,
        q_s,
        k_off,
        k_s,
        scale: scale.unwrap_or(sh.default_scale() as f32),
        bias_kind: bias.is_some() as u32,
        m_s: bias.map_or([0; 4], |m| m.strides),
        alibi: alibi.is_some() as u32,
        diag_off: alibi.map_or(0, |a| a.diag_off as i32),
        softcap: softcap.unwrap_or(0.0),
        m_off: bias.map_or(0, |m| m.offset),
    };
    let kernel = gpu.kernel(&SPEC, &tile.constants)?;
    let total = (sh.b * sh.hq) as u64 * params.tiles_m as u64 * params.tiles_n as u64;
    rec.dispatch(
        &kernel,
        "scores",
        &params,
        &[
            Some(q.buffer()),
            Some(k.buffer()),
            bias.map(|m| &*m.tensor.buffer),
            slopes.as_ref(),
            Some(out.buffer()),
        ],
        total,
    )
}

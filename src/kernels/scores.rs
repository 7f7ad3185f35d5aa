//! `S = scale · QKᵀ (+ bias) (+ ALiBi)` for all batches and heads in one dispatch
//! (`shaders/scores.wgsl`, CPU twin [`crate::reference::scores`]).

use super::{addressing, attn_shape, elem, upload_slopes, TileConfig};
use crate::error::Result;
use crate::gpu::Recorder;
use crate::mask::Masking;
use crate::mask_tensor::{MaskKind, MaskTensor};
use crate::shaders::{KernelSpec, Specialization};
use crate::tensor::Tensor;
use crate::transform::{MaskInfo, ScoreTransform};

pub(crate) const SPEC: KernelSpec = KernelSpec {
    name: "scores",
    storage_read_only: &[true, true, true, true, false],
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
    mod_b0: u32,
    mod_h0: u32,
    kv_base: u32,
    _pad: u32,
}}

/// ALiBi inside the score path: `− slopes[h] · |i + diag_off − j|`, the distance
/// from the aligned diagonal (see [`crate::mask::Masking::diagonal_offset`]).
#[derive(Clone, Copy, Debug)]
pub struct AlibiBias<'a> {
    /// One slope per query head (e.g. [`crate::alibi_slopes`]).
    pub slopes: &'a [f32],
    /// Query `i`'s diagonal is key `i + diag_off`: 0 for top-left alignment,
    /// `Nk - Nq` for bottom-right ([`crate::mask::Masking::diagonal_offset`]).
    pub diag_off: i64,
}

/// Scores `[B, Hq, Nq, Nk]` of `q` `[B, Hq, Nq, D]` against `k` `[B, Hkv, Nk, D]`
/// (any strides; `Hq % Hkv == 0`). `scale` defaults to `1/sqrt(D)`; `bias` is an
/// additive mask broadcastable to the scores; `alibi` adds the ALiBi distance bias;
/// `softcap = Some(c)` maps the scaled dot product to `c·tanh(s/c)` before the biases.
/// The result is contiguous f32.
///
/// ```
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// use wgpu_attention::{kernels::scores::scores, reference, AttnShape, Gpu, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let sh = AttnShape { b: 1, hq: 2, hkv: 1, nq: 3, nk: 5, d: 4 }; // both query heads read K head 0
/// let q: Vec<f32> = (0..sh.q_len()).map(|i| (i as f32 * 0.3).sin()).collect();
/// let k: Vec<f32> = (0..sh.kv_len()).map(|i| (i as f32 * 0.7).cos()).collect();
/// let qt = Tensor::from_slice(&gpu, &q, &[1, 2, 3, 4])?;
/// let kt = Tensor::from_slice(&gpu, &k, &[1, 1, 5, 4])?;
/// let s = scores(&qt, &kt, None, None, None, None)?; // scale 1/sqrt(4)
/// assert_eq!(s.shape(), [1, 2, 3, 5]);
/// let want = reference::scores(&q, &k, &sh, 0.5, None, None, None);
/// assert_close(&s.to_vec_blocking()?, &want, Tolerance::F32, "scores");
/// # Ok(()) }
/// ```
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
    let mask = match bias {
        Some(m) => {
            m.check_device(q.gpu())?;
            m.expect_kind(MaskKind::Additive, "scores bias")?;
            Some(MaskInfo::of(m, dims)?)
        }
        None => None,
    };
    let t = ScoreTransform {
        scale: scale.unwrap_or(sh.default_scale() as f32),
        softcap,
        alibi: alibi.map(|a| a.slopes.to_vec()),
        masking: Masking::default(),
        diag_off: alibi.map_or(0, |a| a.diag_off),
        mask,
        mods: None,
        sinks: None,
    };
    t.validate(sh.hq)?;
    let out = Tensor::output(q.gpu(), "scores", &dims, None)?;
    record_scores_into(rec, q, k, &t, bias, &out, &TileConfig::new(rec.tuning()))?;
    Ok(out)
}

/// The scores part of `t` (scale, softcap, its additive mask `bias`, ALiBi;
/// checked by the caller) for `q` against `k`, into `out`, contiguous
/// `[B, Hq, Nq, Nk]` (a reused scratch tensor for a chunk of a larger problem,
/// whose mask `t` places), with output tiles `tile`.
pub(crate) fn record_scores_into(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    t: &ScoreTransform,
    bias: Option<&MaskTensor>,
    out: &Tensor,
    tile: &TileConfig,
) -> Result<()> {
    let sh = attn_shape(q, k)?;
    let gpu = q.gpu();
    debug_assert_eq!(out.shape(), [sh.b, sh.hq, sh.nq, sh.nk]);
    debug_assert_eq!(out.offset(), 0);
    let additive = t.additive();
    let slopes = upload_slopes(gpu, t.alibi.as_deref())?;
    let (q_off, q_s) = addressing(q);
    let (k_off, k_s) = addressing(k);
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
        scale: t.scale,
        bias_kind: MaskInfo::mode(additive.as_ref()),
        m_s: additive.map_or([0; 4], |m| m.strides),
        alibi: t.alibi.is_some() as u32,
        diag_off: t.diag_off as i32,
        softcap: t.softcap.unwrap_or(0.0),
        m_off: additive.map_or(0, |m| m.offset),
        mod_b0: t.mods.as_ref().map_or(0, |m| m.b0),
        mod_h0: t.mods.as_ref().map_or(0, |m| m.h0),
        kv_base: t.mods.as_ref().map_or(0, |m| m.kv0),
        _pad: 0,
    };
    let kernel = gpu.kernel(
        &Specialization::new(&SPEC)
            .overrides(&tile.constants)
            .elems(&[("q", elem(q)), ("k", elem(k))])
            .mods(t.mods.as_ref().map(|m| m.mods.wgsl().clone())),
    )?;
    let mods = match &t.mods {
        Some(m) => Some(m.mods.binding(gpu, None)?),
        None => None,
    };
    let total = (sh.b * sh.hq) as u64 * params.tiles_m as u64 * params.tiles_n as u64;
    let mut buffers = vec![
        Some(q.buffer()),
        Some(k.buffer()),
        additive.and(bias).map(|m| &*m.buffer),
        slopes.as_ref(),
        Some(out.buffer()),
    ];
    if let Some(m) = &mods {
        buffers.push(Some(m));
    }
    rec.dispatch(&kernel, "scores", &params, &buffers, total)
}

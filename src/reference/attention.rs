use super::{scores, softmax, weighted_sum};
use crate::mask::{HostMask, MaskValues, Masking};
use crate::shape::AttnShape;

/// Options of the reference attention, mirroring the GPU options.
#[derive(Clone, Debug, Default)]
pub struct ReferenceOptions<'a> {
    /// Softmax scale; `None` means `1/sqrt(D)`.
    pub scale: Option<f64>,
    pub masking: Masking,
    /// Dense mask over `[B|1, Hq|1, Nq|1, Nk|1]`.
    pub mask: Option<&'a HostMask>,
    /// ALiBi slopes, one per query head (distance from the aligned diagonal).
    pub alibi: Option<&'a [f32]>,
    /// `c·tanh(s/c)` on the scaled scores, before masks and biases.
    pub softcap: Option<f64>,
}

/// Everything the reference attention computes.
#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// `[B, Hq, Nq, D]`.
    pub o: Vec<f64>,
    /// `[B, Hq, Nq]`, `-inf` where a row is fully masked.
    pub lse: Vec<f64>,
    /// `[B, Hq, Nq, Nk]`.
    pub p: Vec<f64>,
}

/// `softmax(scale·QKᵀ + mask) · V` in f64.
pub fn attention<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    v: &[T],
    shape: &AttnShape,
    opts: &ReferenceOptions,
) -> AttentionOutput {
    let scale = opts.scale.unwrap_or_else(|| shape.default_scale());
    let (bias, dense) = match opts.mask {
        Some(m) if matches!(m.values, MaskValues::Additive(_)) => (Some(m), None),
        other => (None, other),
    };
    let diag_off = opts.masking.diagonal_offset(shape.nq, shape.nk);
    let s = scores(
        q,
        k,
        shape,
        scale,
        bias,
        opts.alibi.map(|a| (a, diag_off)),
        opts.softcap,
    );
    let sm = softmax(
        &s,
        [shape.b, shape.hq, shape.nq, shape.nk],
        &opts.masking,
        dense,
    );
    let o = weighted_sum(&sm.p, v, shape);
    AttentionOutput {
        o,
        lse: sm.lse,
        p: sm.p,
    }
}

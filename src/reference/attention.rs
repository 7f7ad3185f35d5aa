use super::{scores, softmax_with_sinks, weighted_sum};
use crate::mask::{HostMask, MaskValues, Masking};
use crate::shape::AttnShape;

/// Options of the reference attention, mirroring the GPU options.
#[derive(Clone, Debug, Default)]
pub struct ReferenceOptions<'a> {
    /// Softmax scale; `None` means `1/sqrt(D)`.
    pub scale: Option<f64>,
    /// Causal / sliding-window / key-padding rules, as on the GPU.
    pub masking: Masking,
    /// Dense mask over `[B|1, Hq|1, Nq|1, Nk|1]`.
    pub mask: Option<&'a HostMask>,
    /// ALiBi slopes, one per query head (distance from the aligned diagonal).
    pub alibi: Option<&'a [f32]>,
    /// `c·tanh(s/c)` on the scaled scores, before masks and biases.
    pub softcap: Option<f64>,
    /// A caller's mods, through their CPU twins
    /// ([`crate::mods::Mods::apply_reference`]; panics on a mod without one).
    pub mods: Option<&'a crate::mods::Mods>,
    /// Attention sinks, one logit per query head, in every row's denominator
    /// ([`crate::reference::softmax_with_sinks`]).
    pub sinks: Option<&'a [f32]>,
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

/// `softmax(scale·QKᵀ + mask) · V` in f64, for `q` `[B, Hq, Nq, D]` and `k`,
/// `v` `[B, Hkv, Nk, D]` contiguous in that order (whatever layout the GPU
/// tensors had), elements of any type that widens to f64 (`f32`, `f64`,
/// [`half::f16`], [`half::bf16`]). Computes O, the LSE and the weights at
/// once: the [`scores`], [`softmax`] and [`weighted_sum`] twins in turn.
///
/// Nothing is validated (the GPU path checks every input and returns errors):
/// call [`AttnShape::validate`], [`Masking::validate`] and
/// [`HostMask::check_broadcast`] first for untrusted input.
///
/// # Panics
/// If a slice is shorter than `shape` needs or a mask index falls outside
/// its values.
///
/// ```
/// use wgpu_attention::reference::{attention, ReferenceOptions};
/// use wgpu_attention::{AttnShape, Masking};
/// // One head, 2 queries against 2 keys, D = 2.
/// let sh = AttnShape { b: 1, hq: 1, hkv: 1, nq: 2, nk: 2, d: 2 };
/// let q = [1.0f32, 0.0, 0.0, 1.0];
/// let k = [1.0f32, 0.0, 0.0, 1.0];
/// let v = [10.0f32, 0.0, 0.0, 20.0];
/// let opts = ReferenceOptions {
///     masking: Masking { causal: true, ..Default::default() },
///     ..Default::default()
/// };
/// let out = attention(&q, &k, &v, &sh, &opts);
/// // Query 0 sees key 0 alone: its value, LSE = its score 1/sqrt(2).
/// assert_eq!(&out.o[..2], &[10.0, 0.0]);
/// assert!((out.lse[0] - 0.5f64.sqrt()).abs() < 1e-15);
/// // Query 1 sees both keys and weighs key 1 (the matching one) more.
/// assert!(out.p[3] > out.p[2] && (out.p[2] + out.p[3] - 1.0).abs() < 1e-15);
/// ```
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
    let mut s = scores(
        q,
        k,
        shape,
        scale,
        bias,
        opts.alibi.map(|a| (a, diag_off)),
        opts.softcap,
    );
    if let Some(m) = opts.mods {
        m.apply_reference(&mut s, [shape.b, shape.hq, shape.nq, shape.nk], 0);
    }
    let sm = softmax_with_sinks(
        &s,
        [shape.b, shape.hq, shape.nq, shape.nk],
        &opts.masking,
        dense,
        opts.sinks,
    );
    let o = weighted_sum(&sm.p, v, shape);
    AttentionOutput {
        o,
        lse: sm.lse,
        p: sm.p,
    }
}

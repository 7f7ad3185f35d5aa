//! Mask semantics shared by the GPU kernels and the CPU reference.
//!
//! Rule-based masks (causal, sliding window, key-padding lengths) are described by
//! [`Masking`]; dense masks are tensors broadcastable to `[B|1, H|1, Nq, Nk]`
//! ([`HostMask`] on the host, uploaded as a `MaskTensor`). All given masks combine:
//! a key is attended only if every mask allows it.

use crate::error::{Error, Result};

/// How the causal diagonal (and the sliding window) is aligned when `Nq != Nk`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Alignment {
    /// Query `i` sees key `j` when `j <= i` (PyTorch `is_causal`).
    TopLeft,
    /// Query `i` sees key `j` when `j <= i + (Nk - Nq)` (FlashAttention, KV-cache
    /// decoding). The default: the last query row sees every key.
    #[default]
    BottomRight,
}

/// A sliding window relative to the aligned diagonal: query `i` (diagonal `d`)
/// sees keys `d - left ..= d + right`.
///
/// With `causal` also set, `right` has no effect (keys past the diagonal are
/// hidden anyway): `Window { left: w - 1, right: 0 }` is the usual causal
/// window of `w` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Keys visible before the diagonal (the diagonal's own key is always in
    /// the window).
    pub left: u32,
    /// Keys visible after the diagonal.
    pub right: u32,
}

/// Rule-based masks, evaluated on the fly (no tensor).
///
/// The default hides nothing. [`Masking::visible`] is the rule every kernel and
/// the reference apply:
///
/// ```
/// use wgpu_attention::{Alignment, Masking, Window};
/// // 2 queries against 4 keys: bottom-right causal (the default alignment)
/// // lets the last query see every key.
/// let m = Masking { causal: true, ..Default::default() };
/// let row = |i| (0..4).map(|j| m.visible(0, i, j, 2, 4)).collect::<Vec<_>>();
/// assert_eq!(row(0), [true, true, true, false]);
/// assert_eq!(row(1), [true, true, true, true]);
///
/// // Top-left (PyTorch `is_causal`), a window of one key either side, and
/// // batch 0 limited to its first 2 keys.
/// let m = Masking {
///     causal: false,
///     window: Some(Window { left: 1, right: 1 }),
///     alignment: Alignment::TopLeft,
///     key_lengths: Some(vec![2]),
/// };
/// m.validate(1, 4)?; // one length per batch, each at most Nk
/// let row = |i| (0..4).map(|j| m.visible(0, i, j, 2, 4)).collect::<Vec<_>>();
/// assert_eq!(row(0), [true, true, false, false]);
/// assert_eq!(row(1), [true, true, false, false]); // key 2 is past the length
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Masking {
    /// Hide keys after the aligned diagonal.
    pub causal: bool,
    /// Only keys inside the window around the aligned diagonal are visible.
    pub window: Option<Window>,
    /// Alignment of the diagonal for `causal` and `window`.
    pub alignment: Alignment,
    /// Per-batch number of valid keys (key padding): key `j` of batch `b` is visible
    /// when `j < key_lengths[b]`. Length must equal B; values `0..=Nk`.
    pub key_lengths: Option<Vec<u32>>,
}

impl Masking {
    /// Offset of the diagonal: query `i` has diagonal `i + offset`.
    pub fn diagonal_offset(&self, nq: usize, nk: usize) -> i64 {
        match self.alignment {
            Alignment::TopLeft => 0,
            Alignment::BottomRight => nk as i64 - nq as i64,
        }
    }

    /// Whether query `i` of batch `b` may attend to key `j`.
    pub fn visible(&self, b: usize, i: usize, j: usize, nq: usize, nk: usize) -> bool {
        let diag = i as i64 + self.diagonal_offset(nq, nk);
        let j = j as i64;
        if self.causal && j > diag {
            return false;
        }
        if let Some(w) = self.window {
            if j < diag - w.left as i64 || j > diag + w.right as i64 {
                return false;
            }
        }
        if let Some(lens) = &self.key_lengths {
            if j >= lens[b] as i64 {
                return false;
            }
        }
        true
    }

    /// Checks `key_lengths` against the batch size `b` and key count `nk`:
    /// [`Error::InvalidArgument`] unless there is one length per batch, each
    /// at most `nk`.
    pub fn validate(&self, b: usize, nk: usize) -> Result<()> {
        if let Some(lens) = &self.key_lengths {
            if lens.len() != b {
                return Err(Error::InvalidArgument(format!(
                    "key_lengths has {} entries, expected one per batch (B = {b})",
                    lens.len()
                )));
            }
            if let Some(&bad) = lens.iter().find(|&&l| l as usize > nk) {
                return Err(Error::InvalidArgument(format!(
                    "key_lengths contains {bad}, more than the {nk} keys"
                )));
            }
        }
        Ok(())
    }
}

/// Additive mask values at or below this are treated as "masked out" (excluded
/// from the softmax, like `false` in a bool mask). `-inf` is uploaded as `f32::MIN`.
pub const ADDITIVE_MASKED: f32 = -1.0e30;

/// Value that stands for an excluded additive entry once uploaded (and in the
/// reference's scores): far below [`ADDITIVE_MASKED`], yet far from overflowing
/// when a score is added to it.
pub const ADDITIVE_FLOOR: f32 = -1.0e38;

/// The additive value as the kernels see it: entries at or below
/// [`ADDITIVE_MASKED`] (including `-inf`) become [`ADDITIVE_FLOOR`].
pub fn additive_floor(v: f32) -> f32 {
    if v <= ADDITIVE_MASKED {
        ADDITIVE_FLOOR
    } else {
        v
    }
}

/// The values of a dense mask, flat in the order of [`HostMask::dims`].
#[derive(Clone, Debug, PartialEq)]
pub enum MaskValues {
    /// `true` = attend.
    Bool(Vec<bool>),
    /// Added to the scores; values `<= -1e30` (and `-inf`) exclude the key.
    Additive(Vec<f32>),
}

/// A dense mask on the host, contiguous over `dims = [B|1, H|1, Nq|1, Nk|1]`:
/// what the reference reads, and what [`crate::MaskTensor::upload`] puts on a
/// GPU.
///
/// ```
/// use wgpu_attention::HostMask;
/// // One [Nq = 2, Nk = 3] pattern for every batch and head.
/// let m = HostMask::bool(vec![true, false, true, true, true, false], [1, 1, 2, 3])?;
/// m.check_broadcast(4, 8, 2, 3)?; // fits B = 4, H = 8
/// assert_eq!(m.index(3, 7, 1, 2), 5); // broadcast dims read index 0
/// assert!(m.check_broadcast(4, 8, 2, 5).is_err()); // Nk differs
/// // Values must match the dims, and additive values must not be NaN or +inf.
/// assert!(HostMask::bool(vec![true; 5], [1, 1, 2, 3]).is_err());
/// assert!(HostMask::additive(vec![0.0, f32::NAN], [1, 1, 1, 2]).is_err());
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HostMask {
    /// `[B|1, H|1, Nq|1, Nk|1]`: each dim is the full size or 1 (broadcast).
    pub dims: [usize; 4],
    /// `dims.iter().product()` values, row-major over `dims`.
    pub values: MaskValues,
}

impl HostMask {
    /// A bool mask (true = attend) of shape `dims`: [`Error::Shape`] unless
    /// `data` has `dims.iter().product()` values, [`Error::ZeroSized`] for a
    /// zero dim.
    pub fn bool(data: Vec<bool>, dims: [usize; 4]) -> Result<Self> {
        Self::checked(dims, data.len(), MaskValues::Bool(data))
    }

    /// An additive float mask of shape `dims`, added to the scaled scores;
    /// entries at or below [`ADDITIVE_MASKED`] (and `-inf`) exclude the key.
    /// NaN and `+inf` are rejected ([`Error::InvalidArgument`]), as are the
    /// errors of [`HostMask::bool`].
    pub fn additive(data: Vec<f32>, dims: [usize; 4]) -> Result<Self> {
        if let Some(pos) = data.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
            return Err(Error::InvalidArgument(format!(
                "additive mask value at flat index {pos} is {}: use finite values or -inf",
                data[pos]
            )));
        }
        Self::checked(dims, data.len(), MaskValues::Additive(data))
    }

    fn checked(dims: [usize; 4], len: usize, values: MaskValues) -> Result<Self> {
        let n: usize = dims.iter().product();
        if n != len {
            return Err(Error::Shape(format!(
                "mask data has {len} elements but dims {dims:?} need {n}"
            )));
        }
        if dims.contains(&0) {
            return Err(Error::ZeroSized(format!("mask dims {dims:?}")));
        }
        Ok(Self { dims, values })
    }

    /// Checks that the mask broadcasts to `[b, h, nq, nk]` (every dim 1 or the
    /// full size): [`Error::MaskBroadcast`] otherwise.
    pub fn check_broadcast(&self, b: usize, h: usize, nq: usize, nk: usize) -> Result<()> {
        check_mask_broadcast(self.dims, b, h, nq, nk)
    }

    /// Flat index into [`HostMask::values`] of element `(b, h, i, j)` of the
    /// broadcast mask (a size-1 dim reads index 0). Indices are not checked
    /// against the full sizes: call [`HostMask::check_broadcast`] first.
    pub fn index(&self, b: usize, h: usize, i: usize, j: usize) -> usize {
        let [mb, mh, mq, mk] = self.dims;
        let b = if mb == 1 { 0 } else { b };
        let h = if mh == 1 { 0 } else { h };
        let i = if mq == 1 { 0 } else { i };
        let j = if mk == 1 { 0 } else { j };
        ((b * mh + h) * mq + i) * mk + j
    }
}

/// Shared broadcast rule for dense masks: every dim is 1 or the full size.
pub(crate) fn check_mask_broadcast(
    dims: [usize; 4],
    b: usize,
    h: usize,
    nq: usize,
    nk: usize,
) -> Result<()> {
    let ok = dims
        .iter()
        .zip([b, h, nq, nk])
        .all(|(&m, full)| m == 1 || m == full);
    if ok {
        Ok(())
    } else {
        Err(Error::MaskBroadcast {
            mask: dims,
            b,
            h,
            nq,
            nk,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(m: &Masking, nq: usize, nk: usize) -> Vec<String> {
        (0..nq)
            .map(|i| {
                (0..nk)
                    .map(|j| if m.visible(0, i, j, nq, nk) { '1' } else { '.' })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn causal_alignments_follow_pytorch_and_flash_attention() {
        let tl = Masking {
            causal: true,
            alignment: Alignment::TopLeft,
            ..Default::default()
        };
        assert_eq!(grid(&tl, 2, 4), ["1...", "11.."]);
        let br = Masking {
            causal: true,
            ..Default::default()
        };
        assert_eq!(grid(&br, 2, 4), ["111.", "1111"]);
        // More queries than keys, bottom-right: the first row sees nothing.
        assert_eq!(grid(&br, 3, 2), ["..", "1.", "11"]);
    }

    #[test]
    fn window_and_key_lengths() {
        let w = Masking {
            window: Some(Window { left: 1, right: 1 }),
            alignment: Alignment::TopLeft,
            ..Default::default()
        };
        assert_eq!(grid(&w, 3, 4), ["11..", "111.", ".111"]);
        let k = Masking {
            key_lengths: Some(vec![2]),
            ..Default::default()
        };
        assert_eq!(grid(&k, 1, 4), ["11.."]);
        assert!(k.validate(1, 4).is_ok());
        assert!(matches!(k.validate(2, 4), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            Masking {
                key_lengths: Some(vec![5]),
                ..Default::default()
            }
            .validate(1, 4),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn dense_mask_broadcast_index() {
        let m = HostMask::bool(vec![true; 2 * 3], [2, 1, 1, 3]).unwrap();
        assert_eq!(m.index(1, 5, 7, 2), 5);
        assert!(m.check_broadcast(2, 8, 9, 3).is_ok());
        assert!(matches!(
            m.check_broadcast(3, 8, 9, 3),
            Err(Error::MaskBroadcast { .. })
        ));
        assert_eq!(additive_floor(f32::NEG_INFINITY), ADDITIVE_FLOOR);
        assert_eq!(additive_floor(-3.0), -3.0);
    }
}

use crate::mask::{HostMask, MaskValues, Masking, ADDITIVE_MASKED};

/// Weights and log-sum-exp of a masked softmax.
#[derive(Clone, Debug)]
pub struct SoftmaxOutput {
    /// `[B, H, Nq, Nk]`; all zero on fully masked rows.
    pub p: Vec<f64>,
    /// `[B, H, Nq]`; `-inf` on fully masked rows.
    pub lse: Vec<f64>,
}

/// Row-wise stable softmax of `scores` (`[B, H, Nq, Nk]`) with masks.
///
/// A key is excluded when a rule of `masking` hides it, when a bool `mask` is
/// false there, or when its score (after adding an additive `mask`) is at or
/// below [`ADDITIVE_MASKED`].
pub fn softmax(
    scores: &[f64],
    dims: [usize; 4],
    masking: &Masking,
    mask: Option<&HostMask>,
) -> SoftmaxOutput {
    softmax_with_sinks(scores, dims, masking, mask, None)
}

/// [`softmax`] with attention sinks: `sinks[h]` joins the denominator of
/// every row of head `h` and receives no weight, so each row's weights sum to
/// `Σ exp(s_j) / (Σ exp(s_j) + exp(sink))` and its LSE is
/// `log(Σ exp(s_j) + exp(sink))` (the sink's value on a fully masked row).
pub fn softmax_with_sinks(
    scores: &[f64],
    dims: [usize; 4],
    masking: &Masking,
    mask: Option<&HostMask>,
    sinks: Option<&[f32]>,
) -> SoftmaxOutput {
    let [b, h, nq, nk] = dims;
    let mut p = vec![0.0f64; b * h * nq * nk];
    let mut lse = vec![f64::NEG_INFINITY; b * h * nq];
    let mut row = vec![None::<f64>; nk];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..nq {
                let base = ((bi * h + hi) * nq + i) * nk;
                for (j, slot) in row.iter_mut().enumerate() {
                    let mut v = scores[base + j];
                    let mut visible = masking.visible(bi, i, j, nq, nk);
                    if let Some(m) = mask {
                        let idx = m.index(bi, hi, i, j);
                        match &m.values {
                            MaskValues::Bool(t) => visible &= t[idx],
                            MaskValues::Additive(a) => v += a[idx] as f64,
                        }
                    }
                    *slot = (visible && v > ADDITIVE_MASKED as f64).then_some(v);
                }
                let sink = sinks.map(|s| s[hi] as f64);
                let Some(max) = row.iter().flatten().copied().chain(sink).reduce(f64::max) else {
                    continue;
                };
                let sum: f64 = row
                    .iter()
                    .flatten()
                    .chain(sink.as_ref())
                    .map(|v| (v - max).exp())
                    .sum();
                for (j, v) in row.iter().enumerate() {
                    if let Some(v) = v {
                        p[base + j] = (v - max).exp() / sum;
                    }
                }
                lse[(bi * h + hi) * nq + i] = max + sum.ln();
            }
        }
    }
    SoftmaxOutput { p, lse }
}

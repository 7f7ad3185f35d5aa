use crate::mask::{additive_floor, HostMask, MaskValues};
use crate::shape::AttnShape;

/// `S[b,h,i,j] = scale · Σ_d Q[b,h,i,d] K[b,h/g,j,d] (+ bias[b,h,i,j])
/// (− slopes[h]·|i + diag_off − j|)` with `alibi = Some((slopes, diag_off))`;
/// with `softcap = Some(c)` the scaled dot product becomes `c·tanh(s/c)` first.
///
/// `bias` must be an additive mask (a bool mask here is a caller bug and panics);
/// its excluded entries (`<= -1e30`, `-inf`) add [`crate::mask::ADDITIVE_FLOOR`], as on the GPU.
pub fn scores<T: Copy + Into<f64>>(
    q: &[T],
    k: &[T],
    shape: &AttnShape,
    scale: f64,
    bias: Option<&HostMask>,
    alibi: Option<(&[f32], i64)>,
    softcap: Option<f64>,
) -> Vec<f64> {
    let AttnShape {
        b, hq, nq, nk, d, ..
    } = *shape;
    let g = shape.group();
    let mut s = vec![0.0f64; shape.scores_len()];
    for bi in 0..b {
        for h in 0..hq {
            let hk = h / g;
            for i in 0..nq {
                let qrow = &q[((bi * hq + h) * nq + i) * d..][..d];
                for j in 0..nk {
                    let krow = &k[((bi * shape.hkv + hk) * nk + j) * d..][..d];
                    let dot: f64 = qrow
                        .iter()
                        .zip(krow)
                        .map(|(&a, &c)| a.into() * c.into())
                        .sum();
                    let mut v = scale * dot;
                    if let Some(c) = softcap {
                        v = c * (v / c).tanh();
                    }
                    if let Some(m) = bias {
                        match &m.values {
                            MaskValues::Additive(a) => {
                                v += additive_floor(a[m.index(bi, h, i, j)]) as f64
                            }
                            MaskValues::Bool(_) => {
                                panic!("reference::scores takes an additive bias, not a bool mask")
                            }
                        }
                    }
                    if let Some((slopes, off)) = alibi {
                        v -= slopes[h] as f64 * (i as i64 + off - j as i64).abs() as f64;
                    }
                    s[((bi * hq + h) * nq + i) * nk + j] = v;
                }
            }
        }
    }
    s
}

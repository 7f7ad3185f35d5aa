use super::{attention, matmul, rope, ReferenceOptions};
use crate::mask::{HostMask, Masking};
use crate::positional::{alibi_slopes, Rope};
use crate::shape::AttnShape;
use crate::weights::{Linear, MhaConfig, MhaWeights};

/// Options of [`multi_head_attention`], mirroring [`crate::MhaOptions`]
/// field for field (a host mask for the uploaded one; no tuning).
#[derive(Clone, Debug, Default)]
pub struct MhaReferenceOptions<'a> {
    /// Causal / sliding-window / key-padding rules.
    pub masking: Masking,
    /// Dense mask broadcastable to `[B, Hq, Nq, Nk]`.
    pub mask: Option<&'a HostMask>,
    /// Rotary embedding of Q and K after the projections.
    pub rope: Option<Rope>,
    /// ALiBi with the paper's slopes for `num_heads` ([`crate::alibi_slopes`]).
    pub alibi: bool,
    /// Softmax scale; `None` = `1/sqrt(head_dim)`.
    pub scale: Option<f64>,
}

fn linear<T: Copy + Into<f64>>(x: &[T], rows: usize, lin: &Linear) -> Vec<f64> {
    let wt: Vec<f64> = lin.weight_t().into_iter().map(f64::from).collect();
    let bias: Option<Vec<f64>> = lin
        .bias
        .as_ref()
        .map(|b| b.iter().map(|&v| v as f64).collect());
    let x: Vec<f64> = x.iter().map(|&v| v.into()).collect();
    matmul(
        &x,
        &wt,
        bias.as_deref(),
        1,
        rows,
        lin.in_features,
        lin.out_features,
        false,
    )
}

/// `[B, N, H·D]` rows → logical `[B, H, N, D]`.
fn split_heads(x: &[f64], b: usize, n: usize, h: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for ni in 0..n {
            for hi in 0..h {
                for di in 0..d {
                    out[((bi * h + hi) * n + ni) * d + di] = x[(bi * n + ni) * h * d + hi * d + di];
                }
            }
        }
    }
    out
}

/// The whole multi-head layer in f64: projections, heads, RoPE, attention,
/// merge, output projection. `x_q` `[B, Nq, d_model]`, `x_kv` `[B, Nk, d_model]`
/// (pass `x_q` again for self-attention), sizes `[B, Nq, Nk]`. Returns `[B, Nq, d_model]`.
pub fn multi_head_attention<T: Copy + Into<f64>>(
    x_q: &[T],
    x_kv: &[T],
    [b, nq, nk]: [usize; 3],
    cfg: &MhaConfig,
    w: &MhaWeights,
    opts: &MhaReferenceOptions,
) -> Vec<f64> {
    let (h, hkv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let mut q = split_heads(&linear(x_q, b * nq, &w.q), b, nq, h, d);
    let mut k = split_heads(&linear(x_kv, b * nk, &w.k), b, nk, hkv, d);
    let v = split_heads(&linear(x_kv, b * nk, &w.v), b, nk, hkv, d);
    if let Some(r) = &opts.rope {
        q = rope(&q, [b, h, nq, d], r);
        k = rope(&k, [b, hkv, nk, d], r);
    }
    let slopes = alibi_slopes(h);
    let shape = AttnShape {
        b,
        hq: h,
        hkv,
        nq,
        nk,
        d,
    };
    let ro = ReferenceOptions {
        scale: opts.scale,
        masking: opts.masking.clone(),
        mask: opts.mask,
        alibi: opts.alibi.then_some(&slopes[..]),
        softcap: None,
        mods: None,
        sinks: None,
    };
    let o = attention(&q, &k, &v, &shape, &ro).o;
    // Merge heads: [B, H, Nq, D] → [B, Nq, H·D].
    let mut merged = vec![0.0; o.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ni in 0..nq {
                for di in 0..d {
                    merged[(bi * nq + ni) * h * d + hi * d + di] =
                        o[((bi * h + hi) * nq + ni) * d + di];
                }
            }
        }
    }
    linear(&merged, b * nq, &w.o)
}

use super::{attention, matmul, rms_norm, rope_at, ReferenceOptions};
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
    /// Rotary embedding of Q and K after the projections (and QK-norm).
    pub rope: Option<Rope>,
    /// ALiBi with the paper's slopes for `num_heads` ([`crate::alibi_slopes`]).
    pub alibi: bool,
    /// Softmax scale; `None` = `1/sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// `c·tanh(s/c)` on the scaled scores.
    pub softcap: Option<f64>,
    /// The position of each query token `[B, Nq]` (self-attention: the keys'
    /// too), instead of `rope.offset + n`.
    pub position_ids: Option<&'a [u32]>,
    /// A caller's mods, through their CPU twins.
    pub mods: Option<&'a crate::mods::Mods>,
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

/// The whole multi-head layer in f64: projections (with the biases the
/// weights have), heads, QK-norm, RoPE (scaling, position ids), attention
/// (masks, ALiBi, softcap, sinks), merge, output projection. `x_q`
/// `[B, Nq, d_model]`, `x_kv` `[B, Nk, d_model]` (pass `x_q` again for
/// self-attention), sizes `[B, Nq, Nk]`. Returns `[B, Nq, d_model]`.
///
/// # Panics
/// On position ids with `Nk != Nq` (they give the keys' positions too) or
/// weights that do not fit `cfg` (check them with [`MhaWeights::check`]).
pub fn multi_head_attention<T: Copy + Into<f64>>(
    x_q: &[T],
    x_kv: &[T],
    [b, nq, nk]: [usize; 3],
    cfg: &MhaConfig,
    w: &MhaWeights,
    opts: &MhaReferenceOptions,
) -> Vec<f64> {
    let (h, hkv, d, dv) = (
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.v_head_dim,
    );
    let mut pq = linear(x_q, b * nq, &w.q);
    let mut pk = linear(x_kv, b * nk, &w.k);
    let pv = linear(x_kv, b * nk, &w.v);
    let norm = cfg.qk_norm.map(|n| {
        (
            n,
            w.q_norm.as_deref().expect("q_norm weights"),
            w.k_norm.as_deref().expect("k_norm weights"),
        )
    });
    if let Some((n, qw, kw)) = norm {
        if !n.per_head {
            // Each token's whole projection row.
            pq = rms_norm(&pq, [1, 1, b * nq, h * d], h * d, qw, &n.norm);
            pk = rms_norm(&pk, [1, 1, b * nk, hkv * d], hkv * d, kw, &n.norm);
        }
    }
    let mut q = split_heads(&pq, b, nq, h, d);
    let mut k = split_heads(&pk, b, nk, hkv, d);
    let v = split_heads(&pv, b, nk, hkv, dv);
    if let Some((n, qw, kw)) = norm {
        if n.per_head {
            q = rms_norm(&q, [b, h, nq, d], d, qw, &n.norm);
            k = rms_norm(&k, [b, hkv, nk, d], d, kw, &n.norm);
        }
    }
    if let Some(r) = &opts.rope {
        if opts.position_ids.is_some() {
            assert_eq!(
                nq, nk,
                "position ids give the keys' positions too: self-attention only"
            );
        }
        q = rope_at(&q, [b, h, nq, d], r, opts.position_ids);
        k = rope_at(&k, [b, hkv, nk, d], r, opts.position_ids);
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
        softcap: opts.softcap,
        mods: opts.mods,
        sinks: w.sinks.as_deref(),
    };
    // The weights P from Q and K alone (K stands in for V), then P·V with the
    // value heads' own width.
    let p = attention(&q, &k, &k, &shape, &ro).p;
    let group = h / hkv;
    let mut merged = vec![0.0; b * nq * h * dv];
    for bi in 0..b {
        for hi in 0..h {
            let vh = &v[(bi * hkv + hi / group) * nk * dv..][..nk * dv];
            for ni in 0..nq {
                let prow = &p[((bi * h + hi) * nq + ni) * nk..][..nk];
                let out = &mut merged[(bi * nq + ni) * h * dv + hi * dv..][..dv];
                for (j, &pj) in prow.iter().enumerate() {
                    for (o, &vv) in out.iter_mut().zip(&vh[j * dv..(j + 1) * dv]) {
                        *o += pj * vv;
                    }
                }
            }
        }
    }
    linear(&merged, b * nq, &w.o)
}

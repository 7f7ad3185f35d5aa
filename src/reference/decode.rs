/// Merges split-KV partials (flash-decoding), the twin of `shaders/decode.wgsl`:
/// `o_part` `[S, rows, D]` (each normalized by its own sum), `lse_part` `[S, rows]`
/// (`-inf` where a split saw no key). Returns `O` `[rows, D]` and `LSE` `[rows]`.
/// `sinks`, when given, holds each row's attention sink (its head's): one more
/// term with that LSE and a zero O.
pub fn decode_combine(
    o_part: &[f64],
    lse_part: &[f64],
    splits: usize,
    rows: usize,
    d: usize,
    sinks: Option<&[f64]>,
) -> (Vec<f64>, Vec<f64>) {
    let mut o = vec![0.0; rows * d];
    let mut lse = vec![f64::NEG_INFINITY; rows];
    for r in 0..rows {
        let mut ls: Vec<f64> = (0..splits).map(|s| lse_part[s * rows + r]).collect();
        // The sink: a split of its own whose O is zero.
        ls.extend(sinks.map(|s| s[r]));
        let m = ls.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let w: Vec<f64> = ls.iter().map(|&x| (x - m).exp()).collect();
        let sum: f64 = w.iter().sum();
        for c in 0..d {
            o[r * d + c] = (0..splits)
                .map(|s| w[s] * o_part[(s * rows + r) * d + c])
                .sum::<f64>()
                / sum;
        }
        lse[r] = m + sum.ln();
    }
    (o, lse)
}

#[cfg(test)]
mod tests {
    use super::decode_combine;
    use crate::reference::{attention, ReferenceOptions};
    use crate::shape::AttnShape;

    #[test]
    fn combining_chunks_gives_full_attention() {
        let (nq, nk, d, chunk) = (3, 11, 4, 4);
        let f = |n: usize, s: usize| {
            (0..n)
                .map(|i| ((i * 7 + s * 3) % 13) as f32 / 6.0 - 1.0)
                .collect::<Vec<f32>>()
        };
        let (q, k, v) = (f(nq * d, 1), f(nk * d, 2), f(nk * d, 3));
        let full = attention(
            &q,
            &k,
            &v,
            &AttnShape {
                b: 1,
                hq: 1,
                hkv: 1,
                nq,
                nk,
                d,
            },
            &ReferenceOptions {
                scale: Some(0.5),
                ..Default::default()
            },
        );
        let splits = nk.div_ceil(chunk);
        let (mut o_part, mut lse_part) = (Vec::new(), vec![0.0; splits * nq]);
        for s in 0..splits {
            let (lo, hi) = (s * chunk, ((s + 1) * chunk).min(nk));
            let part = attention(
                &q,
                &k[lo * d..hi * d],
                &v[lo * d..hi * d],
                &AttnShape {
                    b: 1,
                    hq: 1,
                    hkv: 1,
                    nq,
                    nk: hi - lo,
                    d,
                },
                &ReferenceOptions {
                    scale: Some(0.5),
                    ..Default::default()
                },
            );
            o_part.extend(part.o);
            lse_part[s * nq..(s + 1) * nq].copy_from_slice(&part.lse);
        }
        // A split that saw nothing contributes nothing.
        o_part.extend(vec![0.0; nq * d]);
        lse_part.extend(vec![f64::NEG_INFINITY; nq]);
        let (o, lse) = decode_combine(&o_part, &lse_part, splits + 1, nq, d, None);
        for (a, b) in o.iter().zip(&full.o).chain(lse.iter().zip(&full.lse)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        let (o, lse) = decode_combine(&[0.0; 4], &[f64::NEG_INFINITY], 1, 1, 4, None);
        assert_eq!((o, lse), (vec![0.0; 4], vec![f64::NEG_INFINITY]));
        // An attention sink joins once, in the merge: the same as the whole
        // row's softmax with the sink.
        let sink = [0.7f32];
        let with_sink = attention(
            &q,
            &k,
            &v,
            &AttnShape {
                b: 1,
                hq: 1,
                hkv: 1,
                nq,
                nk,
                d,
            },
            &ReferenceOptions {
                scale: Some(0.5),
                sinks: Some(&sink),
                ..Default::default()
            },
        );
        let row_sinks = vec![0.7f32 as f64; nq];
        let (o, lse) = decode_combine(&o_part, &lse_part, splits + 1, nq, d, Some(&row_sinks));
        for (a, b) in o
            .iter()
            .zip(&with_sink.o)
            .chain(lse.iter().zip(&with_sink.lse))
        {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // A row no split saw: all its weight on the sink, O = 0, LSE = sink.
        let (o, lse) = decode_combine(&[0.0; 4], &[f64::NEG_INFINITY], 1, 1, 4, Some(&[0.7]));
        assert_eq!((o, lse), (vec![0.0; 4], vec![0.7]));
    }
}

use super::{each_gpu, rng, run, uniform};
use wgpu_attention::kernels::matmul::{matmul, record_matmul};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{reference, Error, Tensor};

#[test]
fn matmul_matches_reference_for_odd_sizes_batches_transposes_and_bias() {
    each_gpu("matmul", |gpu, t, ctx| {
        for t in super::tile_shapes(t) {
            let ctx = &format!("{ctx} cpu_rows={}", t.cpu_rows());
            // (batch, M, K, N, B batched, A transposed, B transposed, bias)
            let cases = [
                (1, 1, 1, 1, false, false, false, false),
                (1, 17, 33, 5, false, false, false, true),
                (3, 33, 257, 17, false, true, false, true),
                (2, 9, 64, 65, true, false, true, false),
                (1, 257, 1, 33, false, false, true, true),
                (2, 5, 255, 257, true, true, true, false),
            ];
            for (batch, m, k, n, b_batched, ta, tb, with_bias) in cases {
                let (mut r, ctx) = rng(&format!("{ctx} batch={batch} M={m} K={k} N={n} b_batched={b_batched} Aᵀ={ta} Bᵀ={tb} bias={with_bias}"));
                let a = uniform(&mut r, batch * m * k, 1.0);
                let bn = if b_batched { batch } else { 1 };
                let b = uniform(&mut r, bn * k * n, 1.0);
                let bias = uniform(&mut r, n, 1.0);
                // A transposed: stored [batch, K, M], viewed as [batch, M, K].
                let at = if ta {
                    let mut stored = vec![0.0; a.len()];
                    for bi in 0..batch {
                        for i in 0..m {
                            for kk in 0..k {
                                stored[(bi * k + kk) * m + i] = a[(bi * m + i) * k + kk];
                            }
                        }
                    }
                    Tensor::from_slice(gpu, &stored, &[batch, k, m])
                        .unwrap()
                        .transpose(1, 2)
                        .unwrap()
                } else {
                    Tensor::from_slice(gpu, &a, &[batch, m, k]).unwrap()
                };
                let b_dims: Vec<usize> = if b_batched {
                    vec![batch, k, n]
                } else {
                    vec![k, n]
                };
                let bt = if tb {
                    let mut stored = vec![0.0; b.len()];
                    for bi in 0..bn {
                        for kk in 0..k {
                            for j in 0..n {
                                stored[(bi * n + j) * k + kk] = b[(bi * k + kk) * n + j];
                            }
                        }
                    }
                    let rank = b_dims.len();
                    let mut sdims = b_dims.clone();
                    sdims.swap(rank - 1, rank - 2);
                    Tensor::from_slice(gpu, &stored, &sdims)
                        .unwrap()
                        .transpose(rank - 2, rank - 1)
                        .unwrap()
                } else {
                    Tensor::from_slice(gpu, &b, &b_dims).unwrap()
                };
                let biast = Tensor::from_slice(gpu, &bias, &[n]).unwrap();
                let c = run(gpu, t, |rec| {
                    record_matmul(rec, &at, &bt, with_bias.then_some(&biast))
                });
                assert_eq!(c.shape(), [batch, m, n], "{ctx}");
                let want = reference::matmul(
                    &a,
                    &b,
                    with_bias.then_some(&bias[..]),
                    batch,
                    m,
                    k,
                    n,
                    b_batched,
                );
                assert_close(&c.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
            }
        }
    });
}

#[test]
fn matmul_rejects_mismatched_operands() {
    each_gpu("matmul errors", |gpu, _, ctx| {
        let a = Tensor::from_slice(gpu, &[0.0; 6], &[2, 3]).unwrap();
        let b = Tensor::from_slice(gpu, &[0.0; 8], &[4, 2]).unwrap();
        assert!(
            matches!(matmul(&a, &b, None), Err(Error::Shape(m)) if m.contains("inner")),
            "{ctx}"
        );
        let b = Tensor::from_slice(gpu, &[0.0; 6], &[3, 2]).unwrap();
        let bad_bias = Tensor::from_slice(gpu, &[0.0; 3], &[3]).unwrap();
        assert!(
            matches!(matmul(&a, &b, Some(&bad_bias)), Err(Error::Shape(m)) if m.contains("bias")),
            "{ctx}"
        );
        let b3 = Tensor::from_slice(gpu, &[0.0; 12], &[2, 3, 2]).unwrap();
        assert!(
            matches!(matmul(&a, &b3, None), Err(Error::Shape(_))),
            "{ctx}"
        );
        let a4 = Tensor::from_slice(gpu, &[0.0; 6], &[1, 1, 2, 3]).unwrap();
        assert!(
            matches!(matmul(&a4, &b, None), Err(Error::Shape(m)) if m.contains("2-D")),
            "{ctx}"
        );
    });
}

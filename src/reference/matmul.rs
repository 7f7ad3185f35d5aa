/// `C[b] = A[b]·B(b) (+ bias)` with `a` `[batch, m, k]`, `b` `[batch, k, n]` when
/// `b_batched`, else `[k, n]` shared by every batch; `bias` `[n]`. Contiguous in,
/// contiguous `[batch, m, n]` out.
#[expect(
    clippy::too_many_arguments,
    reason = "mirrors the kernel's parameter block; a struct would hide the sizes"
)]
pub fn matmul<T: Copy + Into<f64>>(
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    b_batched: bool,
) -> Vec<f64> {
    let mut c = vec![0.0f64; batch * m * n];
    for bi in 0..batch {
        let bm = if b_batched {
            &b[bi * k * n..][..k * n]
        } else {
            &b[..k * n]
        };
        for i in 0..m {
            let row = &mut c[(bi * m + i) * n..][..n];
            if let Some(bias) = bias {
                row.iter_mut().zip(bias).for_each(|(r, &v)| *r = v.into());
            }
            for kk in 0..k {
                let av: f64 = a[(bi * m + i) * k + kk].into();
                for (r, &bv) in row.iter_mut().zip(&bm[kk * n..][..n]) {
                    *r += av * bv.into();
                }
            }
        }
    }
    c
}

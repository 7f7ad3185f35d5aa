use super::{each_gpu, rng, run, uniform};
use wgpu_attention::kernels::posenc::record_posenc;
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{reference, Tensor};

#[test]
fn posenc_matches_reference_with_offsets_and_odd_widths() {
    each_gpu("posenc", |gpu, t, ctx| {
        for (b, n, dm, offset) in [
            (1, 1, 1, 0),
            (2, 17, 7, 0),
            (1, 257, 64, 5),
            (2, 33, 255, 100_000),
            (1, 9, 512, 3_000_000),
        ] {
            let (mut r, ctx) = rng(&format!("{ctx} b={b} n={n} d_model={dm} offset={offset}"));
            let x = uniform(&mut r, b * n * dm, 1.0);
            let xt = Tensor::from_slice(gpu, &x, &[b, n, dm]).unwrap();
            let out = run(gpu, t, |rec| record_posenc(rec, &xt, offset));
            let want = reference::posenc(&x, b, n, dm, offset as usize);
            assert_close(&out.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
        }
    });
}

#[test]
fn posenc_reads_strided_input_and_splits_a_large_grid() {
    each_gpu("posenc strided", |gpu, t, ctx| {
        // 4.2 M elements = 65 600 workgroups of 64: more than one grid dimension holds.
        let (b, n, dm) = (2, 2050, 1024);
        let (mut r, ctx) = rng(&format!("{ctx} b={b} n={n} d_model={dm}"));
        // Stored as [N, B, d_model] and viewed as [B, N, d_model] through strides.
        let x = uniform(&mut r, b * n * dm, 1.0);
        let xt = Tensor::from_strided(gpu, &x, &[b, n, dm], &[dm, b * dm, 1], 0).unwrap();
        let out = run(gpu, t, |rec| record_posenc(rec, &xt, 0));
        let logical = xt.to_vec_blocking().unwrap();
        let want = reference::posenc(&logical, b, n, dm, 0);
        assert_close(&out.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
    });
}

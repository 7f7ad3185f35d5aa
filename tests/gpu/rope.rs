use super::{each_gpu, rng, run, uniform};
use wgpu_attention::kernels::rope::{record_rope, rope};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{reference, Error, Layout, Pairing, Rope, Tensor};

#[test]
fn rope_matches_reference_for_both_pairings() {
    each_gpu("rope", |gpu, t, ctx| {
        // (dims [B, H, N, D], rotary dims, offset, base, layout)
        let cases = [
            ([1, 1, 1, 2], None, 0, 10000.0, Layout::Bhnd),
            ([2, 3, 17, 64], None, 0, 10000.0, Layout::Bnhd),
            ([1, 2, 33, 7], None, 5, 10000.0, Layout::Bhnd),
            ([1, 2, 257, 128], Some(32), 1000, 500000.0, Layout::Bnhd),
            ([2, 1, 9, 256], None, 2_000_000, 10000.0, Layout::Bhnd),
        ];
        for pairing in [Pairing::HalfSplit, Pairing::Interleaved] {
            for (dims, rotary_dims, offset, base, layout) in cases {
                let cfg = Rope {
                    pairing,
                    base,
                    rotary_dims,
                    offset,
                };
                let (mut r, ctx) = rng(&format!("{ctx} {dims:?} {cfg:?} {layout:?}"));
                let x = uniform(&mut r, dims.iter().product(), 1.0);
                let xt = Tensor::from_bhnd(gpu, &x, dims, layout).unwrap();
                let out = run(gpu, t, |rec| record_rope(rec, &xt, &cfg));
                assert_eq!(out.layout(), layout, "{ctx}");
                let want = reference::rope(&x, dims, &cfg);
                assert_close(&out.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
            }
        }
    });
}

#[test]
fn rope_rejects_bad_configs() {
    each_gpu("rope errors", |gpu, _, ctx| {
        let x = Tensor::from_slice(gpu, &[0.0; 16], &[1, 1, 2, 8]).unwrap();
        let bad = Rope {
            rotary_dims: Some(5),
            ..Default::default()
        };
        assert!(
            matches!(rope(&x, &bad), Err(Error::InvalidArgument(m)) if m.contains("even")),
            "{ctx}"
        );
        let x3 = Tensor::from_slice(gpu, &[0.0; 16], &[2, 8]).unwrap();
        assert!(
            matches!(rope(&x3, &Rope::default()), Err(Error::Shape(_))),
            "{ctx}"
        );
    });
}

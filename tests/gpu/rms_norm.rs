//! RMSNorm (QK-norm and the layer norm of decoders) against its f64 twin.

use super::{each_gpu, rng, uniform};
use wgpu_attention::kernels::rms_norm::rms_norm;
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{reference, DType, Error, Layout, RmsNorm, Tensor};

#[test]
fn rms_norm_matches_reference() {
    each_gpu("rms_norm", |gpu, t, ctx| {
        if t.staged() {
            super::report_skip(ctx, "rms_norm has one variant");
            return;
        }
        // (dims, layout, weight offset): head vectors of 7, 64 and 128
        // channels (one partial workgroup, one, two); rows of 200 (a whole
        // projection).
        let cases = [
            ([2, 3, 5, 7], Layout::Bhnd, 0.0),
            ([1, 4, 9, 64], Layout::Bnhd, 1.0),
            ([2, 2, 3, 128], Layout::Bnhd, 0.0),
            ([1, 1, 6, 200], Layout::Bhnd, 0.0),
        ];
        for (dims, layout, off) in cases {
            let (mut r, ctx) = rng(&format!("{ctx} {dims:?} {layout:?} offset {off}"));
            let x = uniform(&mut r, dims.iter().product(), 2.0);
            let w: Vec<f32> = uniform(&mut r, dims[3], 0.5)
                .into_iter()
                .map(|v| v + 1.0 - off)
                .collect();
            let norm = RmsNorm {
                eps: 1e-6,
                weight_offset: off,
            };
            for dtype in [DType::F32, DType::BF16] {
                let xr: Vec<f32> = x.iter().map(|&v| dtype.round(v)).collect();
                let xt = Tensor::from_bhnd_as(gpu, &xr, dims, layout, dtype).unwrap();
                let y = rms_norm(&xt, &w, &norm).unwrap();
                assert_eq!((y.layout(), y.dtype()), (layout, dtype), "{ctx}");
                let want = reference::rms_norm(&xr, dims, dims[3], &w, &norm);
                assert_close(
                    &y.to_vec_blocking().unwrap(),
                    &want,
                    Tolerance::stored(dtype),
                    &format!("{ctx} {dtype}"),
                );
            }
        }
        let x = Tensor::from_slice(gpu, &[1.0; 8], &[1, 1, 1, 8]).unwrap();
        let bad = RmsNorm {
            eps: 0.0,
            weight_offset: 0.0,
        };
        assert!(
            matches!(rms_norm(&x, &[1.0; 8], &bad), Err(Error::InvalidArgument(m)) if m.contains("eps")),
            "{ctx}"
        );
        let ok = RmsNorm {
            eps: 1e-6,
            weight_offset: 0.0,
        };
        assert!(
            matches!(rms_norm(&x, &[1.0; 7], &ok), Err(Error::Shape(m)) if m.contains("one weight")),
            "{ctx}"
        );
    });
}

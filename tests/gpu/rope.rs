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
                    ..Default::default()
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

/// Every frequency scaling of Hugging Face's `rope_scaling` (linear, dynamic
/// NTK below and past its context, llama3, YaRN with and without truncation
/// and with DeepSeek's mscale pair, LongRoPE short and long) and per-token
/// position ids, against the f64 twin.
#[test]
fn rope_scalings_and_position_ids_match_reference() {
    use wgpu_attention::RopeScaling;
    each_gpu("rope scaling", |gpu, t, ctx| {
        if t.staged() {
            super::report_skip(ctx, "rope has one variant");
            return;
        }
        let d = 24;
        let rot = 16; // partial rotary: 8 pairs
        let yarn = |truncate, mscale: Option<(f64, f64)>| RopeScaling::Yarn {
            factor: 32.0,
            original_max_position: 64,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: mscale.map(|m| m.0),
            mscale_all_dim: mscale.map(|m| m.1),
            truncate,
        };
        let scalings = [
            RopeScaling::Linear { factor: 4.0 },
            RopeScaling::Dynamic {
                factor: 2.0,
                max_position: 16,
            },
            RopeScaling::Dynamic {
                factor: 2.0,
                max_position: 4096,
            },
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 32,
            },
            yarn(true, None),
            yarn(false, None),
            yarn(true, Some((0.707, 0.707))),
            RopeScaling::LongRope {
                short: (0..rot / 2).map(|i| 1.0 + i as f64 * 0.1).collect(),
                long: (0..rot / 2).map(|i| 1.0 + i as f64 * 2.0).collect(),
                original_max_position: 40,
                attention_factor: 1.19,
            },
        ];
        for scaling in scalings {
            for pairing in [Pairing::HalfSplit, Pairing::Interleaved] {
                let cfg = Rope {
                    pairing,
                    base: 10000.0,
                    rotary_dims: Some(rot),
                    offset: 20,
                    scaling: scaling.clone(),
                };
                let dims = [2, 3, 13, d];
                let (mut r, ctx) = rng(&format!("{ctx} {cfg:?}"));
                let x = uniform(&mut r, dims.iter().product(), 1.0);
                let xt = Tensor::from_bhnd(gpu, &x, dims, Layout::Bnhd).unwrap();
                // Offsets 20..33 (past the LongRoPE context of 40 in part: no),
                // then ids per token reaching 50 (past it: the long factors).
                let out = run(gpu, t, |rec| record_rope(rec, &xt, &cfg));
                let want = reference::rope(&x, dims, &cfg);
                assert_close(&out.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
                let ids: Vec<u32> = (0..2 * 13).map(|i| ((i * 7) % 51) as u32).collect();
                let out = run(gpu, t, |rec| {
                    wgpu_attention::kernels::rope::record_rope_at(rec, &xt, &cfg, &ids)
                });
                let want = reference::rope_at(&x, dims, &cfg, Some(&ids));
                assert_close(
                    &out.to_vec_blocking().unwrap(),
                    &want,
                    Tolerance::F32,
                    &format!("{ctx} ids"),
                );
            }
        }
        // Ids of the wrong count are a typed error.
        let xt = Tensor::from_slice(gpu, &[0.0; 2 * 3 * 8], &[1, 2, 3, 8]).unwrap();
        assert!(
            matches!(
                wgpu_attention::kernels::rope::rope_at(&xt, &Rope::default(), &[1, 2]),
                Err(Error::InvalidArgument(m)) if m.contains("one per token")
            ),
            "{ctx}"
        );
    });
}

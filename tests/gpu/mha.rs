use super::{each_gpu, rng, run, uniform};
use wgpu_attention::reference::{multi_head_attention, MhaReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    Alignment, Error, Masking, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention, Pairing,
    Rope, Tensor,
};

#[test]
fn layer_matches_reference() {
    each_gpu("multi-head layer", |gpu, t, ctx| {
        // (d_model, heads, kv heads, head dim, bias, B, Nq, Nk (None = self), masking, rope, alibi)
        let causal = Masking {
            causal: true,
            ..Default::default()
        };
        let padded = Masking {
            key_lengths: Some(vec![33, 20]),
            ..Default::default()
        };
        let half = Some(Rope {
            pairing: Pairing::HalfSplit,
            ..Default::default()
        });
        let inter = Some(Rope {
            pairing: Pairing::Interleaved,
            offset: 7,
            base: 500.0,
            rotary_dims: None,
        });
        let cases = [
            (
                12,
                3,
                3,
                4,
                true,
                2,
                17,
                None,
                Masking::default(),
                None,
                false,
            ),
            (
                15,
                5,
                5,
                3,
                true,
                1,
                9,
                Some(33),
                causal.clone(),
                None,
                false,
            ),
            (20, 4, 2, 5, false, 2, 33, None, padded, half, false),
            (
                24,
                6,
                1,
                4,
                true,
                1,
                17,
                None,
                Masking {
                    causal: true,
                    alignment: Alignment::TopLeft,
                    ..Default::default()
                },
                inter,
                false,
            ),
            (
                16,
                4,
                4,
                7,
                true,
                1,
                5,
                Some(9),
                Masking::default(),
                None,
                true,
            ),
            (32, 8, 2, 4, true, 2, 1, None, causal, half, true),
        ];
        for (d_model, h, hkv, d, bias, b, nq, nk, masking, rope, alibi) in cases {
            let cfg = MhaConfig {
                d_model,
                num_heads: h,
                num_kv_heads: hkv,
                head_dim: d,
                bias,
            };
            let (mut r, ctx) = rng(&format!(
                "{ctx} {cfg:?} B={b} Nq={nq} Nk={nk:?} {masking:?} {rope:?} alibi={alibi}"
            ));
            let weights = MhaWeights::random(&cfg, r.random()).unwrap();
            let layer = MultiHeadAttention::new(gpu, cfg, &weights).unwrap();
            let xq = uniform(&mut r, b * nq * d_model, 1.0);
            let xkv = nk.map(|n| uniform(&mut r, b * n * d_model, 1.0));
            let xq_t = Tensor::from_slice(gpu, &xq, &[b, nq, d_model]).unwrap();
            let xkv_t = xkv
                .as_ref()
                .map(|x| Tensor::from_slice(gpu, x, &[b, nk.unwrap(), d_model]).unwrap());
            let opts = MhaOptions {
                masking: masking.clone(),
                rope,
                alibi,
                ..Default::default()
            };
            let y = run(gpu, t, |rec| {
                layer.record_forward(rec, &xq_t, xkv_t.as_ref(), &opts)
            });
            assert_eq!(y.shape(), [b, nq, d_model], "{ctx}");
            let kv = xkv.as_deref().unwrap_or(&xq);
            let ropts = MhaReferenceOptions {
                masking,
                rope,
                alibi,
                ..Default::default()
            };
            let want =
                multi_head_attention(&xq, kv, [b, nq, nk.unwrap_or(nq)], &cfg, &weights, &ropts);
            assert_close(&y.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
        }
    });
}

#[test]
fn layer_errors_are_typed() {
    each_gpu("multi-head layer errors", |gpu, _, ctx| {
        let cfg = MhaConfig::new(8, 2).unwrap();
        let w = MhaWeights::random(&cfg, 3).unwrap();
        let wrong = MhaConfig::new(8, 4).unwrap().with_kv_heads(2).unwrap();
        assert!(
            matches!(MultiHeadAttention::new(gpu, wrong, &w), Err(Error::Weights(m)) if m.contains("k_proj")),
            "{ctx}"
        );
        let no_bias = MhaConfig { bias: false, ..cfg };
        assert!(
            matches!(MultiHeadAttention::new(gpu, no_bias, &w), Err(Error::Weights(m)) if m.contains("bias")),
            "{ctx}"
        );
        let layer = MultiHeadAttention::new(gpu, cfg, &w).unwrap();
        let x = Tensor::from_slice(gpu, &[0.0; 2 * 3 * 7], &[2, 3, 7]).unwrap();
        assert!(
            matches!(layer.forward(&x, None, &MhaOptions::default()), Err(Error::Shape(m)) if m.contains("d_model = 8")),
            "{ctx}"
        );
        let xq = Tensor::from_slice(gpu, &[0.0; 2 * 3 * 8], &[2, 3, 8]).unwrap();
        let xkv = Tensor::from_slice(gpu, &[0.0; 3 * 8], &[1, 3, 8]).unwrap();
        assert!(
            matches!(layer.forward(&xq, Some(&xkv), &MhaOptions::default()), Err(Error::Shape(m)) if m.contains("batch")),
            "{ctx}"
        );
    });
}

use rand::Rng;

use super::{each_gpu, rng, run, uniform};
use wgpu_attention::reference::{multi_head_attention, MhaReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    Alignment, Biases, Error, Masking, MhaConfig, MhaOptions, MhaWeights, MultiHeadAttention,
    Pairing, Rope, Tensor,
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
            ..Default::default()
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
            (20, 4, 2, 5, false, 2, 33, None, padded, half.clone(), false),
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
            (32, 8, 2, 4, true, 2, 1, None, causal, half.clone(), true),
        ];
        for (d_model, h, hkv, d, bias, b, nq, nk, masking, rope, alibi) in cases {
            let cfg = MhaConfig::new(d_model, h)
                .unwrap()
                .with_kv_heads(hkv)
                .unwrap()
                .with_head_dim(d)
                .unwrap()
                .with_bias(Biases::all(bias));
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
                rope: rope.clone(),
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
        let no_bias = cfg.with_bias(Biases::NONE);
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

/// What real model families add to the layer, each against the f64 layer:
/// biases on a subset of the projections (Qwen2), per-head QK-norm with plain
/// and Gemma's `(1 + w)` weights and the whole-projection norm (OLMo 2),
/// attention sinks (gpt-oss), value heads narrower and wider than the key
/// heads, softcap, sliding windows, RoPE scalings with partial rotary, and
/// per-token position ids.
#[test]
fn layer_options_of_model_families_match_reference() {
    use wgpu_attention::{QkNorm, RmsNorm, RopeScaling};
    let norm = |offset: f32, per_head: bool| {
        Some(QkNorm {
            norm: RmsNorm {
                eps: 1e-6,
                weight_offset: offset,
            },
            per_head,
        })
    };
    let yarn = RopeScaling::Yarn {
        factor: 8.0,
        original_max_position: 16,
        beta_fast: 32.0,
        beta_slow: 1.0,
        attention_factor: None,
        mscale: None,
        mscale_all_dim: None,
        truncate: false,
    };
    let window = Masking {
        causal: true,
        window: Some(wgpu_attention::Window { left: 3, right: 0 }),
        ..Default::default()
    };
    let causal = Masking {
        causal: true,
        ..Default::default()
    };
    struct Family {
        name: &'static str,
        dims: (usize, usize, usize, usize, usize), // d_model, H, Hkv, D, Dv
        bias: Biases,
        qk_norm: Option<QkNorm>,
        sinks: bool,
        rope: Option<Rope>,
        softcap: Option<f32>,
        scale: Option<f32>,
        masking: Masking,
        ids: bool,
    }
    let rope = |rotary_dims: Option<usize>, scaling: RopeScaling| {
        Some(Rope {
            rotary_dims,
            scaling,
            ..Default::default()
        })
    };
    let families = [
        Family {
            name: "qwen2",
            dims: (32, 4, 2, 8, 8),
            bias: Biases::QKV,
            qk_norm: None,
            sinks: false,
            rope: rope(None, RopeScaling::None),
            softcap: None,
            scale: None,
            masking: causal.clone(),
            ids: false,
        },
        Family {
            name: "qwen3",
            dims: (24, 4, 2, 8, 8),
            bias: Biases::NONE,
            qk_norm: norm(0.0, true),
            sinks: false,
            rope: rope(None, yarn.clone()),
            softcap: None,
            scale: None,
            masking: causal.clone(),
            ids: true,
        },
        Family {
            name: "gemma",
            dims: (24, 4, 1, 6, 6),
            bias: Biases::NONE,
            qk_norm: norm(1.0, true),
            sinks: false,
            rope: rope(None, RopeScaling::Linear { factor: 8.0 }),
            softcap: Some(5.0),
            scale: Some(0.3),
            masking: window.clone(),
            ids: false,
        },
        Family {
            name: "gpt-oss",
            dims: (32, 4, 2, 8, 8),
            bias: Biases::ALL,
            qk_norm: None,
            sinks: true,
            rope: rope(None, yarn.clone()),
            softcap: None,
            scale: None,
            masking: window.clone(),
            ids: false,
        },
        Family {
            name: "olmo2",
            dims: (16, 2, 2, 8, 8),
            bias: Biases::NONE,
            qk_norm: norm(0.0, false),
            sinks: false,
            rope: rope(Some(4), RopeScaling::None),
            softcap: None,
            scale: None,
            masking: causal.clone(),
            ids: false,
        },
        Family {
            name: "dv<d",
            dims: (16, 4, 2, 6, 4),
            bias: Biases::ALL,
            qk_norm: norm(0.0, true),
            sinks: true,
            rope: rope(Some(4), RopeScaling::None),
            softcap: None,
            scale: None,
            masking: causal.clone(),
            ids: false,
        },
        Family {
            name: "dv>d",
            dims: (16, 4, 2, 4, 6),
            bias: Biases {
                q: false,
                k: true,
                v: false,
                o: true,
            },
            qk_norm: norm(1.0, true),
            sinks: false,
            rope: rope(None, RopeScaling::None),
            softcap: Some(3.0),
            scale: None,
            masking: Masking::default(),
            ids: true,
        },
    ];
    each_gpu("multi-head layer, model families", |gpu, t, ctx| {
        for f in &families {
            let (dm, h, hkv, d, dv) = f.dims;
            let cfg = MhaConfig::new(dm, h)
                .unwrap()
                .with_kv_heads(hkv)
                .unwrap()
                .with_head_dim(d)
                .unwrap()
                .with_v_head_dim(dv)
                .unwrap()
                .with_bias(f.bias)
                .with_qk_norm(f.qk_norm)
                .unwrap()
                .with_sinks(f.sinks);
            let (mut r, ctx) = rng(&format!("{ctx} {} {cfg:?}", f.name));
            let weights = MhaWeights::random(&cfg, r.random()).unwrap();
            let layer = MultiHeadAttention::new(gpu, cfg, &weights).unwrap();
            let (b, n) = (2, 13);
            let x = uniform(&mut r, b * n * dm, 1.0);
            let xt = Tensor::from_slice(gpu, &x, &[b, n, dm]).unwrap();
            // Batch 1 left-padded by 3 (positions restart), as a tokenizer
            // pads a batch.
            let ids: Vec<u32> = (0..b * n)
                .map(|i| {
                    if i < n {
                        i as u32
                    } else {
                        ((i - n) as u32).saturating_sub(3)
                    }
                })
                .collect();
            let ids = f.ids.then_some(&ids[..]);
            let opts = MhaOptions {
                masking: f.masking.clone(),
                rope: f.rope.clone(),
                position_ids: ids,
                softcap: f.softcap,
                scale: f.scale,
                ..Default::default()
            };
            let y = run(gpu, t, |rec| layer.record_forward(rec, &xt, None, &opts));
            let ropts = MhaReferenceOptions {
                masking: f.masking.clone(),
                rope: f.rope.clone(),
                position_ids: ids,
                softcap: f.softcap.map(f64::from),
                scale: f.scale.map(f64::from),
                ..Default::default()
            };
            let want = multi_head_attention(&x, &x, [b, n, n], &cfg, &weights, &ropts);
            assert_close(&y.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
        }
    });
}

/// Decoding with a KV cache through the layer: a prompt, then one token per
/// step (and a step of three), each step's rows equal to the rows of a full
/// pass over the whole sequence by the f64 layer; QK-norm, sinks, GQA, RoPE
/// with YaRN, sliding window, both at one page and across pages.
#[test]
fn layer_with_a_kv_cache_matches_full_recompute() {
    use wgpu_attention::{QkNorm, RmsNorm, RopeScaling};
    each_gpu("multi-head layer, KV cache", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let cfg = MhaConfig::new(24, 4)
            .unwrap()
            .with_kv_heads(2)
            .unwrap()
            .with_bias(Biases::QKV)
            .with_qk_norm(Some(QkNorm {
                norm: RmsNorm {
                    eps: 1e-6,
                    weight_offset: 0.0,
                },
                per_head: true,
            }))
            .unwrap()
            .with_sinks(true);
        let weights = MhaWeights::random(&cfg, r.random()).unwrap();
        let layer = MultiHeadAttention::new(gpu, cfg, &weights).unwrap();
        let b = 2;
        let steps = [7usize, 1, 1, 3, 1];
        let total: usize = steps.iter().sum();
        let x = uniform(&mut r, b * total * 24, 1.0);
        let rope = Rope {
            scaling: RopeScaling::Yarn {
                factor: 4.0,
                original_max_position: 8,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: None,
                mscale: None,
                mscale_all_dim: None,
                truncate: true,
            },
            ..Default::default()
        };
        let masking = Masking {
            causal: true,
            window: Some(wgpu_attention::Window { left: 5, right: 0 }),
            ..Default::default()
        };
        let ropts = MhaReferenceOptions {
            masking: masking.clone(),
            rope: Some(rope.clone()),
            ..Default::default()
        };
        let full = multi_head_attention(&x, &x, [b, total, total], &cfg, &weights, &ropts);
        let opts = MhaOptions {
            masking,
            rope: Some(rope),
            ..Default::default()
        };
        // One page, then pages of 4 positions (the cache crosses pages).
        for page_len in [None, Some(4)] {
            let mut cache = match page_len {
                None => layer
                    .new_cache(b, total, wgpu_attention::DType::F32)
                    .unwrap(),
                Some(p) => wgpu_attention::KvCache::with_page_len(
                    gpu,
                    b,
                    2,
                    layer.cache_head_dim(),
                    total,
                    p,
                )
                .unwrap(),
            };
            let mut at = 0;
            for &n in &steps {
                // Rows at..at+n of each batch.
                let xs: Vec<f32> = (0..b)
                    .flat_map(|bi| x[(bi * total + at) * 24..(bi * total + at + n) * 24].to_vec())
                    .collect();
                let xt = Tensor::from_slice(gpu, &xs, &[b, n, 24]).unwrap();
                let y = run(gpu, t, |rec| {
                    layer.record_forward_cached(rec, &xt, &mut cache, &opts)
                });
                let want: Vec<f64> = (0..b)
                    .flat_map(|bi| {
                        full[(bi * total + at) * 24..(bi * total + at + n) * 24].to_vec()
                    })
                    .collect();
                assert_close(
                    &y.to_vec_blocking().unwrap(),
                    &want,
                    Tolerance::F32,
                    &format!("{ctx} page_len {page_len:?} step at {at} of {n}"),
                );
                at += n;
            }
            assert_eq!(cache.len(), total, "{ctx}");
        }
    });
}

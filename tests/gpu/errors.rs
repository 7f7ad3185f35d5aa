//! One test per error kind: bad input is a typed error before any dispatch.

use super::{each_gpu, each_gpu_skipping, Skip};
use wgpu_attention::kernels::{
    posenc::posenc, scores::scores, softmax::softmax, weighted_sum::weighted_sum,
};
use wgpu_attention::{
    attention, AttentionOptions, AttentionPath, Error, Gpu, GpuOptions, HostMask, Layout,
    MaskTensor, Masking, Tensor,
};

fn t(gpu: &Gpu, dims: [usize; 4]) -> Tensor {
    Tensor::from_slice(gpu, &vec![0.5; dims.iter().product()], &dims).unwrap()
}

#[test]
fn shape_and_head_dim_mismatches() {
    each_gpu("errors shape", |gpu, _, ctx| {
        let q = t(gpu, [1, 2, 3, 4]);
        assert!(
            matches!(scores(&q, &t(gpu, [1, 2, 3, 5]), None, None, None, None), Err(Error::Shape(m)) if m.contains("head dim")),
            "{ctx}"
        );
        assert!(
            matches!(scores(&q, &t(gpu, [2, 2, 3, 4]), None, None, None, None), Err(Error::Shape(m)) if m.contains("batch")),
            "{ctx}"
        );
        let three_d = Tensor::from_slice(gpu, &[0.0; 6], &[1, 2, 3]).unwrap();
        assert!(
            matches!(scores(&three_d, &q, None, None, None, None), Err(Error::Shape(m)) if m.contains("4-D")),
            "{ctx}"
        );
        let kv = t(gpu, [1, 2, 3, 4]);
        assert!(
            matches!(
                attention(&q, &kv, &t(gpu, [1, 2, 4, 4]), &AttentionOptions::default()),
                Err(Error::Shape(_))
            ),
            "{ctx}"
        );
        // Strides that address past the data.
        assert!(
            matches!(
                Tensor::from_strided(gpu, &[0.0; 8], &[2, 4], &[5, 1], 0),
                Err(Error::Shape(_))
            ),
            "{ctx}"
        );
        assert!(
            matches!(
                Tensor::from_strided(gpu, &[0.0; 8], &[2, 4], &[4], 0),
                Err(Error::Shape(_))
            ),
            "{ctx}"
        );
        // P must be what softmax writes: contiguous.
        let p = q.view(&[1, 2, 3, 3], &[18, 9, 1, 3], 0).unwrap();
        assert!(
            matches!(
                weighted_sum(&p, &t(gpu, [1, 2, 3, 4]), Layout::Bhnd),
                Err(Error::Shape(_))
            ),
            "{ctx}"
        );
        let x2 = Tensor::from_slice(gpu, &[0.0; 4], &[2, 2]).unwrap();
        assert!(matches!(posenc(&x2, 0), Err(Error::Shape(_))), "{ctx}");
    });
}

#[test]
fn heads_that_do_not_divide() {
    each_gpu("errors heads", |gpu, _, ctx| {
        let r = scores(
            &t(gpu, [1, 3, 2, 4]),
            &t(gpu, [1, 2, 2, 4]),
            None,
            None,
            None,
            None,
        );
        assert!(
            matches!(r, Err(Error::Heads { hq: 3, hkv: 2 })),
            "{ctx}: {r:?}"
        );
    });
}

#[test]
fn zero_sized_dims() {
    each_gpu("errors zero", |gpu, _, ctx| {
        assert!(
            matches!(
                Tensor::from_slice::<f32>(gpu, &[], &[1, 0, 2, 2]),
                Err(Error::ZeroSized(_))
            ),
            "{ctx}"
        );
        assert!(
            matches!(
                HostMask::bool(vec![], [1, 1, 0, 3]),
                Err(Error::ZeroSized(_))
            ),
            "{ctx}"
        );
    });
}

#[test]
fn masks_that_do_not_broadcast_or_are_invalid() {
    each_gpu("errors mask", |gpu, _, ctx| {
        let q = t(gpu, [3, 2, 4, 4]);
        let m = MaskTensor::upload(
            gpu,
            &HostMask::bool(vec![true; 2 * 4 * 4], [2, 1, 4, 4]).unwrap(),
        )
        .unwrap();
        let opts = AttentionOptions {
            mask: Some(&m),
            ..Default::default()
        };
        let r = attention(&q, &q, &q, &opts);
        assert!(
            matches!(
                r,
                Err(Error::MaskBroadcast {
                    mask: [2, 1, 4, 4],
                    b: 3,
                    ..
                })
            ),
            "{ctx}: {r:?}"
        );
        // A bool mask is no additive bias.
        let m1 = MaskTensor::upload(gpu, &HostMask::bool(vec![true; 16], [1, 1, 4, 4]).unwrap())
            .unwrap();
        assert!(
            matches!(
                scores(&q, &q, None, Some(&m1), None, None),
                Err(Error::InvalidArgument(_))
            ),
            "{ctx}"
        );
        assert!(
            matches!(HostMask::additive(vec![f32::NAN; 16], [1, 1, 4, 4]), Err(Error::InvalidArgument(m)) if m.contains("NaN")),
            "{ctx}"
        );
        assert!(
            matches!(
                HostMask::bool(vec![true; 15], [1, 1, 4, 4]),
                Err(Error::Shape(_))
            ),
            "{ctx}"
        );
        let s = t(gpu, [3, 2, 4, 4]);
        let bad_len = Masking {
            key_lengths: Some(vec![1, 2]),
            ..Default::default()
        };
        assert!(
            matches!(
                softmax(&s, &bad_len, None, false),
                Err(Error::InvalidArgument(_))
            ),
            "{ctx}"
        );
        let too_long = Masking {
            key_lengths: Some(vec![1, 2, 5]),
            ..Default::default()
        };
        assert!(
            matches!(
                softmax(&s, &too_long, None, false),
                Err(Error::InvalidArgument(_))
            ),
            "{ctx}"
        );
    });
}

#[test]
fn buffers_over_the_binding_limit() {
    each_gpu("errors buffer size", |gpu, _, ctx| {
        // Scores of n×n f32 just over max_storage_buffer_binding_size, from tiny Q/K.
        let limit = gpu
            .limits()
            .max_storage_buffer_binding_size
            .min(gpu.limits().max_buffer_size);
        let n = ((limit / 4) as f64).sqrt() as usize + 1;
        let q = Tensor::from_slice(gpu, &vec![0.0; n], &[1, 1, n, 1]).unwrap();
        let r = scores(&q, &q, None, None, None, None);
        assert!(
            matches!(r, Err(Error::BufferTooLarge { .. })),
            "{ctx}: n={n}: {r:?}"
        );
    });
}

#[test]
fn missing_feature_is_reported_or_feature_works() {
    each_gpu("errors feature", |gpu, _, ctx| {
        let has = gpu.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        match gpu.timed_recorder() {
            Ok(mut rec) => {
                assert!(has, "{ctx}");
                let q = t(gpu, [1, 1, 5, 4]);
                wgpu_attention::kernels::scores::record_scores(
                    &mut rec, &q, &q, None, None, None, None,
                )
                .unwrap();
                let ms = pollster::block_on(rec.submit_timed()).unwrap();
                assert!(ms.is_finite() && ms >= 0.0, "{ctx}: {ms}");
            }
            Err(e) => assert!(!has && matches!(e, Error::MissingFeature(_)), "{ctx}: {e}"),
        }
        // The same adapter with timestamps withheld: always the typed error.
        let opts = GpuOptions {
            disabled_features: wgpu::Features::TIMESTAMP_QUERY,
            ..Default::default()
        };
        let without = pollster::block_on(Gpu::from_adapter_with(
            gpu.adapter().expect("own adapter").clone(),
            &opts,
        ))
        .unwrap();
        assert!(
            !without.features().contains(wgpu::Features::TIMESTAMP_QUERY),
            "{ctx}"
        );
        assert!(
            matches!(without.timed_recorder(), Err(Error::MissingFeature(f)) if f.contains("TIMESTAMP")),
            "{ctx}"
        );
    });
}

#[test]
fn unknown_backend_and_adapter_names() {
    assert!(
        matches!(GpuOptions::backend("vulkann"), Err(Error::InvalidArgument(m)) if m.contains("vulkan"))
    );
    let opts = GpuOptions {
        adapter_name: Some("no such adapter 4711".into()),
        ..Default::default()
    };
    assert!(matches!(Gpu::new_blocking(&opts), Err(Error::NoAdapter(m)) if m.contains("4711")));
}

#[test]
fn device_loss_surfaces_as_an_error() {
    let skip = [Skip::Staged(
        "about the device, not a kernel variant: once per adapter",
    )];
    each_gpu_skipping("errors device lost", &skip, |gpu, _, ctx| {
        // A private device on the same adapter, destroyed under our feet.
        let own = pollster::block_on(Gpu::from_adapter(
            gpu.adapter().expect("own adapter").clone(),
        ))
        .unwrap();
        let q = self::t(&own, [1, 1, 3, 4]);
        own.device().destroy();
        let r = scores(&q, &q, None, None, None, None).and_then(|s| s.to_vec_blocking());
        assert!(
            matches!(
                r,
                Err(Error::Gpu(_) | Error::DeviceLost(_) | Error::Readback(_))
            ),
            "{ctx}: {r:?}"
        );
    });
}

#[test]
fn pipelines_are_compiled_once_not_per_shape() {
    let skip = [Skip::Staged(
        "counts the unstaged straight-line kernel's row shapes; the staged kernels have one shape per bucket",
    )];
    each_gpu_skipping("pipeline cache", &skip, |gpu, _, ctx| {
        // A private device, so concurrent tests do not add pipelines to the count.
        let own = pollster::block_on(Gpu::from_adapter(
            gpu.adapter().expect("own adapter").clone(),
        ))
        .unwrap();
        let run = |n: usize, d: usize, path: AttentionPath| {
            let q = self::t(&own, [1, 2, n, d]);
            let opts = AttentionOptions {
                path,
                ..Default::default()
            };
            attention(&q, &q, &q, &opts)
                .unwrap()
                .o
                .to_vec_blocking()
                .unwrap();
        };
        // Unfused: three pipelines, whatever the shape.
        run(5, 3, AttentionPath::Unfused);
        let after_first = own.cached_pipelines();
        assert_eq!(after_first, 3, "{ctx}: scores, softmax, weighted_sum");
        for (n, d) in [(17, 3), (33, 64), (1, 1)] {
            run(n, d, AttentionPath::Unfused);
        }
        assert_eq!(
            own.cached_pipelines(),
            after_first,
            "{ctx}: a new shape compiled a new unfused pipeline"
        );
        // Fused: per head-dim bucket one pipeline per row shape, none per sequence
        // length. The CPU-driver kernels fit their rows per lane to Nq (1, 2, 4 or
        // 8 rows over 8 lanes: Nq 1–8, 9–16, 17–32, more), so lengths of one class
        // share a pipeline and a sweep over any lengths compiles at most four.
        run(5, 24, AttentionPath::Fused);
        let with_fused = own.cached_pipelines();
        assert_eq!(with_fused, after_first + 1, "{ctx}: one fused pipeline");
        for n in [1, 3, 8] {
            run(n, 31, AttentionPath::Fused);
        }
        assert_eq!(
            own.cached_pipelines(),
            with_fused,
            "{ctx}: a new length of the same row class (same D bucket) compiled a new fused pipeline"
        );
        for n in [9, 16, 17, 32, 33, 70, 200, 1000, 2] {
            run(n, 31, AttentionPath::Fused);
        }
        let fused = own.cached_pipelines() - after_first;
        assert!(
            fused <= 4,
            "{ctx}: {fused} fused pipelines for one D bucket over nine lengths (at most 4 row shapes)"
        );
    });
}

//! Attention inside the caller's wgpu app: their device (with only the
//! features they enabled), their buffers (inputs and outputs in place), their
//! encoder next to their own passes with a reusable workspace; and one `Gpu`
//! driven from four threads at once. Every result against the f64 reference.

use super::{check_o_lse, each_gpu, each_gpu_skipping, rng, uniform, Skip};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    record_attention_into, AttentionOptions, AttentionOutputs, AttentionPath, AttnShape, DType,
    Error, Gpu, GpuOptions, KvCache, Layout, MaskTensor, Masking, MultiHeadAttention, Tensor,
    Workspace,
};

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Gpu>();
    send_sync::<Tensor>();
    send_sync::<KvCache>();
    send_sync::<MaskTensor>();
    send_sync::<MultiHeadAttention>();
    send_sync::<Workspace>();
}

/// A device that plain wgpu opened on `gpu`'s adapter with no optional
/// features and the adapter's limits, as a caller's app would, wrapped.
fn caller_gpu(gpu: &Gpu) -> Gpu {
    let adapter = gpu.adapter().expect("own adapter").clone();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("the caller's device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("the caller's device");
    let g = Gpu::from_wgpu(adapter, device, queue, &GpuOptions::default()).unwrap();
    g.set_poison_outputs(true);
    g
}

/// A caller's buffer holding `data` (f32) at element `at`, NaN elsewhere.
fn buffer_with(gpu: &Gpu, elements: usize, at: usize, data: &[f32]) -> wgpu::Buffer {
    let mut all = vec![f32::NAN; elements];
    all[at..at + data.len()].copy_from_slice(data);
    let b = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("caller's"),
        size: (elements * 4) as u64,
        usage: USAGE,
        mapped_at_creation: false,
    });
    gpu.queue().write_buffer(&b, 0, bytemuck::cast_slice(&all));
    b
}

#[test]
fn caller_device_runs_with_only_its_features() {
    let skip = [Skip::NonDefault("about the device, not the kernel variant")];
    each_gpu_skipping("caller device", &skip, |gpu, _, ctx| {
        let (mut r, ctx) = rng(ctx);
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let g = caller_gpu(gpu);
        let seen = errors.clone();
        // The caller's own handler stays in place and sees nothing of ours.
        g.device()
            .on_uncaptured_error(std::sync::Arc::new(move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        assert!(g.is_external(), "{ctx}");
        assert_eq!(g.features(), wgpu::Features::empty(), "{ctx}");
        assert_eq!(g.limits(), &g.device().limits(), "{ctx}");
        assert_eq!(g.tuning().subgroup(), 0, "{ctx}: no SUBGROUP was enabled");
        assert!(!g.caps().native_f16(), "{ctx}: no SHADER_F16 was enabled");
        match g.timed_recorder() {
            Err(Error::MissingFeature(f)) => assert!(f.contains("TIMESTAMP_QUERY"), "{ctx}: {f}"),
            other => panic!(
                "{ctx}: timing without TIMESTAMP_QUERY gave {:?}",
                other.err()
            ),
        }
        // f16 K/V read packed; f32 Q and O.
        let sh = AttnShape {
            b: 1,
            hq: 4,
            hkv: 2,
            nq: 13,
            nk: 70,
            d: 40,
        };
        let q = uniform(&mut r, sh.q_len(), 1.0);
        let f16 =
            |x: Vec<f32>| -> Vec<f32> { x.into_iter().map(|x| DType::F16.round(x)).collect() };
        let k = f16(uniform(&mut r, sh.kv_len(), 1.0));
        let v = f16(uniform(&mut r, sh.kv_len(), 1.0));
        let qt = Tensor::from_slice(&g, &q, &[1, 4, 13, 40]).unwrap();
        let kt = Tensor::from_slice_as(&g, &k, &[1, 2, 70, 40], DType::F16).unwrap();
        let vt = Tensor::from_slice_as(&g, &v, &[1, 2, 70, 40], DType::F16).unwrap();
        let masking = Masking {
            causal: true,
            ..Default::default()
        };
        for path in [
            AttentionPath::Fused,
            AttentionPath::Decode,
            AttentionPath::Unfused,
        ] {
            let opts = AttentionOptions {
                masking: masking.clone(),
                return_lse: true,
                path,
                ..Default::default()
            };
            let out = wgpu_attention::attention(&qt, &kt, &vt, &opts).unwrap();
            let want = reference::attention(
                &q,
                &k,
                &v,
                &sh,
                &ReferenceOptions {
                    masking: masking.clone(),
                    ..Default::default()
                },
            );
            check_o_lse(&out, &want, &format!("{ctx} {path:?}"));
        }
        assert_eq!(errors.load(std::sync::atomic::Ordering::SeqCst), 0, "{ctx}");
    });
}

#[test]
fn tensors_over_caller_buffers_with_outputs_in_place() {
    each_gpu("caller buffers", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let sh = AttnShape {
            b: 2,
            hq: 4,
            hkv: 2,
            nq: 9,
            nk: 1100,
            d: 24,
        };
        let q = uniform(&mut r, sh.q_len(), 1.0);
        let k = uniform(&mut r, sh.kv_len(), 1.0);
        let v = uniform(&mut r, sh.kv_len(), 1.0);
        // One arena: Q (BNHD) at element 3, then K and V (BHND).
        let (q_at, k_at) = (3, 3 + sh.q_len() + 5);
        let v_at = k_at + sh.kv_len();
        let mut arena = vec![0.0f32; v_at + sh.kv_len()];
        let q_dims = [sh.b, sh.hq, sh.nq, sh.d];
        arena[q_at..q_at + sh.q_len()].copy_from_slice(&Layout::Bnhd.from_bhnd(&q, q_dims));
        arena[k_at..k_at + sh.kv_len()].copy_from_slice(&k);
        arena[v_at..v_at + sh.kv_len()].copy_from_slice(&v);
        let arena = buffer_with(gpu, arena.len(), 0, &arena);
        let kv_dims = [sh.b, sh.hkv, sh.nk, sh.d];
        let qt = Tensor::from_buffer(
            gpu,
            &arena,
            DType::F32,
            &q_dims,
            Some(&Layout::Bnhd.strides(q_dims)),
            q_at,
        )
        .unwrap();
        let kt = Tensor::from_buffer(gpu, &arena, DType::F32, &kv_dims, None, k_at).unwrap();
        let vt = Tensor::from_buffer(gpu, &arena, DType::F32, &kv_dims, None, v_at).unwrap();
        let masking = Masking {
            causal: true,
            ..Default::default()
        };
        let want = reference::attention(
            &q,
            &k,
            &v,
            &sh,
            &ReferenceOptions {
                masking: masking.clone(),
                ..Default::default()
            },
        );
        for path in [
            AttentionPath::Fused,
            AttentionPath::Decode,
            AttentionPath::Unfused,
        ] {
            // O at element 5 of a NaN-filled buffer, BHND; the LSE in its own.
            let o_buf = buffer_with(gpu, sh.q_len() + 9, 5, &[]);
            let lse_buf = buffer_with(gpu, sh.b * sh.hq * sh.nq + 7, 0, &[]);
            let o = Tensor::from_buffer(gpu, &o_buf, DType::F32, &q_dims, None, 5).unwrap();
            // The LSE at element 3 of its buffer.
            let lse =
                Tensor::from_buffer(gpu, &lse_buf, DType::F32, &[sh.b, sh.hq, sh.nq], None, 3)
                    .unwrap();
            let opts = AttentionOptions {
                masking: masking.clone(),
                path,
                ..Default::default()
            };
            let mut ws = Workspace::new();
            let mut rec = gpu.recorder().with_tuning(t).with_workspace(&mut ws);
            let outs = AttentionOutputs {
                o: Some(&o),
                lse: Some(&lse),
            };
            let out = record_attention_into(&mut rec, &qt, &kt, &vt, &opts, outs).unwrap();
            rec.submit().unwrap();
            assert!(*out.o.buffer() == o_buf, "{ctx}: O is the caller's buffer");
            let ctx = format!("{ctx} {path:?} ({})", out.kernels);
            check_o_lse(&out, &want, &ctx);
            // Nothing outside O's elements was written.
            let raw = Tensor::from_buffer(gpu, &o_buf, DType::F32, &[sh.q_len() + 9], None, 0)
                .unwrap()
                .to_vec_blocking()
                .unwrap();
            assert!(
                raw[..5]
                    .iter()
                    .chain(&raw[5 + sh.q_len()..])
                    .all(|x| x.is_nan()),
                "{ctx}: wrote outside O"
            );
            let rows = sh.b * sh.hq * sh.nq;
            let raw = Tensor::from_buffer(gpu, &lse_buf, DType::F32, &[rows + 7], None, 0)
                .unwrap()
                .to_vec_blocking()
                .unwrap();
            assert!(
                raw[..3].iter().chain(&raw[3 + rows..]).all(|x| x.is_nan()),
                "{ctx}: wrote outside the LSE"
            );
        }
    });
}

#[test]
fn caller_buffers_are_checked_with_errors_that_say_what_to_change() {
    let skip = [Skip::NonDefault("checks before any dispatch")];
    each_gpu_skipping("caller buffer errors", &skip, |gpu, _, ctx| {
        let dims = [1, 2, 5, 8];
        let mk = |usage: wgpu::BufferUsages, size: u64| {
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        let no_storage = mk(wgpu::BufferUsages::COPY_DST, 320);
        let e = Tensor::from_buffer(gpu, &no_storage, DType::F32, &dims, None, 0).unwrap_err();
        assert!(
            e.to_string().contains("BufferUsages::STORAGE"),
            "{ctx}: {e}"
        );
        let small = mk(USAGE, 316);
        let e = Tensor::from_buffer(gpu, &small, DType::F32, &dims, None, 0).unwrap_err();
        assert!(matches!(e, Error::Shape(_)), "{ctx}: {e}");
        let e = Tensor::from_buffer(gpu, &mk(USAGE, 320), DType::F32, &dims, None, 1).unwrap_err();
        assert!(e.to_string().contains("320 bytes"), "{ctx}: {e}");
        let no_copy = mk(wgpu::BufferUsages::STORAGE, 320);
        let t = Tensor::from_buffer(gpu, &no_copy, DType::F32, &dims, None, 0).unwrap();
        let e = t.to_vec_blocking().unwrap_err();
        assert!(e.to_string().contains("COPY_SRC"), "{ctx}: {e}");

        let x = Tensor::from_slice(gpu, &[0.5f32; 80], &dims).unwrap();
        let opts = AttentionOptions::default();
        let try_into = |o: Option<&Tensor>, lse: Option<&Tensor>, opts: &AttentionOptions| {
            let mut rec = gpu.recorder();
            record_attention_into(&mut rec, &x, &x, &x, opts, AttentionOutputs { o, lse })
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let e = try_into(Some(&x), None, &opts);
        assert!(e.contains("shares its buffer with Q"), "{ctx}: {e}");
        let wrong = Tensor::from_slice(gpu, &[0.0f32; 80], &[1, 2, 8, 5]).unwrap();
        let e = try_into(Some(&wrong), None, &opts);
        assert!(e.contains("[B, Hq, Nq, D]"), "{ctx}: {e}");
        let half = Tensor::from_slice_as(gpu, &[0.0f32; 80], &dims, DType::F16).unwrap();
        let e = try_into(
            Some(&half),
            None,
            &AttentionOptions {
                out_dtype: Some(DType::BF16),
                ..Default::default()
            },
        );
        assert!(e.contains("out_dtype"), "{ctx}: {e}");
        let strided = Tensor::from_slice(gpu, &[0.0f32; 20], &[20])
            .unwrap()
            .view(&[1, 2, 5], &[10, 6, 1], 1)
            .unwrap();
        let e = try_into(None, Some(&strided), &opts);
        assert!(e.contains("must be contiguous"), "{ctx}: {e}");

        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        let rec = gpu.recorder_for(&mut encoder);
        let e = rec.submit().unwrap_err().to_string();
        assert!(e.contains("submit that encoder"), "{ctx}: {e}");
    });
}

#[path = "../../examples/app/scale.rs"]
mod app;
use app::Scale;

#[test]
fn decode_steps_of_several_layers_in_the_callers_encoder() {
    let skip = [Skip::NonDefault("about recording, not the kernel variant")];
    each_gpu_skipping(
        "decode step in the caller's encoder",
        &skip,
        |gpu, _, ctx| {
            let (mut r, ctx) = rng(ctx);
            let g = caller_gpu(gpu);
            let dev = g.device().clone();
            let (layers, hq, hkv, d) = (3usize, 4usize, 2usize, 40usize);
            // 64 positions per page: 100 cached positions span two pages.
            let mut caches: Vec<KvCache> = (0..layers)
                .map(|_| KvCache::with_page_len(&g, 1, hkv, d, 160, 64).unwrap())
                .collect();
            let mut host: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
            for c in &mut caches {
                let (k, v) = (
                    uniform(&mut r, hkv * 100 * d, 1.0),
                    uniform(&mut r, hkv * 100 * d, 1.0),
                );
                c.append(&k, &v, 100).unwrap();
                host.push((k, v));
            }
            let double = Scale::new(&dev, 2.0);
            let half = Scale::new(&dev, 0.5);
            let q_len = hq * d;
            let qs: Vec<wgpu::Buffer> = (0..layers)
                .map(|_| buffer_with(&g, q_len, 0, &[]))
                .collect();
            let os: Vec<wgpu::Buffer> = (0..layers)
                .map(|_| buffer_with(&g, q_len, 0, &[]))
                .collect();
            let ys: Vec<wgpu::Buffer> = (0..layers)
                .map(|_| buffer_with(&g, q_len, 0, &[]))
                .collect();
            let tensor = |b: &wgpu::Buffer| {
                Tensor::from_buffer(&g, b, DType::F32, &[1, hq, 1, d], None, 0).unwrap()
            };
            let opts = AttentionOptions {
                path: AttentionPath::Decode,
                ..Default::default()
            };
            let mut ws = Workspace::new();
            let mut grown = None;
            for step in 0..3 {
                // Host data of the step, uploaded before recording.
                let xs: Vec<Vec<f32>> = (0..layers).map(|_| uniform(&mut r, q_len, 1.0)).collect();
                let x_bufs: Vec<wgpu::Buffer> =
                    xs.iter().map(|x| buffer_with(&g, q_len, 0, x)).collect();
                let new_kv: Vec<(Vec<f32>, Vec<f32>)> = (0..layers)
                    .map(|_| (uniform(&mut r, hkv * d, 1.0), uniform(&mut r, hkv * d, 1.0)))
                    .collect();
                let new_t: Vec<(Tensor, Tensor)> = new_kv
                    .iter()
                    .map(|(k, v)| {
                        (
                            Tensor::from_slice(&g, k, &[1, hkv, 1, d]).unwrap(),
                            Tensor::from_slice(&g, v, &[1, hkv, 1, d]).unwrap(),
                        )
                    })
                    .collect();
                let before = g.storage_allocations();
                let mut enc = dev.create_command_encoder(&Default::default());
                for l in 0..layers {
                    double.record(&dev, &mut enc, &x_bufs[l], &qs[l], q_len);
                    let mut rec = g.recorder_for(&mut enc).with_workspace(&mut ws);
                    caches[l]
                        .record_append(&mut rec, &new_t[l].0, &new_t[l].1)
                        .unwrap();
                    let o = tensor(&os[l]);
                    let outs = AttentionOutputs {
                        o: Some(&o),
                        lse: None,
                    };
                    caches[l]
                        .record_attend_into(&mut rec, &tensor(&qs[l]), &opts, outs)
                        .unwrap();
                    drop(rec);
                    half.record(&dev, &mut enc, &os[l], &ys[l], q_len);
                }
                g.queue().submit([enc.finish()]);
                if step == 0 {
                    grown = Some(ws.allocations());
                } else {
                    assert_eq!(
                        Some(ws.allocations()),
                        grown,
                        "{ctx} step {step}: the workspace grew"
                    );
                    assert_eq!(
                        g.storage_allocations(),
                        before,
                        "{ctx} step {step}: recording allocated"
                    );
                }
                for l in 0..layers {
                    let (hk, hv) = &mut host[l];
                    // Host copies [Hkv, len, D]: insert the new position per head.
                    let len = caches[l].len();
                    let mut k_all = Vec::new();
                    let mut v_all = Vec::new();
                    for h in 0..hkv {
                        let old = len - 1;
                        k_all.extend_from_slice(&hk[h * old * d..(h + 1) * old * d]);
                        k_all.extend_from_slice(&new_kv[l].0[h * d..(h + 1) * d]);
                        v_all.extend_from_slice(&hv[h * old * d..(h + 1) * old * d]);
                        v_all.extend_from_slice(&new_kv[l].1[h * d..(h + 1) * d]);
                    }
                    *hk = k_all;
                    *hv = v_all;
                    let q: Vec<f32> = xs[l].iter().map(|x| 2.0 * x).collect();
                    let sh = AttnShape {
                        b: 1,
                        hq,
                        hkv,
                        nq: 1,
                        nk: len,
                        d,
                    };
                    let want = reference::attention(&q, hk, hv, &sh, &ReferenceOptions::default());
                    let y_want: Vec<f64> = want.o.iter().map(|o| 0.5 * o).collect();
                    let y = tensor(&ys[l]).to_vec_blocking().unwrap();
                    assert_close(
                        &y,
                        &y_want,
                        Tolerance::F32,
                        &format!("{ctx} step {step} layer {l}"),
                    );
                }
            }
        },
    );
}

#[test]
fn one_gpu_from_four_threads_at_once() {
    let skip = [Skip::NonDefault(
        "about sharing the device, not the kernel variant",
    )];
    each_gpu_skipping("four threads", &skip, |gpu, _, ctx| {
        let (_, ctx) = rng(ctx);
        std::thread::scope(|s| {
            for worker in 0..4usize {
                let ctx = format!("{ctx} thread {worker}");
                s.spawn(move || {
                    let (mut r, ctx) = rng(&ctx);
                    for round in 0..3usize {
                        let (path, sh, causal) = match (worker + round) % 4 {
                            0 => (AttentionPath::Fused, (1, 2, 2, 37, 37, 24), true),
                            1 => (AttentionPath::Decode, (1, 4, 2, 1, 1500, 32), false),
                            2 => (AttentionPath::Unfused, (2, 2, 1, 19, 23, 33), true),
                            _ => (AttentionPath::Auto, (1, 3, 3, 64, 100, 16), false),
                        };
                        let (b, hq, hkv, nq, nk, d) = sh;
                        let sh = AttnShape {
                            b,
                            hq,
                            hkv,
                            nq,
                            nk,
                            d,
                        };
                        let q = uniform(&mut r, sh.q_len(), 1.0);
                        let k = uniform(&mut r, sh.kv_len(), 1.0);
                        let v = uniform(&mut r, sh.kv_len(), 1.0);
                        let qt = Tensor::from_slice(gpu, &q, &[b, hq, nq, d]).unwrap();
                        let kt = Tensor::from_slice(gpu, &k, &[b, hkv, nk, d]).unwrap();
                        let vt = Tensor::from_slice(gpu, &v, &[b, hkv, nk, d]).unwrap();
                        let masking = Masking {
                            causal,
                            ..Default::default()
                        };
                        let opts = AttentionOptions {
                            masking: masking.clone(),
                            return_lse: true,
                            path,
                            ..Default::default()
                        };
                        let out = wgpu_attention::attention(&qt, &kt, &vt, &opts).unwrap();
                        let want = reference::attention(
                            &q,
                            &k,
                            &v,
                            &sh,
                            &ReferenceOptions {
                                masking,
                                ..Default::default()
                            },
                        );
                        check_o_lse(&out, &want, &format!("{ctx} round {round} {path:?} {sh:?}"));
                    }
                });
            }
        });
    });
}

#[test]
fn the_embed_example_passes_and_prints_pass_last() {
    let skip = [Skip::NonDefault("runs the example once per adapter")];
    each_gpu_skipping("examples/embed", &skip, |gpu, _, ctx| {
        let stdout = super::run_example(gpu, ctx, "embed", &[]);
        let last = stdout.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("PASS"),
            "{ctx}: last line {last:?} of\n{stdout}"
        );
        assert!(
            stdout.contains(&gpu.info().name),
            "{ctx}: ran on another adapter:\n{stdout}"
        );
    });
}

#[test]
fn layers_of_the_multi_head_layer_in_the_callers_encoder_allocate_nothing_after_the_first_step() {
    use wgpu_attention::reference::{multi_head_attention, MhaReferenceOptions};
    use wgpu_attention::{MhaConfig, MhaOptions, MhaWeights, Pairing, Rope};
    let skip = [Skip::NonDefault("about recording, not the kernel variant")];
    each_gpu_skipping("layers in the caller's encoder", &skip, |gpu, _, ctx| {
        let (mut r, ctx) = rng(ctx);
        let g = caller_gpu(gpu);
        let cfg = MhaConfig::new(24, 4).unwrap().with_kv_heads(2).unwrap();
        let seed: u64 = rand::Rng::random(&mut r);
        let weights: Vec<MhaWeights> = (0..2)
            .map(|l| MhaWeights::random(&cfg, seed + l).unwrap())
            .collect();
        let layers: Vec<MultiHeadAttention> = weights
            .iter()
            .map(|w| MultiHeadAttention::new(&g, cfg, w).unwrap())
            .collect();
        let (b, n) = (1, 7);
        let ys: Vec<Tensor> = (0..2)
            .map(|_| Tensor::from_slice(&g, &vec![f32::NAN; b * n * 24], &[b, n, 24]).unwrap())
            .collect();
        let mut ws = Workspace::new();
        let mut grown = None;
        for step in 0..3u32 {
            let x = uniform(&mut r, b * n * 24, 1.0);
            let xt = Tensor::from_slice(&g, &x, &[b, n, 24]).unwrap();
            let rope = Rope {
                pairing: Pairing::HalfSplit,
                offset: 5 * step,
                ..Default::default()
            };
            let opts = MhaOptions {
                masking: Masking {
                    causal: true,
                    ..Default::default()
                },
                rope: Some(rope.clone()),
                ..Default::default()
            };
            let before = g.storage_allocations();
            let mut enc = g.device().create_command_encoder(&Default::default());
            {
                let mut rec = g.recorder_for(&mut enc).with_workspace(&mut ws);
                for (layer, y) in layers.iter().zip(&ys) {
                    layer
                        .record_forward_into(&mut rec, &xt, None, &opts, y)
                        .unwrap();
                }
            }
            g.queue().submit([enc.finish()]);
            if step == 0 {
                grown = Some(ws.allocations());
            } else {
                assert_eq!(
                    Some(ws.allocations()),
                    grown,
                    "{ctx} step {step}: the workspace grew"
                );
                assert_eq!(
                    g.storage_allocations(),
                    before,
                    "{ctx} step {step}: recording allocated"
                );
            }
            for (l, y) in ys.iter().enumerate() {
                let ropts = MhaReferenceOptions {
                    masking: opts.masking.clone(),
                    rope: Some(rope.clone()),
                    ..Default::default()
                };
                let want = multi_head_attention(&x, &x, [b, n, n], &cfg, &weights[l], &ropts);
                assert_close(
                    &y.to_vec_blocking().unwrap(),
                    &want,
                    Tolerance::F32,
                    &format!("{ctx} step {step} layer {l}"),
                );
            }
        }
    });
}

#[test]
fn unfused_chunks_copy_their_lse_into_the_callers_tensor_at_its_offset() {
    let skip = [Skip::NonDefault("about where the chunks' LSE lands")];
    each_gpu_skipping("chunked LSE at an offset", &skip, |gpu, _, ctx| {
        let (mut r, ctx) = rng(ctx);
        // A caller's device with a 48 KiB storage binding: the [1, 4, 40, 100]
        // scores (62.5 KiB) run in chunks of heads.
        let adapter = gpu.adapter().expect("own adapter").clone();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: 48 << 10,
            ..adapter.limits()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_limits: limits,
            ..Default::default()
        }))
        .unwrap();
        let g = Gpu::from_wgpu(adapter, device, queue, &GpuOptions::default()).unwrap();
        let sh = AttnShape {
            b: 1,
            hq: 4,
            hkv: 2,
            nq: 40,
            nk: 100,
            d: 8,
        };
        let q = uniform(&mut r, sh.q_len(), 1.0);
        let k = uniform(&mut r, sh.kv_len(), 1.0);
        let v = uniform(&mut r, sh.kv_len(), 1.0);
        let qt = Tensor::from_slice(&g, &q, &[1, 4, 40, 8]).unwrap();
        let kt = Tensor::from_slice(&g, &k, &[1, 2, 100, 8]).unwrap();
        let vt = Tensor::from_slice(&g, &v, &[1, 2, 100, 8]).unwrap();
        let rows = sh.b * sh.hq * sh.nq;
        let lse_buf = buffer_with(&g, rows + 9, 0, &[]);
        let lse = Tensor::from_buffer(&g, &lse_buf, DType::F32, &[1, 4, 40], None, 5).unwrap();
        let masking = Masking {
            causal: true,
            ..Default::default()
        };
        let opts = AttentionOptions {
            masking: masking.clone(),
            path: AttentionPath::Unfused,
            ..Default::default()
        };
        let mut rec = g.recorder();
        let outs = AttentionOutputs {
            o: None,
            lse: Some(&lse),
        };
        let out = record_attention_into(&mut rec, &qt, &kt, &vt, &opts, outs).unwrap();
        rec.submit().unwrap();
        assert!(
            out.kernels.contains("chunk"),
            "{ctx}: not chunked: {}",
            out.kernels
        );
        let want = reference::attention(
            &q,
            &k,
            &v,
            &sh,
            &ReferenceOptions {
                masking,
                ..Default::default()
            },
        );
        check_o_lse(&out, &want, &format!("{ctx} ({})", out.kernels));
        let raw = Tensor::from_buffer(&g, &lse_buf, DType::F32, &[rows + 9], None, 0)
            .unwrap()
            .to_vec_blocking()
            .unwrap();
        assert!(
            raw[..5].iter().chain(&raw[5 + rows..]).all(|x| x.is_nan()),
            "{ctx}: wrote outside the LSE"
        );
    });
}

use super::{
    check_o_lse, each_fused_gpu, each_fused_gpu_skipping, each_gpu, each_gpu_skipping, rng, run,
    uniform, Skip,
};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    record_attention, Alignment, AttentionOptions, AttentionPath, AttnShape, Gpu, HostMask, Layout,
    MaskTensor, Masking, Tensor, Tuning, Window,
};

struct Case {
    sh: AttnShape,
    layout: Layout,
    masking: Masking,
    mask: Option<HostMask>,
    scale: Option<f32>,
    alibi: bool,
    softcap: Option<f32>,
}

impl Case {
    /// No masks, biases or options: fields a case sets override these.
    fn plain(sh: AttnShape, layout: Layout) -> Case {
        Case {
            sh,
            layout,
            masking: Masking::default(),
            mask: None,
            scale: None,
            alibi: false,
            softcap: None,
        }
    }
}

fn check(gpu: &Gpu, t: Tuning, ctx: &str, c: &Case) {
    check_splits(gpu, t, ctx, c, &[7]);
}

/// [`check`] with the decode path run once per KV split length in `splits`.
fn check_splits(gpu: &Gpu, t: Tuning, ctx: &str, c: &Case, splits: &[usize]) {
    let sh = c.sh;
    let (mut r, ctx) = rng(&format!(
        "{ctx} {sh:?} {:?} {:?} mask={:?} scale={:?} alibi={} softcap={:?}",
        c.layout,
        c.masking,
        c.mask.as_ref().map(|m| m.dims),
        c.scale,
        c.alibi,
        c.softcap
    ));
    let slopes = wgpu_attention::alibi_slopes(sh.hq);
    let alibi = c.alibi.then_some(&slopes[..]);
    let q = uniform(&mut r, sh.q_len(), 1.0);
    let k = uniform(&mut r, sh.kv_len(), 1.0);
    let v = uniform(&mut r, sh.kv_len(), 1.0);
    let qt = Tensor::from_bhnd(gpu, &q, [sh.b, sh.hq, sh.nq, sh.d], c.layout).unwrap();
    let kt = Tensor::from_bhnd(gpu, &k, [sh.b, sh.hkv, sh.nk, sh.d], c.layout).unwrap();
    let vt = Tensor::from_bhnd(gpu, &v, [sh.b, sh.hkv, sh.nk, sh.d], c.layout).unwrap();
    let mt = c.mask.as_ref().map(|m| MaskTensor::upload(gpu, m).unwrap());
    let opts = AttentionOptions {
        scale: c.scale,
        masking: c.masking.clone(),
        mask: mt.as_ref(),
        alibi,
        softcap: c.softcap,
        return_weights: true,
        return_lse: true,
        path: AttentionPath::Unfused,
        kv_split: None,
        tuning: None,
    };
    let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &opts));
    assert_eq!(out.o.layout(), c.layout, "{ctx}: O keeps Q's layout");
    let want = reference::attention(
        &q,
        &k,
        &v,
        &sh,
        &ReferenceOptions {
            scale: c.scale.map(f64::from),
            masking: c.masking.clone(),
            mask: c.mask.as_ref(),
            alibi,
            softcap: c.softcap.map(f64::from),
        },
    );
    check_o_lse(&out, &want, &ctx);
    assert_close(
        &out.weights.unwrap().to_vec_blocking().unwrap(),
        &want.p,
        Tolerance::F32,
        &format!("{ctx} P"),
    );

    // The fused path, with LSE.
    let fused = AttentionOptions {
        return_weights: false,
        path: AttentionPath::Fused,
        ..opts.clone()
    };
    let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &fused));
    assert_eq!(out.o.layout(), c.layout, "{ctx}: fused O keeps Q's layout");
    assert!(out.weights.is_none(), "{ctx}");
    check_o_lse(&out, &want, &format!("{ctx} fused"));

    // The decode path (split-KV), with splits that divide Nk unevenly.
    for &split in splits {
        let decode = AttentionOptions {
            return_weights: false,
            path: AttentionPath::Decode,
            kv_split: Some(split),
            ..opts.clone()
        };
        let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &decode));
        assert_eq!(out.o.layout(), c.layout, "{ctx}: decode O keeps Q's layout");
        check_o_lse(&out, &want, &format!("{ctx} decode split {split}"));
    }

    // Both paths without LSE or weights bind placeholders instead.
    for path in [AttentionPath::Unfused, AttentionPath::Auto] {
        let plain = AttentionOptions {
            return_weights: false,
            return_lse: false,
            path,
            ..opts.clone()
        };
        let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &plain));
        assert!(out.lse.is_none() && out.weights.is_none(), "{ctx}");
        assert_close(
            &out.o.to_vec_blocking().unwrap(),
            &want.o,
            Tolerance::F32,
            &format!("{ctx} {path:?} O without LSE"),
        );
    }
}

fn shape(b: usize, hq: usize, hkv: usize, nq: usize, nk: usize, d: usize) -> AttnShape {
    AttnShape {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
    }
}

#[test]
fn attention_plain_and_gqa_in_both_layouts() {
    each_fused_gpu("attention", |gpu, t, ctx| {
        for (i, sh) in [
            shape(1, 1, 1, 1, 1, 1),
            shape(2, 4, 2, 17, 33, 64),
            shape(1, 6, 2, 33, 17, 7),
            shape(1, 2, 1, 257, 257, 32),
            shape(2, 2, 2, 1, 33, 256),
            // The 80 bucket (6 rows per lane on lavapipe, not a power of two).
            shape(1, 3, 1, 19, 45, 78),
        ]
        .into_iter()
        .enumerate()
        {
            let layout = if i % 2 == 0 {
                Layout::Bhnd
            } else {
                Layout::Bnhd
            };
            check(gpu, t, ctx, &Case::plain(sh, layout));
        }
    });
}

#[test]
fn attention_with_every_option() {
    each_fused_gpu("attention options", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        let sh = shape(2, 4, 2, 17, 33, 16);
        let bool_mask = HostMask::bool(
            (0..2 * 17 * 33).map(|i| i % 5 != 0).collect(),
            [2, 1, 17, 33],
        )
        .unwrap();
        let mut add = uniform(&mut r, 4 * 17 * 33, 2.0);
        add[..33].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        let additive = HostMask::additive(add, [1, 4, 17, 33]).unwrap();
        let cases = [
            Masking {
                causal: true,
                alignment: Alignment::TopLeft,
                ..Default::default()
            },
            Masking {
                causal: true,
                alignment: Alignment::BottomRight,
                ..Default::default()
            },
            Masking {
                window: Some(Window { left: 4, right: 1 }),
                ..Default::default()
            },
            Masking {
                key_lengths: Some(vec![0, 20]),
                ..Default::default()
            },
        ];
        for (i, masking) in cases.into_iter().enumerate() {
            let layout = if i % 2 == 0 {
                Layout::Bnhd
            } else {
                Layout::Bhnd
            };
            check(
                gpu,
                t,
                ctx,
                &Case {
                    masking,
                    ..Case::plain(sh, layout)
                },
            );
        }
        for mask in [bool_mask, additive] {
            check(
                gpu,
                t,
                ctx,
                &Case {
                    mask: Some(mask),
                    scale: Some(0.3),
                    ..Case::plain(sh, Layout::Bhnd)
                },
            );
        }
    });
}

#[test]
fn additive_bias_read_four_keys_at_a_time() {
    // The straight-line kernels read an additive mask as one vec4 per row and 4
    // keys when its rows are aligned (MaskTensor pads them to 4 elements, so also
    // at Nk = 45): key blocks then start at a multiple of 4 even where a window's
    // range does not (the keys added are excluded by the rules), and decode splits
    // of 8 keys take it too. Splits of 7 and a mask broadcast along keys read one
    // key at a time. Each against the reference, bottom-right causal on top.
    each_fused_gpu("bias vec4", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        let sh = shape(2, 3, 1, 21, 45, 24);
        let masking = Masking {
            causal: true,
            alignment: Alignment::BottomRight,
            window: Some(Window { left: 6, right: 3 }),
            ..Default::default()
        };
        for dims in [[2, 3, 21, 45], [1, 1, 21, 1]] {
            let add = uniform(&mut r, dims.iter().product(), 2.0);
            check_splits(
                gpu,
                t,
                ctx,
                &Case {
                    masking: masking.clone(),
                    mask: Some(HostMask::additive(add, dims).unwrap()),
                    ..Case::plain(sh, Layout::Bnhd)
                },
                &[7, 8],
            );
        }
    });
}

#[test]
fn attention_over_65535_heads_splits_the_grid() {
    each_gpu("attention split grid", |gpu, t, ctx| {
        // B·Hq = 70 000 (one workgroup per head and per softmax row): more than one
        // grid dimension holds; GQA 10:1 on top.
        check(
            gpu,
            t,
            ctx,
            &Case::plain(shape(2, 35_000, 3_500, 1, 2, 1), Layout::Bhnd),
        );
    });
}

#[test]
fn attention_with_alibi_for_4_6_and_12_heads() {
    each_fused_gpu("attention alibi", |gpu, t, ctx| {
        for (hq, hkv, causal, alignment) in [
            (4, 4, false, Alignment::BottomRight),
            (6, 3, true, Alignment::BottomRight),
            (12, 4, true, Alignment::TopLeft),
        ] {
            check(
                gpu,
                t,
                ctx,
                &Case {
                    masking: Masking {
                        causal,
                        alignment,
                        ..Default::default()
                    },
                    alibi: true,
                    ..Case::plain(shape(1, hq, hkv, 17, 33, 8), Layout::Bnhd)
                },
            );
        }
    });
}

#[test]
fn attention_with_softcap_scale_and_masks_on_both_paths() {
    each_fused_gpu("attention softcap", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        let mut add = uniform(&mut r, 2 * 33 * 17, 2.0);
        add[..17].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        let additive = HostMask::additive(add, [1, 2, 33, 17]).unwrap();
        check(
            gpu,
            t,
            ctx,
            &Case {
                masking: Masking {
                    causal: true,
                    alignment: Alignment::TopLeft,
                    ..Default::default()
                },
                mask: Some(additive),
                scale: Some(2.5),
                softcap: Some(3.0),
                ..Case::plain(shape(2, 2, 1, 33, 17, 24), Layout::Bnhd)
            },
        );
    });
}

#[test]
fn over_one_binding_unfused_runs_in_head_chunks_and_auto_goes_fused() {
    let skip = [Skip::Staged(
        "about memory (chunking, the Auto choice): the kernels' variants are covered by the tests above",
    )];
    each_gpu_skipping("attention over a binding", &skip, |gpu, _, ctx| {
        let limits = gpu.limits();
        let limit = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        // 2000 × 2000 f32 scores per head; enough heads to pass the limit.
        let (n, d) = (2000, 1);
        let hq = (limit / (n * n * 4) as u64 + 1) as usize;
        let sh = shape(1, hq, 1, n, n, d);
        let (mut r, ctx) = rng(&format!("{ctx} {sh:?} limit={limit}"));
        let (q, k, v) = (
            uniform(&mut r, sh.q_len(), 1.0),
            uniform(&mut r, sh.kv_len(), 1.0),
            uniform(&mut r, sh.kv_len(), 1.0),
        );
        let qt = Tensor::from_bhnd(gpu, &q, [1, hq, n, d], Layout::Bhnd).unwrap();
        let kt = Tensor::from_bhnd(gpu, &k, [1, 1, n, d], Layout::Bhnd).unwrap();
        let vt = Tensor::from_bhnd(gpu, &v, [1, 1, n, d], Layout::Bhnd).unwrap();
        // The weights cannot be returned as one tensor ...
        let weights = AttentionOptions {
            path: AttentionPath::Unfused,
            return_weights: true,
            ..Default::default()
        };
        let err = wgpu_attention::attention(&qt, &kt, &vt, &weights).unwrap_err();
        assert!(
            matches!(err, wgpu_attention::Error::BufferTooLarge { .. }),
            "{ctx}: {err}"
        );
        // ... without them the unfused path runs in chunks of heads, and Auto goes
        // fused; both match the reference.
        let want = reference::attention(&q, &k, &v, &sh, &ReferenceOptions::default());
        for path in [AttentionPath::Unfused, AttentionPath::Auto] {
            let opts = AttentionOptions {
                path,
                return_lse: true,
                ..Default::default()
            };
            let out = wgpu_attention::attention(&qt, &kt, &vt, &opts).unwrap();
            let expect = if path == AttentionPath::Auto {
                AttentionPath::Fused
            } else {
                path
            };
            assert_eq!(out.path, expect, "{ctx}");
            check_o_lse(&out, &want, &format!("{ctx} {path:?}"));
        }
    });
}

#[test]
fn unfused_chunks_place_masks_heads_and_batches() {
    // A device whose storage binding holds 48 KiB: the [2, 6, 40, 70] scores
    // (134 KB) run as 2 batches × 2 chunks of 3 query heads (one KV head each,
    // GQA 3:1), so every chunk reads its batch's and heads' part of Q, K, V, the
    // masks, the ALiBi slopes and the key lengths, and writes its part of O and
    // LSE. Each case against the reference, in both layouts.
    let skip = [Skip::Staged(
        "about placing chunks: the unfused kernels' staged variant is covered by the tests above",
    )];
    each_gpu_skipping("unfused chunks", &skip, |gpu, t, ctx| {
        let mut limits = gpu.limits().clone();
        limits.max_storage_buffer_binding_size = 48 << 10;
        let small = pollster::block_on(Gpu::from_adapter_with(
            gpu.adapter().clone(),
            &wgpu_attention::GpuOptions {
                limits: Some(limits),
                ..Default::default()
            },
        ))
        .unwrap();
        small.set_poison_outputs(true);
        let sh = shape(2, 6, 2, 40, 70, 16);
        let (mut r, ctx) = rng(&format!("{ctx} {sh:?} binding=48KiB"));
        let additive = HostMask::additive(uniform(&mut r, 2 * 6 * 70, 2.0), [2, 6, 1, 70]).unwrap();
        let boolean = HostMask::bool(
            (0..2 * 40 * 70).map(|e| e % 9 != 4).collect(),
            [2, 1, 40, 70],
        )
        .unwrap();
        let slopes = wgpu_attention::alibi_slopes(sh.hq);
        let cases = [
            (
                Layout::Bnhd,
                Masking {
                    causal: true,
                    alignment: Alignment::BottomRight,
                    ..Default::default()
                },
                additive,
                true,
                Some(4.0),
            ),
            (
                Layout::Bhnd,
                Masking {
                    window: Some(Window { left: 9, right: 5 }),
                    key_lengths: Some(vec![70, 33]),
                    ..Default::default()
                },
                boolean,
                false,
                None,
            ),
        ];
        for (layout, masking, mask, alibi, softcap) in cases {
            let q = uniform(&mut r, sh.q_len(), 1.0);
            let k = uniform(&mut r, sh.kv_len(), 1.0);
            let v = uniform(&mut r, sh.kv_len(), 1.0);
            let qt = Tensor::from_bhnd(&small, &q, [2, 6, 40, 16], layout).unwrap();
            let kt = Tensor::from_bhnd(&small, &k, [2, 2, 70, 16], layout).unwrap();
            let vt = Tensor::from_bhnd(&small, &v, [2, 2, 70, 16], layout).unwrap();
            let mt = MaskTensor::upload(&small, &mask).unwrap();
            let alibi = alibi.then_some(&slopes[..]);
            let opts = AttentionOptions {
                masking: masking.clone(),
                mask: Some(&mt),
                alibi,
                softcap,
                return_lse: true,
                path: AttentionPath::Unfused,
                ..Default::default()
            };
            let out = run(&small, t, |rec| record_attention(rec, &qt, &kt, &vt, &opts));
            let ropts = ReferenceOptions {
                masking,
                mask: Some(&mask),
                alibi,
                softcap: softcap.map(f64::from),
                ..Default::default()
            };
            let want = reference::attention(&q, &k, &v, &sh, &ropts);
            check_o_lse(&out, &want, &format!("{ctx} {layout:?} {:?}", mask.dims));
        }
    });
}

#[test]
fn decode_against_a_long_kv_with_uneven_splits() {
    let skip = [Skip::Staged(
        "CI time: 32 768 keys per case; the tiled kernel's splits are covered by decode_serves_a_gqa_group_from_one_kv_load_with_every_option",
    )];
    each_fused_gpu_skipping("decode long kv", &skip, |gpu, t, ctx| {
        // (Each variant through AttentionOptions::tuning: with and without subgroups.)
        // Nq = 1 and 3 against 32 768 keys, GQA 4:2, causal bottom-right and key padding;
        // the default split (512) and an uneven one (1000).
        let sh = shape(2, 4, 2, 3, 32_768, 64);
        let (mut r, ctx) = rng(&format!("{ctx} {sh:?}"));
        let (q, k, v) = (
            uniform(&mut r, sh.q_len(), 1.0),
            uniform(&mut r, sh.kv_len(), 1.0),
            uniform(&mut r, sh.kv_len(), 1.0),
        );
        let qt = Tensor::from_bhnd(gpu, &q, [2, 4, 3, 64], Layout::Bhnd).unwrap();
        let kt = Tensor::from_bhnd(gpu, &k, [2, 2, 32_768, 64], Layout::Bnhd).unwrap();
        let vt = Tensor::from_bhnd(gpu, &v, [2, 2, 32_768, 64], Layout::Bnhd).unwrap();
        let masking = Masking {
            causal: true,
            key_lengths: Some(vec![32_768, 20_001]),
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
        for kv_split in [None, Some(1000)] {
            let opts = AttentionOptions {
                masking: masking.clone(),
                return_lse: true,
                kv_split,
                tuning: Some(t),
                ..Default::default()
            };
            let out = wgpu_attention::attention(&qt, &kt, &vt, &opts).unwrap();
            let ctx = format!("{ctx} split={kv_split:?} (Auto picks decode)");
            assert_close(
                &out.o.to_vec_blocking().unwrap(),
                &want.o,
                Tolerance::F32,
                &ctx,
            );
            assert_close(
                &out.lse.unwrap().to_vec_blocking().unwrap(),
                &want.lse,
                Tolerance::F32,
                &ctx,
            );
        }
    });
}

#[test]
fn decode_serves_a_gqa_group_from_one_kv_load_with_every_option() {
    // Few queries and GQA: the decode path's workgroups serve several query heads
    // of a KV head's group (without subgroups up to 4 rows: groups of 4, 2 and,
    // for 12:1, three workgroups of 4 heads; with subgroups up to a block of
    // lanes·rows), so each row's head, ALiBi slope, mask row and output row come
    // from its place in the group. Per-head masks and slopes catch a row mapped
    // to the wrong head.
    each_fused_gpu("decode gqa group", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        for (i, (sh, masking, alibi, softcap)) in [
            (
                shape(2, 8, 2, 1, 300, 40),
                Masking {
                    causal: true,
                    key_lengths: Some(vec![300, 77]),
                    ..Default::default()
                },
                true,
                None,
            ),
            (
                shape(1, 6, 3, 2, 129, 64),
                Masking {
                    window: Some(Window { left: 50, right: 0 }),
                    ..Default::default()
                },
                false,
                Some(5.0),
            ),
            (shape(1, 12, 1, 1, 100, 8), Masking::default(), true, None),
            // Nq 6: without subgroups two lane-split blocks of 4 rows (the second
            // with 2 surplus rows), whose key ranges differ under causal and
            // window; with subgroups both heads of a group in one block of rows.
            (
                shape(2, 4, 2, 6, 150, 32),
                Masking {
                    causal: true,
                    alignment: Alignment::BottomRight,
                    window: Some(Window { left: 40, right: 0 }),
                    ..Default::default()
                },
                true,
                None,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let add = uniform(&mut r, sh.b * sh.hq * sh.nq * sh.nk, 2.0);
            let mask = if i == 1 {
                HostMask::bool(
                    (0..sh.hq * sh.nq * sh.nk).map(|e| e % 7 != 3).collect(),
                    [1, sh.hq, sh.nq, sh.nk],
                )
                .unwrap()
            } else {
                HostMask::additive(add, [sh.b, sh.hq, sh.nq, sh.nk]).unwrap()
            };
            for layout in [Layout::Bhnd, Layout::Bnhd] {
                check(
                    gpu,
                    t,
                    ctx,
                    &Case {
                        masking: masking.clone(),
                        mask: Some(mask.clone()),
                        alibi,
                        softcap,
                        ..Case::plain(sh, layout)
                    },
                );
            }
        }
    });
}

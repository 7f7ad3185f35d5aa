//! Attention against the f64 reference on the unfused, fused and decode paths
//! (`Case`, `check`): plain and GQA in both layouts, every mask and option, an
//! additive bias read four keys at a time, a grid over 65 535 heads, ALiBi and
//! soft-capping, and every variant the autotuner may choose. `decode` holds the decode path's long-KV and GQA-group tests,
//! `chunks` the unfused path over one storage binding.

mod chunks;
mod decode;

use super::{check_o_lse, each_fused_gpu, each_gpu, each_gpu_skipping, rng, run, uniform, Skip};
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
    /// Attention sinks, one per query head (a fixed ramp around the scores).
    sinks: bool,
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
            sinks: false,
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
        "{ctx} {sh:?} {:?} {:?} mask={:?} scale={:?} alibi={} softcap={:?} sinks={}",
        c.layout,
        c.masking,
        c.mask.as_ref().map(|m| m.dims),
        c.scale,
        c.alibi,
        c.softcap,
        c.sinks
    ));
    let sinks: Vec<f32> = (0..sh.hq).map(|h| 0.4 * h as f32 - 0.5).collect();
    let sinks = c.sinks.then_some(&sinks[..]);
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
        tuning: wgpu_attention::TuningMode::Heuristic,
        out_dtype: None,
        mods: None,
        sinks,
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
            mods: None,
            sinks,
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

/// A boolean mask `[2, 1, 17, 33]` (every fifth key hidden) and an additive one
/// `[1, 4, 17, 33]` (random, seeded from `ctx`, with head 0's first row all -inf).
fn masks_for_b2_h4_17x33(ctx: &str) -> (HostMask, HostMask) {
    let (mut r, _) = rng(ctx);
    let bool_mask = HostMask::bool(
        (0..2 * 17 * 33).map(|i| i % 5 != 0).collect(),
        [2, 1, 17, 33],
    )
    .unwrap();
    let mut add = uniform(&mut r, 4 * 17 * 33, 2.0);
    add[..33].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
    (bool_mask, HostMask::additive(add, [1, 4, 17, 33]).unwrap())
}

#[test]
fn attention_with_every_option() {
    each_fused_gpu("attention options", |gpu, t, ctx| {
        let sh = shape(2, 4, 2, 17, 33, 16);
        let (bool_mask, additive) = masks_for_b2_h4_17x33(ctx);
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

/// Every variant `TuningMode::Autotune` may choose
/// (`plan::autotune::candidates`, per head-dim bucket) that the tests above do
/// not already run (they run the adapter's unstaged variant, the same without
/// subgroups, and the staged one): 4 rows per lane, 16 where subgroups share
/// the loads, and as for a real
/// GPU the tiled kernel's 32 and 128 lanes and 16- and 32-key tiles. In the 32
/// bucket each runs on every path (unfused, fused, decode, Auto) over the mask
/// modes, an additive and a boolean mask, ALiBi, soft-capping and GQA; in the 64
/// and 128 buckets (the same generated code at another width) on the fused path
/// with causal masking and LSE: there a 16-row kernel takes 30–80 s to compile
/// cold on lavapipe per specialization (a 4-row one on llvmpipe GL 30–50 s).
/// So the tuner never picks an untested kernel.
#[test]
fn every_autotune_candidate_matches_reference() {
    use wgpu_attention::plan::autotune::candidates;
    let skip = [Skip::Staged(
        "the candidates are listed from the adapter's own variant: once per adapter",
    )];
    each_gpu_skipping("autotune candidates", &skip, |gpu, _, ctx| {
        let base = gpu.tuning().with_staged(false);
        let covered = [base, base.with_subgroup(0).unwrap(), base.with_staged(true)];
        let causal = Masking {
            causal: true,
            alignment: Alignment::BottomRight,
            ..Default::default()
        };
        for d in [16, 64, 128] {
            // This adapter's candidates, and those of its staged variant (as on a
            // real GPU: the tiled kernel's widths and tile lengths).
            let mut new: Vec<Tuning> = Vec::new();
            for t in candidates(gpu.caps(), gpu.tuning(), d)
                .into_iter()
                .chain(candidates(gpu.caps(), gpu.tuning().with_staged(true), d))
            {
                if !covered.contains(&t) && !new.contains(&t) {
                    new.push(t);
                }
            }
            for t in new {
                let ctx = &format!("{ctx} candidate {t:?} d={d}");
                if d > 32 {
                    let sh = shape(1, 4, 2, 37, 45, d - 3);
                    let (mut r, ctx) = rng(&format!("{ctx} {sh:?} causal fused"));
                    let q = uniform(&mut r, sh.q_len(), 1.0);
                    let k = uniform(&mut r, sh.kv_len(), 1.0);
                    let v = uniform(&mut r, sh.kv_len(), 1.0);
                    let up = |x: &[f32], h, n| {
                        Tensor::from_bhnd(gpu, x, [sh.b, h, n, sh.d], Layout::Bhnd).unwrap()
                    };
                    let (qt, kt, vt) = (
                        up(&q, sh.hq, sh.nq),
                        up(&k, sh.hkv, sh.nk),
                        up(&v, sh.hkv, sh.nk),
                    );
                    let opts = AttentionOptions {
                        masking: causal.clone(),
                        return_lse: true,
                        path: AttentionPath::Fused,
                        ..Default::default()
                    };
                    let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &opts));
                    let want = reference::attention(
                        &q,
                        &k,
                        &v,
                        &sh,
                        &ReferenceOptions {
                            masking: causal.clone(),
                            ..Default::default()
                        },
                    );
                    check_o_lse(&out, &want, &ctx);
                    continue;
                }
                let sh = shape(2, 4, 2, 17, 33, d);
                let (bool_mask, additive) = masks_for_b2_h4_17x33(ctx);
                let cases = [
                    Case {
                        masking: causal.clone(),
                        ..Case::plain(shape(1, 4, 2, 37, 45, d - 3), Layout::Bhnd)
                    },
                    Case {
                        masking: Masking {
                            window: Some(Window { left: 4, right: 1 }),
                            key_lengths: Some(vec![0, 20]),
                            ..Default::default()
                        },
                        ..Case::plain(sh, Layout::Bnhd)
                    },
                    Case {
                        mask: Some(bool_mask),
                        alibi: true,
                        ..Case::plain(sh, Layout::Bhnd)
                    },
                    Case {
                        masking: Masking {
                            causal: true,
                            alignment: Alignment::TopLeft,
                            ..Default::default()
                        },
                        mask: Some(additive),
                        scale: Some(2.5),
                        softcap: Some(3.0),
                        ..Case::plain(sh, Layout::Bnhd)
                    },
                    Case::plain(shape(2, 2, 1, 1, 70, d), Layout::Bnhd),
                ];
                for c in &cases {
                    check(gpu, t, ctx, c);
                }
            }
        }
    });
}

/// The tiled kernel's family (`Tuning::tile_rows`, `Tuning::tile_split`), each
/// member forced on the staged variant where the device allows it (a D split
/// needs subgroups of at least that size: lavapipe's 8; llvmpipe GL runs only
/// split 1): rows per group 1/2/4, D split over 1/2/4/8 lanes, on GQA with the
/// causal rule, BNHD with a bool mask, ALiBi, softcap and sinks, and head dim 78 (the
/// 80 bucket's 20 chunks: splits 2 and 4 only) — block edges no tile divides.
#[test]
fn tiled_family_members_match_the_reference() {
    each_gpu("tiled family", |gpu, t, ctx| {
        if !t.staged() {
            super::report_skip(ctx, "the tiled kernel is the staged variant's");
            return;
        }
        let sg = gpu.features().contains(wgpu::Features::SUBGROUP);
        let sg_min = gpu.caps().subgroup_min;
        let (bool_mask, _) = masks_for_b2_h4_17x33(ctx);
        let cases = [
            Case {
                masking: Masking {
                    causal: true,
                    ..Default::default()
                },
                ..Case::plain(shape(2, 4, 2, 17, 33, 64), Layout::Bhnd)
            },
            Case {
                mask: Some(bool_mask),
                alibi: true,
                softcap: Some(2.0),
                sinks: true,
                ..Case::plain(shape(2, 4, 2, 17, 33, 78), Layout::Bnhd)
            },
        ];
        for (rows, split) in [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (1, 4), (2, 8)] {
            for c in &cases {
                let bucket = wgpu_attention::kernels::flash_attention::HEAD_DIM_BUCKETS
                    .into_iter()
                    .find(|&b| b as usize >= c.sh.d)
                    .unwrap();
                let chunks = bucket as usize / 4;
                if split > 1 && (!sg || split > sg_min || !chunks.is_multiple_of(split as usize)) {
                    continue;
                }
                let tf = t
                    .with_tile_rows(rows)
                    .unwrap()
                    .with_tile_split(split)
                    .unwrap();
                check(gpu, tf, &format!("{ctx} rows={rows} split={split}"), c);
            }
        }
    });
}

//! The decode path (split-KV): a long KV with uneven splits, and a GQA group
//! served from one KV load with every option.

use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{Alignment, AttentionOptions, HostMask, Layout, Masking, Tensor, Window};

use super::{check, shape, Case};
use crate::{each_fused_gpu, each_fused_gpu_skipping, rng, uniform, Skip};

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
                tuning: wgpu_attention::TuningMode::Fixed(t),
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

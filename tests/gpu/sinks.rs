//! Attention sinks (gpt-oss, StreamingLLM): one logit per query head in every
//! row's softmax denominator, on every path (fused kernels, split-KV decode and
//! its merge, unfused with weights and in chunks of heads, a KV cache across
//! pages), against the f64 reference.

use super::{check_o_lse, each_fused_gpu, each_gpu_skipping, rng, run, uniform, Skip};
use rand::Rng;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    record_attention, AttentionOptions, AttentionPath, AttnShape, Gpu, GpuOptions, KvCache, Layout,
    Masking, Tensor,
};

fn sinks(r: &mut impl Rng, hq: usize) -> Vec<f32> {
    // Around the scores' range, so the sink takes a visible share of each row.
    (0..hq).map(|_| r.random_range(-1.0f32..2.5)).collect()
}

#[test]
fn sinks_match_the_reference_on_every_path() {
    each_fused_gpu("attention sinks", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        // (shape, masking, kv_split): the last batch sees no key (O = 0 and
        // LSE = the sink there); a decode shape with several splits, the last
        // partial.
        let cases = [
            (
                AttnShape {
                    b: 2,
                    hq: 4,
                    hkv: 2,
                    nq: 17,
                    nk: 17,
                    d: 7,
                },
                Masking {
                    causal: true,
                    key_lengths: Some(vec![13, 0]),
                    ..Default::default()
                },
                None,
            ),
            (
                AttnShape {
                    b: 1,
                    hq: 2,
                    hkv: 2,
                    nq: 1,
                    nk: 1100,
                    d: 64,
                },
                Masking::default(),
                Some(256),
            ),
        ];
        for (sh, masking, kv_split) in cases {
            let q = uniform(&mut r, sh.q_len(), 1.0);
            let k = uniform(&mut r, sh.kv_len(), 1.0);
            let v = uniform(&mut r, sh.kv_len(), 1.0);
            let s = sinks(&mut r, sh.hq);
            let qt = Tensor::from_bhnd(gpu, &q, [sh.b, sh.hq, sh.nq, sh.d], Layout::Bhnd).unwrap();
            let kt = Tensor::from_bhnd(gpu, &k, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bnhd).unwrap();
            let vt = Tensor::from_bhnd(gpu, &v, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bhnd).unwrap();
            let want = reference::attention(
                &q,
                &k,
                &v,
                &sh,
                &ReferenceOptions {
                    masking: masking.clone(),
                    sinks: Some(&s),
                    ..Default::default()
                },
            );
            // The sink takes weight: every reference row sums to less than 1.
            let row_sums: Vec<f64> = want.p.chunks(sh.nk).map(|p| p.iter().sum()).collect();
            assert!(
                row_sums.iter().all(|&x| x < 1.0 - 1e-5),
                "{ctx}: {row_sums:?}"
            );
            for path in [
                AttentionPath::Fused,
                AttentionPath::Decode,
                AttentionPath::Unfused,
            ] {
                let opts = AttentionOptions {
                    masking: masking.clone(),
                    sinks: Some(&s),
                    return_lse: true,
                    return_weights: path == AttentionPath::Unfused,
                    kv_split,
                    path,
                    ..Default::default()
                };
                let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &opts));
                let c = format!("{ctx} {sh:?} {path:?} ({})", out.kernels);
                check_o_lse(&out, &want, &c);
                if let Some(w) = &out.weights {
                    assert_close(&w.to_vec_blocking().unwrap(), &want.p, Tolerance::F32, &c);
                }
            }
        }
    });
}

#[test]
fn sinks_join_once_across_kv_cache_pages() {
    each_fused_gpu("attention sinks, KV cache", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let (b, hkv, hq, d) = (2, 2, 4, 24);
        // 37 positions per page: 100 positions take three pages, the last partial.
        let mut cache = KvCache::with_page_len(gpu, b, hkv, d, 120, 37).unwrap();
        let k = uniform(&mut r, b * hkv * 100 * d, 1.0);
        let v = uniform(&mut r, b * hkv * 100 * d, 1.0);
        cache.append(&k, &v, 100).unwrap();
        assert_eq!(cache.pages_in_use(), 3, "{ctx}");
        let s = sinks(&mut r, hq);
        let sh = AttnShape {
            b,
            hq,
            hkv,
            nq: 3,
            nk: 100,
            d,
        };
        let q = uniform(&mut r, sh.q_len(), 1.0);
        let qt = Tensor::from_bhnd(gpu, &q, [b, hq, 3, d], Layout::Bnhd).unwrap();
        let masking = Masking {
            causal: true,
            key_lengths: Some(vec![100, 40]),
            ..Default::default()
        };
        for path in [AttentionPath::Auto, AttentionPath::Decode] {
            let opts = AttentionOptions {
                masking: masking.clone(),
                sinks: Some(&s),
                return_lse: true,
                path,
                ..Default::default()
            };
            let out = run(gpu, t, |rec| cache.record_attend(rec, &qt, &opts));
            let want = reference::attention(
                &q,
                &k,
                &v,
                &sh,
                &ReferenceOptions {
                    masking: masking.clone(),
                    sinks: Some(&s),
                    ..Default::default()
                },
            );
            check_o_lse(&out, &want, &format!("{ctx} {path:?} ({})", out.kernels));
        }
    });
}

#[test]
fn sinks_follow_their_heads_through_unfused_chunks() {
    let skip = [Skip::NonDefault(
        "about the chunks' head offsets, not the tiles",
    )];
    each_gpu_skipping("attention sinks, unfused chunks", &skip, |gpu, _, ctx| {
        let (mut r, ctx) = rng(ctx);
        // A 48 KiB storage binding: the [2, 4, 40, 100] scores (62.5 KiB per
        // batch) run in chunks of heads, each with its own heads' sinks.
        let adapter = gpu.adapter().expect("own adapter").clone();
        let opts = GpuOptions {
            limits: Some(wgpu::Limits {
                max_storage_buffer_binding_size: 48 << 10,
                ..adapter.limits()
            }),
            ..Default::default()
        };
        let g = pollster::block_on(Gpu::from_adapter_with(adapter, &opts)).unwrap();
        g.set_poison_outputs(true);
        let sh = AttnShape {
            b: 2,
            hq: 4,
            hkv: 2,
            nq: 40,
            nk: 100,
            d: 8,
        };
        let q = uniform(&mut r, sh.q_len(), 1.0);
        let k = uniform(&mut r, sh.kv_len(), 1.0);
        let v = uniform(&mut r, sh.kv_len(), 1.0);
        let s = sinks(&mut r, sh.hq);
        let qt = Tensor::from_slice(&g, &q, &[2, 4, 40, 8]).unwrap();
        let kt = Tensor::from_slice(&g, &k, &[2, 2, 100, 8]).unwrap();
        let vt = Tensor::from_slice(&g, &v, &[2, 2, 100, 8]).unwrap();
        let opts = AttentionOptions {
            sinks: Some(&s),
            return_lse: true,
            path: AttentionPath::Unfused,
            ..Default::default()
        };
        let out = wgpu_attention::attention(&qt, &kt, &vt, &opts).unwrap();
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
                sinks: Some(&s),
                ..Default::default()
            },
        );
        check_o_lse(&out, &want, &format!("{ctx} ({})", out.kernels));
    });
}

#[test]
fn sinks_are_checked_before_dispatch() {
    let gpu = match super::gpus().first() {
        Some((g, _)) => g,
        None => return super::each_gpu("sinks errors", |_, _, _| {}),
    };
    let qt = Tensor::from_slice(gpu, &[0.5f32; 2 * 8], &[1, 2, 2, 4]).unwrap();
    for (s, needle) in [
        (vec![0.0f32; 3], "one per query head"),
        (vec![0.0, f32::NAN], "finite"),
        (vec![0.0, f32::INFINITY], "finite"),
    ] {
        let opts = AttentionOptions {
            sinks: Some(&s),
            ..Default::default()
        };
        match wgpu_attention::attention(&qt, &qt, &qt, &opts) {
            Err(wgpu_attention::Error::InvalidArgument(m)) => {
                assert!(m.contains(needle), "{m}")
            }
            other => panic!("{s:?}: expected InvalidArgument, got {other:?}"),
        }
    }
}

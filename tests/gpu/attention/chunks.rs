//! The unfused path over one storage binding: weights refused, heads run in
//! chunks (and Auto going fused), and chunks placing masks, heads and batches.

use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::{
    record_attention, Alignment, AttentionOptions, AttentionPath, Gpu, HostMask, Layout,
    MaskTensor, Masking, Tensor, Window,
};

use super::shape;
use crate::{check_o_lse, each_gpu_skipping, rng, run, uniform, Skip};

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
            gpu.adapter().expect("own adapter").clone(),
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

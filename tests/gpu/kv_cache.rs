//! The KV cache: append, attend at the current length, across pages (KV longer
//! than one storage binding), against the f64 reference over the whole K/V.

use super::{
    check_o_lse, each_fused_gpu, each_gpu, each_gpu_skipping, report_skip, rng, run, uniform, Skip,
};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::{
    AttentionOptions, AttentionPath, AttnShape, Error, Gpu, HostMask, KvCache, Layout, MaskTensor,
    Masking, Tensor, Tuning, Window,
};

/// Appends `n` random positions to `cache` and to the host copies (logical
/// `[B, Hkv, len, D]`, rebuilt per append).
fn append(
    cache: &mut KvCache,
    r: &mut rand::rngs::StdRng,
    host: &mut (Vec<Vec<f32>>, Vec<Vec<f32>>),
    n: usize,
) {
    let bh = host.0.len();
    let d = D;
    let k = uniform(r, bh * n * d, 1.0);
    let v = uniform(r, bh * n * d, 1.0);
    cache.append(&k, &v, n).unwrap();
    for i in 0..bh {
        host.0[i].extend_from_slice(&k[i * n * d..(i + 1) * n * d]);
        host.1[i].extend_from_slice(&v[i * n * d..(i + 1) * n * d]);
    }
}

/// Head dim of the paged test: not a head-dim bucket (32/64/128/256).
const D: usize = 24;

/// Checks `cache.record_attend` for Nq new queries against the reference.
#[allow(clippy::too_many_arguments)]
fn check_attend(
    gpu: &Gpu,
    t: Tuning,
    ctx: &str,
    cache: &KvCache,
    host: &(Vec<Vec<f32>>, Vec<Vec<f32>>),
    r: &mut rand::rngs::StdRng,
    hq: usize,
    nq: usize,
    masking: &Masking,
    alibi: bool,
    softcap: Option<f32>,
    path: AttentionPath,
) {
    let (b, hkv, len) = (2, 2, cache.len());
    let sh = AttnShape {
        b,
        hq,
        hkv,
        nq,
        nk: len,
        d: D,
    };
    let q = uniform(r, sh.q_len(), 1.0);
    let qt = Tensor::from_bhnd(gpu, &q, [b, hq, nq, D], Layout::Bnhd).unwrap();
    let slopes = wgpu_attention::alibi_slopes(hq);
    let opts = AttentionOptions {
        masking: masking.clone(),
        alibi: alibi.then_some(&slopes[..]),
        softcap,
        return_lse: true,
        path,
        ..Default::default()
    };
    let out = run(gpu, t, |rec| cache.record_attend(rec, &qt, &opts));
    let k: Vec<f32> = host.0.concat();
    let v: Vec<f32> = host.1.concat();
    let want = reference::attention(
        &q,
        &k,
        &v,
        &sh,
        &ReferenceOptions {
            masking: masking.clone(),
            alibi: alibi.then_some(&slopes[..]),
            softcap: softcap.map(f64::from),
            ..Default::default()
        },
    );
    let ctx = format!(
        "{ctx} len={len} pages={} nq={nq} hq={hq} {masking:?} alibi={alibi} softcap={softcap:?} {path:?}",
        cache.pages_in_use()
    );
    check_o_lse(&out, &want, &ctx);
}

#[test]
fn kv_cache_append_and_attend_across_pages() {
    each_fused_gpu("kv cache", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        // 37 positions per page: the cache crosses pages mid-append, and no page
        // length is a multiple of a split or tile.
        let mut cache = KvCache::with_page_len(gpu, 2, 2, D, 160, 37).unwrap();
        let mut host = (vec![Vec::new(); 4], vec![Vec::new(); 4]);
        let mut step = 0usize;
        for n in [30usize, 1, 20, 3, 1, 60, 1] {
            append(&mut cache, &mut r, &mut host, n);
            let len = cache.len();
            for (nq, hq) in [(1usize, 4usize), (3, 2)] {
                let masking = match step % 4 {
                    0 => Masking {
                        causal: true,
                        ..Default::default()
                    },
                    1 => Masking {
                        window: Some(Window { left: 9, right: 0 }),
                        ..Default::default()
                    },
                    2 => Masking {
                        causal: true,
                        key_lengths: Some(vec![len as u32, (len * 2 / 3) as u32]),
                        ..Default::default()
                    },
                    _ => Masking::default(),
                };
                let path = [
                    AttentionPath::Auto,
                    AttentionPath::Fused,
                    AttentionPath::Decode,
                ][step % 3];
                check_attend(
                    gpu,
                    t,
                    &ctx,
                    &cache,
                    &host,
                    &mut r,
                    hq,
                    nq,
                    &masking,
                    step % 5 == 2,
                    (step % 7 == 3).then_some(3.0),
                    path,
                );
                step += 1;
            }
        }
        assert_eq!(cache.len(), 116);
        assert_eq!(cache.pages_in_use(), 4, "{ctx}");
    });
}

#[test]
fn kv_cache_errors_say_what_to_change() {
    each_gpu("kv cache errors", |gpu, _t, ctx| {
        let mut cache = KvCache::with_page_len(gpu, 1, 1, 4, 10, 4).unwrap();
        let q = Tensor::from_bhnd(gpu, &[0.5; 4], [1, 1, 1, 4], Layout::Bhnd).unwrap();
        let e = cache.attend(&q, &AttentionOptions::default()).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("empty")),
            "{ctx}: {e}"
        );
        let e = cache.append(&[0.0; 3], &[0.0; 4], 1).unwrap_err();
        assert!(
            matches!(e, Error::Shape(ref m) if m.contains("4 values")),
            "{ctx}: {e}"
        );
        cache.append(&[0.1; 24], &[0.2; 24], 6).unwrap();
        let e = cache.append(&[0.1; 20], &[0.2; 20], 5).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("capacity")),
            "{ctx}: {e}"
        );
        // Two pages in use: no weights, no dense masks.
        let opts = AttentionOptions {
            return_weights: true,
            ..Default::default()
        };
        let e = cache.attend(&q, &opts).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("pages")),
            "{ctx}: {e}"
        );
        let m =
            MaskTensor::upload(gpu, &HostMask::bool(vec![true; 6], [1, 1, 1, 6]).unwrap()).unwrap();
        let opts = AttentionOptions {
            mask: Some(&m),
            ..Default::default()
        };
        let e = cache.attend(&q, &opts).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("Masking rules")),
            "{ctx}: {e}"
        );
        cache.clear();
        assert!(cache.is_empty());
    });
}

/// A cache longer than one storage binding (128 MiB on lavapipe): the default
/// page length comes from the granted limit, and attention runs across the pages.
#[test]
fn kv_cache_longer_than_one_storage_binding() {
    let skip = [Skip::Staged(
        "about memory (pages over one binding): the kernel variants are covered by the tests above",
    )];
    each_gpu_skipping("kv cache over one binding", &skip, |gpu, t, ctx| {
        let limit = gpu.limits().max_storage_buffer_binding_size as usize;
        let (d, b, hkv) = (64usize, 1usize, 1usize);
        if limit > 256 << 20 {
            report_skip(ctx, &format!("storage binding limit {limit} B: a cache over it would take > 512 MiB; covered by the paged test"));
            return;
        }
        let len = limit / (d * 4) + 1000;
        let mut cache = KvCache::new(gpu, b, hkv, d, len).unwrap();
        assert_eq!(cache.page_len(), limit / (d * 4), "{ctx}");
        let (mut r, ctx) = rng(ctx);
        let k = uniform(&mut r, len * d, 1.0);
        let v = uniform(&mut r, len * d, 1.0);
        cache.append(&k, &v, len).unwrap();
        assert_eq!(cache.pages_in_use(), 2, "{ctx}");
        let q = uniform(&mut r, 2 * d, 1.0);
        let qt = Tensor::from_bhnd(gpu, &q, [1, 2, 1, d], Layout::Bhnd).unwrap();
        let masking = Masking {
            causal: true,
            window: Some(Window {
                left: (len - 500) as u32,
                right: 0,
            }),
            ..Default::default()
        };
        let opts = AttentionOptions {
            masking: masking.clone(),
            return_lse: true,
            ..Default::default()
        };
        let out = run(gpu, t, |rec| cache.record_attend(rec, &qt, &opts));
        let sh = AttnShape {
            b,
            hq: 2,
            hkv,
            nq: 1,
            nk: len,
            d,
        };
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
        let ctx = format!("{ctx} len={len} (binding limit {limit} B)");
        check_o_lse(&out, &want, &ctx);
    });
}

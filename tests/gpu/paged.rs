//! The paged KV cache (`wgpu_attention::paged`): serving steps of several
//! sequences (prompts, chunked prefill, decode, forks sharing a prefix with
//! copy-on-write, freed sequences whose blocks are reused), each step's
//! append and attention recorded into one encoder, against the f64 reference
//! on host copies of every sequence; the pool split over storage bindings (a
//! device with a small binding limit); the cache-write kernel against its twin.

use std::collections::HashMap;

use super::{each_gpu, each_gpu_skipping, report_skip, rng, uniform, Skip};
use wgpu_attention::paged::{PagedKvCache, SeqId};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    AttentionOptions, AttentionPath, AttnShape, DType, Gpu, GpuOptions, Layout, Masking, Tensor,
    Tuning,
};

/// Host copies of each sequence's K and V, packed `[len, Hkv, D]`.
type Host = HashMap<SeqId, (Vec<f32>, Vec<f32>)>;

/// One serving step: `appends[i]` new tokens for `seqs[i]` (their K/V random),
/// then `queries[i]` queries each against its whole sequence, recorded in one
/// encoder; checked per sequence.
#[allow(clippy::too_many_arguments)]
fn step(
    gpu: &Gpu,
    t: Tuning,
    ctx: &str,
    r: &mut rand::rngs::StdRng,
    cache: &mut PagedKvCache,
    host: &mut Host,
    seqs: &[SeqId],
    appends: &[usize],
    queries: &[usize],
    path: AttentionPath,
) {
    let (hkv, hq, d) = (2, 4, 12);
    let total: usize = appends.iter().sum();
    let k = uniform(r, total * hkv * d, 1.0);
    let v = uniform(r, total * hkv * d, 1.0);
    let tq: usize = queries.iter().sum();
    let q = uniform(r, tq * hq * d, 1.0);
    let kt = Tensor::from_slice(gpu, &k, &[total.max(1), hkv, d]);
    let vt = Tensor::from_slice(gpu, &v, &[total.max(1), hkv, d]);
    let qt = Tensor::from_slice(gpu, &q, &[tq, hq, d]).unwrap();
    let sinks = [0.3f32, -0.5, 1.0, 0.0];
    // A pool over several bindings runs the decode path (merged per part).
    let path = match path {
        AttentionPath::Fused if cache.parts() > 1 => AttentionPath::Decode,
        p => p,
    };
    let opts = AttentionOptions {
        masking: Masking {
            causal: true,
            ..Default::default()
        },
        sinks: Some(&sinks),
        return_lse: true,
        path,
        ..Default::default()
    };
    let mut rec = gpu.recorder().with_tuning(t);
    if total > 0 {
        cache
            .record_append(&mut rec, seqs, appends, &kt.unwrap(), &vt.unwrap())
            .unwrap();
    }
    let out = cache
        .record_attend(&mut rec, &qt, seqs, queries, &opts)
        .unwrap();
    rec.submit().unwrap();
    // The host copies hold what the pool holds: K/V rounded to its dtype
    // (round to nearest even, as the append kernel; half.rs checks that
    // rounding bit for bit), so a half pool is compared at f32 tolerance.
    let stored = |x: &[f32]| -> Vec<f32> {
        match cache.dtype() {
            DType::F16 => x.iter().map(|&y| half::f16::from_f32(y).to_f32()).collect(),
            DType::BF16 => x
                .iter()
                .map(|&y| half::bf16::from_f32(y).to_f32())
                .collect(),
            _ => x.to_vec(),
        }
    };
    let (k, v) = (stored(&k), stored(&v));
    let mut at = 0;
    for (i, &s) in seqs.iter().enumerate() {
        let e = host.entry(s).or_default();
        let n = appends[i] * hkv * d;
        e.0.extend_from_slice(&k[at..at + n]);
        e.1.extend_from_slice(&v[at..at + n]);
        at += n;
    }
    let got_o = out.o.to_vec_blocking().unwrap();
    let got_lse = out.lse.unwrap().to_vec_blocking().unwrap();
    let mut q0 = 0;
    for (i, &s) in seqs.iter().enumerate() {
        let (hk, hv) = &host[&s];
        let len = hk.len() / (hkv * d);
        assert_eq!(cache.manager().len(s).unwrap(), len, "{ctx}");
        let nq = queries[i];
        let bhnd =
            |x: &[f32], n: usize, h: usize| -> Vec<f32> { Layout::Bnhd.to_bhnd(x, [1, h, n, d]) };
        let want = reference::attention(
            &bhnd(&q[q0 * hq * d..(q0 + nq) * hq * d], nq, hq),
            &bhnd(hk, len, hkv),
            &bhnd(hv, len, hkv),
            &AttnShape {
                b: 1,
                hq,
                hkv,
                nq,
                nk: len,
                d,
            },
            &ReferenceOptions {
                masking: opts.masking.clone(),
                sinks: Some(&sinks),
                ..Default::default()
            },
        );
        let c = format!(
            "{ctx} seq {s} len {len} queries {nq} {path:?} ({})",
            out.kernels
        );
        for j in 0..nq {
            for h in 0..hq {
                let got = &got_o[((q0 + j) * hq + h) * d..][..d];
                let exp = &want.o[(h * nq + j) * d..][..d];
                assert_close(got, exp, Tolerance::F32, &format!("{c} O row {j} head {h}"));
                let gl = got_lse[h * tq + q0 + j];
                let wl = want.lse[h * nq + j];
                assert!(
                    (gl as f64 - wl).abs() <= 1e-5 * wl.abs().max(1.0),
                    "{c} LSE {gl} vs {wl}"
                );
            }
        }
        q0 += nq;
    }
}

fn serve(gpu: &Gpu, t: Tuning, ctx: &str, cache: &mut PagedKvCache) {
    let (mut r, ctx) = rng(ctx);
    let mut host = Host::new();
    let (a, b, c) = (
        cache.add_sequence(),
        cache.add_sequence(),
        cache.add_sequence(),
    );
    // Prompts (c empty: its query sees only the sink), one chunked-prefill
    // continuation, then decode steps.
    step(
        gpu,
        t,
        &ctx,
        &mut r,
        cache,
        &mut host,
        &[a, b],
        &[13, 5],
        &[13, 5],
        AttentionPath::Fused,
    );
    step(
        gpu,
        t,
        &ctx,
        &mut r,
        cache,
        &mut host,
        &[a, b, c],
        &[7, 1, 0],
        &[7, 1, 0],
        AttentionPath::Auto,
    );
    // Fork a: the fork shares a's 20 positions; both append (copy-on-write of
    // the partial last block), they diverge.
    let f = cache.fork(a).unwrap();
    host.insert(f, host[&a].clone());
    let free = cache.manager().free_blocks();
    for i in 0..5 {
        let path = [AttentionPath::Decode, AttentionPath::Fused][i % 2];
        step(
            gpu,
            t,
            &ctx,
            &mut r,
            cache,
            &mut host,
            &[a, f, b],
            &[1, 1, 1],
            &[1, 1, 1],
            path,
        );
    }
    assert!(
        cache.manager().free_blocks() < free,
        "{ctx}: the fork's copy took a block"
    );
    // Speculative verification: 3 draft tokens per sequence appended and checked.
    step(
        gpu,
        t,
        &ctx,
        &mut r,
        cache,
        &mut host,
        &[a, f],
        &[3, 3],
        &[3, 3],
        AttentionPath::Decode,
    );
    // Free b: its blocks are reused by a new sequence.
    cache.free_sequence(b).unwrap();
    host.remove(&b);
    let n = cache.add_sequence();
    step(
        gpu,
        t,
        &ctx,
        &mut r,
        cache,
        &mut host,
        &[n, a],
        &[9, 1],
        &[2, 1],
        AttentionPath::Auto,
    );
}

#[test]
fn paged_cache_serves_steps_with_forks_against_the_reference() {
    each_gpu("paged cache", |gpu, t, ctx| {
        // Blocks of 6 (no length divides); f32, bf16 and f16 pools.
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let mut cache = PagedKvCache::new(gpu, 32, 6, 2, 12, dtype).unwrap();
            assert_eq!(cache.parts(), 1, "{ctx}");
            serve(gpu, t, &format!("{ctx} {dtype}"), &mut cache);
        }
    });
}

/// A device whose storage binding holds 40 blocks: a pool of 96 blocks is
/// three parts; attention runs per part and merges (the decode path).
#[test]
fn paged_pool_over_one_binding_is_split_not_refused() {
    // Every kernel variant: each skips the tiles of keys in other parts its own way.
    each_gpu("paged pool parts", |gpu, t, ctx| {
        let adapter = gpu.adapter().expect("own adapter").clone();
        // A block of 6 positions · 2 heads · 12 channels · 4 bytes = 576 B.
        let opts = GpuOptions {
            limits: Some(wgpu::Limits {
                max_storage_buffer_binding_size: 40 * 576,
                ..adapter.limits()
            }),
            ..Default::default()
        };
        let g = match pollster::block_on(Gpu::from_adapter_with(adapter, &opts)) {
            Ok(g) => g,
            Err(e) => {
                return report_skip(ctx, &format!("no device with a small binding limit: {e}"))
            }
        };
        g.set_poison_outputs(true);
        // Every kernel of this variant: unstaged, also the generic kernel (the
        // straight-line one's fallback), which skips other parts per key.
        let mut tunings = vec![(t, "")];
        if !t.staged() {
            tunings.push((t.with_straight_line(false), " generic"));
        }
        let mut last = None;
        for (tt, name) in tunings {
            let mut cache = PagedKvCache::new(&g, 96, 6, 2, 12, DType::F32).unwrap();
            assert_eq!(cache.parts(), 3, "{ctx}");
            // A first sequence holds blocks 0..37 (blocks go lowest first), so the
            // served sequences' tables cross from part 0 (blocks 0..40) into part 1.
            let filler = cache.add_sequence();
            let n = 37 * 6;
            let x = Tensor::from_slice(&g, &vec![0.5f32; n * 2 * 12], &[n, 2, 12]).unwrap();
            let mut rec = g.recorder();
            cache
                .record_append(&mut rec, &[filler], &[n], &x, &x)
                .unwrap();
            rec.submit().unwrap();
            serve(&g, tt, &format!("{ctx}{name} 3 parts"), &mut cache);
            // The served sequences' ids follow the filler's.
            let used: Vec<u32> = (filler + 1..filler + 8)
                .filter_map(|s| cache.manager().blocks(s).ok().map(|b| b.to_vec()))
                .flatten()
                .collect();
            assert!(
                used.iter().any(|&b| b < 40) && used.iter().any(|&b| b >= 40),
                "{ctx}: the served blocks {used:?} do not span parts 0 and 1"
            );
            last = Some(cache);
        }
        let mut cache = last.expect("one tuning at least");
        // Fused cannot merge parts: a typed error says what to use.
        let s = cache.add_sequence();
        let x = Tensor::from_slice(&g, &[0.1f32; 2 * 12], &[1, 2, 12]).unwrap();
        let mut rec = g.recorder();
        cache.record_append(&mut rec, &[s], &[1], &x, &x).unwrap();
        let q = Tensor::from_slice(&g, &[0.1f32; 4 * 12], &[1, 4, 12]).unwrap();
        let fused = AttentionOptions {
            path: AttentionPath::Fused,
            ..Default::default()
        };
        assert!(
            matches!(cache.record_attend(&mut rec, &q, &[s], &[1], &fused), Err(wgpu_attention::Error::InvalidArgument(m)) if m.contains("Decode")),
            "{ctx}"
        );
    });
}

#[test]
fn out_of_blocks_is_a_typed_error_that_changes_nothing() {
    let skip = [Skip::NonDefault("about the block manager")];
    each_gpu_skipping("paged out of blocks", &skip, |gpu, _, ctx| {
        let mut cache = PagedKvCache::new(gpu, 3, 4, 1, 4, DType::F32).unwrap();
        let (a, b) = (cache.add_sequence(), cache.add_sequence());
        let x = |n: usize| Tensor::from_slice(gpu, &vec![0.1f32; n * 4], &[n, 1, 4]).unwrap();
        let mut rec = gpu.recorder();
        cache
            .record_append(&mut rec, &[a], &[9], &x(9), &x(9))
            .unwrap();
        let e = cache
            .record_append(&mut rec, &[b, a], &[1, 4], &x(5), &x(5))
            .unwrap_err();
        assert!(
            matches!(e, wgpu_attention::Error::OutOfBlocks { needed: 1, free: 0 }),
            "{ctx}: {e}"
        );
        assert_eq!(
            (
                cache.manager().len(a).unwrap(),
                cache.manager().len(b).unwrap()
            ),
            (9, 0),
            "{ctx}"
        );
        rec.submit().unwrap();
    });
}

/// `cache_write.wgsl` against its twin: random slots (a permutation: no
/// slot twice) into a poisoned pool region that was first filled.
#[test]
fn cache_write_matches_its_twin() {
    each_gpu("cache write", |gpu, t, ctx| {
        if t.staged() {
            return report_skip(ctx, "one variant");
        }
        let (mut r, ctx) = rng(ctx);
        let mut cache = PagedKvCache::new(gpu, 8, 5, 3, 4, DType::F32).unwrap();
        let s = cache.add_sequence();
        let n = 23;
        let k = uniform(&mut r, n * 12, 1.0);
        let kt = Tensor::from_slice(gpu, &k, &[n, 3, 4]).unwrap();
        let mut rec = gpu.recorder();
        cache.record_append(&mut rec, &[s], &[n], &kt, &kt).unwrap();
        rec.submit().unwrap();
        let slots: Vec<u32> = (0..n)
            .map(|p| cache.manager().blocks(s).unwrap()[p / 5] * 5 + (p % 5) as u32)
            .collect();
        let zero = vec![0.0f64; 8 * 5 * 12];
        let want = reference::cache_write(&zero, &k, &slots, 12);
        // The rows the slots name, read from the K pool.
        let pool = cache.pool(0).unwrap().0.to_vec_blocking().unwrap();
        for &row in &slots {
            let r0 = row as usize * 12;
            assert_close(
                &pool[r0..r0 + 12],
                &want[r0..r0 + 12],
                Tolerance::F32,
                &format!("{ctx} row {row}"),
            );
        }
    });
}

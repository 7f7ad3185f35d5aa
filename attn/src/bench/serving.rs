//! `attn bench --path paged,varlen`: a serving batch of sequences of mixed
//! lengths (uniform in `--lens MIN,MAX` from `--seed`).
//!
//! - **paged**: one decode step (a query per sequence) over a
//!   [`PagedKvCache`] holding every sequence, as one batched dispatch and as
//!   one call per sequence (each its own submission), GPU time (timestamps)
//!   and wall time, median of `--reps`; tokens/s of the batched step; the K/V
//!   bytes it reads per second against the host's copy bandwidth measured in
//!   the same run.
//! - **varlen**: causal prefill of the same lengths, packed
//!   (`seqs::varlen_attention`) against every sequence padded to the longest
//!   (`attention()` with key lengths), time and the bytes of the buffers each
//!   holds (Q, K, V, O, LSE); `--prefill-h` and `--prefill-d` size its heads
//!   (the decode's by default). A configuration over the device's binding
//!   limit is reported with its error instead of a time.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use wgpu_attention::paged::PagedKvCache;
use wgpu_attention::seqs::{record_varlen_attention, U32s, Varlen};
use wgpu_attention::{
    record_attention, AttentionOptions, AttentionPath, DType, Gpu, Masking, Tensor,
};

use super::{BenchArgs, BenchPath};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `record` into a recorder (timed where the adapter can) `reps` times
/// after a warm-up: (median GPU ms, median wall ms).
fn time(
    gpu: &Gpu,
    reps: usize,
    mut record: impl FnMut(&mut wgpu_attention::Recorder<'_>) -> wgpu_attention::Result<Tensor>,
) -> wgpu_attention::Result<(Option<f64>, f64)> {
    let mut gpu_ms = Vec::new();
    let mut wall = Vec::new();
    for i in 0..=reps {
        let t0 = Instant::now();
        let timed = gpu.timed_recorder();
        let out;
        let g = match timed {
            Ok(mut rec) => {
                out = record(&mut rec)?;
                Some(pollster::block_on(rec.submit_timed())?)
            }
            Err(_) => {
                let mut rec = gpu.recorder();
                out = record(&mut rec)?;
                rec.submit()?;
                None
            }
        };
        // One element read back: the work is done.
        let one = out.view(&[1], &[1], 0)?;
        one.to_vec_blocking()?;
        if i > 0 {
            wall.push(t0.elapsed().as_secs_f64() * 1e3);
            if let Some(g) = g {
                gpu_ms.push(g);
            }
        }
    }
    Ok((
        (!gpu_ms.is_empty()).then(|| median(&mut gpu_ms)),
        median(&mut wall),
    ))
}

fn fmt(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |m| format!("{m:.2}"))
}

pub fn main(a: &BenchArgs, gpu: &Gpu, paths: &[BenchPath]) -> Result<()> {
    let (min, max) = a.lens;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let lens: Vec<usize> = (0..a.seqs).map(|_| rng.random_range(min..=max)).collect();
    let (h, hkv, d) = (a.h[0], a.hkv.first().copied().unwrap_or(a.h[0]), a.d[0]);
    let total: usize = lens.iter().sum();
    println!(
        "serving batch: {} sequences, lengths {min}..{max} (seed {}; {total} tokens, longest {}), block size {}",
        a.seqs,
        a.seed,
        lens.iter().max().unwrap_or(&0),
        a.block_size
    );
    let reps = a.reps.max(10);
    if paths.contains(&BenchPath::Paged) {
        paged(gpu, &lens, h, hkv, d, a.block_size, reps, &mut rng)?;
    }
    if paths.contains(&BenchPath::Varlen) {
        let ph = a.prefill_h.unwrap_or(h);
        let phkv = if a.prefill_h.is_some() {
            ph.min(hkv).max(1)
        } else {
            hkv
        };
        varlen(
            gpu,
            &lens,
            ph,
            phkv,
            a.prefill_d.unwrap_or(d),
            a.prefill_reps.max(1),
            &mut rng,
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn paged(
    gpu: &Gpu,
    lens: &[usize],
    h: usize,
    hkv: usize,
    d: usize,
    bs: usize,
    reps: usize,
    rng: &mut impl Rng,
) -> Result<()> {
    let blocks: usize = lens.iter().map(|l| l.div_ceil(bs)).sum();
    let mut cache = PagedKvCache::new(gpu, blocks, bs, hkv, d, DType::F32)?;
    let seqs: Vec<_> = lens.iter().map(|_| cache.add_sequence()).collect();
    // Each sequence's keys and values, appended in its own submission.
    for (&s, &l) in seqs.iter().zip(lens) {
        let x: Vec<f32> = (0..l * hkv * d)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let t = Tensor::from_slice(gpu, &x, &[l, hkv, d])?;
        let mut rec = gpu.recorder();
        cache.record_append(&mut rec, &[s], &[l], &t, &t)?;
        rec.submit()?;
    }
    let b = lens.len();
    let q: Vec<f32> = (0..b * h * d)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let qt = Tensor::from_slice(gpu, &q, &[b, h, d])?;
    let opts = AttentionOptions {
        masking: Masking {
            causal: true,
            ..Default::default()
        },
        path: AttentionPath::Decode,
        ..Default::default()
    };
    let ones = vec![1usize; b];
    let batched = time(gpu, reps, |rec| {
        Ok(cache.record_attend(rec, &qt, &seqs, &ones, &opts)?.o)
    })?;
    // One call per sequence, each its own submission.
    let qs: Vec<Tensor> = (0..b)
        .map(|i| qt.view(&[1, h, d], &[h * d, d, 1], i * h * d))
        .collect::<wgpu_attention::Result<_>>()?;
    let mut sep_gpu = Vec::new();
    let mut sep_wall = Vec::new();
    for _ in 0..=reps.min(5) {
        let (mut g, mut w) = (0.0, 0.0);
        for (i, &s) in seqs.iter().enumerate() {
            let (gi, wi) = time(gpu, 1, |rec| {
                Ok(cache.record_attend(rec, &qs[i], &[s], &[1], &opts)?.o)
            })?;
            g += gi.unwrap_or(f64::NAN);
            w += wi;
        }
        sep_gpu.push(g);
        sep_wall.push(w);
    }
    let sep_gpu = median(&mut sep_gpu);
    let sep_wall = median(&mut sep_wall);
    let kv_bytes = lens.iter().sum::<usize>() as f64 * (2 * hkv * d * 4) as f64;
    let machine = super::targets::machine(&gpu.info().name);
    let best = batched.0.unwrap_or(batched.1);
    println!(
        "paged decode step, Hq {h} Hkv {hkv} D {d} f32, pool of {blocks} blocks in {} part(s):",
        cache.parts()
    );
    println!("  {:<34} {:>10} {:>10}", "", "gpu ms", "wall ms");
    println!(
        "  {:<34} {:>10} {:>10.2}",
        "one batched dispatch",
        fmt(batched.0),
        batched.1
    );
    println!(
        "  {:<34} {:>10} {:>10.2}",
        format!("{b} separate calls (sum)"),
        if sep_gpu.is_nan() {
            "-".into()
        } else {
            format!("{sep_gpu:.2}")
        },
        sep_wall
    );
    println!(
        "  separate / batched: {} gpu, {:.2}× wall",
        match batched.0 {
            Some(g) if !sep_gpu.is_nan() => format!("{:.2}×", sep_gpu / g),
            _ => "-".into(),
        },
        sep_wall / batched.1
    );
    let gbps = kv_bytes / (best * 1e-3) / 1e9;
    println!(
        "  {:.0} tokens/s; K/V read {:.1} MB per step = {gbps:.2} GB/s, {:.0}% of the host copy bandwidth {:.2} GB/s ({})",
        b as f64 / (best * 1e-3),
        kv_bytes / 1e6,
        100.0 * gbps / machine.copy_gbps,
        machine.copy_gbps,
        machine.cpu
    );
    Ok(())
}

fn varlen(
    gpu: &Gpu,
    lens: &[usize],
    h: usize,
    hkv: usize,
    d: usize,
    reps: usize,
    rng: &mut impl Rng,
) -> Result<()> {
    let b = lens.len();
    let total: usize = lens.iter().sum();
    let max = *lens.iter().max().unwrap_or(&1);
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l as u32);
    }
    let rand = |rng: &mut dyn rand::RngCore, n: usize| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    };
    // Causal top-left: each query sees its sequence's keys up to itself (the
    // same rule packed and padded: padded rows past a length are wasted).
    let masking = Masking {
        causal: true,
        alignment: wgpu_attention::Alignment::TopLeft,
        ..Default::default()
    };
    println!(
        "varlen prefill, Hq {h} Hkv {hkv} D {d} f32, causal, {reps} timed run(s) after a warm-up:"
    );
    println!(
        "  {:<34} {:>10} {:>10} {:>14}",
        "", "gpu ms", "wall ms", "buffer MB"
    );
    // Packed.
    let bytes_packed = (total * (2 * h + 2 * hkv) * d * 4 + total * h * 4) as f64;
    let packed = (|| -> wgpu_attention::Result<(Option<f64>, f64)> {
        let q = Tensor::from_slice(gpu, &rand(rng, total * h * d), &[total, h, d])?;
        let k = Tensor::from_slice(gpu, &rand(rng, total * hkv * d), &[total, hkv, d])?;
        let v = Tensor::from_slice(gpu, &rand(rng, total * hkv * d), &[total, hkv, d])?;
        let varlen = Varlen {
            cu_seqlens_q: U32s::Host(&cu),
            cu_seqlens_k: U32s::Host(&cu),
            max_seqlen_q: max,
            max_seqlen_k: max,
        };
        let opts = AttentionOptions {
            masking: masking.clone(),
            return_lse: true,
            path: AttentionPath::Fused,
            ..Default::default()
        };
        time(gpu, reps, |rec| {
            Ok(record_varlen_attention(rec, &q, &k, &v, &varlen, &opts)?.o)
        })
    })();
    let row = |name: &str, r: &wgpu_attention::Result<(Option<f64>, f64)>, mb: f64| match r {
        Ok((g, w)) => println!("  {name:<34} {:>10} {w:>10.1} {mb:>14.1}", fmt(*g)),
        Err(e) => println!("  {name:<34} {mb:>36.1}  not run: {e}"),
    };
    row("packed (varlen)", &packed, bytes_packed / 1e6);
    // Padded to the longest, key lengths masking the padding.
    let bytes_padded = (b * max * (2 * h + 2 * hkv) * d * 4 + b * h * max * 4) as f64;
    let padded = (|| -> wgpu_attention::Result<(Option<f64>, f64)> {
        let q = Tensor::from_slice(gpu, &rand(rng, b * h * max * d), &[b, h, max, d])?;
        let k = Tensor::from_slice(gpu, &rand(rng, b * hkv * max * d), &[b, hkv, max, d])?;
        let v = Tensor::from_slice(gpu, &rand(rng, b * hkv * max * d), &[b, hkv, max, d])?;
        let opts = AttentionOptions {
            masking: Masking {
                key_lengths: Some(lens.iter().map(|&l| l as u32).collect()),
                ..masking.clone()
            },
            return_lse: true,
            path: AttentionPath::Fused,
            ..Default::default()
        };
        time(gpu, reps, |rec| {
            Ok(record_attention(rec, &q, &k, &v, &opts)?.o)
        })
    })();
    row(&format!("padded to {max}"), &padded, bytes_padded / 1e6);
    if let (Ok(p), Ok(q)) = (&packed, &padded) {
        println!(
            "  padded / packed: {} gpu, {:.2}× wall, {:.2}× the bytes",
            match (q.0, p.0) {
                (Some(a), Some(b)) => format!("{:.2}×", a / b),
                _ => "-".into(),
            },
            q.1 / p.1,
            bytes_padded / bytes_packed
        );
    }
    Ok(())
}

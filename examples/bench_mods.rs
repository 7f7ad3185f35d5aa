//! Programmable attention against the built-in options, on the default adapter
//! (issue: "document masking with block skipping ≥ 3× faster than a dense bool
//! mask; a mod reproducing ALiBi or softcap ≤ 10% over the built-in").
//!
//! ```text
//! cargo run --release --example bench_mods                # B1 H2 N4096 D64, 8 documents
//! cargo run --release --example bench_mods -- 2048 4 8    # N H documents
//! ```
//! Fused path, f32. Variants run round-robin (machine noise hits all alike), 5
//! timed rounds after a warm-up that also builds the block mask (its one-off
//! cost is printed separately); GPU timestamps where the adapter has them, wall
//! clock otherwise; the median is reported, with the ratio to the row it is
//! compared with.

use std::time::Instant;

use wgpu_attention::mods::{MaskMod, ModData, Mods, ScoreMod};
use wgpu_attention::{
    alibi_slopes, record_attention, AttentionOptions, AttentionPath, Gpu, HostMask, Layout,
    MaskTensor, Tensor,
};

fn time_once(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> wgpu_attention::Result<f64> {
    if let Ok(mut rec) = gpu.timed_recorder() {
        record_attention(&mut rec, q, k, v, opts)?;
        return pollster::block_on(rec.submit_timed());
    }
    let start = Instant::now();
    let mut rec = gpu.recorder();
    let out = record_attention(&mut rec, q, k, v, opts)?;
    rec.submit()?;
    out.o.to_vec_blocking()?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| "arguments: N [H DOCS] as integers")?;
    let n = args.first().copied().unwrap_or(4096);
    let h = args.get(1).copied().unwrap_or(2);
    let docs = args.get(2).copied().unwrap_or(8).max(1);
    let d = 64;
    let gpu = Gpu::new_blocking(&Default::default())?;
    println!("adapter: {}", gpu.describe());
    println!(
        "B1 H{h} N{n} D{d} f32, fused path, {docs} documents of {} positions, causal within each",
        n.div_ceil(docs)
    );
    let x = |seed: usize| -> Vec<f32> {
        (0..h * n * d)
            .map(|i| (((i * 7 + seed * 13) % 29) as f32 - 14.0) / 29.0)
            .collect()
    };
    let shape = [1, h, n, d];
    let q = Tensor::from_bhnd(&gpu, &x(1), shape, Layout::Bhnd)?;
    let k = Tensor::from_bhnd(&gpu, &x(2), shape, Layout::Bhnd)?;
    let v = Tensor::from_bhnd(&gpu, &x(3), shape, Layout::Bhnd)?;
    let len = n.div_ceil(docs);
    let doc: Vec<u32> = (0..n).map(|i| (i / len) as u32).collect();
    let dense = HostMask::bool(
        (0..n * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                j <= i && doc[i] == doc[j]
            })
            .collect(),
        [1, 1, n, n],
    )?;
    let dense = MaskTensor::upload(&gpu, &dense)?;
    let d2 = doc.clone();
    let doc_mods = |blocks: bool| {
        let d2 = d2.clone();
        Mods::builder()
            .mask_mod(MaskMod::new(
                "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    return kv <= q && doc(q) == doc(kv);\n}",
                move |i| i.kv <= i.q && d2[i.q] == d2[i.kv],
            ))
            .buffer("doc", ModData::U32(doc.clone()))
            .block_mask(blocks)
            .build()
    };
    let with_blocks = doc_mods(true)?;
    let no_blocks = doc_mods(false)?;
    let slopes = alibi_slopes(h);
    let alibi_mod = Mods::builder()
        .score_mod(ScoreMod::new(
            "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {\n    return score - alibi_m(h) * abs(f32(i32(q) - i32(kv)));\n}",
            |_, _| unreachable!("not checked here"),
        ))
        .buffer("alibi_m", ModData::F32(slopes.clone()))
        .build()?;
    let softcap_mod = Mods::builder()
        .score_mod(ScoreMod::new(
            "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {\n    return 20.0 * tanh(score / 20.0);\n}",
            |_, _| unreachable!("not checked here"),
        ))
        .build()?;
    let fused = AttentionOptions {
        path: AttentionPath::Fused,
        ..Default::default()
    };
    // (name, options, index of the row it is compared with)
    let rows: Vec<(&str, AttentionOptions, Option<usize>)> = vec![
        (
            "document: dense bool mask",
            AttentionOptions {
                mask: Some(&dense),
                ..fused.clone()
            },
            None,
        ),
        (
            "document: mask_mod, block mask",
            AttentionOptions {
                mods: Some(&with_blocks),
                ..fused.clone()
            },
            Some(0),
        ),
        (
            "document: mask_mod, no block mask",
            AttentionOptions {
                mods: Some(&no_blocks),
                ..fused.clone()
            },
            Some(0),
        ),
        (
            "alibi: built-in",
            AttentionOptions {
                alibi: Some(&slopes),
                ..fused.clone()
            },
            None,
        ),
        (
            "alibi: score_mod",
            AttentionOptions {
                mods: Some(&alibi_mod),
                ..fused.clone()
            },
            Some(3),
        ),
        (
            "softcap: built-in",
            AttentionOptions {
                softcap: Some(20.0),
                ..fused.clone()
            },
            None,
        ),
        (
            "softcap: score_mod",
            AttentionOptions {
                mods: Some(&softcap_mod),
                ..fused.clone()
            },
            Some(5),
        ),
    ];
    let cold = Instant::now();
    with_blocks.block_mask_blocking(&gpu, [1, h, n, n])?;
    println!(
        "block mask of [1, {h}, {n}, {n}] built and read back: {:.0} ms (once per problem size, cached)",
        cold.elapsed().as_secs_f64() * 1e3
    );
    for (name, o, _) in &rows {
        let cold = Instant::now();
        time_once(&gpu, &q, &k, &v, o)?;
        println!(
            "{name:<36} first run incl. compile {:.0} ms",
            cold.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut times = vec![Vec::new(); rows.len()];
    for _ in 0..5 {
        for (i, (_, o, _)) in rows.iter().enumerate() {
            times[i].push(time_once(&gpu, &q, &k, &v, o)?);
        }
    }
    let med: Vec<f64> = times.into_iter().map(median).collect();
    println!("{:<36} {:>10}  vs", "variant", "median ms");
    for (i, (name, _, base)) in rows.iter().enumerate() {
        let vs = base
            .map(|b| format!("{:.2}× the time of `{}`", med[i] / med[b], rows[b].0))
            .unwrap_or_default();
        println!("{name:<36} {:>10.1}  {vs}", med[i]);
    }
    Ok(())
}

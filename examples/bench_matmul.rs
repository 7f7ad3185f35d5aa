//! GEMM throughput of the `matmul` kernel in every variant, on the default adapter.
//!
//! ```text
//! cargo run --release --example bench_matmul            # 1024³
//! cargo run --release --example bench_matmul -- 512 2048 768
//! ```
//! Variants run round-robin (so machine noise hits all alike), 10 timed rounds
//! after a warm-up; GPU timestamps where the adapter has them, wall clock
//! otherwise. GFLOP/s = 2·M·N·K / median time. `BENCH_ONLY=8x4` keeps only the
//! variants whose name contains it.

use std::time::Instant;

use wgpu_attention::kernels::matmul::record_matmul;
use wgpu_attention::{Gpu, Tensor, Tuning};

fn time_once(gpu: &Gpu, t: Tuning, a: &Tensor, b: &Tensor) -> wgpu_attention::Result<f64> {
    if let Ok(rec) = gpu.timed_recorder() {
        let mut rec = rec.with_tuning(t);
        record_matmul(&mut rec, a, b, None)?;
        return pollster::block_on(rec.submit_timed());
    }
    let start = Instant::now();
    let mut rec = gpu.recorder().with_tuning(t);
    let c = record_matmul(&mut rec, a, b, None)?;
    rec.submit()?;
    c.view(&[1], &[1], 0)?.to_vec_blocking()?; // waits for the work
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(|_| "arguments: M [N K] as integers")?;
    let m = args.first().copied().unwrap_or(1024);
    let (n, k) = (
        args.get(1).copied().unwrap_or(m),
        args.get(2).copied().unwrap_or(m),
    );
    let gpu = Gpu::new_blocking(&Default::default())?;
    println!("adapter: {}", gpu.describe());
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 13.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 11.0)
        .collect();
    let (at, bt) = (
        Tensor::from_slice(&gpu, &a, &[m, k])?,
        Tensor::from_slice(&gpu, &b, &[k, n])?,
    );
    let base = gpu.tuning();
    let variants: Vec<(String, Tuning)> = [8, 16, 32]
        .into_iter()
        .map(|r| {
            (
                format!("unstaged {r}x{}", 32 / r),
                base.with_staged(false)
                    .with_cpu_rows(r)
                    .expect("8, 16 and 32 are valid"),
            )
        })
        .chain([("staged 4x4".to_string(), base.with_staged(true))])
        .filter(|(name, _)| std::env::var("BENCH_ONLY").map_or(true, |only| name.contains(&only)))
        .collect();
    for (name, t) in &variants {
        let cold = Instant::now();
        time_once(&gpu, *t, &at, &bt)?;
        println!(
            "{name:<14} first run incl. compile {:.0} ms",
            cold.elapsed().as_secs_f64() * 1e3
        );
    }
    let mut times = vec![Vec::new(); variants.len()];
    for _ in 0..10 {
        for (i, (_, t)) in variants.iter().enumerate() {
            times[i].push(time_once(&gpu, *t, &at, &bt)?);
        }
    }
    let flop = 2.0 * (m * n * k) as f64;
    for ((name, _), ts) in variants.iter().zip(&mut times) {
        ts.sort_by(f64::total_cmp);
        let med = (ts[4] + ts[5]) / 2.0;
        println!("matmul {m}x{n}x{k} {name:<14} median {med:8.2} ms {:7.2} GFLOP/s   min {:8.2} ms {:7.2} GFLOP/s", flop / med / 1e6, ts[0], flop / ts[0] / 1e6);
    }
    Ok(())
}

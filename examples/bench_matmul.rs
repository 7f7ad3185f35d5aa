//! GEMM throughput of the `matmul` kernel, both variants, on the default adapter.
//!
//! ```text
//! cargo run --release --example bench_matmul            # 1024³
//! cargo run --release --example bench_matmul -- 512 2048 768
//! ```
//! Prints median GPU time of 10 runs after a warm-up (timestamp queries; wall clock
//! where the adapter has none) and GFLOP/s = 2·M·N·K / time.

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
    let base = Tuning::for_adapter(gpu.info());
    let mut results = Vec::new();
    for staged in [false, true] {
        let t = Tuning { staged, ..base };
        let cold = Instant::now();
        time_once(&gpu, t, &at, &bt)?;
        let first_ms = cold.elapsed().as_secs_f64() * 1e3;
        let mut times: Vec<f64> = (0..10)
            .map(|_| time_once(&gpu, t, &at, &bt))
            .collect::<Result<_, _>>()?;
        times.sort_by(f64::total_cmp);
        let ms = (times[4] + times[5]) / 2.0;
        let gflops = 2.0 * (m * n * k) as f64 / ms / 1e6;
        println!("matmul {m}x{n}x{k} staged={staged:<5} median {ms:8.2} ms  {gflops:7.2} GFLOP/s  (first run incl. compile {first_ms:.0} ms)");
        results.push(gflops);
    }
    println!(
        "unstaged/staged throughput ratio: {:.2}",
        results[0] / results[1]
    );
    Ok(())
}

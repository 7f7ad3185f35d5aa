//! Attention benchmark over paths and shapes on the default adapter.
//!
//! ```text
//! cargo run --release --example bench_attention -- --path fused,unfused --b 1 --h 8 --n 1024 --d 64
//! cargo run --release --example bench_attention -- --path decode,fused --nq 1 --nk 1800,32768 --d 64 --json
//! ```
//! Per configuration: median of `--reps` (≥ 10) runs after a warm-up, timed with GPU
//! timestamps where the adapter has them (wall clock otherwise); GFLOP/s by the
//! FlashAttention count 4·B·Hq·Nq·Nk·D (halved for causal with Nq = Nk); the bytes
//! of the buffers the path allocates. The project's GEMM (1024³) is measured in the
//! same run as the ceiling. A configuration a path cannot run (memory, driver
//! limits) is reported with its error instead of a time.

use std::time::Instant;

use clap::Parser;
use wgpu_attention::kernels::matmul::record_matmul;
use wgpu_attention::{
    record_attention, AttentionOptions, AttentionPath, Gpu, Layout, Masking, Tensor,
};

#[derive(Parser)]
struct Args {
    /// Paths: fused, unfused, decode (comma-separated).
    #[arg(long, default_value = "fused,unfused", value_delimiter = ',')]
    path: Vec<String>,
    #[arg(long, default_value = "1", value_delimiter = ',')]
    b: Vec<usize>,
    /// Query heads.
    #[arg(long, default_value = "8", value_delimiter = ',')]
    h: Vec<usize>,
    /// Key/value heads (default: as many as query heads).
    #[arg(long, value_delimiter = ',')]
    hkv: Vec<usize>,
    /// Query length (default: --n).
    #[arg(long, value_delimiter = ',')]
    nq: Vec<usize>,
    /// Key length (default: --n).
    #[arg(long, value_delimiter = ',')]
    nk: Vec<usize>,
    /// Sequence length for both when --nq/--nk are not given.
    #[arg(long, default_value = "1024", value_delimiter = ',')]
    n: Vec<usize>,
    #[arg(long, default_value = "64", value_delimiter = ',')]
    d: Vec<usize>,
    /// Also run causal (bottom-right) for each configuration.
    #[arg(long)]
    causal: bool,
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Print a JSON array of records instead of the table.
    #[arg(long)]
    json: bool,
}

fn time_path(
    gpu: &Gpu,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    reps: usize,
) -> wgpu_attention::Result<Vec<f64>> {
    let once = || -> wgpu_attention::Result<f64> {
        if let Ok(mut rec) = gpu.timed_recorder() {
            record_attention(&mut rec, q, k, v, opts)?;
            return pollster::block_on(rec.submit_timed());
        }
        let t = Instant::now();
        let mut rec = gpu.recorder();
        let out = record_attention(&mut rec, q, k, v, opts)?;
        rec.submit()?;
        out.o.view(&[1], &[1], 0)?.to_vec_blocking()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let cold = Instant::now();
    once()?; // warm-up (pipeline compile)
    let first_ms = cold.elapsed().as_secs_f64() * 1e3;
    let mut t: Vec<f64> = (0..reps).map(|_| once()).collect::<Result<_, _>>()?;
    t.sort_by(f64::total_cmp);
    t.push(first_ms); // last: the first run, compile included
    Ok(t)
}

fn gemm_gflops(gpu: &Gpu) -> wgpu_attention::Result<f64> {
    let n = 1024;
    let a = Tensor::from_slice(gpu, &vec![0.5; n * n], &[n, n])?;
    let mut times = Vec::new();
    for _ in 0..6 {
        let Ok(mut rec) = gpu.timed_recorder() else {
            return Ok(f64::NAN);
        };
        record_matmul(&mut rec, &a, &a, None)?;
        times.push(pollster::block_on(rec.submit_timed())?);
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (n * n * n) as f64 / times[3] / 1e6)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let gpu = Gpu::new_blocking(&Default::default())?;
    let adapter = gpu.describe();
    let gemm = gemm_gflops(&gpu)?;
    if !args.json {
        println!("adapter: {adapter}\nGEMM 1024³ (ceiling): {gemm:.2} GFLOP/s");
        println!(
            "{:<8} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6} {:>10} {:>9} {:>9} {:>12}",
            "path",
            "B",
            "Hq",
            "Hkv",
            "Nq",
            "Nk",
            "D",
            "causal",
            "median ms",
            "GFLOP/s",
            "of GEMM",
            "buffers MiB"
        );
    }
    let (nqs, nks) = (
        if args.nq.is_empty() {
            &args.n
        } else {
            &args.nq
        },
        if args.nk.is_empty() {
            &args.n
        } else {
            &args.nk
        },
    );
    let mut records = Vec::new();
    for &b in &args.b {
        for &h in &args.h {
            for &hkv in if args.hkv.is_empty() {
                std::slice::from_ref(&h)
            } else {
                &args.hkv[..]
            } {
                for (&nq, &nk) in nqs.iter().flat_map(|a| nks.iter().map(move |c| (a, c))) {
                    for &d in &args.d {
                        let q = Tensor::from_bhnd(
                            &gpu,
                            &vec![0.1; b * h * nq * d],
                            [b, h, nq, d],
                            Layout::Bhnd,
                        )?;
                        let kv: Vec<f32> = (0..b * hkv * nk * d)
                            .map(|i| ((i % 17) as f32 - 8.0) / 17.0)
                            .collect();
                        let k = Tensor::from_bhnd(&gpu, &kv, [b, hkv, nk, d], Layout::Bhnd)?;
                        let v = Tensor::from_bhnd(&gpu, &kv, [b, hkv, nk, d], Layout::Bhnd)?;
                        for causal in if args.causal {
                            vec![false, true]
                        } else {
                            vec![false]
                        } {
                            for name in &args.path {
                                let path = match name.as_str() {
                                    "fused" => AttentionPath::Fused,
                                    "unfused" => AttentionPath::Unfused,
                                    "decode" => AttentionPath::Decode,
                                    other => {
                                        return Err(format!(
                                            "--path: unknown {other:?}; use fused, unfused, decode"
                                        )
                                        .into())
                                    }
                                };
                                let opts = AttentionOptions {
                                    path,
                                    masking: Masking {
                                        causal,
                                        ..Default::default()
                                    },
                                    ..Default::default()
                                };
                                let flops = 4.0
                                    * (b * h * nq * nk * d) as f64
                                    * if causal && nq == nk { 0.5 } else { 1.0 };
                                let f32b = 4.0 / 1048576.0;
                                let buffers = match path {
                                    AttentionPath::Unfused => {
                                        2.0 * (b * h * nq * nk) as f64 + (b * h * nq * d) as f64
                                    }
                                    _ => {
                                        (b * h * nq * d) as f64
                                            * if path == AttentionPath::Decode {
                                                1.0 + nk.div_ceil(512) as f64
                                            } else {
                                                1.0
                                            }
                                    }
                                } * f32b;
                                let result = time_path(&gpu, &q, &k, &v, &opts, args.reps.max(10));
                                let (median, gflops, error) = match &result {
                                    Ok(t) => {
                                        let m = t[(t.len() - 1) / 2];
                                        (Some(m), Some(flops / m / 1e6), None)
                                    }
                                    Err(e) => (None, None, Some(e.to_string())),
                                };
                                if args.json {
                                    records.push(serde_json::json!({
                                        "path": name, "b": b, "hq": h, "hkv": hkv, "nq": nq, "nk": nk, "d": d, "causal": causal,
                                        "dtype": "f32", "median_ms": median, "gflops": gflops, "gemm_gflops": gemm,
                                        "buffer_bytes": (buffers / f32b * 4.0) as u64, "adapter": adapter, "error": error,
                                        "first_run_ms": result.as_ref().ok().and_then(|t| t.last().copied()),
                                    }));
                                } else {
                                    match (median, gflops) {
                                        (Some(m), Some(g)) => println!(
                                            "{name:<8} {b:>2} {h:>3} {hkv:>3} {nq:>6} {nk:>6} {d:>4} {causal:>6} {m:>10.2} {g:>9.2} {:>8.0}% {buffers:>12.1} {:>10.0}",
                                            100.0 * g / gemm,
                                            result.as_ref().ok().and_then(|t| t.last().copied()).unwrap_or(0.0)
                                        ),
                                        _ => println!("{name:<8} {b:>2} {h:>3} {hkv:>3} {nq:>6} {nk:>6} {d:>4} {causal:>6}  — {}", error.unwrap_or_default()),
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    Ok(())
}

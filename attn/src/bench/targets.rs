//! `attn bench --targets`: the machine's ceilings measured in the same run, and
//! each record against them.
//!
//! - **SIMD peak** of a CPU adapter (lavapipe/llvmpipe): cores × 2 FMA units ×
//!   lanes × 2 FLOP × clock, the lanes from the vector width in the adapter's
//!   name (`256 bits` = 8 f32 lanes, `LP_NATIVE_VECTOR_WIDTH=512` = 16), the
//!   clock from `/proc/cpuinfo` (the highest `cpu MHz`), the cores from
//!   `available_parallelism`. It assumes two FMA pipes per core at that width;
//!   where the CPU lacks the instructions of the width (512 bits without
//!   AVX-512) it is the figure the vector width asks for, not what the CPU can
//!   reach, and the report says so.
//! - **Copy bandwidth**: a 256 MiB `memcpy` on the host, median of 5 (a CPU
//!   adapter's buffers are host memory, so this bounds how fast a kernel can
//!   stream K and V).
//!
//! Fused records are reported against the SIMD peak, decode records by the K/V
//! bytes they read per second against the copy bandwidth, and decode against
//! fused at the same shape.

use std::time::Instant;

use serde::Serialize;

use super::report::{counterpart, Record};
use super::BenchPath;

/// The ceilings of the machine the adapter runs on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// Host `memcpy` of 256 MiB: bytes copied per second, GB/s.
    pub copy_gbps: f64,
    /// Vector width of a CPU adapter (from its name).
    pub vector_bits: Option<u32>,
    pub cores: usize,
    pub mhz: Option<f64>,
    /// Whether the CPU has AVX-512 (`avx512f`): 512-bit vectors are native.
    pub avx512: bool,
    /// `cores · 2 · (bits / 32) · 2 · MHz / 1000` GFLOP/s for a CPU adapter.
    pub simd_peak_gflops: Option<f64>,
}

/// Measures the host copy bandwidth and reads the CPU's figures; the SIMD peak
/// only for an adapter whose name gives its vector width (a CPU driver).
pub fn machine(adapter_name: &str) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
        .map_or_else(|| "unknown CPU".to_string(), |s| s.trim().to_string());
    let mhz = cpuinfo
        .lines()
        .filter_map(|l| {
            l.strip_prefix("cpu MHz")?
                .split(':')
                .nth(1)?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .reduce(f64::max);
    let avx512 = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "avx512f"));
    let vector_bits = vector_bits(adapter_name);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let simd_peak_gflops = vector_bits
        .zip(mhz)
        .map(|(bits, mhz)| cores as f64 * 2.0 * f64::from(bits / 32) * 2.0 * mhz / 1000.0);
    Machine {
        cpu,
        copy_gbps: copy_gbps(),
        vector_bits,
        cores,
        mhz,
        avx512,
        simd_peak_gflops,
    }
}

/// `256` from `llvmpipe (LLVM 15.0.6, 256 bits)`.
fn vector_bits(name: &str) -> Option<u32> {
    let i = name.find(" bits")?;
    name[..i].rsplit([' ', ',', '(']).next()?.parse().ok()
}

/// Median of 5 copies of 256 MiB (after one that faults the pages in).
fn copy_gbps() -> f64 {
    const BYTES: usize = 256 << 20;
    let src = vec![1u8; BYTES];
    let mut dst = vec![0u8; BYTES];
    dst.copy_from_slice(&src);
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    BYTES as f64 / t[2] / 1e9
}

/// K and V read once: `2·B·Hkv·Nk·D` elements of the record's dtype.
pub fn kv_bytes(r: &Record) -> f64 {
    (2 * r.b * r.hkv * r.nk * r.d * r.dtype.size()) as f64
}

/// Fills the records' fields that compare them with `m`.
pub fn annotate(records: &mut [Record], m: &Machine) {
    for r in records.iter_mut() {
        r.kv_gbps = r.median_ms.map(|ms| kv_bytes(r) / ms / 1e6);
        r.of_simd_peak = r.gflops.zip(m.simd_peak_gflops).map(|(g, p)| g / p);
        r.of_copy_bandwidth = r.kv_gbps.map(|g| g / m.copy_gbps);
    }
}

/// The machine's ceilings, then each record against them.
pub fn print(records: &[Record], m: &Machine) {
    println!("\ntargets ({}, {} cores):", m.cpu, m.cores);
    println!(
        "  host copy bandwidth      {:.1} GB/s (256 MiB memcpy, median of 5)",
        m.copy_gbps
    );
    match (m.simd_peak_gflops, m.vector_bits, m.mhz) {
        (Some(p), Some(bits), Some(mhz)) => println!(
            "  SIMD peak                {p:.0} GFLOP/s = {} cores × 2 FMA × {} lanes × 2 × {mhz:.0} MHz{}",
            m.cores,
            bits / 32,
            if bits > 256 && !m.avx512 {
                " (this CPU has no AVX-512: the 512-bit figure is what the width asks for, not what it can reach)"
            } else {
                ""
            }
        ),
        (_, None, _) => println!("  SIMD peak                — (not a CPU adapter: no vector width in its name)"),
        _ => println!("  SIMD peak                — (no clock: /proc/cpuinfo has no `cpu MHz`, e.g. unmounted in a chroot)"),
    }
    for r in records.iter().filter(|r| r.median_ms.is_some()) {
        let what = match r.path {
            BenchPath::Fused | BenchPath::Unfused | BenchPath::Coop | BenchPath::CoopFull => {
                r.of_simd_peak.map_or_else(
                    || format!("{:.1} GFLOP/s", r.gflops.unwrap_or(f64::NAN)),
                    |p| {
                        format!(
                            "{:.1} GFLOP/s = {:.0}% of the SIMD peak",
                            r.gflops.unwrap_or(f64::NAN),
                            100.0 * p
                        )
                    },
                )
            }
            // Run by the serving bench, never a record here.
            BenchPath::Paged | BenchPath::Varlen => continue,
            BenchPath::Decode => {
                let fused = counterpart(records, r, BenchPath::Fused);
                format!(
                    "K/V read at {:.1} GB/s = {:.0}% of the copy bandwidth{}",
                    r.kv_gbps.unwrap_or(f64::NAN),
                    100.0 * r.of_copy_bandwidth.unwrap_or(f64::NAN),
                    fused
                        .and_then(|f| f.median_ms)
                        .map_or(String::new(), |f| format!(
                            "; fused/decode time {:.2}×",
                            f / r.median_ms.unwrap_or(f64::NAN)
                        ))
                )
            }
        };
        println!(
            "  {:<8} {:<24} {:<8} {what}",
            super::report::row_label(r),
            r.label(),
            r.options.name()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_width_from_the_adapter_name() {
        assert_eq!(vector_bits("llvmpipe (LLVM 15.0.6, 256 bits)"), Some(256));
        assert_eq!(vector_bits("llvmpipe (LLVM 19.1.7, 512 bits)"), Some(512));
        assert_eq!(vector_bits("NVIDIA H200"), None);
    }
}

//! What `attn bench` reports: one [`Record`] per (configuration, path,
//! option), printed as a table row as it is measured, then the fused/GEMM and
//! fused/unfused ratios and each option's overhead over plain, or all the
//! records as JSON.

use anyhow::Result;
use serde::Serialize;
use wgpu_attention::gpu::Coop;
use wgpu_attention::DType;

use super::configs::Config;
use super::measure::Measurement;
use super::{BenchPath, ScoreOption};

/// What every record of one `attn bench` run shares.
pub struct Run {
    /// [`wgpu_attention::Gpu::describe`].
    pub adapter: String,
    /// `gpu-timestamps` or `wall-clock`.
    pub timing: &'static str,
    /// Timed runs per configuration.
    pub reps: usize,
    /// Whether f16 tensors are WGSL f16 on this device (else packed).
    pub native_f16: bool,
    /// Size of the square GEMM and its GFLOP/s (the ceiling).
    pub gemm_n: usize,
    pub gemm_gflops: f64,
}

/// One (path, configuration) measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub path: BenchPath,
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub causal: bool,
    /// The score option (`plain`, `bias`, `softcap`, `scale`, `alibi`).
    pub options: ScoreOption,
    /// Q, K, V and O (`f32`, `f16`, `bf16`).
    pub dtype: DType,
    /// How the kernels hold that dtype: `f32`, `f16` (native WGSL f16),
    /// `packed-f16` or `packed-bf16` (two per u32).
    pub storage: &'static str,
    /// K and V positions (tokens) a KV cache of this B, Hkv, D and dtype holds
    /// per MiB: `2^20 / (2·B·Hkv·D·dtype size)`.
    pub kv_tokens_per_mib: f64,
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub gflops: Option<f64>,
    /// GEMM GFLOP/s on the same adapter (the ceiling).
    pub gemm_gflops: f64,
    /// `gflops / gemm_gflops`.
    pub of_gemm: Option<f64>,
    /// On fused records: unfused median / fused median for the same configuration.
    pub fused_over_unfused: Option<f64>,
    pub peak_buffer_bytes: u64,
    /// The warm-up run: pipeline compile, and with `--tuning autotune` the
    /// tuning of the class when the cache does not have it.
    pub first_run_ms: Option<f64>,
    /// `--targets`: K and V bytes (read once) per second, GB/s.
    pub kv_gbps: Option<f64>,
    /// `--targets`: `gflops` over the CPU adapter's SIMD peak.
    pub of_simd_peak: Option<f64>,
    /// `--targets`: `kv_gbps` over the host copy bandwidth.
    pub of_copy_bandwidth: Option<f64>,
    /// The kernels that ran (`Attention::kernels`).
    pub kernels: Option<String>,
    /// The cooperative-matrix choice the row ran under (`on` for path `coop`,
    /// `full` for `coop-full`; `--coop`, else the device's: `auto` unless
    /// WGPU_ATTENTION_COOP says).
    pub coop: Coop,
    /// `--targets`: the machine's ceilings this record is compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<super::targets::Machine>,
    pub reps: usize,
    /// `gpu-timestamps` or `wall-clock`.
    pub timing: &'static str,
    pub adapter: String,
    pub error: Option<String>,
}

impl Record {
    /// The record of `path` with option `extra` on `c` (causal or not), from
    /// what it measured (`fused_over_unfused` is filled in later, by
    /// [`set_fused_over_unfused`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: BenchPath,
        c: Config,
        dtype: DType,
        causal: bool,
        extra: ScoreOption,
        m: Measurement,
        run: &Run,
        coop: Coop,
    ) -> Record {
        let gflops = m.median_ms.map(|ms| c.flops(causal) / ms / 1e6);
        Record {
            path,
            b: c.b,
            hq: c.h,
            hkv: c.hkv,
            nq: c.nq,
            nk: c.nk,
            d: c.d,
            causal,
            options: extra,
            dtype,
            storage: storage(dtype, run.native_f16),
            kv_tokens_per_mib: tokens_per_mib(c, dtype),
            median_ms: m.median_ms,
            min_ms: m.min_ms,
            gflops,
            gemm_gflops: run.gemm_gflops,
            of_gemm: gflops.map(|g| g / run.gemm_gflops),
            fused_over_unfused: None,
            peak_buffer_bytes: m.peak_buffer_bytes,
            first_run_ms: m.first_run_ms,
            kv_gbps: None,
            of_simd_peak: None,
            of_copy_bandwidth: None,
            kernels: m.kernels,
            coop,
            machine: None,
            reps: run.reps,
            timing: run.timing,
            adapter: run.adapter.clone(),
            error: m.error,
        }
    }

    /// The shape and causal setting (what records of different paths and
    /// options are matched by).
    pub fn config(&self) -> (Config, bool) {
        (
            Config {
                b: self.b,
                h: self.hq,
                hkv: self.hkv,
                nq: self.nq,
                nk: self.nk,
                d: self.d,
            },
            self.causal,
        )
    }

    /// The shape, causal setting and dtype: what records of different paths
    /// and options are matched by.
    pub fn key(&self) -> (Config, bool, DType) {
        let (c, causal) = self.config();
        (c, causal, self.dtype)
    }

    /// `B1 H8/2 N1024 D64 c` and the dtype unless f32 (`… D64 f16`).
    pub fn label(&self) -> String {
        match self.dtype {
            DType::F32 => self.shape_label(),
            d => format!("{} {d}", self.shape_label()),
        }
    }

    /// `B1 H8/2 N1024 D64 c`.
    pub fn shape_label(&self) -> String {
        let n = if self.nq == self.nk {
            format!("N{}", self.nq)
        } else {
            format!("{}x{}", self.nq, self.nk)
        };
        let h = if self.hkv == self.hq {
            format!("H{}", self.hq)
        } else {
            format!("H{}/{}", self.hq, self.hkv)
        };
        format!(
            "B{} {h} {n} D{}{}",
            self.b,
            self.d,
            if self.causal { " c" } else { "" }
        )
    }
}

/// How kernels hold `dtype` on a device with (`native_f16`) or without SHADER_F16.
pub fn storage(dtype: DType, native_f16: bool) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 if native_f16 => "f16",
        DType::F16 => "packed-f16",
        DType::BF16 => "packed-bf16",
    }
}

/// KV-cache positions per MiB for `c`'s B, Hkv, D in `dtype`
/// (`KvCache::bytes_per_position` = `2·B·Hkv·D·size`).
pub fn tokens_per_mib(c: Config, dtype: DType) -> f64 {
    1048576.0 / (2 * c.b * c.hkv * c.d * dtype.size()) as f64
}

/// The KV cache's tokens per MiB for each (B, Hkv, D) of `configs` and each of `dtypes`.
pub fn print_kv_capacity(configs: &[Config], dtypes: &[DType]) {
    let mut seen = Vec::new();
    println!("\nKV cache (K and V of every batch and head) per MiB:");
    for c in configs {
        if seen.contains(&(c.b, c.hkv, c.d)) {
            continue;
        }
        seen.push((c.b, c.hkv, c.d));
        let each: Vec<String> = dtypes
            .iter()
            .map(|&dt| {
                format!(
                    "{dt} {:.1} tokens/MiB ({} B/token)",
                    tokens_per_mib(*c, dt),
                    2 * c.b * c.hkv * c.d * dt.size()
                )
            })
            .collect();
        println!("  B{} Hkv{} D{}: {}", c.b, c.hkv, c.d, each.join(", "));
    }
}

/// `fused` or `fused+bias`: the table's path column and the chart's series.
pub fn path_label(path: BenchPath, extra: ScoreOption) -> String {
    if extra == ScoreOption::Plain {
        path.name().to_string()
    } else {
        format!("{}+{}", path.name(), extra.name())
    }
}

/// The adapter, the timing and the table's header.
pub fn print_header(run: &Run) {
    println!("adapter: {}", run.adapter);
    println!(
        "timing: {}, median of {} after a warm-up; GEMM {n}³ (ceiling): {gemm:.2} GFLOP/s",
        run.timing,
        run.reps,
        n = run.gemm_n,
        gemm = run.gemm_gflops
    );
    println!(
        "f16 storage: {}; bf16 always packed two per u32",
        if run.native_f16 {
            "native WGSL f16 (SHADER_F16)"
        } else {
            "packed two per u32 (no SHADER_F16, or --f16-storage packed)"
        }
    );
    println!(
        "{:<16} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6} {:>5} {:>10} {:>9} {:>8} {:>12} {:>10}",
        "path",
        "B",
        "Hq",
        "Hkv",
        "Nq",
        "Nk",
        "D",
        "causal",
        "dtype",
        "median ms",
        "GFLOP/s",
        "of GEMM",
        "peak MiB",
        "first ms"
    );
}

/// The table's path column: [`path_label`], marked `:coop` (`:coop-full`)
/// where `--coop on` (`full`) forced the cooperative-matrix kernel on another path.
pub fn row_label(r: &Record) -> String {
    let l = path_label(r.path, r.options);
    match (r.path, r.coop) {
        (BenchPath::Coop | BenchPath::CoopFull, _) => l,
        (_, Coop::On) => format!("{l}:coop"),
        (_, Coop::Full) => format!("{l}:coop-full"),
        _ => l,
    }
}

/// One table row: the time, or the error instead.
pub fn print_row(r: &Record) {
    let head = format!(
        "{:<16} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6} {:>5}",
        row_label(r),
        r.b,
        r.hq,
        r.hkv,
        r.nq,
        r.nk,
        r.d,
        r.causal,
        r.dtype.name()
    );
    match (r.median_ms, r.gflops) {
        (Some(m), Some(g)) => println!(
            "{head} {m:>10.2} {g:>9.2} {:>7.0}% {:>12.1} {:>10.0}",
            100.0 * r.of_gemm.unwrap_or(f64::NAN),
            r.peak_buffer_bytes as f64 / 1048576.0,
            r.first_run_ms.unwrap_or(f64::NAN)
        ),
        _ => println!("{head}  — {}", r.error.as_deref().unwrap_or("")),
    }
}

/// The record of `path` with `r`'s configuration and option, if measured.
pub fn counterpart<'a>(records: &'a [Record], r: &Record, path: BenchPath) -> Option<&'a Record> {
    records
        .iter()
        .find(|o| o.path == path && o.key() == r.key() && o.options == r.options)
}

/// Fills `fused_over_unfused` on every fused record with an unfused one of the
/// same configuration and option.
pub fn set_fused_over_unfused(records: &mut [Record]) {
    let speedups: Vec<(usize, f64)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path == BenchPath::Fused)
        .filter_map(|(i, f)| {
            let u = counterpart(records, f, BenchPath::Unfused)?;
            Some((i, u.median_ms? / f.median_ms?))
        })
        .collect();
    for (i, s) in speedups {
        records[i].fused_over_unfused = Some(s);
    }
}

/// After the table: fused/GEMM and fused/unfused per fused record, coop/GEMM
/// and the fused/coop time per coop record, then the overhead of each score
/// option over plain (same path and shape).
pub fn print_summary(records: &[Record]) {
    let fused: Vec<&Record> = records
        .iter()
        .filter(|r| r.path == BenchPath::Fused && r.median_ms.is_some())
        .collect();
    if !fused.is_empty() {
        println!("\nratios (fused):");
        for r in fused {
            println!(
                "  {:<24} {:<8} fused/GEMM {:>5.0}%   fused/unfused {}",
                r.label(),
                r.options.name(),
                100.0 * r.of_gemm.unwrap_or(f64::NAN),
                r.fused_over_unfused
                    .map_or("—".to_string(), |s| format!("{s:.2}× faster"))
            );
        }
    }
    let coop: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.path, BenchPath::Coop | BenchPath::CoopFull))
        .filter(|r| r.median_ms.is_some())
        .collect();
    if !coop.is_empty() {
        println!("\nratios (coop):");
        for r in coop {
            let fused = counterpart(records, r, BenchPath::Fused)
                .and_then(|f| Some((f.median_ms?, f.coop)))
                .map_or("—".to_string(), |(f, c)| {
                    let x = f / r.median_ms.unwrap_or(f64::NAN);
                    format!(
                        "{} (fused with coop {})",
                        if x >= 1.0 {
                            format!("{x:.2}× faster")
                        } else {
                            format!("{:.2}× slower", 1.0 / x)
                        },
                        crate::args::coop_name(c)
                    )
                });
            println!(
                "  {:<9} {:<24} {:<8} /GEMM {:>5.0}%   vs fused {fused}",
                r.path.name(),
                r.label(),
                r.options.name(),
                100.0 * r.of_gemm.unwrap_or(f64::NAN),
            );
        }
    }
    let extra: Vec<&Record> = records
        .iter()
        .filter(|r| r.options != ScoreOption::Plain && r.median_ms.is_some())
        .collect();
    if !extra.is_empty() {
        println!("\noverhead over plain (same path and shape):");
        for r in extra {
            let plain = records.iter().find(|p| {
                p.options == ScoreOption::Plain && p.path == r.path && p.key() == r.key()
            });
            match plain.and_then(|p| p.median_ms) {
                Some(pm) => println!(
                    "  {:<8} {:<24} {:<8} {:+6.1}%",
                    r.path.name(),
                    r.label(),
                    r.options.name(),
                    100.0 * (r.median_ms.unwrap_or(f64::NAN) / pm - 1.0)
                ),
                None => println!(
                    "  {:<8} {:<24} {:<8} (no plain run to compare; add plain to --options)",
                    r.path.name(),
                    r.label(),
                    r.options.name()
                ),
            }
        }
    }
}

/// The records as a pretty JSON array (`--json`).
pub fn print_json(records: &[Record]) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(records)?);
    Ok(())
}

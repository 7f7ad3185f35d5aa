//! `attn bench`: attention paths over shapes on one adapter, with the project's
//! GEMM measured in the same run as the ceiling.
//!
//! - [`configs`]: the flag lists expanded into shapes, checked before the device opens;
//! - [`measure`]: the inputs, the timing (GPU timestamps or wall clock), the GEMM
//!   ceiling, and the peak bytes from the library's plan;
//! - [`report`]: the records, the table, the ratios and the JSON;
//! - [`plot`]: the records as a chart (`--plot`);
//! - [`targets`]: the machine's SIMD peak and copy bandwidth, and each record
//!   against them (`--targets`).

mod configs;
mod measure;
mod plot;
mod report;
mod serving;
mod targets;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;
use wgpu_attention::gpu::Coop;
use wgpu_attention::{AttentionPath, DType, TuningMode};

use crate::args::{dtype_arg, DeviceArgs, TuningArgs};
use crate::io;
use report::{Record, Run};

/// A path to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchPath {
    Fused,
    Unfused,
    Decode,
    /// The fused path on the cooperative-matrix kernel (`Coop::On`: Q·Kᵀ on
    /// the matrices).
    Coop,
    /// The fused path with Q·Kᵀ and P·V on the matrices (`Coop::Full`).
    #[serde(rename = "coop-full")]
    CoopFull,
    /// A serving decode step over a paged KV cache of mixed lengths, batched
    /// and per sequence (`--seqs`, `--lens`, `--block-size`).
    Paged,
    /// Causal prefill of the mixed lengths, packed against padded.
    Varlen,
}

impl BenchPath {
    fn path(self) -> AttentionPath {
        match self {
            BenchPath::Fused | BenchPath::Coop | BenchPath::CoopFull => AttentionPath::Fused,
            BenchPath::Unfused => AttentionPath::Unfused,
            BenchPath::Decode | BenchPath::Paged | BenchPath::Varlen => AttentionPath::Decode,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchPath::Fused => "fused",
            BenchPath::Unfused => "unfused",
            BenchPath::Decode => "decode",
            BenchPath::Coop => "coop",
            BenchPath::CoopFull => "coop-full",
            BenchPath::Paged => "paged",
            BenchPath::Varlen => "varlen",
        }
    }

    /// The cooperative-matrix choice the path forces, if any.
    fn coop(self) -> Option<Coop> {
        match self {
            BenchPath::Coop => Some(Coop::On),
            BenchPath::CoopFull => Some(Coop::Full),
            _ => None,
        }
    }
}

/// A score option to time against the plain run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreOption {
    /// No extra option.
    Plain,
    /// An additive float mask `[1, 1, Nq, Nk]` (a bias on every score).
    Bias,
    /// Softcap 30 (`30·tanh(s/30)`).
    Softcap,
    /// A custom scale (0.1 instead of 1/sqrt(D)).
    Scale,
    /// ALiBi with the paper's slopes.
    Alibi,
}

impl ScoreOption {
    fn name(self) -> &'static str {
        match self {
            ScoreOption::Plain => "plain",
            ScoreOption::Bias => "bias",
            ScoreOption::Softcap => "softcap",
            ScoreOption::Scale => "scale",
            ScoreOption::Alibi => "alibi",
        }
    }
}

/// What `--plot` shows on the y axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Metric {
    Gflops,
    Ms,
}

#[derive(Args)]
#[command(after_help = "Examples:
  attn bench --path fused,unfused --b 1 --h 8 --n 1024 --d 64
  attn bench --path decode,fused --nq 1 --nk 1800,32768 --d 64 --json
  attn bench --path fused,unfused --n 256,512,1024 --plot bench.png
  attn bench --path fused --n 1024 --options plain,bias,softcap,scale
  attn bench --path fused,decode --nq 1 --nk 32768 --h 8 --d 128 --targets
  attn bench --path fused,decode --nq 1 --nk 8192 --dtype f32,f16,bf16 --targets
  attn bench --path fused --dtype f16 --f16-storage packed
  attn bench --path fused,coop,coop-full --n 4096 --d 128 --dtype f16 --coop off
  attn bench --path paged,varlen --seqs 32 --lens 100,8000 --h 8 --hkv 2 --d 128

Per configuration (every combination of the lists): median of --reps (at least
10) runs after one warm-up run (pipeline compile, and with --tuning autotune
(the default) the class's tuning when the cache lacks it: reported as first_run_ms),
timed with GPU timestamps where the adapter has them (wall clock including a
one-element readback otherwise). GFLOP/s counts 4·B·Hq·Nq·Nk·D (halved for causal
with Nq = Nk). peak_buffer_bytes is the library plan's (wgpu_attention::plan, Plan::peak_bytes):
Q, K, V, the mask of --options bias, O, and for unfused the scores and weights
(2·B·Hq·Nq·Nk f32, or of one chunk of heads when they exceed a storage binding),
for decode the partial outputs (splits·B·Hq·Nq·(D+1) f32, splits as the plan
chooses them on this device). The project's GEMM (--gemm-n cubed) is timed
the same way as the ceiling; the table ends with fused/GEMM and fused/unfused
ratios. A configuration a path cannot run (memory, driver limits) is reported
with its error instead of a time. Each --dtype runs every row with Q, K, V and O
in that dtype (the kernels compute in f32), the row naming it; --targets counts
the K/V bytes in the row's dtype, and the KV cache's tokens per MiB are printed
per dtype. --f16-storage packed runs f16 as two halves per u32 (as on an
adapter without SHADER_F16) for comparison with native f16.
--path coop runs the fused path on the cooperative-matrix kernel (Coop::On:
Q·Kᵀ on f16 matrices, f32 accumulation; f32 and bf16 Q/K rounded to f16 for
the product), coop-full with P·V on the matrices too (Coop::Full: the weights
rounded to f16), on the class's cached autotuned variants or the heuristic's;
an adapter without a usable f16×f16→f32 shape gets its rows with the error
instead of a time. --coop sets the choice of the other paths (with auto, an
f16 fused row may already run the coop kernel on a GPU: --coop off times the
scalar kernels); the table ends with fused/coop time ratios.")]
pub struct BenchArgs {
    /// Paths to time (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fused,unfused"
    )]
    pub path: Vec<BenchPath>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub b: Vec<usize>,
    /// Query heads.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub h: Vec<usize>,
    /// Key/value heads [default: as many as query heads].
    #[arg(long, value_delimiter = ',')]
    pub hkv: Vec<usize>,
    /// Query lengths [default: --n].
    #[arg(long, value_delimiter = ',')]
    pub nq: Vec<usize>,
    /// Key lengths [default: --n].
    #[arg(long, value_delimiter = ',')]
    pub nk: Vec<usize>,
    /// Sequence lengths, Nq = Nk = n, when --nq/--nk are not given (with one of them, the other takes these).
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub n: Vec<usize>,
    /// Head dims.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub d: Vec<usize>,
    /// Also run causal (bottom-right) for each configuration.
    #[arg(long)]
    pub causal: bool,
    /// Score options to time, each against `plain` (the table then gives the
    /// overhead of each over plain for the same path and shape).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "plain")]
    pub options: Vec<ScoreOption>,
    /// Dtypes of Q, K, V and O (comma-separated): every row runs in each.
    #[arg(
        long,
        value_name = "DTYPES",
        value_delimiter = ',',
        value_parser = dtype_arg,
        default_value = "f32"
    )]
    pub dtype: Vec<DType>,
    /// Timed runs per configuration (at least 10).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Keys per split of the decode path [default: the library's choice].
    #[arg(long, value_name = "N")]
    pub kv_split: Option<usize>,
    /// Size of the square GEMM measured as the ceiling.
    #[arg(long, default_value_t = 1024)]
    pub gemm_n: usize,
    /// Print a JSON array of records instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON array of records to this file (with the table printed).
    #[arg(long, value_name = "FILE")]
    pub json_file: Option<PathBuf>,
    /// Also draw the results as a PNG chart (one series per path, the GEMM ceiling dashed).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Y axis of --plot.
    #[arg(long, value_enum, default_value_t = Metric::Gflops)]
    pub plot_metric: Metric,
    /// Also measure the machine's ceilings (host copy bandwidth; the SIMD peak of
    /// a CPU adapter) and report each record against them: fused GFLOP/s as a
    /// share of the peak, decode's K/V bytes per second as a share of the copy
    /// bandwidth, and decode against fused at the same shape.
    #[arg(long)]
    pub targets: bool,
    /// Sequences of the serving batch (--path paged,varlen).
    #[arg(long, default_value_t = 32)]
    pub seqs: usize,
    /// Their lengths: uniform in MIN..=MAX.
    #[arg(long, value_name = "MIN,MAX", value_parser = parse_range, default_value = "100,8000")]
    pub lens: (usize, usize),
    /// Seed of the lengths and the data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Positions per block of the paged pool.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Query heads of the varlen prefill [default: --h] (K/V heads: at most --hkv).
    #[arg(long)]
    pub prefill_h: Option<usize>,
    /// Head dim of the varlen prefill [default: --d].
    #[arg(long)]
    pub prefill_d: Option<usize>,
    /// Timed runs of the varlen prefill (each side).
    #[arg(long, default_value_t = 1)]
    pub prefill_reps: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
}

fn parse_range(s: &str) -> std::result::Result<(usize, usize), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts[..] {
        [a, b] => match (a.parse::<usize>(), b.parse::<usize>()) {
            (Ok(a), Ok(b)) if 1 <= a && a <= b => Ok((a, b)),
            _ => Err(format!("expected MIN,MAX with 1 <= MIN <= MAX, got {s:?}")),
        },
        _ => Err(format!("expected MIN,MAX, got {s:?}")),
    }
}

pub fn main(a: BenchArgs) -> Result<()> {
    let serving: Vec<BenchPath> = a
        .path
        .iter()
        .copied()
        .filter(|p| matches!(p, BenchPath::Paged | BenchPath::Varlen))
        .collect();
    if !serving.is_empty() {
        if serving.len() != a.path.len() {
            return Err(crate::error::bad_input!(
                "--path paged,varlen run the serving batch and do not combine with the other paths in one run"
            ));
        }
        if a.seqs == 0 {
            return Err(crate::error::bad_input!("--seqs 0: expected at least 1"));
        }
        let gpu = a.device.open()?;
        println!("adapter: {}", gpu.describe());
        return serving::main(&a, &gpu, &serving);
    }
    if let Some(p) = &a.plot {
        io::check_output(p, "--plot")?;
    }
    if let Some(p) = &a.json_file {
        io::check_output(p, "--json-file")?;
    }
    // Every (b, h, hkv, nq, nk, d), checked before anything runs.
    let configs = configs::expand(&a)?;
    let reps = a.reps.max(10);
    let gpu = a.device.open()?;
    let timed = gpu.timed_recorder().is_ok();
    let gemm = measure::gemm_gflops(&gpu, timed, a.gemm_n)?;
    let run = Run {
        adapter: gpu.describe(),
        timing: if timed {
            "gpu-timestamps"
        } else {
            "wall-clock"
        },
        reps,
        gemm_n: a.gemm_n,
        gemm_gflops: gemm,
        native_f16: gpu.caps().native_f16(),
    };
    if !a.json {
        report::print_header(&run);
    }
    let with_bias = a.options.contains(&ScoreOption::Bias);
    let causals: &[bool] = if a.causal { &[false, true] } else { &[false] };
    let mut records: Vec<Record> = Vec::new();
    for &config in &configs {
        for &dtype in &a.dtype {
            let inputs = measure::Inputs::upload(&gpu, &config, with_bias, dtype)?;
            for &causal in causals {
                for (&path, &extra) in a
                    .path
                    .iter()
                    .flat_map(|p| a.options.iter().map(move |o| (p, o)))
                {
                    let mut opts =
                        inputs.options(path.path(), extra, causal, a.kv_split, a.tuning.mode());
                    let problem = inputs.problem(&opts);
                    opts.tuning = match path.coop() {
                        Some(c) => {
                            TuningMode::Fixed(a.tuning.base(&gpu, problem.as_ref()).with_coop(c))
                        }
                        None => a.tuning.mode_on(&gpu, problem.as_ref()),
                    };
                    let coop = match opts.tuning {
                        TuningMode::Fixed(t) => t.coop(),
                        _ => gpu.tuning().coop(),
                    };
                    let m = measure::measure(&gpu, timed, &inputs, &opts, reps);
                    let r = Record::new(path, config, dtype, causal, extra, m, &run, coop);
                    if !a.json {
                        report::print_row(&r);
                    }
                    records.push(r);
                }
            }
        }
    }
    report::set_fused_over_unfused(&mut records);
    let machine = a.targets.then(|| targets::machine(&gpu.info().name));
    if let Some(m) = &machine {
        targets::annotate(&mut records, m);
        for r in &mut records {
            r.machine = Some(m.clone());
        }
    }
    if !a.json {
        report::print_summary(&records);
        if let Some(m) = &machine {
            targets::print(&records, m);
        }
        report::print_kv_capacity(&configs, &a.dtype);
    } else {
        report::print_json(&records)?;
    }
    if let Some(p) = &a.json_file {
        io::write_atomic(p, serde_json::to_string_pretty(&records)?.as_bytes())?;
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "attention {} on {} ({:?})",
            a.dtype
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join("/"),
            gpu.info().name,
            gpu.info().backend
        );
        let png = plot::render(&records, &a, gemm, &title)?;
        io::write_atomic(p, &png)?;
        if !a.json {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

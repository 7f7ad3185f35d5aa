//! `attn bench`: attention paths over shapes on one adapter, with the project's
//! GEMM measured in the same run as the ceiling.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde::Serialize;
use wgpu_attention::kernels::matmul::record_matmul;
use wgpu_attention::{
    alibi_slopes, record_attention, AttentionOptions, AttentionPath, Gpu, HostMask, Layout,
    MaskTensor, Masking, Tensor,
};
use wgpu_attention::{plan, AttentionProblem};

use crate::args::DeviceArgs;
use crate::error::bad_input;
use crate::io;
use crate::plot::{LineChart, Series};

/// A path to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchPath {
    Fused,
    Unfused,
    Decode,
}

impl BenchPath {
    fn path(self) -> AttentionPath {
        match self {
            BenchPath::Fused => AttentionPath::Fused,
            BenchPath::Unfused => AttentionPath::Unfused,
            BenchPath::Decode => AttentionPath::Decode,
        }
    }

    fn name(self) -> &'static str {
        match self {
            BenchPath::Fused => "fused",
            BenchPath::Unfused => "unfused",
            BenchPath::Decode => "decode",
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

Per configuration (every combination of the lists): median of --reps (at least
10) runs after one warm-up run (pipeline compile, reported as first_run_ms),
timed with GPU timestamps where the adapter has them (wall clock including a
one-element readback otherwise). GFLOP/s counts 4·B·Hq·Nq·Nk·D (halved for causal
with Nq = Nk). peak_buffer_bytes is the library plan's (wgpu_attention::plan, Plan::peak_bytes):
Q, K, V, the mask of --options bias, O, and for unfused the scores and weights
(2·B·Hq·Nq·Nk f32, or of one chunk of heads when they exceed a storage binding),
for decode the partial outputs (splits·B·Hq·Nq·(D+1) f32, splits as the plan
chooses them on this device). The project's GEMM (--gemm-n cubed) is timed
the same way as the ceiling; the table ends with fused/GEMM and fused/unfused
ratios. A configuration a path cannot run (memory, driver limits) is reported
with its error instead of a time.")]
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
    /// Also draw the results as a PNG chart (one series per path, the GEMM ceiling dashed).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Y axis of --plot.
    #[arg(long, value_enum, default_value_t = Metric::Gflops)]
    pub plot_metric: Metric,
    #[command(flatten)]
    pub device: DeviceArgs,
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
    pub dtype: &'static str,
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
    pub first_run_ms: Option<f64>,
    pub reps: usize,
    /// `gpu-timestamps` or `wall-clock`.
    pub timing: &'static str,
    pub adapter: String,
    pub error: Option<String>,
}

impl Record {
    fn config(&self) -> (usize, usize, usize, usize, usize, usize, bool) {
        (
            self.b,
            self.hq,
            self.hkv,
            self.nq,
            self.nk,
            self.d,
            self.causal,
        )
    }

    fn label(&self) -> String {
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

/// Times one run: GPU timestamps when available, else wall clock with a readback.
fn once(
    gpu: &Gpu,
    timed: bool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> wgpu_attention::Result<f64> {
    if timed {
        let mut rec = gpu.timed_recorder()?;
        record_attention(&mut rec, q, k, v, opts)?;
        return pollster::block_on(rec.submit_timed());
    }
    let t = Instant::now();
    let mut rec = gpu.recorder();
    let out = record_attention(&mut rec, q, k, v, opts)?;
    rec.submit()?;
    out.o.view(&[1], &[1], 0)?.to_vec_blocking()?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// (sorted times, first-run ms).
fn time_path(
    gpu: &Gpu,
    timed: bool,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    reps: usize,
) -> wgpu_attention::Result<(Vec<f64>, f64)> {
    let cold = Instant::now();
    once(gpu, timed, q, k, v, opts)?; // warm-up: pipeline compile
    let first_ms = cold.elapsed().as_secs_f64() * 1e3;
    let mut t = (0..reps)
        .map(|_| once(gpu, timed, q, k, v, opts))
        .collect::<wgpu_attention::Result<Vec<f64>>>()?;
    t.sort_by(f64::total_cmp);
    Ok((t, first_ms))
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// GFLOP/s of the project's GEMM at `n³` (median of 7 after a warm-up).
fn gemm_gflops(gpu: &Gpu, timed: bool, n: usize) -> wgpu_attention::Result<f64> {
    let data: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) / 13.0).collect();
    let a = Tensor::from_slice(gpu, &data, &[n, n])?;
    let run = || -> wgpu_attention::Result<f64> {
        if timed {
            let mut rec = gpu.timed_recorder()?;
            record_matmul(&mut rec, &a, &a, None)?;
            return pollster::block_on(rec.submit_timed());
        }
        let t = Instant::now();
        let mut rec = gpu.recorder();
        let c = record_matmul(&mut rec, &a, &a, None)?;
        rec.submit()?;
        c.view(&[1], &[1], 0)?.to_vec_blocking()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    run()?;
    let mut t = (0..7)
        .map(|_| run())
        .collect::<wgpu_attention::Result<Vec<f64>>>()?;
    t.sort_by(f64::total_cmp);
    Ok(2.0 * (n as f64).powi(3) / median(&t) / 1e6)
}

pub fn main(a: BenchArgs) -> Result<()> {
    if let Some(p) = &a.plot {
        io::check_output(p, "--plot")?;
    }
    for (name, list) in [
        ("--b", &a.b),
        ("--h", &a.h),
        ("--hkv", &a.hkv),
        ("--nq", &a.nq),
        ("--nk", &a.nk),
        ("--n", &a.n),
        ("--d", &a.d),
    ] {
        if list.contains(&0) {
            return Err(bad_input!("{name}: every size must be at least 1"));
        }
    }
    if a.gemm_n == 0 {
        return Err(bad_input!("--gemm-n 0: expected at least 1"));
    }
    if a.kv_split == Some(0) {
        return Err(bad_input!("--kv-split 0: expected at least 1"));
    }
    if a.path.is_empty() {
        return Err(bad_input!(
            "--path: name at least one of fused, unfused, decode"
        ));
    }
    // --n alone gives square problems (Nq = Nk = each n); otherwise every Nq × Nk.
    let lengths: Vec<(usize, usize)> = if a.nq.is_empty() && a.nk.is_empty() {
        a.n.iter().map(|&n| (n, n)).collect()
    } else {
        let nqs = if a.nq.is_empty() { &a.n } else { &a.nq };
        let nks = if a.nk.is_empty() { &a.n } else { &a.nk };
        nqs.iter()
            .flat_map(|&q| nks.iter().map(move |&k| (q, k)))
            .collect()
    };
    // Every (b, h, hkv, nq, nk, d), checked before anything runs.
    let mut configs: Vec<[usize; 6]> = Vec::new();
    for &b in &a.b {
        for &h in &a.h {
            let hkvs = if a.hkv.is_empty() {
                vec![h]
            } else {
                a.hkv.clone()
            };
            for hkv in hkvs {
                if h % hkv != 0 {
                    return Err(bad_input!(
                        "--hkv {hkv}: the query heads (--h {h}) must be a multiple of it"
                    ));
                }
                for &(nq, nk) in &lengths {
                    for &d in &a.d {
                        configs.push([b, h, hkv, nq, nk, d]);
                    }
                }
            }
        }
    }
    let reps = a.reps.max(10);
    let gpu = a.device.open()?;
    let adapter = gpu.describe();
    let timed = gpu.timed_recorder().is_ok();
    let timing = if timed {
        "gpu-timestamps"
    } else {
        "wall-clock"
    };
    let gemm = gemm_gflops(&gpu, timed, a.gemm_n)?;
    if !a.json {
        println!("adapter: {adapter}");
        println!(
            "timing: {timing}, median of {reps} after a warm-up; GEMM {n}³ (ceiling): {gemm:.2} GFLOP/s",
            n = a.gemm_n
        );
        println!(
            "{:<16} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6} {:>5} {:>10} {:>9} {:>8} {:>12} {:>10}",
            "path", "B", "Hq", "Hkv", "Nq", "Nk", "D", "causal", "dtype", "median ms", "GFLOP/s",
            "of GEMM", "peak MiB", "first ms"
        );
    }
    let mut records: Vec<Record> = Vec::new();
    for &[b, h, hkv, nq, nk, d] in &configs {
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
        let causals: &[bool] = if a.causal { &[false, true] } else { &[false] };
        let bias = if a.options.contains(&ScoreOption::Bias) {
            let vals: Vec<f32> = (0..nq * nk).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
            Some(MaskTensor::upload(
                &gpu,
                &HostMask::additive(vals, [1, 1, nq, nk])?,
            )?)
        } else {
            None
        };
        let slopes = alibi_slopes(h);
        for &causal in causals {
            for (&path, &extra) in a
                .path
                .iter()
                .flat_map(|p| a.options.iter().map(move |o| (p, o)))
            {
                let opts = AttentionOptions {
                    path: path.path(),
                    masking: Masking {
                        causal,
                        ..Default::default()
                    },
                    kv_split: a.kv_split,
                    mask: (extra == ScoreOption::Bias)
                        .then_some(bias.as_ref())
                        .flatten(),
                    softcap: (extra == ScoreOption::Softcap).then_some(30.0),
                    scale: (extra == ScoreOption::Scale).then_some(0.1),
                    alibi: (extra == ScoreOption::Alibi).then_some(&slopes[..]),
                    ..Default::default()
                };
                let flops =
                    4.0 * (b * h * nq * nk * d) as f64 * if causal && nq == nk { 0.5 } else { 1.0 };
                // The library's own plan: what runs and the memory it holds.
                let peak_buffer_bytes = AttentionProblem::new(&q, &k, &v, &opts)
                    .and_then(|p| plan(&p, gpu.caps(), gpu.tuning()))
                    .map_or(0, |p| p.peak_bytes());
                let result = time_path(&gpu, timed, &q, &k, &v, &opts, reps);
                let (median_ms, min_ms, first, error) = match &result {
                    Ok((t, first)) => (Some(median(t)), Some(t[0]), Some(*first), None),
                    Err(e) => (None, None, None, Some(e.to_string())),
                };
                let gflops = median_ms.map(|m| flops / m / 1e6);
                let r = Record {
                    path,
                    b,
                    hq: h,
                    hkv,
                    nq,
                    nk,
                    d,
                    causal,
                    options: extra,
                    dtype: "f32",
                    median_ms,
                    min_ms,
                    gflops,
                    gemm_gflops: gemm,
                    of_gemm: gflops.map(|g| g / gemm),
                    fused_over_unfused: None,
                    peak_buffer_bytes,
                    first_run_ms: first,
                    reps,
                    timing,
                    adapter: adapter.clone(),
                    error,
                };
                if !a.json {
                    print_row(&r);
                }
                records.push(r);
            }
        }
    }
    // fused/unfused per configuration.
    let speedups: Vec<(usize, f64)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path == BenchPath::Fused)
        .filter_map(|(i, f)| {
            let u = records.iter().find(|u| {
                u.path == BenchPath::Unfused && u.config() == f.config() && u.options == f.options
            })?;
            Some((i, u.median_ms? / f.median_ms?))
        })
        .collect();
    for &(i, s) in &speedups {
        records[i].fused_over_unfused = Some(s);
    }
    if !a.json {
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
        let extra: Vec<&Record> = records
            .iter()
            .filter(|r| r.options != ScoreOption::Plain && r.median_ms.is_some())
            .collect();
        if !extra.is_empty() {
            println!("\noverhead over plain (same path and shape):");
            for r in extra {
                let plain = records.iter().find(|p| {
                    p.options == ScoreOption::Plain && p.path == r.path && p.config() == r.config()
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
    } else {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "attention f32 on {} ({:?})",
            gpu.info().name,
            gpu.info().backend
        );
        let png = plot(&records, &a, gemm, &title)?;
        io::write_atomic(p, &png)?;
        if !a.json {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn print_row(r: &Record) {
    let path = if r.options == ScoreOption::Plain {
        r.path.name().to_string()
    } else {
        format!("{}+{}", r.path.name(), r.options.name())
    };
    let head = format!(
        "{:<16} {:>2} {:>3} {:>3} {:>6} {:>6} {:>4} {:>6} {:>5}",
        path, r.b, r.hq, r.hkv, r.nq, r.nk, r.d, r.causal, r.dtype
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

fn plot(records: &[Record], a: &BenchArgs, gemm: f64, title: &str) -> Result<Vec<u8>> {
    let mut configs: Vec<(usize, usize, usize, usize, usize, usize, bool)> = Vec::new();
    let mut labels = Vec::new();
    for r in records {
        if !configs.contains(&r.config()) {
            configs.push(r.config());
            labels.push(r.label());
        }
    }
    let index = |r: &Record| configs.iter().position(|c| *c == r.config()).unwrap_or(0);
    let value = |r: &Record| match a.plot_metric {
        Metric::Gflops => r.gflops,
        Metric::Ms => r.median_ms,
    };
    let series = a
        .path
        .iter()
        .flat_map(|&p| a.options.iter().map(move |&o| (p, o)))
        .map(|(p, o)| Series {
            name: if o == ScoreOption::Plain {
                p.name().to_string()
            } else {
                format!("{}+{}", p.name(), o.name())
            },
            points: records
                .iter()
                .filter(|r| r.path == p && r.options == o)
                .filter_map(|r| value(r).map(|v| (index(r), v)))
                .collect(),
        })
        .collect();
    let n = configs.len();
    let ceiling = match a.plot_metric {
        Metric::Gflops => (
            format!("GEMM {}³: {gemm:.1} GFLOP/s", a.gemm_n),
            vec![(-0.5, gemm), (n as f64 - 0.5, gemm)],
        ),
        Metric::Ms => (
            "at GEMM speed".to_string(),
            configs
                .iter()
                .enumerate()
                .map(|(i, &(b, h, _, nq, nk, d, causal))| {
                    let flops = 4.0
                        * (b * h * nq * nk * d) as f64
                        * if causal && nq == nk { 0.5 } else { 1.0 };
                    (i as f64, flops / gemm / 1e6)
                })
                .collect(),
        ),
    };
    LineChart {
        title: title.to_string(),
        y_desc: match a.plot_metric {
            Metric::Gflops => "GFLOP/s".into(),
            Metric::Ms => "median ms".into(),
        },
        labels: &labels,
        series,
        ceiling: Some(ceiling),
        width: 1100,
        height: 650,
    }
    .render()
}

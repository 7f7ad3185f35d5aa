//! `attn tune`: measure the kernel candidates for a list of shapes, print each
//! class's table, and keep the choices in the tuning cache.

use anyhow::Result;
use clap::Args;
use serde_json::json;
use wgpu_attention::plan::autotune::Budget;
use wgpu_attention::{plan, AttentionProblem, AttnShape, DType, DTypes, Masking};

use crate::args::{dtype_arg, DeviceArgs};
use crate::error::bad_input;

#[derive(Args)]
#[command(after_help = "Examples:
  attn tune --n 1024 --d 64
  attn tune --nq 1 --nk 32768 --d 128 --h 8 --hkv 2
  attn tune --n 512,2048 --d 64,128 --causal --json
  attn tune --n 1024 --d 128 --dtype f32,f16

For each shape (every combination of the lists), the candidates of its class
(path, head-dim bucket, mask, query count: the heuristic's variants first, then
subgroup sharing off, 4 and 16 rows per lane, staging) run on a representative
shape (B = 1, at most 1024 queries and 4096 keys, 32768 for decode): one run that
compiles, then the median of 5 timed runs (GPU timestamps where the adapter has
them). The fastest wins unless it compiles over --max-compile-s and one within
5% compiles faster. The choice is kept in the tuning cache (WGPU_ATTENTION_TUNE_CACHE,
default ~/.cache/wgpu-attention/tune.json), where TuningMode::Autotune finds it;
`attn info` lists the cached choices.")]
pub struct TuneArgs {
    /// Query heads.
    #[arg(long, default_value_t = 8)]
    pub h: usize,
    /// Key/value heads [default: as many as query heads].
    #[arg(long)]
    pub hkv: Option<usize>,
    /// Sequence lengths, Nq = Nk = n, unless --nq/--nk are given.
    #[arg(long, value_delimiter = ',', default_value = "1024")]
    pub n: Vec<usize>,
    /// Query lengths [default: --n].
    #[arg(long, value_delimiter = ',')]
    pub nq: Vec<usize>,
    /// Key lengths [default: --n].
    #[arg(long, value_delimiter = ',')]
    pub nk: Vec<usize>,
    /// Head dims.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub d: Vec<usize>,
    /// Causal (bottom-right) masking.
    #[arg(long)]
    pub causal: bool,
    /// Dtypes of Q, K, V and O (comma-separated): each is a class of its own.
    #[arg(
        long,
        value_name = "DTYPES",
        value_delimiter = ',',
        value_parser = dtype_arg,
        default_value = "f32"
    )]
    pub dtype: Vec<DType>,
    /// Time spent on one class, at most, in seconds (the heuristic's variant is always measured).
    #[arg(long, default_value_t = 60.0)]
    pub budget_s: f64,
    /// A candidate compiling longer than this only wins when no close one compiles faster, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub max_compile_s: f64,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn main(a: TuneArgs) -> Result<()> {
    let hkv = a.hkv.unwrap_or(a.h);
    let nqs = if a.nq.is_empty() { &a.n } else { &a.nq };
    let nks = if a.nk.is_empty() { &a.n } else { &a.nk };
    let mut shapes = Vec::new();
    for &dtype in &a.dtype {
        for &d in &a.d {
            for &nq in nqs {
                for &nk in nks {
                    let sh = AttnShape {
                        b: 1,
                        hq: a.h,
                        hkv,
                        nq,
                        nk,
                        d,
                    };
                    let mut p = AttentionProblem::of_shape(sh)
                        .map_err(|e| bad_input!("--h/--hkv/--n/--nq/--nk/--d: {e}"))?
                        .with_dtypes(DTypes::all(dtype));
                    p.transform.masking = Masking {
                        causal: a.causal,
                        ..Default::default()
                    };
                    p.transform.diag_off = p.transform.masking.diagonal_offset(nq, nk);
                    shapes.push(p);
                }
            }
        }
    }
    if !(a.budget_s > 0.0 && a.max_compile_s > 0.0) {
        return Err(bad_input!("--budget-s and --max-compile-s must be above 0"));
    }
    let budget = Budget {
        total_ms: a.budget_s * 1e3,
        max_compile_ms: a.max_compile_s * 1e3,
        ..Budget::default()
    };
    let gpu = a.device.open()?;
    let mut report = Vec::new();
    if !a.json {
        println!("adapter: {}", gpu.describe());
    }
    for p in &shapes {
        let Some((class, out)) =
            pollster::block_on(wgpu_attention::tune::retune(&gpu, p, &budget))?
        else {
            return Err(bad_input!(
                "{:?}: this problem runs the unfused path, which is not tuned",
                p.shape
            ));
        };
        let sh = p.shape;
        let mut rows = Vec::new();
        if !a.json {
            println!(
                "\nB1 H{} Hkv{} Nq{} Nk{} D{}{} {}: class {class} ({:.1} s measured)",
                sh.hq,
                sh.hkv,
                sh.nq,
                sh.nk,
                sh.d,
                if a.causal { " causal" } else { "" },
                p.dtypes.q,
                out.spent_ms / 1e3
            );
            println!("  {:<8} {:>10} {:>12}  kernel", "", "run ms", "compile ms");
        }
        for (i, t) in out.trials.iter().enumerate() {
            let kernel = plan(p, gpu.caps(), t.candidate)
                .map(|pl| pl.describe())
                .unwrap_or_else(|e| e.to_string());
            let (run, compile, error) = match &t.result {
                Some(Ok(m)) => (Some(m.run_ms), Some(m.compile_ms), None),
                Some(Err(e)) => (None, None, Some(e.clone())),
                None => (None, None, Some("not measured (budget spent)".to_string())),
            };
            let mark = if i == out.chosen { "chosen" } else { "" };
            if !a.json {
                let f = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.2}"));
                println!(
                    "  {mark:<8} {:>10} {:>12}  {kernel}{}",
                    f(run),
                    f(compile),
                    error.as_ref().map_or(String::new(), |e| format!(" ({e})"))
                );
            }
            rows.push(json!({
                "kernel": kernel, "run_ms": run, "compile_ms": compile,
                "error": error, "chosen": i == out.chosen,
            }));
        }
        report.push(json!({
            "b": 1, "hq": sh.hq, "hkv": sh.hkv, "nq": sh.nq, "nk": sh.nk, "d": sh.d,
            "causal": a.causal, "dtype": p.dtypes.q, "class": class, "spent_ms": out.spent_ms, "candidates": rows,
        }));
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "adapter": gpu.describe(),
                "cache": gpu.tune_cache_path().map(|p| p.display().to_string()),
                "classes": report,
            }))?
        );
    } else if let Some(p) = gpu.tune_cache_path() {
        println!("\nchoices kept in {}", p.display());
    }
    Ok(())
}

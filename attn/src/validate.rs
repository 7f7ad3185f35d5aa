//! `attn validate`: the library's case matrix (`wgpu_attention::validation`) on
//! every adapter present, with a progress bar, a table per adapter and a JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use wgpu_attention::gpu::Coop;
use wgpu_attention::validation::{self, Case, CaseResult, REL_L2_TOL};
use wgpu_attention::verify::Tolerance;
use wgpu_attention::{plan, AttentionPath, AttentionProblem, AttnShape, DType, DTypes, Gpu};

use crate::args::{coop_forced, coop_name, dtype_arg, f16_storage_name, CoopArg, DeviceArgs};
use crate::error::{bad_input, CheckFailed};
use crate::io;

#[derive(Args)]
#[command(after_help = "Examples:
  attn validate
  attn validate --backend vulkan --json report.json
  attn validate --full --json > report.json
  attn validate --filter mask=bool --filter fused
  attn validate --dtype f16,bf16 --f16-storage packed
  attn validate --coop on

Every case runs Q, K, V drawn uniformly from [-1, 1) (ChaCha8, the case's seed) on
the GPU with outputs poisoned (NaN) first, and compares O, LSE and, on the
unfused path, the weights with the f64 CPU reference. A case passes when every
output has relative L2 error <= 1e-5 (f32 storage and accumulation measure
1e-7..1e-6; a wrong mask, scale or index gives >= 1e-2), no NaN, and every -inf
LSE (rows with no visible key) matched exactly. The default matrix: every mask
kind (none, additive, key-padding, bool, window, alibi, softcap) × fused,
unfused, decode on six shapes (head dims 1, 7, 64, 80; GQA, MQA; Nq < Nk,
Nq > Nk; one query against 1100 keys), causal and layout rotated through;
--full adds head dims 32..256, both layouts and both kernel variants per case.
Per half dtype (--dtype, default f32,f16,bf16) six representative cases run with
Q, K, V and O in that dtype (each path; head dims 7, 1, 64, 80; BNHD; GQA/MQA;
1100 keys in splits; whole rows masked; --full adds D 128, 256 and both kernel
variants), the reference on the rounded values the GPU read: O passes within
1e-5 + the dtype's unit roundoff (f16 2^-11, bf16 2^-8: its one rounding on
store), LSE and weights (f32) within 1e-5.
--coop on runs the cooperative-matrix kernel's cases instead
(wgpu_attention::validation::coop_cases: the fused and decode cases of the
matrix with Coop::On and Coop::Full, in f16, f32 and bf16; the tolerance adds
f16's roundoff for Q and K not stored in f16 and, with full, for the weights)
on every adapter that can run that kernel; the others are listed as skipped
with the reason. --coop full runs those cases all with Coop::Full; --coop
off|auto runs the matrix with that choice forced on every case.
Exit 1 when any case fails on any adapter, 2 when no adapter is found (or,
with --coop on, none can run the cooperative-matrix kernel).")]
pub struct ValidateArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// The full matrix (more head dims, both layouts, both kernel variants).
    #[arg(long)]
    pub full: bool,
    /// Dtypes to validate (comma-separated): f32 runs the matrix, f16 and bf16 a few representative cases each.
    #[arg(
        long,
        value_name = "DTYPES",
        value_delimiter = ',',
        value_parser = dtype_arg,
        default_value = "f32,f16,bf16"
    )]
    pub dtype: Vec<DType>,
    /// Only cases whose name contains this (repeatable: every one must match).
    #[arg(long, value_name = "SUBSTR")]
    pub filter: Vec<String>,
    /// Cases from a JSON file (an array of cases, or a report of this command) instead of the matrix.
    #[arg(long, value_name = "FILE")]
    pub cases: Option<PathBuf>,
    /// List the selected cases and exit.
    #[arg(long)]
    pub list: bool,
    /// Write the JSON report to FILE, or to stdout without a value (the tables then go to stderr).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    pub json: Option<String>,
    /// The cooperative-matrix kernel: on runs its cases (full: all with P·V on
    /// the matrices too; adapters that cannot run it are skipped), off or auto
    /// forces that choice on every case of the matrix [default: each case's
    /// own, the device's tuning].
    #[arg(long, value_enum, value_name = "MODE", conflicts_with = "cases")]
    pub coop: Option<CoopArg>,
}

/// The cases of `--full`/`--dtype` under `--coop`: the coop cases for `on`,
/// else the matrix with the choice forced (renamed to say so).
fn matrix_cases(a: &ValidateArgs) -> Vec<Case> {
    let force = |cases: Vec<Case>, c: Coop| -> Vec<Case> {
        cases
            .into_iter()
            .map(|mut case| {
                let relabel = case.name == case.label();
                case.coop = Some(c);
                if relabel {
                    case.name = case.label();
                }
                case
            })
            .collect()
    };
    match a.coop.map(CoopArg::coop) {
        None => validation::matrix_with(a.full, &a.dtype),
        Some(Coop::On) => validation::coop_cases(a.full),
        Some(Coop::Full) => force(validation::coop_cases(a.full), Coop::Full),
        Some(c) => force(validation::matrix_with(a.full, &a.dtype), c),
    }
}

/// Why `gpu` cannot run the cooperative-matrix fused kernel under `mode` (on
/// or full; `None` when it can): the library's plan of a small f16 problem.
fn coop_unusable(gpu: &Gpu, mode: Coop) -> Option<String> {
    let shape = AttnShape {
        b: 1,
        hq: 1,
        hkv: 1,
        nq: 64,
        nk: 64,
        d: 64,
    };
    let mut p = match AttentionProblem::of_shape(shape) {
        Ok(p) => p.with_dtypes(DTypes::all(DType::F16)),
        Err(e) => return Some(e.to_string()),
    };
    p.path = AttentionPath::Fused;
    plan(&p, gpu.caps(), gpu.tuning().with_coop(mode))
        .err()
        .map(|e| e.to_string())
}

fn load_cases(path: &PathBuf) -> Result<Vec<Case>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input!("--cases {}: cannot read: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| bad_input!("--cases {}: not JSON: {e}", path.display()))?;
    let items: Vec<Value> = match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.contains_key("adapters") => o["adapters"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["results"].as_array().cloned().unwrap_or_default())
            .collect(),
        _ => {
            return Err(bad_input!(
                "--cases {}: expected an array of cases or a report of attn validate",
                path.display()
            ))
        }
    };
    let mut cases: Vec<Case> = Vec::new();
    for item in items {
        let c = item.get("case").cloned().unwrap_or(item);
        let case: Case = serde_json::from_value(c)
            .map_err(|e| bad_input!("--cases {}: not a case: {e}", path.display()))?;
        if !cases.contains(&case) {
            cases.push(case);
        }
    }
    Ok(cases)
}

/// The per-adapter table: mask kinds × paths, "passed/total worst-rel-L2";
/// with several dtypes, a row per (dtype, mask kind).
fn table(results: &[CaseResult]) -> String {
    let mut paths: Vec<String> = Vec::new();
    let mut masks: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), (usize, usize, f64)> = BTreeMap::new();
    let several = results
        .iter()
        .any(|r| r.case.dtype != results[0].case.dtype);
    for r in results {
        let m = if several {
            format!("{} {}", r.case.dtype, r.case.mask)
        } else {
            r.case.mask.clone()
        };
        let p = r.case.path.clone();
        if !paths.contains(&p) {
            paths.push(p.clone());
        }
        if !masks.contains(&m) {
            masks.push(m.clone());
        }
        let e = cells.entry((m, p)).or_insert((0, 0, 0.0));
        e.0 += r.pass as usize;
        e.1 += 1;
        e.2 = e.2.max(r.worst_rel_l2);
    }
    let mut s = String::new();
    let _ = write!(s, "  {:<17}", if several { "dtype mask" } else { "mask" });
    for p in &paths {
        let _ = write!(s, " {:>22}", format!("{p}: passed  worst"));
    }
    s.push('\n');
    for m in &masks {
        let _ = write!(s, "  {m:<17}");
        for p in &paths {
            match cells.get(&(m.clone(), p.clone())) {
                Some(&(ok, n, worst)) => {
                    let _ = write!(s, " {:>22}", format!("{ok:>3}/{n:<3} {}", sci(worst)));
                }
                None => {
                    let _ = write!(s, " {:>22}", "—");
                }
            }
        }
        s.push('\n');
    }
    s
}

fn sci(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1e}")
    } else {
        "error".into()
    }
}

pub fn main(a: ValidateArgs) -> Result<()> {
    if let Some(p) = a.json.as_deref().filter(|p| *p != "-") {
        io::check_output(std::path::Path::new(p), "--json")?;
    }
    if a.dtype.is_empty() {
        return Err(bad_input!("--dtype: name at least one of f32, f16, bf16"));
    }
    let all = match &a.cases {
        Some(p) => load_cases(p)?,
        None => matrix_cases(&a),
    };
    let cases: Vec<Case> = all
        .into_iter()
        .filter(|c| a.dtype.contains(&c.dtype))
        .filter(|c| a.filter.iter().all(|f| c.name.contains(f.as_str())))
        .collect();
    if cases.is_empty() {
        return Err(bad_input!(
            "--filter {} with --dtype {}: no case matches (see attn validate --list)",
            a.filter.join(" --filter "),
            a.dtype
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if a.list {
        for c in &cases {
            println!("{}", c.name);
        }
        return Ok(());
    }
    // With the JSON on stdout, the human-readable part goes to stderr.
    let to_stdout = a.json.as_deref() != Some("-");
    let say = |s: &str| {
        if to_stdout {
            println!("{s}");
        } else {
            eprintln!("{s}");
        }
    };
    let (mut gpus, open_errors) = a.device.open_all()?;
    for e in &open_errors {
        say(&format!("an adapter failed to open (not validated): {e}"));
    }
    // --coop on/full: only adapters that can run the kernel.
    let mut skipped: Vec<Value> = Vec::new();
    let coop_flag = a.coop.map(|c| coop_name(c.coop())).unwrap_or("");
    if a.coop.is_some_and(|c| coop_forced(c.coop())) {
        let mut why_not = Vec::new();
        let mode = a.coop.map_or(Coop::On, CoopArg::coop);
        gpus.retain(|g| match coop_unusable(g, mode) {
            None => true,
            Some(why) => {
                say(&format!(
                    "skipped {} (--coop {coop_flag}): {why}",
                    g.describe()
                ));
                let line = format!("{}: {why}", g.info().name);
                if !why_not.contains(&line) {
                    why_not.push(line);
                }
                skipped
                    .push(json!({"adapter": g.describe(), "name": g.info().name, "reason": why}));
                false
            }
        });
        if gpus.is_empty() {
            return Err(bad_input!(
                "--coop {coop_flag}: no adapter can run the cooperative-matrix kernel ({})",
                why_not.join("; ")
            ));
        }
    }
    let mut dtypes: Vec<DType> = Vec::new();
    for c in &cases {
        if !dtypes.contains(&c.dtype) {
            dtypes.push(c.dtype);
        }
    }
    let count = |d: DType| cases.iter().filter(|c| c.dtype == d).count();
    say(&format!(
        "{} cases{} ({}) on {} adapter(s); pass: relative L2 <= {REL_L2_TOL:.0e} ({}), no NaN, -inf matched",
        cases.len(),
        if a.full { " (full matrix)" } else { "" },
        dtypes
            .iter()
            .map(|&d| format!("{d}: {}", count(d)))
            .collect::<Vec<_>>()
            .join(", "),
        gpus.len(),
        dtypes
            .iter()
            .filter(|&&d| d != DType::F32)
            .map(|&d| format!("O in {d}: {:.1e}", Tolerance::stored(d).rel_l2))
            .chain(std::iter::once("LSE, weights: f32".to_string()))
            .chain(
                cases
                    .iter()
                    .any(|c| c.coop.is_some_and(coop_forced))
                    .then(|| {
                        "coop=on/full: plus f16's roundoff for Q, K (not f16) and, with full, P".to_string()
                    }),
            )
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for gpu in &gpus {
        let name = gpu.describe();
        let bar = ProgressBar::new(cases.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(gpu.info().name.clone());
        let t0 = Instant::now();
        let mut results = Vec::with_capacity(cases.len());
        for c in &cases {
            bar.set_message(c.name.clone());
            let r = validation::run_case_blocking(gpu, c);
            if !r.pass {
                bar.println(format!(
                    "FAIL {}: {}",
                    c.name,
                    r.error
                        .clone()
                        .unwrap_or_else(|| format!("worst rel L2 {}", sci(r.worst_rel_l2)))
                ));
            }
            results.push(r);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        let passed = results.iter().filter(|r| r.pass).count();
        let worst = results
            .iter()
            .map(|r| r.worst_rel_l2)
            .fold(0.0f64, f64::max);
        say(&format!("\n{name}, f16 storage {}", f16_storage_name(gpu)));
        say(&table(&results));
        if dtypes.len() > 1 {
            for &d in &dtypes {
                let of: Vec<&CaseResult> = results.iter().filter(|r| r.case.dtype == d).collect();
                say(&format!(
                    "  {d:<4} {}/{} passed, worst relative L2 {} (O tolerance {:.1e})",
                    of.iter().filter(|r| r.pass).count(),
                    of.len(),
                    sci(of.iter().map(|r| r.worst_rel_l2).fold(0.0f64, f64::max)),
                    // The cases' own (coop=on: at least f16's).
                    of.iter()
                        .map(|r| r.case.tolerance("o"))
                        .fold(Tolerance::stored(d).rel_l2, f64::max)
                ));
            }
        }
        say(&format!(
            "  {passed}/{} passed, worst relative L2 {}, {secs:.1} s",
            results.len(),
            sci(worst)
        ));
        for r in results.iter().filter(|r| !r.pass) {
            let why = r
                .error
                .clone()
                .unwrap_or_else(|| format!("worst rel L2 {}", sci(r.worst_rel_l2)));
            say(&format!("  FAIL {}: {why}", r.case.name));
            failures.push(format!("{}: {}", gpu.info().name, r.case.name));
        }
        reports.push(json!({
            "adapter": name,
            "name": gpu.info().name,
            "backend": format!("{:?}", gpu.info().backend),
            "f16_storage": f16_storage_name(gpu),
            "cases": results.len(),
            "passed": passed,
            "failed": results.len() - passed,
            "worst_rel_l2": worst,
            "seconds": secs,
            "results": results,
        }));
    }
    let pass = failures.is_empty();
    if let Some(dest) = &a.json {
        let report = json!({
            "tolerance_rel_l2": REL_L2_TOL,
            "o_tolerance_rel_l2": DType::ALL
                .iter()
                .map(|&d| (d.name().to_string(), json!(Tolerance::stored(d).rel_l2)))
                .collect::<serde_json::Map<String, Value>>(),
            "dtypes": dtypes,
            "full": a.full,
            "filter": a.filter,
            "coop": a.coop.map(|c| coop_name(c.coop())),
            "skipped": skipped,
            "pass": pass,
            "adapters": reports,
            "open_errors": open_errors,
        });
        let text = serde_json::to_string_pretty(&report)? + "\n";
        if dest == "-" {
            print!("{text}");
        } else {
            io::write_atomic(std::path::Path::new(dest), text.as_bytes())?;
            say(&format!("wrote {dest}"));
        }
    }
    if pass {
        Ok(())
    } else {
        Err(CheckFailed(format!(
            "validate: {} case(s) failed: {}",
            failures.len(),
            failures.join("; ")
        ))
        .into())
    }
}

//! One attention problem on each chosen path, timed and verified: what the
//! page's "Run" button does.

use serde::{Deserialize, Serialize};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wgpu_attention::plan::autotune::{Budget, Outcome};
use wgpu_attention::reference;
use wgpu_attention::tune::autotune;
use wgpu_attention::validation::{self, parse_layout, parse_path, Case, REL_L2_TOL};
use wgpu_attention::verify::{verify, Report};
use wgpu_attention::wgpu;
use wgpu_attention::{
    attention, record_attention, AttentionOptions, AttentionPath, AttentionProblem, DType, Gpu,
    MaskTensor, MaskValues, Tensor, TuningMode,
};

use crate::{err, gpu, now_ms, tuning_json};

/// One run of the page: a [`validation::Case`] (shape, causal rule, mask kind,
/// layout, kernel variant, seed; its `path` is not used) on each of `paths`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default)]
pub struct RunConfig {
    /// The problem, its inputs built from its seed exactly as the validation
    /// matrix builds them ([`validation::inputs`]).
    pub case: Case,
    /// Paths to run and check ("fused", "unfused", "decode", "auto"); the weights
    /// (heatmap) come from "unfused".
    pub paths: Vec<String>,
    /// Timed repetitions after the verified run (0 = none).
    pub repeats: usize,
    /// Return the (batch 0, head 0) weights for the heatmap.
    pub heatmap: bool,
    /// Choose the kernel variants by measurement (`TuningMode::Autotune`):
    /// each path's class not yet in the page's cache is tuned first, async,
    /// within `autotune_budget_ms` (the case's `staged` is then not used).
    pub autotune: bool,
    /// The browser's shortened tuning budget per class (compile and run time).
    pub autotune_budget_ms: f64,
    /// Q/K/V/O dtype: "f32", "f16" (native `f16` where the browser grants
    /// shader-f16, packed two per u32 otherwise) or "bf16" (always packed).
    pub dtype: String,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            case: Case {
                b: 2,
                hq: 4,
                hkv: 4,
                nq: 128,
                nk: 128,
                d: 64,
                ..Case::default()
            },
            paths: vec!["fused".into(), "unfused".into()],
            repeats: 5,
            heatmap: true,
            autotune: false,
            autotune_budget_ms: 8000.0,
            dtype: "f32".into(),
        }
    }
}

/// What [`run_attention`] returns: a JSON report and the heatmap weights.
#[wasm_bindgen]
pub struct RunOutput {
    json: String,
    heat: Vec<f32>,
    heat_rows: usize,
    heat_cols: usize,
}

#[wasm_bindgen]
impl RunOutput {
    /// The report (shape, timings, errors against the reference, pass).
    pub fn json(&self) -> String {
        self.json.clone()
    }
    /// Weights of (batch 0, head 0), `heat_rows × heat_cols` row-major (empty
    /// unless asked for).
    pub fn heat(&self) -> Vec<f32> {
        self.heat.clone()
    }
    pub fn heat_rows(&self) -> usize {
        self.heat_rows
    }
    pub fn heat_cols(&self) -> usize {
        self.heat_cols
    }
}

fn report_json(r: &Report, tol: f64) -> serde_json::Value {
    json!({
        "len": r.len,
        "max_abs": r.max_abs,
        "rel_l2": r.rel_l2,
        "nan": r.nan_count,
        "inf_mismatch": r.nonfinite_mismatches,
        "worst_index": r.worst_index,
        "pass": r.passes(tol),
        "text": r.to_string(),
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Runs one attention (`attention()` with weights and LSE) on the page's WebGPU
/// device for each path, downloads O, weights and LSE, compares each with the f64
/// reference, and times `repeats` more runs (GPU timestamps when the device has
/// them, else wall clock including readback). `config_json` is a [`RunConfig`]
/// (missing fields take their defaults). The kernel variant is the case's
/// (`staged`), or with `autotune` the measured one: each path's class is tuned
/// first (`tune::autotune(..).await`, within the shortened budget) unless the
/// page's cache has it; passed with each call (`AttentionOptions::tuning`).
#[wasm_bindgen]
pub async fn run_attention(config_json: String) -> Result<RunOutput, JsValue> {
    let cfg: RunConfig =
        serde_json::from_str(&config_json).map_err(|e| err(format!("bad config: {e}")))?;
    let g = gpu().await?;
    run_inner(&g, &cfg).await.map_err(err)
}

async fn run_inner(g: &Gpu, cfg: &RunConfig) -> Result<RunOutput, String> {
    let t_start = now_ms();
    let e = |e: wgpu_attention::Error| e.to_string();
    let dtype = DType::parse(&cfg.dtype).map_err(e)?;
    // The case in the page's dtype: its inputs come rounded to it, so the
    // reference reads exactly what the GPU reads.
    let case = &Case {
        dtype,
        ..cfg.case.clone()
    };
    let sh = case.shape();
    // Everything the library parses, before any GPU work: layout, paths, then the
    // shape and mask kind (`validation::inputs`).
    let layout = parse_layout(&case.layout).map_err(e)?;
    let paths = cfg
        .paths
        .iter()
        .map(|name| parse_path(name).map(|path| (name, path)))
        .collect::<wgpu_attention::Result<Vec<_>>>()
        .map_err(e)?;
    let inputs = validation::inputs(case).map_err(e)?;
    // An output stored in `dtype` is within its rounding of the f32 result.
    let tol = case.tolerance("o");
    let tuning = case.staged.map(|s| g.tuning().with_staged(s));
    let mode = match tuning {
        _ if cfg.autotune => TuningMode::Autotune,
        Some(t) => TuningMode::Fixed(t),
        None => TuningMode::Heuristic,
    };

    let up = |x: &[f32], dims| Tensor::from_bhnd_as(g, x, dims, layout, dtype).map_err(e);
    let qt = up(&inputs.q, [sh.b, sh.hq, sh.nq, sh.d])?;
    let kt = up(&inputs.k, [sh.b, sh.hkv, sh.nk, sh.d])?;
    let vt = up(&inputs.v, [sh.b, sh.hkv, sh.nk, sh.d])?;
    let mask_t = match &inputs.mask {
        Some(m) => Some(MaskTensor::upload(g, m).map_err(e)?),
        None => None,
    };

    // The f64 reference on the CPU (in wasm), once for every path.
    let t0 = now_ms();
    let want = reference::attention(
        &inputs.q,
        &inputs.k,
        &inputs.v,
        &sh,
        &inputs.reference_options(),
    );
    let reference_ms = now_ms() - t0;
    let flops = 4.0 * (sh.b * sh.hq * sh.nq * sh.nk * sh.d) as f64;

    let mut pass = true;
    let mut errors = serde_json::Map::new();
    let mut timings = serde_json::Map::new();
    let mut kernels = serde_json::Map::new();
    let mut medians = std::collections::HashMap::new();
    let mut heat = Vec::new();
    let mut tuned = Vec::new();
    for (name, path) in paths {
        let opts = AttentionOptions {
            return_weights: path == AttentionPath::Unfused,
            return_lse: true,
            path,
            tuning: mode,
            ..inputs.attention_options(mask_t.as_ref())
        };
        // 0. Autotuning: the class measured now unless the page has tuned it
        //    (the browser cannot block inside `attention()`, so it tunes first).
        if cfg.autotune {
            let problem = AttentionProblem::new(&qt, &kt, &vt, &opts).map_err(e)?;
            let t0 = now_ms();
            let budget = Budget {
                total_ms: cfg.autotune_budget_ms,
                max_compile_ms: cfg.autotune_budget_ms / 2.0,
                ..Budget::default()
            };
            if let Some((class, out)) = autotune(g, &problem, &budget).await.map_err(e)? {
                tuned.push(outcome_json(g, &class, sh.d, &out, now_ms() - t0));
            }
        }

        // 1. The verified run, everything downloaded asynchronously.
        let t0 = now_ms();
        let out = attention(&qt, &kt, &vt, &opts).map_err(e)?;
        // What ran, as the library's plan decided it for this call.
        kernels.insert(name.clone(), out.kernels.clone().into());
        let o = out.o.to_vec().await.map_err(e)?;
        let lse = match &out.lse {
            Some(t) => t.to_vec().await.map_err(e)?,
            None => return Err(format!("{name}: no LSE returned")),
        };
        let p = match &out.weights {
            Some(t) => Some(t.to_vec().await.map_err(e)?),
            None => None,
        };
        let first_ms = now_ms() - t0;
        // O is stored in `dtype` (its tolerance); LSE and weights are f32.
        let mut check = |what: &str, r: Report, tol: f64| {
            pass &= r.passes(tol);
            errors.insert(format!("{what} ({name})"), report_json(&r, tol));
        };
        check("O", verify(&o, &want.o), tol);
        check("LSE", verify(&lse, &want.lse), REL_L2_TOL);
        if let Some(p) = &p {
            check("weights P", verify(p, &want.p), REL_L2_TOL);
            if cfg.heatmap && heat.is_empty() {
                heat = p[..sh.nq * sh.nk].to_vec();
            }
        }

        // 2. Timed repetitions: GPU timestamps (first pass start to last pass end)
        //    where the device has them, else wall clock of attention + readback of O.
        //    The output of the last timed run is verified too.
        let mut times = Vec::new();
        let mut clock = "none";
        if cfg.repeats > 0 {
            let mut last_o = None;
            if g.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
                clock = "gpu-timestamps";
                for _ in 0..cfg.repeats {
                    let mut rec = g.timed_recorder().map_err(e)?;
                    let a = record_attention(&mut rec, &qt, &kt, &vt, &opts).map_err(e)?;
                    times.push(rec.submit_timed().await.map_err(e)?);
                    last_o = Some(a.o);
                }
            } else {
                clock = "wall-clock (performance.now, incl. readback of O)";
                for _ in 0..cfg.repeats {
                    let t = now_ms();
                    let a = attention(&qt, &kt, &vt, &opts).map_err(e)?;
                    a.o.to_vec().await.map_err(e)?;
                    times.push(now_ms() - t);
                    last_o = Some(a.o);
                }
            }
            if let Some(o2) = last_o {
                check(
                    "O last timed",
                    verify(&o2.to_vec().await.map_err(e)?, &want.o),
                    tol,
                );
            }
        }
        let med = median(times.clone());
        if let Some(m) = med {
            medians.insert(name.clone(), m);
        }
        timings.insert(
            name.clone(),
            json!({
                "first_run_ms": first_ms,
                "clock": clock,
                "repeats_ms": times,
                "median_ms": med,
                "gflops": med.filter(|&m| m > 0.0).map(|m| flops / m / 1e6),
            }),
        );
    }
    let speedup = match (medians.get("fused"), medians.get("unfused")) {
        (Some(f), Some(u)) if *f > 0.0 => Some(u / f),
        _ => None,
    };

    let (heat_rows, heat_cols) = if heat.is_empty() {
        (0, 0)
    } else {
        (sh.nq, sh.nk)
    };
    let masking = &inputs.masking;
    let json = json!({
        "config": cfg,
        // The case's label with the paths that ran (its own `path` is not used).
        "case": Case { path: cfg.paths.join("+"), ..case.clone() }.label(),
        "shape": { "b": sh.b, "hq": sh.hq, "hkv": sh.hkv, "nq": sh.nq, "nk": sh.nk, "d": sh.d },
        "layout": format!("{layout:?}"),
        "dtype": dtype.name(),
        "f16_storage": if g.caps().native_f16() { "native" } else { "packed" },
        "rel_l2_tolerance": tol,
        "tuning": tuning_json(tuning.unwrap_or_else(|| g.tuning())),
        "kernels": kernels,
        "autotune": tuned,
        "masking": format!("{masking:?}"),
        "key_lengths": masking.key_lengths,
        "dense_mask": inputs.mask.as_ref().map(|m| json!({
            "dims": m.dims,
            "kind": match m.values { MaskValues::Bool(_) => "bool", _ => "additive" },
        })),
        "alibi": inputs.alibi.is_some(),
        "softcap": inputs.softcap,
        "adapter": g.describe(),
        "paths": cfg.paths,
        "timings": timings,
        "fused_speedup_over_unfused": speedup,
        "reference_ms": reference_ms,
        "total_ms": now_ms() - t_start,
        "errors": errors,
        "tolerance_rel_l2": tol,
        "pass": pass,
    })
    .to_string();
    Ok(RunOutput {
        json,
        heat,
        heat_rows,
        heat_cols,
    })
}

/// One class's tuning as JSON: each candidate's kernel, times and whether it was
/// chosen.
fn outcome_json(
    g: &Gpu,
    class: &str,
    d: usize,
    out: &Outcome<wgpu_attention::Tuning>,
    ms: f64,
) -> serde_json::Value {
    json!({
        "class": class,
        "ms": ms,
        "spent_ms": out.spent_ms,
        "candidates": out.trials.iter().enumerate().map(|(i, t)| json!({
            "kernel": wgpu_attention::plan::describe_fused_kernel(g.caps(), t.candidate, d),
            "tuning": tuning_json(t.candidate),
            "run_ms": t.result.as_ref().and_then(|r| r.as_ref().ok()).map(|m| m.run_ms),
            "compile_ms": t.result.as_ref().and_then(|r| r.as_ref().ok()).map(|m| m.compile_ms),
            "error": t.result.as_ref().and_then(|r| r.as_ref().err()),
            "skipped": t.result.is_none(),
            "chosen": i == out.chosen,
        })).collect::<Vec<_>>(),
    })
}

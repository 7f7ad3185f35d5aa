//! Autotuning on the device: the candidates of a problem's class
//! ([`crate::plan::autotune::candidates`]) recorded and timed on a
//! representative shape, the choice made by the rule of
//! [`crate::plan::autotune::choose`] and remembered in the device's tuning
//! cache.
//!
//! The measuring is async ([`tune_class`], [`autotune()`]): native callers block
//! on it (`TuningMode::Autotune` inside [`crate::attention()`], `attn tune`); a
//! browser cannot block, so a page awaits [`autotune()`] for the classes it will
//! use (with a shorter [`Budget`]), and `TuningMode::Autotune` there reads the
//! choices from the cache (the heuristic's variants for a class not tuned yet).

use web_time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tuning};
use crate::mask::{HostMask, Masking};
use crate::mask_tensor::{MaskKind, MaskTensor};
use crate::plan::autotune::{self, Budget, Measurement, Outcome, Trials};
use crate::plan::{plan, AttentionPath, AttentionProblem, Keys};
use crate::record::{record_plan, KvSource};
use crate::shape::AttnShape;
use crate::tensor::{Layout, Tensor};
use crate::transform::MaskInfo;

/// Timed runs per candidate after its first (compiling) run.
const RUNS: usize = 5;

/// The variants [`crate::TuningMode::Autotune`] uses for `problem` on `gpu`:
/// the cached choice for its class, or (native) the candidates measured now and
/// remembered; in a browser the heuristic until [`autotune()`] has run for the
/// class. The unfused path and KV-cache pages keep `heuristic`.
pub(crate) fn tuned(gpu: &Gpu, problem: &AttentionProblem, heuristic: Tuning) -> Result<Tuning> {
    match choice(gpu, problem, heuristic)? {
        Choice::Untuned => Ok(heuristic),
        Choice::Cached(_, t) => Ok(t),
        #[cfg(target_arch = "wasm32")]
        Choice::Missing(_) => Ok(heuristic),
        #[cfg(not(target_arch = "wasm32"))]
        Choice::Missing(class) => {
            let out =
                pollster::block_on(measure(gpu, problem, heuristic, &class, &Budget::default()))?;
            Ok(out.trials[out.chosen].candidate)
        }
    }
}

/// [`tuned`] without measuring: the cached choice, else the heuristic.
pub(crate) fn tuned_if_cached(
    gpu: &Gpu,
    problem: &AttentionProblem,
    heuristic: Tuning,
) -> Result<Tuning> {
    match choice(gpu, problem, heuristic)? {
        Choice::Cached(_, t) => Ok(t),
        Choice::Untuned | Choice::Missing(_) => Ok(heuristic),
    }
}

/// Where `problem`'s class stands on `gpu`.
enum Choice {
    /// Nothing is tuned for it (the unfused path, KV-cache pages).
    Untuned,
    /// The class (e.g. `fused d64 f32 mask0 nq-many`) and its cached choice.
    Cached(String, Tuning),
    /// The class, not tuned yet.
    Missing(String),
}

/// The class of `problem` on the path `heuristic` takes, and its cached choice.
fn choice(gpu: &Gpu, problem: &AttentionProblem, heuristic: Tuning) -> Result<Choice> {
    let path = plan(problem, gpu.caps(), heuristic)?.path;
    if path == AttentionPath::Unfused || problem.keys != Keys::Tensors {
        return Ok(Choice::Untuned);
    }
    let class = autotune::class_of(problem, path);
    Ok(match gpu.tuned_choice(&class) {
        Some(t) => Choice::Cached(class, gpu.granted_tuning(t)),
        None => Choice::Missing(class),
    })
}

/// [`tune_class`], and the choice remembered for `class`.
async fn measure(
    gpu: &Gpu,
    problem: &AttentionProblem,
    heuristic: Tuning,
    class: &str,
    budget: &Budget,
) -> Result<Outcome<Tuning>> {
    let out = tune_class(gpu, problem, heuristic, budget).await?;
    gpu.remember_tuning(class, out.trials[out.chosen].candidate);
    Ok(out)
}

/// Tunes `problem`'s class within `budget` unless the cache already has it (the
/// browser's way to tune, before the calls that use
/// [`crate::TuningMode::Autotune`]). Returns the class name and the trials when
/// it measured; `None` when the class was cached or its path is not tuned
/// (unfused, KV-cache pages).
pub async fn autotune(
    gpu: &Gpu,
    problem: &AttentionProblem,
    budget: &Budget,
) -> Result<Option<(String, Outcome<Tuning>)>> {
    let heuristic = gpu.tuning();
    match choice(gpu, problem, heuristic)? {
        Choice::Missing(class) => {
            let out = measure(gpu, problem, heuristic, &class, budget).await?;
            Ok(Some((class, out)))
        }
        Choice::Untuned | Choice::Cached(..) => Ok(None),
    }
}

/// Measures `problem`'s class now, cached or not, within `budget`, and
/// remembers the choice (`attn tune`). Returns the class name and the trials;
/// `None` where the problem's path is not tuned (unfused, KV-cache pages).
pub async fn retune(
    gpu: &Gpu,
    problem: &AttentionProblem,
    budget: &Budget,
) -> Result<Option<(String, Outcome<Tuning>)>> {
    let heuristic = gpu.tuning();
    match choice(gpu, problem, heuristic)? {
        Choice::Missing(class) | Choice::Cached(class, _) => {
            let out = measure(gpu, problem, heuristic, &class, budget).await?;
            Ok(Some((class, out)))
        }
        Choice::Untuned => Ok(None),
    }
}

/// Measures every candidate for `problem`'s class on a representative shape
/// (its own, with B = 1 and at most 1024 queries and 4096 keys), on the path the
/// heuristic takes, within `budget` (`attn tune` prints the trials); remembers
/// nothing.
///
/// ```
/// use wgpu_attention::plan::autotune::Budget;
/// use wgpu_attention::{tune, AttentionProblem, AttnShape, Gpu};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let sh = AttnShape { b: 1, hq: 2, hkv: 2, nq: 64, nk: 64, d: 32 };
/// let problem = AttentionProblem::of_shape(sh)?;
/// // A zero time budget measures the heuristic's candidate alone.
/// let budget = Budget { total_ms: 0.0, ..Default::default() };
/// let out = pollster::block_on(tune::tune_class(&gpu, &problem, gpu.tuning(), &budget))?;
/// assert_eq!(out.trials[out.chosen].candidate, gpu.tuning());
/// assert!(out.trials[1..].iter().all(|t| t.result.is_none())); // not measured
/// # Ok(()) }
/// ```
pub async fn tune_class(
    gpu: &Gpu,
    problem: &AttentionProblem,
    heuristic: Tuning,
    budget: &Budget,
) -> Result<Outcome<Tuning>> {
    let path = plan(problem, gpu.caps(), heuristic)?.path;
    let rep = representative(problem, path)?;
    let sh = rep.shape;
    let data = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 17) as f32 - 8.0) / 17.0)
            .collect()
    };
    let q = Tensor::from_bhnd(
        gpu,
        &data(sh.q_len()),
        [sh.b, sh.hq, sh.nq, sh.d],
        Layout::Bhnd,
    )?;
    let kv = [sh.b, sh.hkv, sh.nk, sh.d];
    let k = Tensor::from_bhnd(gpu, &data(sh.kv_len()), kv, Layout::Bhnd)?;
    let v = Tensor::from_bhnd(gpu, &data(sh.kv_len()), kv, Layout::Bhnd)?;
    let mask = match rep.transform.mask.map(|m| m.kind) {
        Some(MaskKind::Additive) => Some(HostMask::additive(
            vec![0.0; sh.nq * sh.nk],
            [1, 1, sh.nq, sh.nk],
        )?),
        Some(MaskKind::Bool) => Some(HostMask::bool(
            vec![true; sh.nq * sh.nk],
            [1, 1, sh.nq, sh.nk],
        )?),
        None => None,
    }
    .map(|m| MaskTensor::upload(gpu, &m))
    .transpose()?;
    let mut rep = rep;
    rep.transform.mask = mask
        .as_ref()
        .map(|m| MaskInfo::of(m, [sh.b, sh.hq, sh.nq, sh.nk]))
        .transpose()?;
    // Candidates whose plans for this shape are the same kernels (decode runs
    // one row per query whatever the rows per lane) are measured once.
    let mut candidates: Vec<Tuning> = Vec::new();
    let mut steps = Vec::new();
    for t in autotune::candidates(gpu.caps(), gpu.granted_tuning(heuristic), sh.d) {
        match plan(&rep, gpu.caps(), t) {
            Ok(pl) if steps.contains(&pl.steps) => continue,
            Ok(pl) => steps.push(pl.steps),
            Err(_) => {}
        }
        candidates.push(t);
    }
    let keys = KvSource::Tensors(&k, &v);
    let run = |t: Tuning, timed: bool| {
        let (rep, q, keys, mask) = (&rep, &q, &keys, mask.as_ref());
        async move {
            let pl = plan(rep, gpu.caps(), t)?;
            if timed {
                if let Ok(mut rec) = gpu.timed_recorder() {
                    record_plan(&mut rec, &pl, rep, q, keys, mask, Default::default())?;
                    return rec.submit_timed().await;
                }
            }
            let t0 = Instant::now();
            let mut rec = gpu.recorder();
            let out = record_plan(&mut rec, &pl, rep, q, keys, mask, Default::default())?;
            rec.submit()?;
            out.o.view(&[1], &[1], 0)?.to_vec().await?;
            Ok(t0.elapsed().as_secs_f64() * 1e3)
        }
    };
    let mut trials = Trials::new(budget);
    for t in candidates {
        if !trials.may_measure() {
            trials.push(t, None);
            continue;
        }
        let measured: Result<Measurement> = async {
            let started = Instant::now();
            let first = run(t, false).await?;
            let mut times = Vec::with_capacity(RUNS);
            for _ in 0..RUNS {
                times.push(run(t, true).await?);
            }
            // Wall time, readbacks and submits included (the timed runs' GPU
            // timestamps leave those out).
            let total_ms = started.elapsed().as_secs_f64() * 1e3;
            times.sort_by(f64::total_cmp);
            let run_ms = times[RUNS / 2];
            Ok(Measurement {
                run_ms,
                compile_ms: (first - run_ms).max(0.0),
                total_ms,
            })
        }
        .await;
        trials.push(t, Some(measured.map_err(|e| e.to_string())));
    }
    trials.pick().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "autotuning {}: no candidate ran on this device",
            autotune::class_of(problem, path)
        ))
    })
}

/// `p` on a shape of the same class that times quickly: B = 1, at most 1024
/// queries (or as few as the class has) and 4096 keys, key lengths clipped, the
/// same path forced.
fn representative(p: &AttentionProblem, path: AttentionPath) -> Result<AttentionProblem> {
    let sh = AttnShape {
        b: 1,
        nq: p.shape.nq.min(1024),
        nk: p.shape.nk.min(if path == AttentionPath::Decode {
            32_768
        } else {
            4096
        }),
        ..p.shape
    };
    let mut rep = AttentionProblem::of_shape(sh)?;
    rep.path = path;
    rep.transform = crate::transform::ScoreTransform {
        masking: Masking {
            key_lengths: p
                .transform
                .masking
                .key_lengths
                .as_ref()
                .map(|l| vec![l[0].min(sh.nk as u32)]),
            ..p.transform.masking.clone()
        },
        diag_off: p.transform.masking.diagonal_offset(sh.nq, sh.nk),
        // The block mask of the representative shape, not the caller's.
        mods: p.transform.mods.as_ref().map(|m| crate::mods::ModRef {
            dims: [sh.b, sh.hq, sh.nq, sh.nk],
            ..m.clone()
        }),
        ..p.transform.clone()
    };
    Ok(rep)
}

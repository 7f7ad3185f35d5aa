//! Choosing kernel variants by measurement: the candidates a device may run
//! for a problem class, and the rule that picks one from their measurements
//! within a time budget. A candidate is a [`Tuning`]: the plan is a function of
//! (problem, device, tuning), so choosing a tuning per class is choosing the
//! plan. The measuring is `crate::tune` (it records plans); the choices are
//! remembered by [`crate::gpu::TuneCache`].

use serde::{Deserialize, Serialize};

use super::problem::AttentionProblem;
use super::AttentionPath;
use crate::gpu::{DeviceCaps, Tuning};
use crate::kernels::flash_attention::head_dim_bucket;
use crate::transform::MaskInfo;

use super::decode::FEW_QUERIES;
#[cfg(test)]
use super::fused::base_variant;
use super::fused::{variant_for, MANY_QUERIES};

/// One candidate's measurement: the median run and its first (cold) compile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Median GPU time of the timed runs, in milliseconds (wall clock where the
    /// device has no timestamp queries).
    pub run_ms: f64,
    /// How much longer the first (compiling) run took than `run_ms`, in
    /// milliseconds: pipeline creation and the driver's cold shader compile.
    pub compile_ms: f64,
    /// Wall time the whole measurement took (the compiling run and every timed
    /// one): what counts against [`Budget::total_ms`].
    #[serde(default)]
    pub total_ms: f64,
}

/// How much tuning may cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Compile and run time spent on one class, at most (the heuristic's own
    /// candidate is always measured).
    pub total_ms: f64,
    /// A candidate that compiles longer than this is chosen only when no
    /// candidate within `close` of its speed compiles faster.
    pub max_compile_ms: f64,
    /// Run-time ratio within which candidates count as equally fast.
    pub close: f64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            total_ms: 60_000.0,
            max_compile_ms: 10_000.0,
            close: 1.05,
        }
    }
}

/// What one candidate gave: its measurement, the error that stopped it, or
/// nothing when the budget ran out first.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial<C> {
    /// What was tried (a [`Tuning`] for the real tuner).
    pub candidate: C,
    /// `Some(Ok)`: measured; `Some(Err)`: the error that stopped it (as text;
    /// never chosen); `None`: not measured, the budget was spent.
    pub result: Option<Result<Measurement, String>>,
}

/// The choice among candidates, with every trial (for `attn tune`'s table).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome<C> {
    /// Index into `trials` of the chosen candidate.
    pub chosen: usize,
    /// Every candidate in the order given, measured or not.
    pub trials: Vec<Trial<C>>,
    /// Compile and run time the measurements took.
    pub spent_ms: f64,
}

/// Measures `candidates` in order with `measure` until `budget.total_ms` is
/// spent (the first, the heuristic's choice, is always measured) and picks the
/// fastest, except that a candidate over `budget.max_compile_ms` loses to any
/// candidate within `budget.close` of its run time that compiles within it. A
/// candidate whose measurement failed is never chosen; `None` when none
/// succeeded.
///
/// ```
/// use wgpu_attention::plan::autotune::{choose, Budget, Measurement};
/// // A fake timer: (median run, cold compile) per candidate, in ms.
/// let times = [(70.0, 1_000.0), (58.6, 51_000.0), (61.0, 900.0)];
/// let measure = |&i: &usize| -> Result<Measurement, String> {
///     let (run_ms, compile_ms) = times[i];
///     Ok(Measurement { run_ms, compile_ms, total_ms: run_ms + compile_ms })
/// };
/// let out = choose(&[0, 1, 2], measure, &Budget::default()).unwrap();
/// // Candidate 1 is fastest but compiles for 51 s, over the 10 s allowed;
/// // candidate 2 is within 5% of its speed and compiles in 0.9 s.
/// assert_eq!(out.trials[out.chosen].candidate, 2);
/// assert_eq!(out.trials.len(), 3);
/// ```
pub fn choose<C: Clone>(
    candidates: &[C],
    mut measure: impl FnMut(&C) -> Result<Measurement, String>,
    budget: &Budget,
) -> Option<Outcome<C>> {
    let mut trials = Trials::new(budget);
    for c in candidates {
        let r = trials.may_measure().then(|| measure(c));
        trials.push(c.clone(), r);
    }
    trials.pick()
}

/// The trials of [`choose`] as they are made, for a caller that measures
/// asynchronously (the browser): ask [`Trials::may_measure`], measure or not,
/// [`Trials::push`] the result, then [`Trials::pick`].
#[derive(Clone, Debug)]
pub struct Trials<C> {
    trials: Vec<Trial<C>>,
    spent: f64,
    budget: Budget,
}

impl<C: Clone> Trials<C> {
    /// No trials yet; measuring may spend up to `budget.total_ms`.
    pub fn new(budget: &Budget) -> Self {
        Trials {
            trials: Vec::new(),
            spent: 0.0,
            budget: *budget,
        }
    }

    /// Whether the next candidate is measured: the first always, the others
    /// while the budget lasts.
    pub fn may_measure(&self) -> bool {
        self.trials.is_empty() || self.spent < self.budget.total_ms
    }

    /// The next candidate's result (`None`: not measured).
    pub fn push(&mut self, candidate: C, result: Option<Result<Measurement, String>>) {
        if let Some(Ok(m)) = &result {
            self.spent += m.total_ms;
        }
        self.trials.push(Trial { candidate, result });
    }

    /// The choice by the rule of [`choose`].
    pub fn pick(self) -> Option<Outcome<C>> {
        pick(self.trials, self.spent, &self.budget)
    }
}

fn pick<C>(trials: Vec<Trial<C>>, spent: f64, budget: &Budget) -> Option<Outcome<C>> {
    let ok: Vec<(usize, Measurement)> = trials
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.result {
            Some(Ok(m)) => Some((i, *m)),
            _ => None,
        })
        .collect();
    let fastest = ok
        .iter()
        .copied()
        .min_by(|a, b| a.1.run_ms.total_cmp(&b.1.run_ms))?;
    let chosen = if fastest.1.compile_ms > budget.max_compile_ms {
        ok.iter()
            .copied()
            .filter(|(_, m)| {
                m.compile_ms <= budget.max_compile_ms && m.run_ms <= fastest.1.run_ms * budget.close
            })
            .min_by(|a, b| a.1.run_ms.total_cmp(&b.1.run_ms))
            .unwrap_or(fastest)
    } else {
        fastest
    };
    Some(Outcome {
        chosen: chosen.0,
        trials,
        spent_ms: spent,
    })
}

/// The candidates for a device: the heuristic's tuning first, then each switch
/// the fused kernels answer to (subgroup sharing off, 4 and (with subgroup
/// sharing) 16 rows per lane;
/// when staged, the tiled kernel's 32 and 128 lanes, 16- and 32-key tiles, 1
/// and 2 rows per row group and D split over 1, 2 and 4 lanes;
/// staging toggled; the scalar kernel where the heuristic takes the
/// cooperative-matrix one), keeping only those that give another fused kernel
/// at head dim `d`.
pub fn candidates(caps: &DeviceCaps, heuristic: Tuning, d: usize) -> Vec<Tuning> {
    let base = heuristic.granted(caps.features);
    let mut tries = vec![base];
    if let Ok(t) = base.with_subgroup(0) {
        tries.push(t);
    }
    // 16 rows only with subgroup sharing: without it (llvmpipe GL) the 16-row
    // straight-line kernel took 67 s to compile at D 32 (4 rows: 5 s), more than
    // any budget allows, and its whole-row loads grow with the rows.
    let rows: &[u32] = if base.subgroup() > 0 { &[4, 16] } else { &[4] };
    for &rows in rows {
        if let Ok(t) = base.with_fused_rows(rows) {
            tries.push(t);
        }
    }
    // The tiled kernel's shapes (real GPUs, browsers): narrower and wider
    // workgroups, shorter tiles.
    if base.staged() {
        for lanes in [32, 128] {
            tries.extend(base.with_tile_lanes(lanes));
        }
        for keys in [16, 32] {
            tries.extend(base.with_tile_keys(keys));
        }
        // The tiled family: one and two rows per group, D split over 1, 2 and
        // 4 lanes (where the device's subgroups allow: others are dropped).
        for rows in [1, 2] {
            tries.extend(base.with_tile_rows(rows));
        }
        for split in [1, 2, 4] {
            tries.extend(base.with_tile_split(split));
        }
    }
    tries.push(base.with_staged(!base.staged()));
    // Where the heuristic takes the cooperative-matrix kernel (f16 Q and K on a
    // GPU listing a shape), the scalar one and the one with P·V on the matrices
    // measured against it: emulated or narrow matrix units can lose (peers
    // measured coop P·V slower than scalar).
    if let Ok(Some(_)) = super::coop::coop_variant(caps, base, d, MANY_QUERIES, true) {
        tries.push(base.with_coop(crate::gpu::Coop::Off));
        tries.push(base.with_coop(crate::gpu::Coop::Full));
    }
    let mut out: Vec<Tuning> = Vec::new();
    let mut seen = Vec::new();
    for t in tries {
        // The variant many f16 queries would get (the coop kernel included);
        // a forced shape the device cannot run is no candidate.
        let Ok(v) = variant_for(caps, t, d, MANY_QUERIES, true) else {
            continue;
        };
        if !seen.contains(&v) {
            seen.push(v);
            out.push(t);
        }
    }
    out
}

/// The class a problem's choice is kept for: path, head-dim bucket, dtype, mask
/// mode and query-count class (1, few, many), e.g. `fused d64 f32 mask0 nq-many`.
pub fn class_of(p: &AttentionProblem, path: AttentionPath) -> String {
    let nq = match p.shape.nq {
        1 => "1",
        n if n <= FEW_QUERIES => "few",
        _ => "many",
    };
    format!(
        "{path:?} d{} {} mask{} nq-{nq}",
        head_dim_bucket(p.shape.d),
        {
            let t = p.dtypes;
            if t == crate::plan::DTypes::all(t.q) {
                t.q.name().to_string()
            } else {
                format!("q{}k{}v{}o{}", t.q, t.k, t.v, t.o)
            }
        },
        MaskInfo::mode(p.transform.mask.as_ref())
    )
    .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(run_ms: f64, compile_ms: f64) -> Result<Measurement, String> {
        Ok(Measurement {
            run_ms,
            compile_ms,
            total_ms: run_ms + compile_ms,
        })
    }

    /// A fake timer: the fastest candidate wins; a failed one never does.
    #[test]
    fn the_fastest_candidate_wins() {
        let times = [
            m(70.0, 1000.0),
            Err("lost".into()),
            m(58.0, 2000.0),
            m(85.0, 900.0),
        ];
        let out = choose(&[0, 1, 2, 3], |&i| times[i].clone(), &Budget::default()).unwrap();
        assert_eq!(out.chosen, 2);
        assert_eq!(out.trials.len(), 4);
        assert!(matches!(out.trials[1].result, Some(Err(_))));
        assert_eq!(out.spent_ms, 70.0 + 1000.0 + 58.0 + 2000.0 + 85.0 + 900.0);
        assert!(choose(&[0], |_| Err("no".into()), &Budget::default()).is_none());
    }

    /// Cold compile counts: a variant over the compile budget loses to a close
    /// one that compiles fast, but not to a much slower one.
    #[test]
    fn compile_budget_is_respected() {
        let b = Budget::default();
        // 61 ms is within 5% of 58.6: the 1 s compile wins over the 51 s one.
        let times = [m(61.0, 1000.0), m(58.6, 51_000.0)];
        assert_eq!(
            choose(&[0, 1], |&i| times[i].clone(), &b).unwrap().chosen,
            0
        );
        // 70 ms is not: the slow compile is worth it.
        let times = [m(70.0, 1000.0), m(58.6, 51_000.0)];
        assert_eq!(
            choose(&[0, 1], |&i| times[i].clone(), &b).unwrap().chosen,
            1
        );
    }

    /// The time budget: once spent, the rest are not measured (the first always is).
    #[test]
    fn time_budget_stops_measuring() {
        let b = Budget {
            total_ms: 1000.0,
            ..Budget::default()
        };
        let mut measured = Vec::new();
        let out = choose(
            &[0, 1, 2],
            |&i| {
                measured.push(i);
                m(100.0, 2000.0)
            },
            &b,
        )
        .unwrap();
        assert_eq!(measured, [0]);
        assert_eq!(out.trials[2].result, None);
        // The whole measurement's wall time counts, not its median run and
        // compile: a candidate whose six runs took 1.2 s stops the next one.
        let mut measured = Vec::new();
        let out = choose(
            &[0, 1],
            |&i| {
                measured.push(i);
                Ok(Measurement {
                    run_ms: 200.0,
                    compile_ms: 0.0,
                    total_ms: 1200.0,
                })
            },
            &b,
        )
        .unwrap();
        assert_eq!(measured, [0]);
        assert_eq!(out.spent_ms, 1200.0);
    }

    fn lavapipe() -> (DeviceCaps, Tuning) {
        let info = wgpu::AdapterInfo {
            name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            driver: "llvmpipe".into(),
            driver_info: "Mesa 22.3.6".into(),
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan)
        };
        let caps = DeviceCaps::new(&info, wgpu::Limits::default(), wgpu::Features::SUBGROUP);
        (caps, Tuning::for_adapter(&info))
    }

    /// On a real GPU (staged): the tiled kernel's workgroup widths and tile
    /// lengths, each a distinct kernel within the device's limits.
    #[test]
    fn gpu_candidates_cover_tile_shapes_within_the_limits() {
        let info = wgpu::AdapterInfo {
            name: "Some GPU".into(),
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan)
        };
        let heuristic = Tuning::for_adapter(&info);
        let caps = DeviceCaps::new(&info, wgpu::Limits::default(), wgpu::Features::empty());
        let kernels: Vec<String> = candidates(&caps, heuristic, 64)
            .iter()
            .map(|&t| {
                variant_for(&caps, t, 64, MANY_QUERIES, true)
                    .unwrap()
                    .describe()
            })
            .collect();
        for want in [
            "64 lanes × 1 row per lane, K/V tiles of 31 keys",
            "32 lanes × 1 row per lane, K/V tiles of 31 keys",
            "128 lanes × 1 row per lane, K/V tiles of 31 keys",
            "64 lanes × 1 row per lane, K/V tiles of 16 keys",
            "64 lanes × 2 rows per lane, K/V tiles of 31 keys",
            // Staging off: the straight-line kernel.
            "flash_attention_cpu: 8 rows",
        ] {
            assert!(
                kernels.iter().any(|k| k.contains(want)),
                "{want}: {kernels:?}"
            );
        }
        // 16 KiB of workgroup memory (WebGPU's default) holds 31 keys at D 64 (16
        // bytes go to the key range): the 32-key candidate is the heuristic's
        // kernel, so it is not measured twice; without SUBGROUP no D split.
        assert_eq!(kernels.len(), 6, "{kernels:?}");
        // A device allowing only 64 invocations per workgroup: no 128-lane kernel.
        let small = DeviceCaps::new(
            &info,
            wgpu::Limits {
                max_compute_invocations_per_workgroup: 64,
                ..wgpu::Limits::default()
            },
            wgpu::Features::empty(),
        );
        let kernels: Vec<String> = candidates(&small, heuristic, 64)
            .iter()
            .map(|&t| {
                variant_for(&small, t, 64, MANY_QUERIES, true)
                    .unwrap()
                    .describe()
            })
            .collect();
        assert!(
            !kernels.iter().any(|k| k.contains("128 lanes")),
            "{kernels:?}"
        );
    }

    /// The candidates: the heuristic first, then one per other fused kernel.
    #[test]
    fn candidates_are_distinct_kernels_heuristic_first() {
        let (caps, t) = lavapipe();
        let c = candidates(&caps, t, 64);
        assert_eq!(c[0], t);
        let kernels: Vec<_> = c
            .iter()
            .map(|&t| base_variant(t, 64, &caps.limits))
            .collect();
        for (i, k) in kernels.iter().enumerate() {
            assert!(!kernels[..i].contains(k), "{k:?} twice");
        }
        // Default (8 rows, subgroups), no subgroups, 4 rows, 16 rows, staged.
        assert_eq!(c.len(), 5);
        // D = 256 caps rows at 2: 4 and 8 rows give the same kernel, 16 does not.
        assert!(candidates(&caps, t, 256).len() < 5);
    }

    #[test]
    fn classes_name_path_bucket_mask_and_queries() {
        let sh = crate::shape::AttnShape {
            b: 1,
            hq: 8,
            hkv: 8,
            nq: 1,
            nk: 4096,
            d: 70,
        };
        let p = AttentionProblem::of_shape(sh).unwrap();
        assert_eq!(
            class_of(&p, AttentionPath::Decode),
            "decode d80 f32 mask0 nq-1"
        );
        let p = AttentionProblem::of_shape(crate::shape::AttnShape { nq: 1024, ..sh }).unwrap();
        assert_eq!(
            class_of(&p, AttentionPath::Fused),
            "fused d80 f32 mask0 nq-many"
        );
    }
}

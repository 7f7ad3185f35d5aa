//! Running a case on a GPU against the f64 reference.

use web_time::Instant;

use super::{inputs, parse_layout, parse_path, Case, CaseResult};
use crate::attention::{attention, AttentionOptions, AttentionPath, TuningMode};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::mask_tensor::MaskTensor;
use crate::reference;
use crate::tensor::Tensor;
use crate::verify::{verify, Report};

/// Runs `case` on `gpu` (all downloads asynchronous: works in a browser) and
/// compares O, LSE and (unfused) the weights with the f64 reference, under the
/// case's tuning, with Q, K, V and O in the case's dtype (each output judged by
/// [`Case::tolerance`]). Outputs are poisoned for the run and the setting restored after.
pub async fn run_case(gpu: &Gpu, case: &Case) -> CaseResult {
    let poison = gpu.poison_outputs();
    gpu.set_poison_outputs(true);
    let out = run_inner(gpu, case).await;
    gpu.set_poison_outputs(poison);
    out.unwrap_or_else(|e| CaseResult::failed(case, e))
}

/// [`run_case`], blocking (native only).
///
/// ```
/// use wgpu_attention::{validation::{run_case_blocking, Case}, DType, Gpu};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let case = Case {
///     name: "small bf16".into(),
///     hq: 2, nq: 5, nk: 7, d: 8,
///     mask: "bool".into(),
///     path: "unfused".into(), // compares the weights too
///     dtype: DType::BF16,
///     ..Default::default()
/// };
/// let r = run_case_blocking(&gpu, &case);
/// assert!(r.pass, "{:?}", r.error);
/// let names: Vec<&str> = r.reports.iter().map(|(n, _)| n.as_str()).collect();
/// assert_eq!(names, ["o", "lse", "weights"]);
/// # Ok(()) }
/// ```
pub fn run_case_blocking(gpu: &Gpu, case: &Case) -> CaseResult {
    pollster::block_on(run_case(gpu, case))
}

async fn run_inner(gpu: &Gpu, case: &Case) -> Result<CaseResult> {
    let sh = case.shape();
    let path = parse_path(&case.path)?;
    let layout = parse_layout(&case.layout)?;
    let p = inputs(case)?;
    let weights = path == AttentionPath::Unfused;

    let t0 = Instant::now();
    // The inputs are already rounded to the dtype: the upload stores them exactly.
    let dt = case.dtype;
    let q = Tensor::from_bhnd_as(gpu, &p.q, [sh.b, sh.hq, sh.nq, sh.d], layout, dt)?;
    let k = Tensor::from_bhnd_as(gpu, &p.k, [sh.b, sh.hkv, sh.nk, sh.d], layout, dt)?;
    let v = Tensor::from_bhnd_as(gpu, &p.v, [sh.b, sh.hkv, sh.nk, sh.d], layout, dt)?;
    let mask = p
        .mask
        .as_ref()
        .map(|m| MaskTensor::upload(gpu, m))
        .transpose()?;
    let opts = AttentionOptions {
        return_weights: weights,
        return_lse: true,
        path,
        tuning: if case.staged.is_none() && case.coop.is_none() {
            TuningMode::Heuristic
        } else {
            let t = gpu.tuning();
            let t = case.staged.map_or(t, |s| t.with_staged(s));
            TuningMode::Fixed(case.coop.map_or(t, |c| t.with_coop(c)))
        },
        ..p.attention_options(mask.as_ref())
    };
    let out = attention(&q, &k, &v, &opts)?;
    if out.o.dtype() != dt {
        return Err(Error::InvalidArgument(format!(
            "O came back as {}, not the case's {dt}",
            out.o.dtype()
        )));
    }
    let o = out.o.to_vec().await?; // logical BHND order whatever the layout
    let lse = match &out.lse {
        Some(t) => t.to_vec().await?,
        None => return Err(Error::InvalidArgument("no LSE returned".into())),
    };
    let w = match &out.weights {
        Some(t) => Some(t.to_vec().await?),
        None => None,
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;

    let want = reference::attention(&p.q, &p.k, &p.v, &sh, &p.reference_options());
    let mut reports = vec![
        ("o".to_string(), verify(&o, &want.o)),
        ("lse".to_string(), verify(&lse, &want.lse)),
    ];
    if let Some(w) = w {
        reports.push(("weights".to_string(), verify(&w, &want.p)));
    }
    let pass = reports
        .iter()
        .all(|(name, r)| r.passes(case.tolerance(name)));
    let worst = |f: fn(&Report) -> f64| reports.iter().map(|(_, r)| f(r)).fold(0.0, f64::max);
    Ok(CaseResult {
        case: case.clone(),
        pass,
        error: None,
        worst_rel_l2: worst(|r| r.rel_l2),
        worst_max_abs: worst(|r| r.max_abs),
        reports,
        ms,
    })
}

//! What `attn bench` measures: the inputs of one configuration, the time of one
//! attention call (GPU timestamps, or wall clock with a readback), the
//! project's GEMM as the ceiling, and the memory the library's plan holds.

use std::time::Instant;

use wgpu_attention::kernels::matmul::record_matmul;
use wgpu_attention::{
    alibi_slopes, plan, record_attention, AttentionOptions, AttentionPath, AttentionProblem, DType,
    Gpu, HostMask, Layout, MaskTensor, Masking, Tensor, TuningMode,
};

use super::configs::Config;
use super::ScoreOption;

/// The uploaded inputs of one configuration, shared by every path and option.
pub struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// The additive `[1, 1, Nq, Nk]` mask of `--options bias` (when asked for).
    bias: Option<MaskTensor>,
    /// ALiBi slopes for the query heads.
    slopes: Vec<f32>,
}

impl Inputs {
    /// Q = 0.1 everywhere, K = V a fixed ramp in [-8/17, 8/17], all three in
    /// `dtype`, and the (f32) bias mask when `with_bias`.
    pub fn upload(
        gpu: &Gpu,
        c: &Config,
        with_bias: bool,
        dtype: DType,
    ) -> wgpu_attention::Result<Inputs> {
        let Config {
            b,
            h,
            hkv,
            nq,
            nk,
            d,
        } = *c;
        let q = Tensor::from_bhnd_as(
            gpu,
            &vec![0.1; b * h * nq * d],
            [b, h, nq, d],
            Layout::Bhnd,
            dtype,
        )?;
        let kv: Vec<f32> = (0..b * hkv * nk * d)
            .map(|i| ((i % 17) as f32 - 8.0) / 17.0)
            .collect();
        let k = Tensor::from_bhnd_as(gpu, &kv, [b, hkv, nk, d], Layout::Bhnd, dtype)?;
        let v = Tensor::from_bhnd_as(gpu, &kv, [b, hkv, nk, d], Layout::Bhnd, dtype)?;
        let bias = if with_bias {
            let vals: Vec<f32> = (0..nq * nk).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
            Some(MaskTensor::upload(
                gpu,
                &HostMask::additive(vals, [1, 1, nq, nk])?,
            )?)
        } else {
            None
        };
        Ok(Inputs {
            q,
            k,
            v,
            bias,
            slopes: alibi_slopes(h),
        })
    }

    /// The library's problem for `opts` on these inputs (`None` where it
    /// refuses them: the run then reports why).
    pub fn problem(&self, opts: &AttentionOptions) -> Option<AttentionProblem> {
        AttentionProblem::new(&self.q, &self.k, &self.v, opts).ok()
    }

    /// The options of one run: `path`, the causal rule, and the score option
    /// `extra` (bias mask, softcap 30, scale 0.1 or ALiBi).
    pub fn options(
        &self,
        path: AttentionPath,
        extra: ScoreOption,
        causal: bool,
        kv_split: Option<usize>,
        tuning: TuningMode,
    ) -> AttentionOptions<'_> {
        AttentionOptions {
            path,
            tuning,
            masking: Masking {
                causal,
                ..Default::default()
            },
            kv_split,
            mask: (extra == ScoreOption::Bias)
                .then_some(self.bias.as_ref())
                .flatten(),
            softcap: (extra == ScoreOption::Softcap).then_some(30.0),
            scale: (extra == ScoreOption::Scale).then_some(0.1),
            alibi: (extra == ScoreOption::Alibi).then_some(&self.slopes[..]),
            ..Default::default()
        }
    }
}

/// What one (configuration, path, option) measured.
pub struct Measurement {
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    /// The warm-up run (pipeline compile included).
    pub first_run_ms: Option<f64>,
    /// Why it could not run.
    pub error: Option<String>,
    /// The library plan's [`wgpu_attention::Plan::peak_bytes`] (0 when it has no plan).
    pub peak_buffer_bytes: u64,
    /// `Attention::kernels` of the warm-up run.
    pub kernels: Option<String>,
}

/// Times `opts` on `inputs`: one warm-up, then `reps` runs; the peak bytes
/// from the library's plan of the same call.
pub fn measure(
    gpu: &Gpu,
    timed: bool,
    inputs: &Inputs,
    opts: &AttentionOptions,
    reps: usize,
) -> Measurement {
    let peak_buffer_bytes = peak_bytes(gpu, inputs, opts);
    match time_path(gpu, timed, inputs, opts, reps) {
        Ok((t, first, kernels)) => Measurement {
            median_ms: Some(median(&t)),
            min_ms: Some(t[0]),
            first_run_ms: Some(first),
            error: None,
            peak_buffer_bytes,
            kernels: Some(kernels),
        },
        Err(e) => Measurement {
            median_ms: None,
            min_ms: None,
            first_run_ms: None,
            error: Some(e.to_string()),
            peak_buffer_bytes,
            kernels: None,
        },
    }
}

/// The library's own plan: what runs and the memory it holds (0 when the
/// problem has no plan on this device; the run then reports the error). Fixed
/// variants (`--coop`, `--path coop`) are planned as they run, others with the
/// device's heuristic tuning.
fn peak_bytes(gpu: &Gpu, inputs: &Inputs, opts: &AttentionOptions) -> u64 {
    let tuning = match opts.tuning {
        TuningMode::Fixed(t) => t,
        _ => gpu.tuning(),
    };
    AttentionProblem::new(&inputs.q, &inputs.k, &inputs.v, opts)
        .and_then(|p| plan(&p, gpu.caps(), tuning))
        .map_or(0, |p| p.peak_bytes())
}

/// Times one run: GPU timestamps when available, else wall clock with a
/// readback; also the kernels that ran.
fn once(
    gpu: &Gpu,
    timed: bool,
    inputs: &Inputs,
    opts: &AttentionOptions,
) -> wgpu_attention::Result<(f64, String)> {
    let Inputs { q, k, v, .. } = inputs;
    if timed {
        let mut rec = gpu.timed_recorder()?;
        let out = record_attention(&mut rec, q, k, v, opts)?;
        return Ok((pollster::block_on(rec.submit_timed())?, out.kernels));
    }
    let t = Instant::now();
    let mut rec = gpu.recorder();
    let out = record_attention(&mut rec, q, k, v, opts)?;
    rec.submit()?;
    out.o.view(&[1], &[1], 0)?.to_vec_blocking()?;
    Ok((t.elapsed().as_secs_f64() * 1e3, out.kernels))
}

/// (sorted times, first-run ms, the kernels).
fn time_path(
    gpu: &Gpu,
    timed: bool,
    inputs: &Inputs,
    opts: &AttentionOptions,
    reps: usize,
) -> wgpu_attention::Result<(Vec<f64>, f64, String)> {
    let cold = Instant::now();
    // Warm-up: pipeline compile (and autotuning of the class when not cached).
    let (_, kernels) = once(gpu, timed, inputs, opts)?;
    let first_ms = cold.elapsed().as_secs_f64() * 1e3;
    let mut t = (0..reps)
        .map(|_| once(gpu, timed, inputs, opts).map(|(ms, _)| ms))
        .collect::<wgpu_attention::Result<Vec<f64>>>()?;
    t.sort_by(f64::total_cmp);
    Ok((t, first_ms, kernels))
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
pub fn gemm_gflops(gpu: &Gpu, timed: bool, n: usize) -> wgpu_attention::Result<f64> {
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

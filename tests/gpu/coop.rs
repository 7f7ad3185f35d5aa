//! The cooperative-matrix fused kernel (`flash_attention_coop.wgsl`) against the
//! f64 reference, on every adapter that lists a usable shape (in CI: Mesa 26's
//! lavapipe, 8x8x8 f16→f32), and its fallbacks everywhere else.
//!
//! `WGPU_ATTENTION_REQUIRE_COOP=1` (CI's Mesa 26 run) makes a missing coop
//! adapter a failure instead of a reported skip.

use super::{gpus, report_skip, rng, run, uniform};
use wgpu_attention::gpu::Coop;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    attention, validation, AttentionOptions, AttentionPath, AttnShape, DType, Error, Gpu, Layout,
    Masking, Tensor, TuningMode,
};

/// Whether `gpu` can run the coop kernel (features granted and a shape listed).
fn has_coop(gpu: &Gpu) -> bool {
    let f = gpu.features();
    f.contains(
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP,
    ) && gpu.caps().coop_shapes.iter().any(|s| {
        s.m == s.n
            && s.n == s.k
            && (s.m == 8 || s.m == 16)
            && s.ab == wgpu::CooperativeScalarType::F16
            && s.cr == wgpu::CooperativeScalarType::F32
    })
}

/// Runs `f` on every adapter with the coop kernel; reports (or, with
/// `WGPU_ATTENTION_REQUIRE_COOP=1`, fails) when there is none.
fn each_coop_gpu(test: &str, f: impl Fn(&Gpu, &str)) {
    let mut ran = false;
    for (gpu, turn) in gpus() {
        let ctx = format!("[{:?}/{}] {test}", gpu.info().backend, gpu.info().name);
        if !has_coop(gpu) {
            report_skip(
                &ctx,
                "no cooperative-matrix shape f16×f16→f32 of 8 or 16 listed",
            );
            continue;
        }
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        f(gpu, &ctx);
        ran = true;
    }
    if !ran && std::env::var("WGPU_ATTENTION_REQUIRE_COOP").is_ok_and(|v| v != "0") {
        panic!("{test}: no adapter lists a cooperative-matrix shape the kernel has, and WGPU_ATTENTION_REQUIRE_COOP is set (run under Mesa 26: .ci/mesa26/)");
    }
}

#[test]
fn coop_kernel_matches_the_reference_over_the_case_matrix() {
    each_coop_gpu("coop case matrix", |gpu, ctx| {
        let cases = validation::coop_cases(false);
        let mut failed = Vec::new();
        let mut worst = std::collections::BTreeMap::new();
        for case in &cases {
            let r = validation::run_case_blocking(gpu, case);
            let w = worst.entry(case.dtype.to_string()).or_insert(0.0f64);
            *w = w.max(r.worst_rel_l2);
            if !r.pass {
                failed.push(format!(
                    "{}: {:?} worst rel L2 {:.2e}",
                    case.name, r.error, r.worst_rel_l2
                ));
            }
        }
        eprintln!(
            "{ctx}: {} cases, worst rel L2 per dtype {worst:?}",
            cases.len()
        );
        assert!(
            failed.is_empty(),
            "{ctx}: {} of {} coop cases failed:\n{}",
            failed.len(),
            cases.len(),
            failed.join("\n")
        );
    });
}

/// The plan really runs the coop kernel when forced (and says so), and the
/// heuristic does not pick it on an unstaged (CPU) tuning.
#[test]
fn forced_coop_is_what_the_plan_runs() {
    each_coop_gpu("coop plan", |gpu, ctx| {
        let sh = AttnShape {
            b: 1,
            hq: 2,
            hkv: 2,
            nq: 40,
            nk: 70,
            d: 64,
        };
        let p = wgpu_attention::AttentionProblem::of_shape(sh).unwrap();
        let on = wgpu_attention::plan(&p, gpu.caps(), gpu.tuning().with_coop(Coop::On)).unwrap();
        assert!(
            on.describe().contains("flash_attention_coop"),
            "{ctx}: {}",
            on.describe()
        );
        let auto = wgpu_attention::plan(&p, gpu.caps(), gpu.tuning()).unwrap();
        if !gpu.tuning().staged() {
            assert!(
                !auto.describe().contains("coop"),
                "{ctx}: {}",
                auto.describe()
            );
        }
    });
}

/// Raw dot products far past f16's range (only an f32 accumulator holds them;
/// a softmax scale of 1/(s²·√D) brings the scores back to O(1), so the test is
/// well conditioned), long key ranges over many tiles with causal skipping, GQA
/// sharing and the LSE, on f16 inputs: B2 Hq6 Hkv2 Nq 77 Nk 300 D 40 (no tile
/// divides any of them), P·V scalar and on the matrices.
#[test]
fn coop_kernel_accumulates_in_f32_over_many_tiles() {
    each_coop_gpu("coop long", |gpu, ctx| {
        let sh = AttnShape {
            b: 2,
            hq: 6,
            hkv: 2,
            nq: 77,
            nk: 300,
            d: 40,
        };
        for (scale, causal) in [(1.0f32, false), (300.0, true)] {
            let (mut r, ctx) = rng(&format!("{ctx} scale={scale} causal={causal}"));
            let round = |x: Vec<f32>| -> Vec<f32> {
                x.into_iter()
                    .map(|v| half::f16::from_f32(v).to_f32())
                    .collect()
            };
            let q = round(uniform(&mut r, sh.q_len(), scale));
            let k = round(uniform(&mut r, sh.kv_len(), scale));
            let v = uniform(&mut r, sh.kv_len(), 1.0);
            let up = |x: &[f32], h, n| {
                Tensor::from_bhnd_as(gpu, x, [sh.b, h, n, sh.d], Layout::Bhnd, DType::F16).unwrap()
            };
            let (qt, kt) = (up(&q, sh.hq, sh.nq), up(&k, sh.hkv, sh.nk));
            let vt = Tensor::from_bhnd(gpu, &v, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bhnd).unwrap();
            let masking = Masking {
                causal,
                ..Default::default()
            };
            let softmax_scale = 1.0 / (scale * scale * (sh.d as f32).sqrt());
            for (path, mode) in [
                (AttentionPath::Fused, Coop::On),
                (AttentionPath::Decode, Coop::On),
                (AttentionPath::Fused, Coop::Full),
            ] {
                let opts = AttentionOptions {
                    scale: Some(softmax_scale),
                    masking: masking.clone(),
                    return_lse: true,
                    path,
                    kv_split: Some(70),
                    tuning: TuningMode::Fixed(gpu.tuning().with_coop(mode)),
                    out_dtype: Some(DType::F32),
                    ..Default::default()
                };
                let out = attention(&qt, &kt, &vt, &opts).unwrap();
                let want = reference::attention(
                    &q,
                    &k,
                    &v,
                    &sh,
                    &ReferenceOptions {
                        scale: Some(softmax_scale as f64),
                        masking: masking.clone(),
                        ..Default::default()
                    },
                );
                let c = format!("{ctx} {path:?} {mode:?}");
                // Raw dots reach ±300²·40 = 3.6e6 (typically ≈1.9e5, past f16's
                // 65 504): only an f32 accumulator holds them; products of f16
                // inputs are exact. With Full, each weight of P is rounded to
                // f16 (2⁻¹² relative): O's error is then absolute, about
                // 2⁻¹²·|v|/√(keys seen), not relative to an element that
                // cancels to near zero (measured: max 4.3e-5 at rel L2 2.7e-4,
                // elements of 0.0099 off by 2e-5), so elements are judged
                // against O's rms (4·2⁻¹¹ of it) and the whole by f16's rel L2.
                let tol = if mode == Coop::Full {
                    Tolerance {
                        elem_abs: 4.0 / 2048.0,
                        ..Tolerance::stored(DType::F16)
                    }
                } else {
                    Tolerance::F32
                };
                assert_close(
                    &out.o.to_vec_blocking().unwrap(),
                    &want.o,
                    tol,
                    &format!("{c} O"),
                );
                assert_close(
                    &out.lse.as_ref().unwrap().to_vec_blocking().unwrap(),
                    &want.lse,
                    Tolerance::F32,
                    &format!("{c} LSE"),
                );
            }
        }
    });
}

/// Without a usable shape: `Coop::On` is a typed error naming what is missing,
/// `Coop::Auto` runs the scalar kernels (and matches the reference).
#[test]
fn without_coop_the_scalar_kernels_run_and_forcing_it_is_a_typed_error() {
    for (gpu, turn) in gpus() {
        if has_coop(gpu) {
            continue;
        }
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        let ctx = format!(
            "[{:?}/{}] coop fallback",
            gpu.info().backend,
            gpu.info().name
        );
        let sh = AttnShape {
            b: 1,
            hq: 2,
            hkv: 1,
            nq: 19,
            nk: 23,
            d: 24,
        };
        let (mut r, ctx) = rng(&ctx);
        let q = uniform(&mut r, sh.q_len(), 1.0);
        let k = uniform(&mut r, sh.kv_len(), 1.0);
        let v = uniform(&mut r, sh.kv_len(), 1.0);
        let t = |x: &[f32], h, n| {
            Tensor::from_bhnd_as(gpu, x, [sh.b, h, n, sh.d], Layout::Bhnd, DType::F16).unwrap()
        };
        let (qt, kt, vt) = (
            t(&q, sh.hq, sh.nq),
            t(&k, sh.hkv, sh.nk),
            t(&v, sh.hkv, sh.nk),
        );
        let opts = |c| AttentionOptions {
            path: AttentionPath::Fused,
            tuning: TuningMode::Fixed(gpu.tuning().with_staged(true).with_coop(c)),
            out_dtype: Some(DType::F32),
            ..Default::default()
        };
        match attention(&qt, &kt, &vt, &opts(Coop::On)) {
            Err(Error::MissingFeature(m)) => assert!(
                m.contains("cooperative") && m.contains("Coop::Auto"),
                "{ctx}: {m}"
            ),
            other => panic!(
                "{ctx}: forced coop without a shape gave {:?}",
                other.map(|_| ())
            ),
        }
        let rd = |x: &[f32]| -> Vec<f32> {
            x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
        };
        let want =
            reference::attention(&rd(&q), &rd(&k), &rd(&v), &sh, &ReferenceOptions::default());
        let out = run(gpu, gpu.tuning(), |rec| {
            wgpu_attention::record_attention(rec, &qt, &kt, &vt, &opts(Coop::Auto))
        });
        assert_close(
            &out.o.to_vec_blocking().unwrap(),
            &want.o,
            Tolerance::F32,
            &format!("{ctx} auto"),
        );
    }
}

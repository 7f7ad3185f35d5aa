//! The public validation matrix (`wgpu_attention::validation`, also run by `attn
//! validate` and the browser page) on every adapter and kernel variant, with fresh
//! seeds.

use crate::{each_gpu_skipping, Skip};
use wgpu_attention::validation::{matrix, run_case_blocking, Case};

#[test]
fn default_matrix_passes_with_fresh_seeds() {
    let skip = [
        Skip::Backend(
            wgpu::Backend::Gl,
            "CI time (see the comment): GL's kernels and paths are covered by the per-kernel and attention tests",
        ),
        Skip::NonDefault("CI time: once per adapter, with its own variant; the browser test runs both"),
    ];
    each_gpu_skipping("validation matrix", &skip, |gpu, t, ctx| {
        // CI time: the matrix compiles ~60 pipelines (each mask-option specialization
        // of the fused kernel per head-dim bucket, plus the unfused kernels). Cold,
        // that took 251 s on llvmpipe-GL with the generic kernel and ~10 min with the
        // straight-line one (GL compiles these ~10 s each), against ~90 s on lavapipe.
        // So it runs once per adapter with the adapter's own variant, and not on GL,
        // whose kernels and paths the per-kernel and attention tests cover; the
        // browser test runs this matrix with both variants on SwiftShader.
        let base: u64 = std::env::var("WGPU_ATTENTION_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        let cases = matrix(false);
        assert!(cases.len() >= 100, "matrix shrank to {} cases", cases.len());
        let mut failures = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let case = Case {
                seed: base.wrapping_add(i as u64),
                staged: Some(t.staged()),
                ..c.clone()
            };
            let r = run_case_blocking(gpu, &case);
            if !r.pass {
                failures.push(format!(
                    "{} seed={}: {}",
                    case.label(),
                    case.seed,
                    r.error
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", r.reports))
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{ctx}: {} of {} cases failed (base seed {base}; rerun with WGPU_ATTENTION_SEED={base}):\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    });
}

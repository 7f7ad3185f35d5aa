//! Mesa's llvmpipe/lavapipe stop every loop of an invocation after 65535 loop
//! iterations in total, silently. Kernels estimate their iterations and refuse
//! (Error::DriverLimit) instead of returning wrong output. These tests pin the
//! estimates from both sides: just under the budget the result matches the
//! reference, just over it is the typed error.

use super::{each_gpu, rng, uniform};
use wgpu_attention::kernels::matmul::record_matmul;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    attention, AttentionOptions, AttentionPath, AttnShape, Error, Layout, Tensor, Tuning,
};

#[test]
fn fused_attention_at_the_loop_budget() {
    each_gpu("fused loop budget", |gpu, t, ctx| {
        if t.staged {
            return; // the fused kernel has one variant so far
        }
        let d = 64;
        // ≈ 59 900 estimated iterations: 1800 keys · (2·64/4 + 1) + 2·4·65; 2100 keys ≈ 69 800.
        for (nk, expect_ok) in [(1800, true), (2100, gpu.loop_budget().is_none())] {
            let sh = AttnShape {
                b: 1,
                hq: 1,
                hkv: 1,
                nq: 3,
                nk,
                d,
            };
            let (mut r, ctx) = rng(&format!("{ctx} {sh:?}"));
            let (q, k, v) = (
                uniform(&mut r, sh.q_len(), 1.0),
                uniform(&mut r, sh.kv_len(), 1.0),
                uniform(&mut r, sh.kv_len(), 1.0),
            );
            let up = |x: &[f32], n| Tensor::from_bhnd(gpu, x, [1, 1, n, d], Layout::Bhnd).unwrap();
            let opts = AttentionOptions {
                path: AttentionPath::Fused,
                ..Default::default()
            };
            match attention(&up(&q, 3), &up(&k, nk), &up(&v, nk), &opts) {
                Ok(out) => {
                    assert!(expect_ok, "{ctx}: over the budget but not refused");
                    let want = reference::attention(&q, &k, &v, &sh, &ReferenceOptions::default());
                    assert_close(
                        &out.o.to_vec_blocking().unwrap(),
                        &want.o,
                        Tolerance::F32,
                        &ctx,
                    );
                }
                Err(e) => assert!(
                    !expect_ok && matches!(e, Error::DriverLimit(_)),
                    "{ctx}: {e}"
                ),
            }
        }
    });
}

#[test]
fn matmul_at_the_loop_budget() {
    each_gpu("matmul loop budget", |gpu, t, ctx| {
        // Unstaged: one iteration per k step; staged: 25 per 16-deep chunk.
        let (under, over) = if t.staged {
            (38_000, 42_000)
        } else {
            (60_000, 70_000)
        };
        let t = Tuning { cpu_rows: 8, ..t };
        for (k, expect_ok) in [(under, true), (over, gpu.loop_budget().is_none())] {
            let (mut r, ctx) = rng(&format!("{ctx} K={k}"));
            let (a, b) = (uniform(&mut r, 2 * k, 1.0), uniform(&mut r, k * 3, 1.0));
            let at = Tensor::from_slice(gpu, &a, &[2, k]).unwrap();
            let bt = Tensor::from_slice(gpu, &b, &[k, 3]).unwrap();
            let mut rec = gpu.recorder().with_tuning(t);
            match record_matmul(&mut rec, &at, &bt, None) {
                Ok(c) => {
                    assert!(expect_ok, "{ctx}: over the budget but not refused");
                    rec.submit().unwrap();
                    let want = reference::matmul(&a, &b, None, 1, 2, k, 3, false);
                    assert_close(&c.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
                }
                Err(e) => assert!(
                    !expect_ok && matches!(e, Error::DriverLimit(_)),
                    "{ctx}: {e}"
                ),
            }
        }
    });
}

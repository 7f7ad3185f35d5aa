//! A long sequence: N = 16 384, one head, D = 64, causal, on the path `Auto`
//! picks (O(N) memory: the unfused scores alone would be 1 GiB, over the 128 MiB
//! binding of lavapipe). Checked against the f64 reference on the first and last
//! 64 query rows, which are exact sub-problems: the first rows with top-left
//! alignment, the last with bottom-right.

use super::{each_gpu_skipping, rng, run, uniform, Skip};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    record_attention, Alignment, AttentionOptions, AttnShape, Layout, Masking, Tensor,
};

#[test]
fn causal_attention_over_16384_positions() {
    let skip = [Skip::Staged(
        "CI time: one variant per adapter (~5 s each on lavapipe)",
    )];
    each_gpu_skipping("N=16384 one head", &skip, |gpu, t, ctx| {
        let (n, d, rows) = (16_384usize, 64usize, 64usize);
        let (mut r, ctx) = rng(ctx);
        let q = uniform(&mut r, n * d, 1.0);
        let k = uniform(&mut r, n * d, 1.0);
        let v = uniform(&mut r, n * d, 1.0);
        let dims = [1, 1, n, d];
        let qt = Tensor::from_bhnd(gpu, &q, dims, Layout::Bhnd).unwrap();
        let kt = Tensor::from_bhnd(gpu, &k, dims, Layout::Bhnd).unwrap();
        let vt = Tensor::from_bhnd(gpu, &v, dims, Layout::Bhnd).unwrap();
        let masking = Masking {
            causal: true,
            ..Default::default()
        };
        let opts = AttentionOptions {
            masking,
            return_lse: true,
            ..Default::default()
        };
        let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &opts));
        let o = out.o.to_vec_blocking().unwrap();
        let lse = out.lse.unwrap().to_vec_blocking().unwrap();
        for (first, alignment) in [(0, Alignment::TopLeft), (n - rows, Alignment::BottomRight)] {
            let sh = AttnShape {
                b: 1,
                hq: 1,
                hkv: 1,
                nq: rows,
                nk: n,
                d,
            };
            let want = reference::attention(
                &q[first * d..(first + rows) * d],
                &k,
                &v,
                &sh,
                &ReferenceOptions {
                    masking: Masking {
                        causal: true,
                        alignment,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            );
            let c = format!("{ctx} rows {first}..{}", first + rows);
            assert_close(
                &o[first * d..(first + rows) * d],
                &want.o,
                Tolerance::F32,
                &format!("{c} O"),
            );
            assert_close(
                &lse[first..first + rows],
                &want.lse,
                Tolerance::F32,
                &format!("{c} LSE"),
            );
        }
    });
}

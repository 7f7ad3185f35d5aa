use super::{each_gpu, rng, run, uniform};
use wgpu_attention::kernels::weighted_sum::record_weighted_sum;
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{reference, AttnShape, Layout, Tensor};

#[test]
fn weighted_sum_matches_reference_across_shapes_and_layouts() {
    each_gpu("weighted_sum", |gpu, t, ctx| {
        for t in super::tile_shapes(t) {
            let ctx = &format!("{ctx} cpu_rows={}", t.cpu_rows());
            for (i, &(b, hq, hkv, nq, nk, d)) in super::scores::SHAPES.iter().enumerate() {
                let sh = AttnShape {
                    b,
                    hq,
                    hkv,
                    nq,
                    nk,
                    d,
                };
                let (v_layout, o_layout) = [
                    (Layout::Bhnd, Layout::Bhnd),
                    (Layout::Bnhd, Layout::Bhnd),
                    (Layout::Bhnd, Layout::Bnhd),
                    (Layout::Bnhd, Layout::Bnhd),
                ][i % 4];
                let (mut r, ctx) = rng(&format!("{ctx} {sh:?} V {v_layout:?} O {o_layout:?}"));
                // Softmax-like rows: non-negative weights.
                let p: Vec<f32> = uniform(&mut r, sh.scores_len(), 1.0)
                    .iter()
                    .map(|x| x.abs() / nk as f32)
                    .collect();
                let v = uniform(&mut r, sh.kv_len(), 1.0);
                let pt = Tensor::from_slice(gpu, &p, &[b, hq, nq, nk]).unwrap();
                let vt = Tensor::from_bhnd(gpu, &v, [b, hkv, nk, d], v_layout).unwrap();
                let o = run(gpu, t, |rec| record_weighted_sum(rec, &pt, &vt, o_layout));
                assert_eq!(o.layout(), o_layout, "{ctx}");
                let p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
                let want = reference::weighted_sum(&p64, &v, &sh);
                assert_close(&o.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
            }
        }
    });
}

use super::{each_gpu, rng, run, uniform};
use wgpu_attention::kernels::scores::record_scores;
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{reference, AttnShape, HostMask, Layout, MaskTensor, Tensor};

/// (B, Hq, Hkv, Nq, Nk, D): sequence lengths 1, 17, 33, 257 and head dims 1..256,
/// odd ones included; none is a multiple of the 32-wide tile.
pub const SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1, 1),
    (2, 2, 2, 17, 33, 3),
    (2, 4, 2, 33, 17, 64),
    (1, 2, 1, 257, 33, 5),
    (1, 1, 1, 33, 257, 256),
    (1, 3, 3, 17, 17, 255),
    (2, 2, 1, 1, 257, 128),
    (1, 2, 2, 257, 1, 7),
];

fn check(
    gpu: &wgpu_attention::Gpu,
    t: wgpu_attention::Tuning,
    ctx: &str,
    sh: AttnShape,
    layouts: (Layout, Layout),
    magnitude: f32,
    with_bias: bool,
) {
    let (mut r, ctx) = rng(&format!(
        "{ctx} {sh:?} {layouts:?} magnitude={magnitude} bias={with_bias}"
    ));
    let q = uniform(&mut r, sh.q_len(), magnitude);
    let k = uniform(&mut r, sh.kv_len(), magnitude);
    let bias = with_bias.then(|| {
        let dims = [sh.b, 1, sh.nq, sh.nk];
        let mut vals = uniform(&mut r, dims.iter().product(), 2.0);
        vals[0] = f32::NEG_INFINITY;
        HostMask::additive(vals, dims).unwrap()
    });
    let qt = Tensor::from_bhnd(gpu, &q, [sh.b, sh.hq, sh.nq, sh.d], layouts.0).unwrap();
    let kt = Tensor::from_bhnd(gpu, &k, [sh.b, sh.hkv, sh.nk, sh.d], layouts.1).unwrap();
    let bt = bias.as_ref().map(|m| MaskTensor::upload(gpu, m).unwrap());
    let s = run(gpu, t, |rec| {
        record_scores(rec, &qt, &kt, None, bt.as_ref(), None, None)
    });
    assert_eq!(s.shape(), [sh.b, sh.hq, sh.nq, sh.nk]);
    let got = s.to_vec_blocking().unwrap();
    let want = reference::scores(&q, &k, &sh, sh.default_scale(), bias.as_ref(), None, None);
    assert_close(&got, &want, Tolerance::F32, &ctx);
}

#[test]
fn scores_match_reference_across_shapes_and_layouts() {
    each_gpu("scores", |gpu, t, ctx| {
        for t in super::tile_shapes(t) {
            let ctx = &format!("{ctx} cpu_rows={}", t.cpu_rows());
            for (i, &(b, hq, hkv, nq, nk, d)) in SHAPES.iter().enumerate() {
                let sh = AttnShape {
                    b,
                    hq,
                    hkv,
                    nq,
                    nk,
                    d,
                };
                let layouts = [
                    (Layout::Bhnd, Layout::Bhnd),
                    (Layout::Bnhd, Layout::Bhnd),
                    (Layout::Bhnd, Layout::Bnhd),
                    (Layout::Bnhd, Layout::Bnhd),
                ][i % 4];
                check(gpu, t, ctx, sh, layouts, 1.0, false);
            }
        }
    });
}

#[test]
fn scores_with_additive_bias() {
    each_gpu("scores bias", |gpu, t, ctx| {
        check(
            gpu,
            t,
            ctx,
            AttnShape {
                b: 2,
                hq: 2,
                hkv: 1,
                nq: 17,
                nk: 33,
                d: 9,
            },
            (Layout::Bnhd, Layout::Bhnd),
            1.0,
            true,
        );
    });
}

#[test]
fn scores_of_magnitude_1e4_stay_finite_and_accurate() {
    each_gpu("scores 1e4", |gpu, t, ctx| {
        // |q|,|k| <= 300 with D = 64: scores reach ~1e4.
        check(
            gpu,
            t,
            ctx,
            AttnShape {
                b: 1,
                hq: 2,
                hkv: 2,
                nq: 33,
                nk: 17,
                d: 64,
            },
            (Layout::Bhnd, Layout::Bhnd),
            300.0,
            false,
        );
    });
}

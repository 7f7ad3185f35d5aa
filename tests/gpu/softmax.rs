use super::{each_gpu, rng, run, uniform};
use wgpu_attention::kernels::softmax::record_softmax;
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    reference, Alignment, Gpu, HostMask, MaskTensor, Masking, Tensor, Tuning, Window,
};

fn check(
    gpu: &Gpu,
    t: Tuning,
    ctx: &str,
    dims: [usize; 4],
    masking: &Masking,
    mask: Option<&HostMask>,
    magnitude: f32,
) {
    let (mut r, ctx) = rng(&format!(
        "{ctx} dims={dims:?} {masking:?} mask={:?} magnitude={magnitude}",
        mask.map(|m| m.dims)
    ));
    let s = uniform(&mut r, dims.iter().product(), magnitude);
    let st = Tensor::from_slice(gpu, &s, &dims).unwrap();
    let mt = mask.map(|m| MaskTensor::upload(gpu, m).unwrap());
    let out = run(gpu, t, |rec| {
        record_softmax(rec, &st, masking, mt.as_ref(), true)
    });
    let s64: Vec<f64> = s.iter().map(|&v| v as f64).collect();
    let want = reference::softmax(&s64, dims, masking, mask);
    let p = out.p.to_vec_blocking().unwrap();
    assert_close(&p, &want.p, Tolerance::F32, &format!("{ctx} P"));
    let lse = out.lse.unwrap().to_vec_blocking().unwrap();
    assert_close(&lse, &want.lse, Tolerance::F32, &format!("{ctx} LSE"));
}

const DIMS: &[[usize; 4]] = &[
    [1, 1, 1, 1],
    [2, 2, 17, 33],
    [1, 3, 33, 17],
    [1, 1, 257, 257],
    [2, 1, 1, 257],
];

#[test]
fn softmax_unmasked_matches_reference() {
    each_gpu("softmax", |gpu, t, ctx| {
        for &dims in DIMS {
            check(gpu, t, ctx, dims, &Masking::default(), None, 3.0);
        }
    });
}

#[test]
fn softmax_of_scores_near_1e4_is_stable() {
    each_gpu("softmax 1e4", |gpu, t, ctx| {
        check(
            gpu,
            t,
            ctx,
            [1, 2, 17, 257],
            &Masking::default(),
            None,
            1.0e4,
        )
    });
}

#[test]
fn softmax_causal_both_alignments() {
    each_gpu("softmax causal", |gpu, t, ctx| {
        for alignment in [Alignment::TopLeft, Alignment::BottomRight] {
            let m = Masking {
                causal: true,
                alignment,
                ..Default::default()
            };
            // Nq > Nk bottom-right leaves the first rows with no key: fully masked rows.
            for dims in [[1, 2, 17, 33], [2, 1, 33, 17], [1, 1, 257, 257]] {
                check(gpu, t, ctx, dims, &m, None, 3.0);
            }
        }
    });
}

#[test]
fn softmax_sliding_window() {
    each_gpu("softmax window", |gpu, t, ctx| {
        for alignment in [Alignment::TopLeft, Alignment::BottomRight] {
            for (w, causal) in [
                (Window { left: 3, right: 2 }, false),
                (Window { left: 5, right: 0 }, true),
                (Window { left: 0, right: 0 }, false),
            ] {
                let m = Masking {
                    causal,
                    window: Some(w),
                    alignment,
                    ..Default::default()
                };
                check(gpu, t, ctx, [1, 2, 33, 17], &m, None, 3.0);
            }
        }
    });
}

#[test]
fn softmax_key_padding_lengths_with_an_empty_batch() {
    each_gpu("softmax key lengths", |gpu, t, ctx| {
        let m = Masking {
            key_lengths: Some(vec![5, 0, 33]),
            ..Default::default()
        };
        check(gpu, t, ctx, [3, 2, 17, 33], &m, None, 3.0);
    });
}

#[test]
fn softmax_bool_mask_broadcast_with_fully_masked_row() {
    each_gpu("softmax bool mask", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        for mdims in [[2, 1, 17, 33], [1, 2, 1, 33], [2, 2, 17, 33], [1, 1, 17, 1]] {
            let n: usize = mdims.iter().product();
            let mut vals: Vec<bool> = (0..n).map(|_| r.random_bool(0.6)).collect();
            // Row 0 of the first (batch, head) slice attends to nothing.
            if mdims[3] > 1 {
                vals[..mdims[3]].iter_mut().for_each(|v| *v = false);
            }
            let mask = HostMask::bool(vals, mdims).unwrap();
            check(
                gpu,
                t,
                ctx,
                [2, 2, 17, 33],
                &Masking::default(),
                Some(&mask),
                3.0,
            );
        }
    });
}

#[test]
fn softmax_additive_mask_with_neg_inf() {
    each_gpu("softmax additive mask", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        let mdims = [1, 2, 17, 33];
        let mut vals = uniform(&mut r, mdims.iter().product(), 4.0);
        for (i, v) in vals.iter_mut().enumerate() {
            if i % 7 == 3 || i < 33 {
                *v = f32::NEG_INFINITY;
            }
        }
        let mask = HostMask::additive(vals, mdims).unwrap();
        check(
            gpu,
            t,
            ctx,
            [2, 2, 17, 33],
            &Masking::default(),
            Some(&mask),
            3.0,
        );
    });
}

#[test]
fn softmax_every_mask_at_once() {
    each_gpu("softmax all masks", |gpu, t, ctx| {
        let (mut r, _) = rng(ctx);
        let mdims = [2, 1, 33, 17];
        let vals: Vec<bool> = (0..mdims.iter().product())
            .map(|_| r.random_bool(0.8))
            .collect();
        let mask = HostMask::bool(vals, mdims).unwrap();
        let m = Masking {
            causal: true,
            window: Some(Window { left: 9, right: 0 }),
            alignment: Alignment::TopLeft,
            key_lengths: Some(vec![17, 11]),
        };
        check(gpu, t, ctx, [2, 3, 33, 17], &m, Some(&mask), 3.0);
    });
}

use rand::Rng;

//! CPU reference in f64: one function per GPU kernel, with the same names.
//!
//! Inputs are f32 in logical contiguous order (`[B, H, N, D]` for Q/K/V/O,
//! `[B, H, Nq, Nk]` for scores and weights); outputs are f64. These functions are
//! written to be read beside the shaders, not to be fast. They know nothing of
//! the GPU.

mod attention;
mod cache_write;
mod cast;
mod decode;
mod matmul;
mod mha;
mod posenc;
mod rms_norm;
mod rope;
mod scores;
mod softmax;
mod weighted_sum;

pub use attention::{attention, AttentionOutput, ReferenceOptions};
pub use cache_write::cache_write;
pub use cast::cast;
pub use decode::decode_combine;
pub use matmul::matmul;
pub use mha::{multi_head_attention, MhaReferenceOptions};
pub use posenc::{posenc, posenc_value};
pub use rms_norm::rms_norm;
pub use rope::{rope, rope_at};
pub use scores::scores;
pub use softmax::{softmax, softmax_with_sinks, SoftmaxOutput};
pub use weighted_sum::weighted_sum;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{Alignment, HostMask, Masking};
    use crate::shape::AttnShape;

    #[test]
    fn softmax_rows_sum_to_one_and_masked_rows_are_zero() {
        let s = [1.0, 2.0, 3.0, 1e4, -1e4, 0.5];
        let m = Masking {
            causal: true,
            alignment: Alignment::BottomRight,
            ..Default::default()
        };
        // Nq = 3 > Nk = 2 bottom-right: row 0 sees nothing.
        let out = softmax(&s, [1, 1, 3, 2], &m, None);
        assert_eq!(&out.p[..2], &[0.0, 0.0]);
        assert_eq!(out.lse[0], f64::NEG_INFINITY);
        assert_eq!(&out.p[2..4], &[1.0, 0.0]);
        assert_eq!(out.lse[1], 3.0);
        let row: f64 = out.p[4..6].iter().sum();
        assert!((row - 1.0).abs() < 1e-15);
        assert!((out.lse[2] - (0.5f64 + ((-1e4f64 - 0.5).exp() + 1.0).ln())).abs() < 1e-12);
    }

    #[test]
    fn additive_neg_inf_excludes_and_large_negative_does_not() {
        let mask = HostMask::additive(vec![f32::NEG_INFINITY, -1e9, 0.0], [1, 1, 1, 3]).unwrap();
        let out = softmax(
            &[0.0, 0.0, 0.0],
            [1, 1, 1, 3],
            &Masking::default(),
            Some(&mask),
        );
        assert_eq!(out.p, vec![0.0, 0.0, 1.0]);
        let all_big = HostMask::additive(vec![-1e9, -1e9], [1, 1, 1, 2]).unwrap();
        let out = softmax(
            &[0.0, 0.0],
            [1, 1, 1, 2],
            &Masking::default(),
            Some(&all_big),
        );
        assert_eq!(out.p, vec![0.5, 0.5]);
    }

    #[test]
    fn attention_with_one_key_copies_its_value_and_gqa_shares_kv() {
        let sh = AttnShape {
            b: 1,
            hq: 2,
            hkv: 1,
            nq: 2,
            nk: 1,
            d: 2,
        };
        let q = [0.3, -0.2, 1.0, 2.0, -1.0, 0.0, 5.0, 5.0];
        let out = attention(
            &q,
            &[0.1, 0.2],
            &[7.0, -3.0],
            &sh,
            &ReferenceOptions::default(),
        );
        assert_eq!(out.o, vec![7.0, -3.0, 7.0, -3.0, 7.0, -3.0, 7.0, -3.0]);
        assert!(out.p.iter().all(|&p| p == 1.0));
    }

    #[test]
    fn scores_scale_and_posenc_values() {
        let sh = AttnShape {
            b: 1,
            hq: 1,
            hkv: 1,
            nq: 1,
            nk: 1,
            d: 4,
        };
        assert_eq!(
            scores(
                &[1.0, 2.0, 3.0, 4.0],
                &[1.0, 1.0, 1.0, 1.0],
                &sh,
                0.5,
                None,
                None,
                None
            ),
            vec![5.0]
        );
        assert_eq!(posenc_value(0, 0, 8), 0.0);
        assert_eq!(posenc_value(0, 1, 8), 1.0);
        assert_eq!(posenc_value(3, 0, 8), 3f64.sin());
        assert!((posenc_value(3, 5, 8) - (3.0 / 10000f64.powf(0.5)).cos()).abs() < 1e-15);
        assert_eq!(posenc(&[1.0, 1.0], 1, 1, 2, 0), vec![1.0, 2.0]);
    }
}

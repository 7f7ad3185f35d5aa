//! Comparing GPU output with the f64 reference.
//!
//! [`verify`] measures; [`assert_close`] fails with a report that explains itself.

use std::fmt;

/// How far a result is from the reference.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// Number of elements compared.
    pub len: usize,
    /// Largest `|got - expected|` over finite pairs.
    pub max_abs: f64,
    /// `‖got - expected‖₂ / ‖expected‖₂` over finite pairs (absolute L2 if the
    /// reference is all zero).
    pub rel_l2: f64,
    /// Flat index of the largest absolute error (or of the first non-finite mismatch).
    pub worst_index: usize,
    /// Value produced there.
    pub worst_got: f64,
    /// Reference value there.
    pub worst_expected: f64,
    /// NaNs in `got`.
    pub nan_count: usize,
    /// Elements where one side is infinite and the other is not the same infinity.
    pub nonfinite_mismatches: usize,
}

impl Report {
    /// True when there are no NaNs or infinity mismatches and `rel_l2 <= tol`.
    pub fn passes(&self, rel_l2_tol: f64) -> bool {
        self.nan_count == 0 && self.nonfinite_mismatches == 0 && self.rel_l2 <= rel_l2_tol
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} max_abs={:.3e} rel_l2={:.3e} worst[{}]: got {} expected {} nan={} inf_mismatch={}",
            self.len,
            self.max_abs,
            self.rel_l2,
            self.worst_index,
            self.worst_got,
            self.worst_expected,
            self.nan_count,
            self.nonfinite_mismatches
        )
    }
}

/// Compares `got` with the f64 reference `expected` (same length and order).
///
/// Infinite reference values (the `-inf` LSE of a fully masked row) must be
/// matched exactly and are left out of the norms.
///
/// # Panics
/// If the lengths differ.
///
/// ```
/// use wgpu_attention::verify::verify;
/// let r = verify(&[1.0, 2.0, 3.5, f32::NEG_INFINITY], &[1.0, 2.0, 3.0, f64::NEG_INFINITY]);
/// assert_eq!((r.max_abs, r.worst_index, r.nan_count), (0.5, 2, 0));
/// assert!((r.rel_l2 - 0.5 / 14f64.sqrt()).abs() < 1e-12); // the -inf pair is left out
/// assert!(!r.passes(1e-5) && r.passes(0.2));
/// println!("{r}"); // n=4 max_abs=5.000e-1 rel_l2=1.336e-1 worst[2]: got 3.5 expected 3 …
/// ```
pub fn verify(got: &[f32], expected: &[f64]) -> Report {
    assert_eq!(
        got.len(),
        expected.len(),
        "verify: got {} values, reference has {}",
        got.len(),
        expected.len()
    );
    let mut r = Report {
        len: got.len(),
        max_abs: 0.0,
        rel_l2: 0.0,
        worst_index: 0,
        worst_got: got.first().map_or(0.0, |&g| g as f64),
        worst_expected: expected.first().copied().unwrap_or(0.0),
        nan_count: 0,
        nonfinite_mismatches: 0,
    };
    let (mut diff2, mut ref2) = (0.0f64, 0.0f64);
    let mut first_bad = None;
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let g = g as f64;
        if g.is_nan() {
            r.nan_count += 1;
            first_bad.get_or_insert(i);
            continue;
        }
        if !e.is_finite() || !g.is_finite() {
            if g != e {
                r.nonfinite_mismatches += 1;
                first_bad.get_or_insert(i);
            }
            continue;
        }
        let d = (g - e).abs();
        diff2 += d * d;
        ref2 += e * e;
        if d > r.max_abs {
            r.max_abs = d;
            r.worst_index = i;
        }
    }
    r.rel_l2 = if ref2 > 0.0 {
        (diff2 / ref2).sqrt()
    } else {
        diff2.sqrt()
    };
    if let Some(i) = first_bad {
        r.worst_index = i;
    }
    if !got.is_empty() {
        r.worst_got = got[r.worst_index] as f64;
        r.worst_expected = expected[r.worst_index];
    }
    r
}

/// Tolerances for [`assert_close`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Bound on the relative L2 error of the whole tensor.
    pub rel_l2: f64,
    /// Per element, the absolute part of the bound, relative to the size of
    /// the whole tensor: `|got - expected| <= elem_abs · rms(expected)`, or
    /// within `elem_rel` (see there).
    pub elem_abs: f64,
    /// Per element, the relative part: `|got - expected| <= elem_rel ·
    /// max(|got|, |expected|)` also passes (so large values are judged by
    /// their own size, small ones by the tensor's rms).
    pub elem_rel: f64,
}

impl Tolerance {
    /// f32 storage and arithmetic against the f64 reference.
    pub const F32: Tolerance = Tolerance {
        rel_l2: 1e-5,
        elem_abs: 1e-4,
        elem_rel: 1e-4,
    };

    /// An output stored in `dtype`, computed in f32 from inputs the reference
    /// read exactly (the half-rounded values): the f32 tolerance plus the one
    /// rounding of each stored element, at most half an ulp relative (f16 2⁻¹¹,
    /// bf16 2⁻⁸; [`crate::DType::unit_roundoff`]), which bounds the relative
    /// L2 error by the same amount. Nothing else differs from f32.
    pub fn stored(dtype: crate::DType) -> Tolerance {
        if dtype == crate::DType::F32 {
            return Tolerance::F32;
        }
        let u = dtype.unit_roundoff();
        Tolerance {
            rel_l2: Tolerance::F32.rel_l2 + u,
            elem_abs: Tolerance::F32.elem_abs,
            elem_rel: Tolerance::F32.elem_rel + u,
        }
    }
}

/// Panics with a full report (and `context`, e.g. the seed and adapter) unless
/// `got` matches `expected` within `tol`, overall and element by element.
/// Returns the [`Report`] when it passes.
///
/// ```
/// use wgpu_attention::verify::{assert_close, Tolerance};
/// let want: Vec<f64> = (0..100).map(|i| (i as f64 * 0.1).sin()).collect();
/// let got: Vec<f32> = want.iter().map(|&v| v as f32).collect(); // f32 rounding only
/// let r = assert_close(&got, &want, Tolerance::F32, "seed=1 lavapipe");
/// assert!(r.rel_l2 < 1e-7);
/// ```
///
/// ```should_panic
/// # use wgpu_attention::verify::{assert_close, Tolerance};
/// // Panics: "seed=7: result differs from the f64 reference (...)".
/// assert_close(&[1.0, 2.0], &[1.0, 2.1], Tolerance::F32, "seed=7");
/// ```
pub fn assert_close(got: &[f32], expected: &[f64], tol: Tolerance, context: &str) -> Report {
    let r = verify(got, expected);
    let finite: Vec<f64> = expected.iter().copied().filter(|e| e.is_finite()).collect();
    let rms = (finite.iter().map(|e| e * e).sum::<f64>() / finite.len().max(1) as f64).sqrt();
    let bad = got.iter().zip(expected).enumerate().find(|&(_, (&g, &e))| {
        e.is_finite()
            && !approx::relative_eq!(
                g as f64,
                e,
                epsilon = tol.elem_abs * rms.max(f64::MIN_POSITIVE),
                max_relative = tol.elem_rel
            )
    });
    if !r.passes(tol.rel_l2) || bad.is_some() {
        let elem = bad.map_or(String::new(), |(i, (g, e))| {
            format!("\n  first element out of tolerance: [{i}] got {g} expected {e}")
        });
        panic!("{context}: result differs from the f64 reference ({tol:?})\n  {r}{elem}");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_measures_errors_nans_and_infinities() {
        let r = verify(&[1.0, 2.0, 3.5], &[1.0, 2.0, 3.0]);
        assert_eq!((r.max_abs, r.worst_index, r.nan_count), (0.5, 2, 0));
        assert!((r.rel_l2 - 0.5 / 14f64.sqrt()).abs() < 1e-12);
        let r = verify(
            &[f32::NAN, f32::NEG_INFINITY, 0.0],
            &[1.0, f64::NEG_INFINITY, f64::NEG_INFINITY],
        );
        assert_eq!(
            (r.nan_count, r.nonfinite_mismatches, r.worst_index),
            (1, 1, 0)
        );
        assert!(!r.passes(1.0));
    }

    #[test]
    #[should_panic(expected = "seed=7")]
    fn assert_close_names_the_context() {
        assert_close(&[1.0, 2.0], &[1.0, 2.1], Tolerance::F32, "seed=7");
    }

    #[test]
    fn assert_close_accepts_f32_rounding() {
        let want: Vec<f64> = (0..100).map(|i| (i as f64 * 0.1).sin()).collect();
        let got: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let r = assert_close(&got, &want, Tolerance::F32, "rounding");
        assert!(r.rel_l2 < 1e-7);
    }
}

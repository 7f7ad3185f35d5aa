//! `--check` of `run` and `mha`: each output's report against the f64
//! reference, printed and judged.

use anyhow::Result;
use wgpu_attention::verify::Report;

use crate::error::CheckFailed;

/// Prints the reports and fails when one is outside `tol`.
pub fn judge(reports: &[(&str, Report)], tol: f64) -> Result<()> {
    let each: Vec<(&str, Report, f64)> = reports.iter().map(|&(n, r)| (n, r, tol)).collect();
    judge_each(&each)
}

/// Prints the reports and fails when one is outside its own relative L2
/// tolerance (the third element).
pub fn judge_each(reports: &[(&str, Report, f64)]) -> Result<()> {
    judge_against(reports, "the f64 reference")
}

/// [`judge_each`] against `against` (what the outputs were compared with).
pub fn judge_against(reports: &[(&str, Report, f64)], against: &str) -> Result<()> {
    let mut failed = Vec::new();
    for &(name, r, tol) in reports {
        let ok = r.passes(tol);
        println!("check {name:<7} {} {r}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failed.push(format!("{name} rel_l2 {:.3e} > {tol:.1e}", r.rel_l2));
        }
    }
    let same = reports.windows(2).all(|w| w[0].2 == w[1].2);
    let what = match reports.first() {
        Some(&(_, _, t)) if same => format!("relative L2 {t:.0e}"),
        _ => format!(
            "relative L2 {}",
            reports
                .iter()
                .map(|(n, _, t)| format!("{n} {t:.1e}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if failed.is_empty() {
        println!("check: every output within {what} of {against}");
        Ok(())
    } else {
        Err(CheckFailed(format!(
            "--check failed: {} (tolerance: {what} of {against}, no NaN, infinities matched)",
            failed.join(", ")
        ))
        .into())
    }
}

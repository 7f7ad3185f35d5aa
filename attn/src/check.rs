//! `--check` of `run` and `mha`: each output's report against the f64
//! reference, printed and judged.

use anyhow::Result;
use wgpu_attention::verify::Report;

use crate::error::CheckFailed;

/// Prints the reports and fails when one is outside `tol`.
pub fn judge(reports: &[(&str, Report)], tol: f64) -> Result<()> {
    let mut failed = Vec::new();
    for (name, r) in reports {
        let ok = r.passes(tol);
        println!("check {name:<7} {} {r}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failed.push(format!("{name} rel_l2 {:.3e}", r.rel_l2));
        }
    }
    if failed.is_empty() {
        println!("check: every output within relative L2 {tol:.0e} of the f64 reference");
        Ok(())
    } else {
        Err(CheckFailed(format!(
            "--check failed: {} (tolerance relative L2 {tol:.0e}, no NaN, infinities matched)",
            failed.join(", ")
        ))
        .into())
    }
}

//! `attn validate`: the JSON report on a file and on stdout, and a filter
//! matching nothing.

use serde_json::Value;

use super::{assert_bad_input, attn, backend, ok, text};

#[test]
fn validate_json_report() {
    let Some(be) = backend("validate --json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = ok(attn(
        be,
        &[
            "validate",
            "--filter",
            "B2 H4/2 N17x17 D7",
            "--filter",
            "mask=alibi",
            "--json",
            &report.display().to_string(),
        ],
    ));
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(v["pass"], true, "{}", text(&out));
    assert_eq!(v["tolerance_rel_l2"].as_f64(), Some(1e-5));
    let adapters = v["adapters"].as_array().unwrap();
    assert!(!adapters.is_empty());
    let results = adapters[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "fused, unfused, decode");
    for r in results {
        assert_eq!(r["pass"], true);
        assert!(r["worst_rel_l2"].as_f64().unwrap() <= 1e-5);
        assert!(r["case"]["name"].as_str().unwrap().contains("mask=alibi"));
    }
    // The table goes to stdout, with the JSON on a file.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3/3 passed"),
        "{}",
        text(&out)
    );

    // JSON on stdout; a filter matching nothing is bad input.
    let out = ok(attn(
        be,
        &[
            "validate",
            "--filter",
            "N17x17 D7",
            "--filter",
            "mask=none",
            "--filter",
            "unfused",
            "--json",
        ],
    ));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["adapters"][0]["results"].as_array().unwrap().len(), 1);
    assert_bad_input(
        attn(be, &["validate", "--filter", "no such case"]),
        &["--filter", "no such case"],
        &dir.path().join("none"),
    );
}

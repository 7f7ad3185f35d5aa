//! `attn tune`: the candidates' table as JSON, the choice kept in the cache
//! file, and `attn info` listing it.

use serde_json::Value;

use wgpu_attention::reference::ReferenceOptions;

use super::{backend, ok, text, Problem};

#[test]
fn tune_measures_candidates_and_keeps_the_choice() {
    let Some(be) = backend("tune --json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache").join("tune.json");
    let run = |args: &[&str]| {
        ok(std::process::Command::new(env!("CARGO_BIN_EXE_attn"))
            .args(args)
            .env("WGPU_BACKEND", be)
            .env("WGPU_ATTENTION_TUNE_CACHE", &cache)
            .output()
            .expect("run attn"))
    };
    let out = run(&["tune", "--n", "40", "--d", "16", "--h", "2", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let class = &v["classes"][0];
    assert_eq!(class["class"], "fused d32 f32 mask0 nq-many", "{v}");
    let cands = class["candidates"].as_array().unwrap();
    assert!(cands.len() >= 2, "{v}");
    assert_eq!(
        cands.iter().filter(|c| c["chosen"] == true).count(),
        1,
        "{v}"
    );
    let chosen = cands.iter().find(|c| c["chosen"] == true).unwrap();
    assert!(chosen["run_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(cache.is_file(), "no cache file at {}", cache.display());
    let info: Value = serde_json::from_slice(&run(&["info", "--json"]).stdout).unwrap();
    let tuned = info[0]["tuned"].as_array().unwrap();
    assert!(
        tuned
            .iter()
            .any(|t| t["class"] == "fused d32 f32 mask0 nq-many"),
        "{info}"
    );
    // --dtype: a class per dtype, named by it.
    let out = run(&[
        "tune",
        "--nq",
        "1",
        "--nk",
        "64",
        "--d",
        "8",
        "--h",
        "2",
        "--dtype",
        "f16",
        "--budget-s",
        "5",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["classes"][0]["dtype"], "f16", "{v}");
    let class = v["classes"][0]["class"].as_str().unwrap();
    assert!(class.contains(" f16 ") && class.contains("nq-1"), "{v}");
}

/// `attn run` autotunes by default: the first run measures the class and keeps
/// the choice in the cache file, the second finds it there; both results match
/// the reference, and `--tuning heuristic` times nothing.
#[test]
fn run_autotunes_by_default() {
    let Some(be) = backend("run (autotune)") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let env = [("WGPU_ATTENTION_TUNE_CACHE", cache.as_os_str())];
    // A small head dim and Nq class of its own: every candidate compiles quickly.
    let p = Problem::new(1, 2, 1, 23, 29, 12, 41);
    let first = text(&ok(p.run_with(be, &["--check"], &env)));
    p.check_outputs("run autotuned", &ReferenceOptions::default());
    assert!(first.contains("kernels (autotune): fused"), "{first}");
    let saved = std::fs::read_to_string(&cache).unwrap_or_default();
    assert!(
        saved.contains("fused d32 f32 mask0 nq-many"),
        "{saved}\n{first}"
    );
    let again = text(&ok(p.run_with(be, &["--check"], &env)));
    p.check_outputs("run autotuned, cached", &ReferenceOptions::default());
    assert_eq!(
        std::fs::read_to_string(&cache).unwrap(),
        saved,
        "the second run tuned again:\n{again}"
    );
    // The heuristic leaves a fresh cache untouched.
    let fresh = dir.path().join("fresh.json");
    ok(p.run_with(
        be,
        &["--tuning", "heuristic"],
        &[("WGPU_ATTENTION_TUNE_CACHE", fresh.as_os_str())],
    ));
    assert!(!fresh.exists(), "heuristic wrote {}", fresh.display());
}

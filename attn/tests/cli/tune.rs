//! `attn tune`: the candidates' table as JSON, the choice kept in the cache
//! file, and `attn info` listing it.

use serde_json::Value;

use super::{backend, ok, runtime_dir};

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
            .env("XDG_RUNTIME_DIR", runtime_dir())
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
}

//! A successful run prints no error lines, even without `XDG_RUNTIME_DIR` (which
//! a fresh CI shell may lack): the Vulkan instance enables no window-system
//! surface extension, so Mesa's device-select layer does not try Wayland (whose
//! library printed `error: XDG_RUNTIME_DIR is invalid or not set …` twice).
//! Every backend is allowed (no `WGPU_BACKEND`), so the choice between them and
//! the enumeration of all of them are both covered.

use std::process::{Command, Output};

use super::{backend, backends, ok, text, Problem};

/// `attn ARGS` with neither `XDG_RUNTIME_DIR` nor `WGPU_BACKEND`.
fn attn_without_runtime_dir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attn"))
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WGPU_BACKEND")
        .env("WGPU_ATTENTION_TUNING", "heuristic")
        .output()
        .expect("run attn")
}

fn assert_no_error_lines(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().to_lowercase().starts_with("error"))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: error lines on stderr {errors:?}:\n{}",
        text(out)
    );
}

#[test]
fn run_without_runtime_dir_prints_no_error() {
    let Some(be) = backend("quiet run") else {
        return;
    };
    let p = Problem::new(1, 2, 1, 8, 8, 16, 21);
    let (q, k, v, o) = (p.p("q.npy"), p.p("k.npy"), p.p("v.npy"), p.p("o.npy"));
    let out = ok(attn_without_runtime_dir(&[
        "run", "--q", &q, "--k", &k, "--v", &v, "--out", &o, "--check",
    ]));
    assert_no_error_lines("run --check", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("check o       PASS"), "{}", text(&out));
    // The choice across the instances is still wgpu's: Vulkan wins ties with GL.
    if be == "vulkan" {
        let adapter = stdout.lines().find(|l| l.starts_with("adapter:"));
        assert!(
            adapter.is_some_and(|l| l.contains("(Vulkan, ")),
            "Vulkan adapter expected:\n{}",
            text(&out)
        );
    }
}

#[test]
fn info_of_every_adapter_without_runtime_dir_prints_no_error() {
    if backend("quiet info").is_none() {
        return;
    }
    let out = ok(attn_without_runtime_dir(&["info", "--json"]));
    assert_no_error_lines("info --json", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let found: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["backend"].as_str().unwrap().to_lowercase())
        .collect();
    // The same adapters as with a runtime dir.
    assert_eq!(&found, backends(), "{}", text(&out));
}

//! The cooperative-matrix kernel on the command line: `info` per head dim,
//! `bench --path coop`, `run --coop`, `validate --coop`. Where the adapter has
//! no cooperative matrices (lavapipe of Mesa 22) they check the error rows and
//! exits; where it has (Mesa 26's lavapipe) that the kernel runs and passes.

use serde_json::Value;

use super::{assert_bad_input, attn, backend, ok, text, Problem};

/// `info --json` of the test backend's first adapter.
fn info(be: &str) -> Value {
    let out = ok(attn(be, &["info", "--json", "--backend", be]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap()[0].clone()
}

/// Whether the adapter can run the coop kernel: `--coop on` names one for D64.
fn runs_coop(a: &Value) -> bool {
    a["fused_kernels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["d"] == 64)
        .and_then(|k| k["coop_on"].as_str())
        .is_some_and(|k| k.starts_with("flash_attention_coop"))
}

#[test]
fn info_names_the_fused_kernel_per_head_dim_and_what_coop_on_runs() {
    let Some(be) = backend("info coop") else {
        return;
    };
    let a = info(be);
    let coop = &a["coop"];
    assert_eq!(coop["mode"], "auto", "{a}");
    assert!(
        coop["granted"].is_boolean() && coop["shapes"].is_array(),
        "{a}"
    );
    // The existing keys stay.
    assert!(a["kernel_variant"]["fused_d64"].is_string(), "{a}");
    assert!(a["features"]["cooperative_matrix_shapes"].is_array(), "{a}");
    let kernels = a["fused_kernels"].as_array().unwrap();
    let dims: Vec<u64> = kernels.iter().map(|k| k["d"].as_u64().unwrap()).collect();
    assert_eq!(dims, [32, 64, 80, 96, 128, 256]);
    for k in kernels {
        for dt in ["f32", "f16"] {
            let name = k[dt].as_str().unwrap();
            assert!(name.starts_with("flash_attention"), "{dt}: {k}");
        }
        for key in ["coop_on", "coop_full"] {
            let on = k[key].as_str().unwrap();
            if coop["granted"] == true && !coop["shapes"].as_array().unwrap().is_empty() {
                // Listed shapes: the kernel or why not (e.g. workgroup memory at D256).
                assert!(
                    on.starts_with("flash_attention_coop") || on.starts_with("none:"),
                    "{key}: {k}"
                );
            } else {
                assert!(
                    on.starts_with("none:") && on.contains("cooperative-matrix"),
                    "{key}: {k}"
                );
            }
        }
    }
    let d64 = &kernels[1];
    assert_eq!(
        a["kernel_variant"]["fused_d64"], d64["f32"],
        "fused_d64 is the f32 kernel of D64"
    );
    // The text names the shapes, every head dim and --coop on.
    let out = ok(attn(be, &["info", "--backend", be]));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("cooperative matrix") && t.contains("coop mode"),
        "{t}"
    );
    for d in ["D32 ", "D64 ", "D80 ", "D96 ", "D128 ", "D256 "] {
        assert!(t.contains(d), "{d}: {t}");
    }
    if runs_coop(&a) {
        assert!(t.contains("coop on   flash_attention_coop"), "{t}");
        assert!(t.contains("coop full "), "{t}");
        assert!(t.contains("f16→f32"), "{t}");
    } else {
        assert!(t.contains("--coop on/full at every D: cannot run:"), "{t}");
    }
}

#[test]
fn bench_coop_path_runs_or_reports_why_not() {
    let Some(be) = backend("bench --path coop") else {
        return;
    };
    let can = runs_coop(&info(be));
    let args = [
        "bench",
        "--path",
        "fused,coop,coop-full",
        "--h",
        "2",
        "--n",
        "32",
        "--d",
        "16",
        "--reps",
        "10",
        "--gemm-n",
        "32",
        "--dtype",
        "f32,f16",
    ];
    let out = ok(attn(be, &[&args[..], &["--json"]].concat()));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 6, "3 paths × 2 dtypes: {v}");
    for r in recs {
        match (r["path"].as_str().unwrap(), can) {
            ("fused", _) => {
                assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
                assert!(r["error"].is_null(), "{r}");
            }
            (p @ ("coop" | "coop-full"), true) => {
                let want = if p == "coop" { "on" } else { "full" };
                assert_eq!(r["coop"], want, "{r}");
                assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
                let k = r["kernels"].as_str().unwrap();
                assert!(k.contains("flash_attention_coop"), "{r}");
            }
            ("coop" | "coop-full", false) => {
                // The row says why, the others still run.
                assert!(r["median_ms"].is_null(), "{r}");
                let e = r["error"].as_str().unwrap();
                assert!(
                    e.contains("cooperative-matrix") && e.contains("--path coop"),
                    "{r}"
                );
            }
            (p, _) => panic!("unexpected path {p}: {r}"),
        }
    }
    // The table: a coop row per dtype, its time or its error.
    let out = ok(attn(be, &args));
    let t = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("coop")).collect();
    assert_eq!(rows.len(), 4, "{t}");
    for row in rows {
        assert_eq!(row.contains("— "), !can, "{row}");
    }
    assert_eq!(t.contains("ratios (coop)"), can, "{t}");
}

#[test]
fn run_and_validate_with_coop() {
    let Some(be) = backend("run --coop") else {
        return;
    };
    let can = runs_coop(&info(be));
    let p = Problem::new(1, 2, 2, 16, 24, 16, 61);
    // Off: the scalar kernels, checked at f32's tolerance.
    let out = ok(p.run(be, &["--path", "fused", "--coop", "off", "--check"]));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("kernels (heuristic, coop off)"), "{t}");
    assert!(!t.contains("flash_attention_coop"), "{t}");
    let on = p.run(be, &["--path", "fused", "--coop", "on", "--check"]);
    if can {
        // f32 Q and K rounded to f16 for Q·Kᵀ: --check allows for it.
        let t = String::from_utf8_lossy(&ok(on).stdout).to_string();
        assert!(t.contains("flash_attention_coop"), "{t}");
        assert!(
            t.contains("tolerance: the cooperative-matrix kernel ran"),
            "{t}"
        );
    } else {
        assert_bad_input(
            on,
            &["cooperative-matrix", "Coop::On"],
            &p.path("never.npy"),
        );
    }

    // validate --coop on: its own cases, every one coop=on or coop=full.
    let listed = ok(attn(be, &["validate", "--coop", "on", "--list"]));
    let names = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(names.lines().count() > 10, "{names}");
    assert!(
        names
            .lines()
            .all(|l| l.contains("coop=on") || l.contains("coop=full")),
        "{names}"
    );
    assert!(!names.contains("unfused"), "{names}");
    let off = ok(attn(
        be,
        &[
            "validate",
            "--coop",
            "off",
            "--filter",
            "N17x17 D7",
            "--list",
        ],
    ));
    let off = String::from_utf8_lossy(&off.stdout).to_string();
    assert!(
        !off.is_empty() && off.lines().all(|l| l.contains("coop=off")),
        "{off}"
    );
    let v = attn(
        be,
        &[
            "validate",
            "--backend",
            be,
            "--coop",
            "on",
            "--filter",
            "N17x17 D7",
            "--json",
            "-",
        ],
    );
    if can {
        let out = ok(v);
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["pass"], true, "{}", text(&out));
        assert_eq!(r["coop"], "on");
        let results = r["adapters"][0]["results"].as_array().unwrap();
        assert!(!results.is_empty());
        assert!(
            results
                .iter()
                .all(|x| x["case"]["coop"] == "on" || x["case"]["coop"] == "full"),
            "{r}"
        );
    } else {
        // No adapter can run it: bad input naming the flag and the reason.
        assert_eq!(v.status.code(), Some(2), "{}", text(&v));
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(
            err.contains("--coop on: no adapter can run the cooperative-matrix kernel"),
            "{}",
            text(&v)
        );
        assert!(
            err.contains("skipped "),
            "the skip is said first: {}",
            text(&v)
        );
    }
    // --coop with --cases: a usage error.
    let out = attn(be, &["validate", "--coop", "on", "--cases", "x.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

//! `attn info` (JSON, and on GL) and `attn viz` (PNGs of the requested size).

use std::path::Path;

use serde_json::Value;

use super::{attn, backend, have_gl, ok, png_size, write_npy, Problem};

#[test]
fn viz_writes_a_png_of_the_requested_size() {
    let Some(be) = backend("viz") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    ok(attn(
        be,
        &[
            "viz",
            "--random",
            "1,2,12,8",
            "--seed",
            "3",
            "--causal",
            "top-left",
            "--window",
            "3,0",
            "--overlay-mask",
            "--head",
            "1",
            "--out",
            &a.display().to_string(),
        ],
    ));
    assert_eq!(png_size(&a), (900, 800));
    let p = Problem::new(2, 2, 2, 6, 9, 8, 12);
    write_npy(&p.path("m.npy"), &[2, 1, 1, 9], &[true; 18]);
    let b = p.p("b.png");
    ok(attn(
        be,
        &[
            "viz",
            "--q",
            &p.p("q.npy"),
            "--k",
            &p.p("k.npy"),
            "--v",
            &p.p("v.npy"),
            "--mask",
            &p.p("m.npy"),
            "--batch",
            "1",
            "--width",
            "640",
            "--height",
            "480",
            "--out",
            &b,
        ],
    ));
    assert_eq!(png_size(Path::new(&b)), (640, 480));
}

#[test]
fn info_json_parses() {
    let Some(be) = backend("info --json") else {
        return;
    };
    let out = ok(attn(be, &["info", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v.as_array().unwrap()[0];
    assert_eq!(a["backend"].as_str().unwrap().to_lowercase(), be);
    for key in ["name", "device_type", "driver"] {
        assert!(a[key].is_string(), "{key}");
    }
    for key in ["f16", "subgroups", "timestamps", "cooperative_matrix"] {
        assert!(a["features"][key].is_boolean(), "features.{key}");
    }
    assert!(a["features"]["subgroup_min_size"].is_u64());
    for key in [
        "max_compute_workgroup_storage_size",
        "max_compute_invocations_per_workgroup",
        "max_storage_buffer_binding_size",
        "max_buffer_size",
        "max_compute_workgroups_per_dimension",
    ] {
        assert!(a["limits"][key].as_u64().unwrap() > 0, "limits.{key}");
    }
    // The fused kernel this adapter runs, named by its shader.
    let fused = a["kernel_variant"]["fused_d64"].as_str().unwrap();
    assert!(fused.starts_with("flash_attention"), "{fused}");
}

#[test]
fn info_on_gl() {
    if !have_gl("info --backend gl") {
        return;
    }
    let out = ok(attn("gl", &["info", "--backend", "gl"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(Gl, ") && stdout.contains("storage binding"),
        "{stdout}"
    );
}

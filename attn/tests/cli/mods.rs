//! `attn run --score-mod / --mask-mod / --mod-buffer / --no-block-mask`:
//! WGSL mods from files on the GPU, `--check` against a second GPU path (the
//! mods have no CPU twin), and bad mods or buffers as exit 2 naming the file.
//! The binary's outputs are also checked here against the f64 reference with
//! the mods' CPU twins (the tests know what the WGSL computes).

use std::path::Path;

use wgpu_attention::mods::{MaskMod, ModData, Mods, ScoreMod};
use wgpu_attention::reference::ReferenceOptions;

use super::{
    assert_bad_input, assert_close, backend, backends, ok, read_npy, text, write_npy, Problem,
};

/// Causal attention within documents: `doc(i)` is the document of position i.
const DOC_MASK: &str = "// Causal attention within documents.
fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {
    return doc(q) == doc(kv) && kv <= q;
}
";

/// A per-key bias scaled by the head.
const KEY_BIAS: &str = "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {
    return score + bias(kv) * f32(h + 1u);
}
";

/// Documents of 20 positions.
fn docs(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| i / 20).collect()
}

#[test]
fn run_doc_mask_mod_check_against_unfused() {
    let Some(be) = backend("run --mask-mod") else {
        return;
    };
    let n = 48;
    let p = Problem::new(1, 2, 1, n, n, 16, 71);
    std::fs::write(p.path("doc.wgsl"), DOC_MASK).unwrap();
    write_npy(&p.path("doc.npy"), &[n], &docs(n));
    let (wgsl, buf) = (p.p("doc.wgsl"), format!("doc={}", p.p("doc.npy")));
    let out = ok(p.run(
        be,
        &[
            "--mask-mod",
            &wgsl,
            "--mod-buffer",
            &buf,
            "--path",
            "fused",
            "--check",
        ],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "mods: mask_mod ",
        "doc.wgsl, buffers doc u32[48], block mask on",
        "the mods have no CPU twin: checked against the unfused path",
        "comparison: the unfused path",
        "check o       PASS",
        "check lse     PASS",
        "within relative L2 1e-5 of the unfused path",
    ] {
        assert!(
            stdout.contains(want),
            "stdout should say {want:?}:\n{}",
            text(&out)
        );
    }
    // No reference check happened, and none is claimed.
    assert!(!stdout.contains("reference: f64"), "{}", text(&out));
    assert!(!stdout.contains("of the f64 reference"), "{}", text(&out));

    // A tolerance the two paths cannot meet: exit 1, naming what was compared.
    let out = p.run(
        be,
        &[
            "--mask-mod",
            &wgsl,
            "--mod-buffer",
            &buf,
            "--path",
            "fused",
            "--check",
            "--tol",
            "1e-15",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--check failed") && stderr.contains("of the unfused path"),
        "{}",
        text(&out)
    );

    // What the binary wrote is the f64 reference with the mod's CPU twin.
    let d = docs(n);
    let mods = Mods::builder()
        .mask_mod(MaskMod::new(DOC_MASK, move |i| {
            d[i.q] == d[i.kv] && i.kv <= i.q
        }))
        .buffer("doc", ModData::U32(docs(n)))
        .build()
        .unwrap();
    p.check_outputs(
        "run --mask-mod doc",
        &ReferenceOptions {
            mods: Some(&mods),
            ..Default::default()
        },
    );
}

#[test]
fn run_score_and_mask_mod_unfused_checked_against_fused() {
    let Some(be) = backend("run --score-mod --path unfused") else {
        return;
    };
    let n = 32;
    let p = Problem::new(1, 2, 2, n, n, 8, 72);
    std::fs::write(p.path("doc.wgsl"), DOC_MASK).unwrap();
    std::fs::write(p.path("bias.wgsl"), KEY_BIAS).unwrap();
    // int64, as np.arange makes it: narrowed to i32.
    let d64: Vec<i64> = docs(n).iter().map(|&x| i64::from(x)).collect();
    write_npy(&p.path("doc.npy"), &[n], &d64);
    let bias: Vec<f32> = (0..n).map(|i| 0.05 * i as f32).collect();
    write_npy(&p.path("bias.npy"), &[n], &bias);
    let w = p.p("w.npy");
    let out = ok(p.run(
        be,
        &[
            "--score-mod",
            &p.p("bias.wgsl"),
            "--mask-mod",
            &p.p("doc.wgsl"),
            "--mod-buffer",
            &format!("doc={}", p.p("doc.npy")),
            "--mod-buffer",
            &format!("bias={}", p.p("bias.npy")),
            "--no-block-mask",
            "--path",
            "unfused",
            "--weights",
            &w,
            "--check",
        ],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "bias.wgsl, mask_mod ",
        "buffers doc i32[32], bias f32[32], block mask off (--no-block-mask)",
        "the mods have no CPU twin: checked against the fused path",
        "check o       PASS",
        "weights not checked",
    ] {
        assert!(
            stdout.contains(want),
            "stdout should say {want:?}:\n{}",
            text(&out)
        );
    }
    assert!(!stdout.contains("check weights PASS"), "{}", text(&out));

    let (d, b) = (docs(n), bias.clone());
    let mods = Mods::builder()
        .score_mod(ScoreMod::new(KEY_BIAS, move |s, i| {
            s + f64::from(b[i.kv]) * (i.h + 1) as f64
        }))
        .mask_mod(MaskMod::new(DOC_MASK, move |i| {
            d[i.q] == d[i.kv] && i.kv <= i.q
        }))
        .buffer("doc", ModData::I32(d64.iter().map(|&x| x as i32).collect()))
        .buffer("bias", ModData::F32(bias))
        .build()
        .unwrap();
    let opts = ReferenceOptions {
        mods: Some(&mods),
        ..Default::default()
    };
    p.check_outputs("run --score-mod --mask-mod unfused", &opts);
    let (shape, got) = read_npy(Path::new(&w));
    assert_eq!(shape, [1, 2, n, n]);
    assert_close("weights", &got, &p.reference(&opts).p);
}

#[test]
fn run_score_mod_alone_check_against_unfused() {
    let Some(be) = backend("run --score-mod alone") else {
        return;
    };
    let n = 32;
    let p = Problem::new(1, 2, 1, n, n, 8, 76);
    std::fs::write(p.path("bias.wgsl"), KEY_BIAS).unwrap();
    let bias: Vec<f32> = (0..n).map(|i| 0.05 * i as f32).collect();
    write_npy(&p.path("bias.npy"), &[n], &bias);
    let out = ok(p.run(
        be,
        &[
            "--score-mod",
            &p.p("bias.wgsl"),
            "--mod-buffer",
            &format!("bias={}", p.p("bias.npy")),
            "--path",
            "fused",
            "--check",
        ],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "bias.wgsl, buffers bias f32[32], block mask off (no mask_mod)",
        "checked against the unfused path",
        "check o       PASS",
    ] {
        assert!(
            stdout.contains(want),
            "stdout should say {want:?}:\n{}",
            text(&out)
        );
    }
    let b = bias.clone();
    let mods = Mods::builder()
        .score_mod(ScoreMod::new(KEY_BIAS, move |s, i| {
            s + f64::from(b[i.kv]) * (i.h + 1) as f64
        }))
        .buffer("bias", ModData::F32(bias))
        .build()
        .unwrap();
    p.check_outputs(
        "run --score-mod alone",
        &ReferenceOptions {
            mods: Some(&mods),
            ..Default::default()
        },
    );
}

/// `run` with `extra` on a small problem whose files are in `p`; these fail
/// before any device work, so they need no adapter.
fn run_bad(p: &Problem, extra: &[&str], needles: &[&str]) {
    let be = backends().first().map_or("vulkan", |s| s.as_str());
    assert_bad_input(p.run(be, extra), needles, &p.path("o.npy"));
}

#[test]
fn run_mod_syntax_error_exits_2_with_file_line() {
    let p = Problem::new(1, 1, 1, 4, 4, 4, 73);
    std::fs::write(
        p.path("my_mask.wgsl"),
        "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    return q >= kv &&;\n}\n",
    )
    .unwrap();
    run_bad(
        &p,
        &["--mask-mod", &p.p("my_mask.wgsl")],
        &["--mask-mod", "my_mask.wgsl:2:", "return q >= kv &&;"],
    );
    // The wrong signature names the file and what the kernels call.
    std::fs::write(
        p.path("sig.wgsl"),
        "fn score_mod(score: f32, q: u32) -> f32 { return score; }\n",
    )
    .unwrap();
    run_bad(
        &p,
        &["--score-mod", &p.p("sig.wgsl")],
        &[
            "--score-mod",
            "sig.wgsl:",
            "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32",
        ],
    );
    run_bad(
        &p,
        &["--score-mod", &p.p("none.wgsl")],
        &["--score-mod", "none.wgsl", "cannot read"],
    );
}

#[test]
fn run_mod_buffer_bad_dtype_shape_or_syntax_exits_2() {
    let p = Problem::new(1, 1, 1, 4, 4, 4, 74);
    std::fs::write(p.path("doc.wgsl"), DOC_MASK).unwrap();
    let wgsl = p.p("doc.wgsl");
    let buf = |f: &str| format!("doc={}", p.p(f));
    write_npy(&p.path("f64.npy"), &[4], &[0f64, 0.0, 1.0, 1.0]);
    run_bad(
        &p,
        &["--mask-mod", &wgsl, "--mod-buffer", &buf("f64.npy")],
        &["--mod-buffer", "f64.npy", "float32, int32 or uint32"],
    );
    write_npy(&p.path("u8.npy"), &[4], &[0u8, 0, 1, 1]);
    run_bad(
        &p,
        &["--mask-mod", &wgsl, "--mod-buffer", &buf("u8.npy")],
        &["--mod-buffer", "u8.npy", "float32, int32 or uint32"],
    );
    write_npy(&p.path("2d.npy"), &[2, 2], &[0u32, 0, 1, 1]);
    run_bad(
        &p,
        &["--mask-mod", &wgsl, "--mod-buffer", &buf("2d.npy")],
        &["--mod-buffer", "2d.npy", "1-D"],
    );
    write_npy(&p.path("big.npy"), &[2], &[0i64, 1 << 40]);
    run_bad(
        &p,
        &["--mask-mod", &wgsl, "--mod-buffer", &buf("big.npy")],
        &["--mod-buffer", "big.npy", "does not fit int32"],
    );
    // No '=': clap's value parser says what it expects.
    run_bad(
        &p,
        &["--mask-mod", &wgsl, "--mod-buffer", &p.p("f64.npy")],
        &["--mod-buffer", "NAME=FILE.npy", "no '='"],
    );
    run_bad(
        &p,
        &[
            "--mask-mod",
            &wgsl,
            "--mod-buffer",
            &format!("={}", p.p("f64.npy")),
        ],
        &["--mod-buffer", "NAME=FILE.npy"],
    );
    // A buffer without a mod, a name twice, a name the kernels reserve.
    run_bad(
        &p,
        &["--mod-buffer", &buf("f64.npy")],
        &["--score-mod", "--mask-mod"],
    );
    write_npy(&p.path("doc.npy"), &[4], &[0u32, 0, 1, 1]);
    run_bad(
        &p,
        &[
            "--mask-mod",
            &wgsl,
            "--mod-buffer",
            &buf("doc.npy"),
            "--mod-buffer",
            &buf("doc.npy"),
        ],
        &["--mod-buffer", "twice"],
    );
    run_bad(
        &p,
        &[
            "--mask-mod",
            &wgsl,
            "--mod-buffer",
            &format!("mask_doc={}", p.p("doc.npy")),
        ],
        &["--mod-buffer", "mask_doc", "clashes"],
    );
    // --no-block-mask needs a mask_mod.
    run_bad(&p, &["--no-block-mask"], &["--mask-mod"]);
    // An int64 buffer whose values fit is accepted: the next check (the key
    // lengths, before any device work) is what fails.
    write_npy(&p.path("i64.npy"), &[4], &[0i64, 0, 1, 1]);
    run_bad(
        &p,
        &[
            "--mask-mod",
            &wgsl,
            "--mod-buffer",
            &buf("i64.npy"),
            "--kv-lengths",
            "9",
        ],
        &["--kv-lengths", "9"],
    );
}

#[test]
fn run_mod_naming_a_missing_buffer_exits_2_with_the_line() {
    let p = Problem::new(1, 1, 1, 4, 4, 4, 75);
    std::fs::write(p.path("doc.wgsl"), DOC_MASK).unwrap();
    run_bad(
        &p,
        &["--mask-mod", &p.p("doc.wgsl")],
        &[
            "--mask-mod",
            "doc.wgsl:3:",
            "`doc`",
            "return doc(q) == doc(kv) && kv <= q;",
            "--mod-buffer doc=FILE.npy",
        ],
    );
    // A buffer of another name does not help.
    write_npy(&p.path("seg.npy"), &[4], &[0u32, 0, 1, 1]);
    run_bad(
        &p,
        &[
            "--mask-mod",
            &p.p("doc.wgsl"),
            "--mod-buffer",
            &format!("seg={}", p.p("seg.npy")),
        ],
        &["doc.wgsl:3:", "`doc`"],
    );
}

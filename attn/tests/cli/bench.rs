//! `attn bench`: the JSON records, peak bytes and the plot; score options
//! against plain.

use serde_json::Value;

use super::{attn, backend, ok, png_size};

#[test]
fn bench_json_records_and_plot() {
    let Some(be) = backend("bench --json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("bench.png");
    let out = ok(attn(
        be,
        &[
            "bench",
            "--path",
            "fused,unfused,decode",
            "--b",
            "1",
            "--h",
            "2",
            "--nq",
            "4,8",
            "--nk",
            "8",
            "--d",
            "8",
            "--reps",
            "10",
            "--gemm-n",
            "64",
            "--json",
            "--plot",
            &plot.display().to_string(),
        ],
    ));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 6, "3 paths × 2 configurations");
    for r in recs {
        for key in [
            "path",
            "b",
            "hq",
            "hkv",
            "nq",
            "nk",
            "d",
            "causal",
            "dtype",
            "median_ms",
            "gflops",
            "adapter",
            "peak_buffer_bytes",
            "gemm_gflops",
        ] {
            assert!(!r[key].is_null(), "{key} in {r}");
        }
        assert_eq!(r["dtype"], "f32");
        assert_eq!(r["reps"], 10);
        assert!(r["median_ms"].as_f64().unwrap() > 0.0);
    }
    let unfused = recs
        .iter()
        .find(|r| r["path"] == "unfused" && r["nq"] == 8)
        .unwrap();
    // Q, K, V, O and the scores + weights of 1·2·8·8.
    let want = 4 * (2 * 8 * 8 + 2 * 2 * 8 * 8 + 2 * 8 * 8 + 2 * 2 * 8 * 8);
    assert_eq!(unfused["peak_buffer_bytes"], want);
    let decode = recs
        .iter()
        .find(|r| r["path"] == "decode" && r["nq"] == 4)
        .unwrap();
    // Q, K, V, O and one split's partial O and LSE (1·2·4·(8 + 1)).
    assert_eq!(
        decode["peak_buffer_bytes"],
        4 * (2 * 4 * 8 + 2 * 2 * 8 * 8 + 2 * 4 * 8 + 2 * 4 * 9)
    );
    assert!(recs.iter().any(|r| r["fused_over_unfused"].is_number()));
    assert_eq!(png_size(&plot), (1100, 650));
}

#[test]
fn bench_score_options_against_plain() {
    let Some(be) = backend("bench --options") else {
        return;
    };
    let args = [
        "bench",
        "--path",
        "fused,unfused",
        "--h",
        "2",
        "--n",
        "16",
        "--d",
        "8",
        "--reps",
        "10",
        "--gemm-n",
        "32",
        "--options",
        "plain,bias,softcap,scale,alibi",
    ];
    let out = ok(attn(be, &[&args[..], &["--json"]].concat()));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 10, "2 paths × 5 options");
    for opt in ["plain", "bias", "softcap", "scale", "alibi"] {
        for path in ["fused", "unfused"] {
            let r = recs
                .iter()
                .find(|r| r["options"] == opt && r["path"] == path)
                .unwrap_or_else(|| panic!("no {path}+{opt} record"));
            assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    // The table reports each option's overhead over plain.
    let out = ok(attn(be, &args));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("overhead over plain"), "{text}");
    assert!(text.matches('%').count() >= 8, "{text}");
}

/// `--targets`: the machine's copy bandwidth and (on a CPU adapter) SIMD peak,
/// and every record against them, in the table and the JSON.
#[test]
fn bench_targets_against_the_machine() {
    let Some(be) = backend("bench --targets") else {
        return;
    };
    let args = [
        "bench",
        "--path",
        "fused,decode",
        "--h",
        "2",
        "--nq",
        "1",
        "--nk",
        "300",
        "--d",
        "16",
        "--reps",
        "10",
        "--gemm-n",
        "32",
        "--targets",
    ];
    let out = ok(attn(be, &[&args[..], &["--json"]].concat()));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 2, "{v}");
    for r in recs {
        let m = &r["machine"];
        assert!(m["copy_gbps"].as_f64().unwrap() > 0.0, "{r}");
        // K and V of 1·2·300·16 f32 over the median time.
        let want = (2 * 2 * 300 * 16 * 4) as f64 / r["median_ms"].as_f64().unwrap() / 1e6;
        let got = r["kv_gbps"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}: {r}");
        assert!(r["of_copy_bandwidth"].as_f64().unwrap() > 0.0, "{r}");
        let kernels = r["kernels"].as_str().unwrap();
        assert!(kernels.starts_with(r["path"].as_str().unwrap()), "{r}");
        // A CPU adapter names its vector width: the SIMD peak follows.
        if r["adapter"].as_str().unwrap().contains(" bits)") {
            assert!(m["simd_peak_gflops"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["of_simd_peak"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let text = String::from_utf8_lossy(&ok(attn(be, &args)).stdout).to_string();
    assert!(text.contains("host copy bandwidth"), "{text}");
    assert!(
        text.contains("of the copy bandwidth; fused/decode time"),
        "{text}"
    );
}

//! Half precision on the command line: f16 `.npy` and bf16 `.safetensors` read
//! as they are and O written in its dtype, `--dtype` converting f32 inputs (in
//! packed f16 storage), a bf16 `.npy` output refused before any GPU work,
//! `validate --dtype f16` and `bench --dtype f32,f16`.

use std::fs::File;
use std::path::Path;

use half::{bf16, f16};
use serde_json::Value;
use wgpu_attention::reference;
use wgpu_attention::verify::{assert_close, verify, Tolerance};
use wgpu_attention::{AttnShape, DType};

use super::{assert_bad_input, attn, backend, ok, read_npy, text, write_npy, Problem, TOL};

/// A `.npy` file's dtype string (`<f2`, `<f4`), shape and values widened to f32.
fn read_npy_any(path: &Path) -> (String, Vec<usize>, Vec<f32>) {
    let npy = npyz::NpyFile::new(std::io::BufReader::new(File::open(path).unwrap())).unwrap();
    let dtype = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => panic!("{}: not a plain dtype: {other:?}", path.display()),
    };
    let shape = npy.shape().iter().map(|&n| n as usize).collect();
    let data = match dtype.as_str() {
        "<f2" => npy
            .into_vec::<f16>()
            .unwrap()
            .into_iter()
            .map(f32::from)
            .collect(),
        "<f4" => npy.into_vec::<f32>().unwrap(),
        other => panic!("{}: unexpected dtype {other}", path.display()),
    };
    (dtype, shape, data)
}

fn widened<T: Copy + Into<f32>>(x: &[T]) -> Vec<f32> {
    x.iter().map(|&v| v.into()).collect()
}

/// Logical BHND data of `[b, h, n, d]` in BNHD order.
fn bnhd(x: &[f32], [b, h, n, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ni in 0..n {
                let src = ((bi * h + hi) * n + ni) * d;
                let dst = ((bi * n + ni) * h + hi) * d;
                out[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    out
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// f16 `.npy` in → f16 `.npy` out, `--check` against the reference on the
/// halves the GPU read (native f16 where the adapter has SHADER_F16).
#[test]
fn run_f16_npy_in_f16_npy_out_with_check() {
    let Some(be) = backend("run f16 .npy") else {
        return;
    };
    let p = Problem::new(2, 4, 2, 5, 7, 8, 41);
    let sh = p.sh;
    let h = |x: &[f32]| x.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
    let (qh, kh, vh) = (h(&p.q), h(&p.k), h(&p.v));
    write_npy(&p.path("qh.npy"), &[2, 4, 5, 8], &qh);
    write_npy(&p.path("kh.npy"), &[2, 2, 7, 8], &kh);
    write_npy(&p.path("vh.npy"), &[2, 2, 7, 8], &vh);
    let (oh, lh) = (p.p("oh.npy"), p.p("lh.npy"));
    let out = ok(attn(
        be,
        &[
            "run",
            "--q",
            &p.p("qh.npy"),
            "--k",
            &p.p("kh.npy"),
            "--v",
            &p.p("vh.npy"),
            "--out",
            &oh,
            "--lse",
            &lh,
            "--check",
        ],
    ));
    let s = stdout(&out);
    assert!(s.contains("dtype: f16"), "{}", text(&out));
    assert!(s.contains("check o       PASS"), "{}", text(&out));
    assert!(s.contains("check lse     PASS"), "{}", text(&out));

    let want = reference::attention(
        &widened(&qh),
        &widened(&kh),
        &widened(&vh),
        &sh,
        &Default::default(),
    );
    let (dtype, shape, o) = read_npy_any(Path::new(&oh));
    assert_eq!(dtype, "<f2", "O of f16 inputs is written as float16");
    assert_eq!(shape, [2, 4, 5, 8]);
    let r = assert_close(&o, &want.o, Tolerance::stored(DType::F16), "f16 O");
    // Stored in f16: rounded past what f32 storage would give.
    assert!(r.rel_l2 > TOL, "O looks f32-accurate: {r}");
    let (lshape, lse) = read_npy(Path::new(&lh));
    assert_eq!(lshape, [2, 4, 5]);
    assert_close(&lse, &want.lse, Tolerance::F32, "f16 inputs: LSE (f32)");
}

/// bf16 `.safetensors` in (BNHD) → O in `.safetensors` as bf16, checked.
#[test]
fn run_bf16_safetensors_to_safetensors() {
    let Some(be) = backend("run bf16 .safetensors") else {
        return;
    };
    let sh = AttnShape {
        b: 1,
        hq: 4,
        hkv: 2,
        nq: 6,
        nk: 9,
        d: 16,
    };
    let p = Problem::new(sh.b, sh.hq, sh.hkv, sh.nq, sh.nk, sh.d, 43);
    let (qd, kd) = ([1, 4, 6, 16], [1, 2, 9, 16]);
    let b16 = |x: &[f32]| x.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>();
    let (qh, kh, vh) = (b16(&p.q), b16(&p.k), b16(&p.v));
    let bytes = |x: &[bf16], dims| {
        bnhd(&widened(x), dims)
            .into_iter()
            .flat_map(|v| bf16::from_f32(v).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let (qb, kb, vb) = (bytes(&qh, qd), bytes(&kh, kd), bytes(&vh, kd));
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let views = vec![
        (
            "q",
            TensorView::new(Dtype::BF16, vec![1, 6, 4, 16], &qb).unwrap(),
        ),
        (
            "k",
            TensorView::new(Dtype::BF16, vec![1, 9, 2, 16], &kb).unwrap(),
        ),
        (
            "v",
            TensorView::new(Dtype::BF16, vec![1, 9, 2, 16], &vb).unwrap(),
        ),
    ];
    let st = p.path("qkv.safetensors");
    std::fs::write(&st, safetensors::serialize(views, None).unwrap()).unwrap();
    let st = st.display().to_string();

    // .npy cannot hold the bf16 O: refused before any GPU work.
    let npy = p.path("o.npy");
    assert_bad_input(
        attn(
            be,
            &[
                "run",
                "--safetensors",
                &st,
                "--layout",
                "bnhd",
                "--out",
                &npy.display().to_string(),
            ],
        ),
        &[
            "--out",
            "bf16",
            "NumPy has no bfloat16",
            ".safetensors",
            "--dtype f16",
        ],
        &npy,
    );

    let os = p.p("o.safetensors");
    let out = ok(attn(
        be,
        &[
            "run",
            "--safetensors",
            &st,
            "--layout",
            "bnhd",
            "--out",
            &os,
            "--check",
        ],
    ));
    let s = stdout(&out);
    assert!(s.contains("dtype: bf16"), "{}", text(&out));
    assert!(s.contains("check o       PASS"), "{}", text(&out));

    let file = std::fs::read(&os).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
    let o = tensors.tensor("o").expect("tensor o in the output");
    assert_eq!(o.dtype(), Dtype::BF16);
    assert_eq!(o.shape(), [1, 6, 4, 16], "O in the input's (BNHD) layout");
    let got: Vec<f32> = o
        .data()
        .chunks_exact(2)
        .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect();
    let want = reference::attention(
        &widened(&qh),
        &widened(&kh),
        &widened(&vh),
        &sh,
        &Default::default(),
    );
    let want_bnhd: Vec<f64> = bnhd(
        &want.o.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        [1, 4, 6, 16],
    )
    .into_iter()
    .map(f64::from)
    .collect();
    let r = assert_close(&got, &want_bnhd, Tolerance::stored(DType::BF16), "bf16 O");
    assert!(
        r.rel_l2 > Tolerance::stored(DType::F16).rel_l2 / 10.0,
        "O looks wider than bf16: {r}"
    );
}

/// `--dtype bf16` with a `.npy` O: exit 2 and why, before the device is
/// opened (an unknown backend would fail later).
#[test]
fn run_dtype_bf16_npy_out_refused() {
    let p = Problem::new(1, 1, 1, 2, 2, 4, 45);
    let o = p.path("o.npy");
    let out = attn(
        "vulkan",
        &[
            "run",
            "--q",
            &p.p("q.npy"),
            "--k",
            &p.p("k.npy"),
            "--v",
            &p.p("v.npy"),
            "--dtype",
            "bf16",
            "--out",
            &o.display().to_string(),
            "--backend",
            "no-such-backend",
        ],
    );
    assert_bad_input(
        out,
        &[
            "--out",
            "--dtype bf16",
            "NumPy has no bfloat16",
            "--out o.safetensors",
            "--dtype f16",
        ],
        &o,
    );
}

/// `--dtype f16` on f32 files, in packed storage (two halves per u32, as on an
/// adapter without SHADER_F16): O as f16, checked against the reference on
/// the rounded inputs, and measurably not the f32 result.
#[test]
fn run_dtype_f16_override_on_f32_inputs_packed() {
    let Some(be) = backend("run --dtype f16") else {
        return;
    };
    let p = Problem::new(1, 2, 2, 6, 11, 8, 47);
    let out = ok(p.run(
        be,
        &["--dtype", "f16", "--f16-storage", "packed", "--check"],
    ));
    let s = stdout(&out);
    assert!(
        s.contains(
            "dtype: f16 (converted from the files' f32/f32/f32 by --dtype), f16 storage packed"
        ),
        "{}",
        text(&out)
    );
    assert!(s.contains("check o       PASS"), "{}", text(&out));
    let r16 = |x: &[f32]| x.iter().map(|&v| DType::F16.round(v)).collect::<Vec<_>>();
    let want = reference::attention(
        &r16(&p.q),
        &r16(&p.k),
        &r16(&p.v),
        &p.sh,
        &Default::default(),
    );
    let (dtype, shape, o) = read_npy_any(&p.path("o.npy"));
    assert_eq!(dtype, "<f2");
    assert_eq!(shape, [1, 2, 6, 8]);
    assert_close(&o, &want.o, Tolerance::stored(DType::F16), "--dtype f16 O");
    let f32_ref = p.reference(&Default::default());
    let r = verify(&o, &f32_ref.o);
    assert!(r.rel_l2 > TOL, "O matches the f32 inputs too closely: {r}");
    let (_, lse) = read_npy(&p.path("lse.npy"));
    assert_close(&lse, &want.lse, Tolerance::F32, "--dtype f16 LSE");
}

/// `validate --dtype f16`: the f16 cases only, each passing with O in f16;
/// the default selection lists every dtype.
#[test]
fn validate_dtype_f16() {
    let Some(be) = backend("validate --dtype f16") else {
        return;
    };
    let list = stdout(&ok(attn(be, &["validate", "--list"])));
    assert!(list.lines().any(|l| l.ends_with(" f16")), "{list}");
    assert!(list.lines().any(|l| l.ends_with(" bf16")), "{list}");
    assert!(
        list.lines().filter(|l| !l.ends_with("f16")).count() >= 100,
        "{list}"
    );

    // The BNHD cases: one per path (fused D80 alibi, unfused D64 bool with the
    // weights, decode D1 softcap), all cheap to compile (the D64 fused kernel of
    // CPU drivers takes ~20 s cold on lavapipe).
    let out = ok(attn(
        be,
        &["validate", "--dtype", "f16", "--filter", "bnhd", "--json"],
    ));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pass"], true, "{}", text(&out));
    assert_eq!(v["dtypes"], serde_json::json!(["f16"]));
    let tol = v["o_tolerance_rel_l2"]["f16"].as_f64().unwrap();
    assert_eq!(tol, Tolerance::stored(DType::F16).rel_l2);
    let results = v["adapters"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{v}");
    for path in ["fused", "unfused", "decode"] {
        assert!(results.iter().any(|r| r["case"]["path"] == path), "{v}");
    }
    for r in results {
        assert_eq!(r["case"]["dtype"], "f16", "{r}");
        assert!(r["case"]["name"].as_str().unwrap().ends_with(" f16"));
        assert_eq!(r["pass"], true, "{r}");
        let o = r["reports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x[0] == "o")
            .unwrap();
        let rel = o[1]["rel_l2"].as_f64().unwrap();
        // Rounded to f16 on store, within the f16 tolerance.
        assert!(rel > TOL && rel <= tol, "{r}");
    }
}

/// `bench --dtype f32,f16`: a row per dtype in the table and the JSON, K/V
/// bytes counted in the row's dtype, the KV cache's tokens per MiB per dtype.
#[test]
fn bench_dtypes_rows_and_kv_bytes() {
    let Some(be) = backend("bench --dtype") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = ok(attn(
        be,
        &[
            "bench",
            "--path",
            "fused",
            "--h",
            "2",
            "--nq",
            "1",
            "--nk",
            "64",
            "--d",
            "16",
            "--reps",
            "10",
            "--gemm-n",
            "32",
            "--dtype",
            "f32,f16",
            "--targets",
            "--json-file",
            &json.display().to_string(),
        ],
    ));
    let s = stdout(&out);
    let rows: Vec<&str> = s.lines().filter(|l| l.starts_with("fused ")).collect();
    assert_eq!(rows.len(), 2, "{s}");
    assert!(
        rows[0].contains(" f32 ") && rows[1].contains(" f16 "),
        "{s}"
    );
    assert!(
        s.contains(
            "B1 Hkv2 D16: f32 4096.0 tokens/MiB (256 B/token), f16 8192.0 tokens/MiB (128 B/token)"
        ),
        "{s}"
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 2, "{v}");
    for (r, (name, size)) in recs.iter().zip([("f32", 4.0), ("f16", 2.0)]) {
        assert_eq!(r["dtype"], name, "{r}");
        assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
        let want = 2.0 * 2.0 * 64.0 * 16.0 * size / r["median_ms"].as_f64().unwrap() / 1e6;
        let got = r["kv_gbps"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}: {r}");
        assert_eq!(
            r["kv_tokens_per_mib"].as_f64(),
            Some(1048576.0 / (2.0 * 2.0 * 16.0 * size))
        );
        assert!(r["kernels"].as_str().unwrap().starts_with("fused"), "{r}");
    }
    assert_eq!(
        recs[1]["storage"],
        if s.contains("native WGSL f16") {
            "f16"
        } else {
            "packed-f16"
        }
    );
}

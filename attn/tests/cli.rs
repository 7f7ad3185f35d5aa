//! The `attn` binary on generated inputs: every `run` option against the f64
//! reference, `mha` against the reference layer, `viz` PNGs, error exits, and
//! the JSON of `info`, `validate` and `bench`.
//!
//! Without an adapter the tests print `SKIPPED …`, or fail when
//! `WGPU_ATTENTION_REQUIRE_ADAPTER=1`. They run on Vulkan when it is present (one
//! test each runs `info` and `run --check` on GL, when GL is present).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use npyz::WriterBuilder;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use wgpu_attention::mask::{Alignment, HostMask, Masking, Window};
use wgpu_attention::reference::{self, MhaReferenceOptions, ReferenceOptions};
use wgpu_attention::verify::{verify, Report};
use wgpu_attention::{alibi_slopes, AttnShape, MhaConfig, MhaWeights};

const TOL: f64 = 1e-5;

/// Backends the binary found (`info --json`), probed once.
fn backends() -> &'static Vec<String> {
    static B: OnceLock<Vec<String>> = OnceLock::new();
    B.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_attn"))
            .args(["info", "--json"])
            .env("XDG_RUNTIME_DIR", runtime_dir())
            .env_remove("WGPU_BACKEND")
            .output()
            .expect("run attn info");
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("info --json is JSON");
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["backend"].as_str().unwrap().to_lowercase())
            .collect()
    })
}

/// The backend the tests use: Vulkan when present, else the first found.
/// `None` (after printing SKIPPED) when there is no adapter; panics instead when
/// `WGPU_ATTENTION_REQUIRE_ADAPTER=1`.
fn backend(test: &str) -> Option<&'static str> {
    let b = backends();
    if b.is_empty() {
        let msg = format!(
            "{test}: no GPU adapter. Install Mesa's software drivers (apt-get install mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri)"
        );
        if std::env::var("WGPU_ATTENTION_REQUIRE_ADAPTER").is_ok_and(|v| v != "0") {
            panic!("{msg} (WGPU_ATTENTION_REQUIRE_ADAPTER is set)");
        }
        eprintln!("SKIPPED {msg}");
        return None;
    }
    Some(if b.iter().any(|x| x == "vulkan") {
        "vulkan"
    } else {
        b[0].as_str()
    })
}

/// GL's EGL wants a runtime dir; a CI shell may have none.
fn runtime_dir() -> PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_dir() => PathBuf::from(d),
        _ => {
            let d = std::env::temp_dir().join(format!("attn-test-xdg-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            }
            d
        }
    })
    .clone()
}

fn attn(backend: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_attn"))
        .args(args)
        .env("WGPU_BACKEND", backend)
        .env("XDG_RUNTIME_DIR", runtime_dir())
        .output()
        .expect("run attn");
    out
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "attn failed:\n{}", text(&out));
    out
}

fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[usize], data: &[T]) {
    let shape: Vec<u64> = shape.iter().map(|&n| n as u64).collect();
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(&shape)
        .writer(BufWriter::new(File::create(path).unwrap()))
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let npy = npyz::NpyFile::new(std::io::BufReader::new(File::open(path).unwrap())).unwrap();
    let shape = npy.shape().iter().map(|&n| n as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn assert_close(what: &str, got: &[f32], want: &[f64]) -> Report {
    let r = verify(got, want);
    assert!(r.passes(TOL), "{what}: {r}");
    r
}

/// A problem with inputs written to a temp dir as BHND f32 .npy.
struct Problem {
    dir: tempfile::TempDir,
    sh: AttnShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Problem {
    fn new(b: usize, hq: usize, hkv: usize, nq: usize, nk: usize, d: usize, seed: u64) -> Self {
        let sh = AttnShape {
            b,
            hq,
            hkv,
            nq,
            nk,
            d,
        };
        let p = Problem {
            dir: tempfile::tempdir().unwrap(),
            sh,
            q: uniform(sh.q_len(), seed),
            k: uniform(sh.kv_len(), seed + 1),
            v: uniform(sh.kv_len(), seed + 2),
        };
        write_npy(&p.path("q.npy"), &[b, hq, nq, d], &p.q);
        write_npy(&p.path("k.npy"), &[b, hkv, nk, d], &p.k);
        write_npy(&p.path("v.npy"), &[b, hkv, nk, d], &p.v);
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `run --q --k --v --out o.npy --lse lse.npy` plus `extra`.
    fn run(&self, backend: &str, extra: &[&str]) -> Output {
        let (q, k, v, o, l) = (
            self.p("q.npy"),
            self.p("k.npy"),
            self.p("v.npy"),
            self.p("o.npy"),
            self.p("lse.npy"),
        );
        let mut args = vec![
            "run", "--q", &q, "--k", &k, "--v", &v, "--out", &o, "--lse", &l,
        ];
        args.extend_from_slice(extra);
        attn(backend, &args)
    }

    fn reference(&self, opts: &ReferenceOptions) -> reference::AttentionOutput {
        reference::attention(&self.q, &self.k, &self.v, &self.sh, opts)
    }

    /// Checks o.npy and lse.npy against the reference; returns the LSE.
    fn check_outputs(&self, what: &str, opts: &ReferenceOptions) -> Vec<f32> {
        let want = self.reference(opts);
        let sh = self.sh;
        let (oshape, o) = read_npy(&self.path("o.npy"));
        assert_eq!(oshape, [sh.b, sh.hq, sh.nq, sh.d], "{what}: O shape");
        assert_close(&format!("{what}: O"), &o, &want.o);
        let (lshape, lse) = read_npy(&self.path("lse.npy"));
        assert_eq!(lshape, [sh.b, sh.hq, sh.nq], "{what}: LSE shape");
        assert_close(&format!("{what}: LSE"), &lse, &want.lse);
        lse
    }
}

/// Runs `run` with `extra` flags and checks O and LSE against the reference with `opts`.
fn check_option(test: &str, p: &Problem, extra: &[&str], opts: ReferenceOptions) -> Vec<f32> {
    let Some(be) = backend(test) else {
        return Vec::new();
    };
    ok(p.run(be, extra));
    p.check_outputs(test, &opts)
}

#[test]
fn run_plain_each_path() {
    let p = Problem::new(2, 4, 2, 5, 7, 8, 1);
    for path in ["auto", "fused", "unfused", "decode"] {
        check_option(
            &format!("run --path {path}"),
            &p,
            &["--path", path],
            ReferenceOptions::default(),
        );
    }
}

#[test]
fn run_causal_top_left() {
    let p = Problem::new(1, 2, 2, 5, 7, 8, 2);
    check_option(
        "run --causal top-left",
        &p,
        &["--causal", "top-left", "--path", "fused"],
        ReferenceOptions {
            masking: Masking {
                causal: true,
                alignment: Alignment::TopLeft,
                ..Default::default()
            },
            ..Default::default()
        },
    );
}

#[test]
fn run_causal_bottom_right_gives_neg_inf_lse_rows() {
    // Nq > Nk bottom-right: the first Nq - Nk rows see no key.
    let p = Problem::new(1, 2, 1, 7, 5, 8, 3);
    for path in ["unfused", "fused"] {
        let lse = check_option(
            "run --causal bottom-right",
            &p,
            &["--causal", "bottom-right", "--path", path],
            ReferenceOptions {
                masking: Masking {
                    causal: true,
                    alignment: Alignment::BottomRight,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        if !lse.is_empty() {
            assert_eq!(
                lse[0],
                f32::NEG_INFINITY,
                "{path}: LSE of a fully masked row"
            );
            assert_eq!(lse[1], f32::NEG_INFINITY);
            assert!(lse[2].is_finite());
        }
    }
}

#[test]
fn run_window() {
    let p = Problem::new(1, 2, 2, 9, 9, 8, 4);
    check_option(
        "run --window",
        &p,
        &["--window", "2,1", "--path", "decode"],
        ReferenceOptions {
            masking: Masking {
                window: Some(Window { left: 2, right: 1 }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
}

#[test]
fn run_bool_mask_broadcast() {
    let p = Problem::new(2, 2, 2, 5, 6, 8, 5);
    let vals: Vec<bool> = uniform(2 * 5 * 6, 50).iter().map(|&x| x > -0.5).collect();
    write_npy(&p.path("mask.npy"), &[2, 1, 5, 6], &vals);
    let host = HostMask::bool(vals, [2, 1, 5, 6]).unwrap();
    check_option(
        "run --mask bool",
        &p,
        &["--mask", &p.p("mask.npy"), "--path", "unfused"],
        ReferenceOptions {
            mask: Some(&host),
            ..Default::default()
        },
    );
}

#[test]
fn run_float_mask_2d_with_neg_inf() {
    let p = Problem::new(1, 2, 2, 4, 6, 8, 6);
    let vals: Vec<f32> = (0..4 * 6)
        .map(|x| {
            if x % 6 > x / 6 + 2 {
                f32::NEG_INFINITY
            } else {
                0.3 * (x % 3) as f32
            }
        })
        .collect();
    // 2-D [Nq, Nk]: broadcast as NumPy does.
    write_npy(&p.path("mask.npy"), &[4, 6], &vals);
    let host = HostMask::additive(vals, [1, 1, 4, 6]).unwrap();
    check_option(
        "run --mask float",
        &p,
        &["--mask", &p.p("mask.npy"), "--path", "fused"],
        ReferenceOptions {
            mask: Some(&host),
            ..Default::default()
        },
    );
}

#[test]
fn run_kv_lengths_list_and_file() {
    let p = Problem::new(3, 2, 2, 4, 7, 8, 7);
    let opts = || ReferenceOptions {
        masking: Masking {
            key_lengths: Some(vec![5, 7, 0]),
            ..Default::default()
        },
        ..Default::default()
    };
    let lse = check_option(
        "run --kv-lengths list",
        &p,
        &["--kv-lengths", "5,7,0"],
        opts(),
    );
    if lse.is_empty() {
        return;
    }
    // Batch 2 sees no key: every LSE of it is -inf.
    assert!(lse[2 * 2 * 4..].iter().all(|&l| l == f32::NEG_INFINITY));
    write_npy(&p.path("lens.npy"), &[3], &[5i64, 7, 0]);
    check_option(
        "run --kv-lengths file",
        &p,
        &["--kv-lengths", &p.p("lens.npy"), "--path", "unfused"],
        opts(),
    );
}

#[test]
fn run_alibi_softcap_scale() {
    let p = Problem::new(1, 4, 2, 6, 6, 8, 8);
    let slopes = alibi_slopes(4);
    check_option(
        "run --alibi",
        &p,
        &["--alibi", "--causal", "top-left"],
        ReferenceOptions {
            alibi: Some(&slopes),
            masking: Masking {
                causal: true,
                alignment: Alignment::TopLeft,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    check_option(
        "run --softcap",
        &p,
        &["--softcap", "0.5", "--path", "unfused"],
        ReferenceOptions {
            softcap: Some(0.5),
            ..Default::default()
        },
    );
    check_option(
        "run --scale",
        &p,
        &["--scale", "1.7", "--path", "fused"],
        ReferenceOptions {
            scale: Some(1.7f32 as f64),
            ..Default::default()
        },
    );
}

/// Logical BHND → BNHD memory order.
fn bnhd(x: &[f32], [b, h, n, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ni in 0..n {
                for di in 0..d {
                    out[((bi * n + ni) * h + hi) * d + di] = x[((bi * h + hi) * n + ni) * d + di];
                }
            }
        }
    }
    out
}

#[test]
fn run_layout_bnhd_f16_and_safetensors() {
    let Some(be) = backend("run --layout bnhd") else {
        return;
    };
    let p = Problem::new(2, 4, 2, 5, 3, 8, 9);
    let sh = p.sh;
    let (qd, kd) = ([2, 4, 5, 8], [2, 2, 3, 8]);
    write_npy(&p.path("qb.npy"), &[2, 5, 4, 8], &bnhd(&p.q, qd));
    write_npy(&p.path("kb.npy"), &[2, 3, 2, 8], &bnhd(&p.k, kd));
    write_npy(&p.path("vb.npy"), &[2, 3, 2, 8], &bnhd(&p.v, kd));
    let (q, k, v, o) = (p.p("qb.npy"), p.p("kb.npy"), p.p("vb.npy"), p.p("ob.npy"));
    let want = p.reference(&ReferenceOptions::default());
    for path in ["fused", "unfused"] {
        ok(attn(
            be,
            &[
                "run", "--q", &q, "--k", &k, "--v", &v, "--layout", "bnhd", "--out", &o, "--path",
                path,
            ],
        ));
        let (shape, got) = read_npy(&p.path("ob.npy"));
        assert_eq!(shape, [2, 5, 4, 8], "O is written in the input's layout");
        let want_bnhd: Vec<f64> = bnhd(
            &want.o.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            [sh.b, sh.hq, sh.nq, sh.d],
        )
        .into_iter()
        .map(f64::from)
        .collect();
        // The f32 rounding of the reference is far below the tolerance.
        assert_close(&format!("bnhd {path}"), &got, &want_bnhd);
    }

    // f16 inputs: the reference on the same (rounded) values.
    let h = |x: &[f32]| {
        x.iter()
            .map(|&v| half::f16::from_f32(v))
            .collect::<Vec<_>>()
    };
    let f = |x: &[half::f16]| x.iter().map(|&v| v.to_f32()).collect::<Vec<_>>();
    let (qh, kh, vh) = (h(&p.q), h(&p.k), h(&p.v));
    write_npy(&p.path("qh.npy"), &[2, 4, 5, 8], &qh);
    write_npy(&p.path("kh.npy"), &[2, 2, 3, 8], &kh);
    write_npy(&p.path("vh.npy"), &[2, 2, 3, 8], &vh);
    let oh = p.p("oh.npy");
    ok(attn(
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
        ],
    ));
    let want_h = reference::attention(&f(&qh), &f(&kh), &f(&vh), &sh, &Default::default());
    assert_close("f16 inputs", &read_npy(Path::new(&oh)).1, &want_h.o);

    // .safetensors with custom names.
    let bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let (qb, kb, vb) = (bytes(&p.q), bytes(&p.k), bytes(&p.v));
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let views = vec![
        (
            "attn.q".to_string(),
            TensorView::new(Dtype::F32, vec![2, 4, 5, 8], &qb).unwrap(),
        ),
        (
            "attn.k".to_string(),
            TensorView::new(Dtype::F32, vec![2, 2, 3, 8], &kb).unwrap(),
        ),
        (
            "attn.v".to_string(),
            TensorView::new(Dtype::F32, vec![2, 2, 3, 8], &vb).unwrap(),
        ),
    ];
    std::fs::write(
        p.path("qkv.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let os = p.p("os.npy");
    ok(attn(
        be,
        &[
            "run",
            "--safetensors",
            &p.p("qkv.safetensors"),
            "--q-name",
            "attn.q",
            "--k-name",
            "attn.k",
            "--v-name",
            "attn.v",
            "--out",
            &os,
        ],
    ));
    assert_close("safetensors inputs", &read_npy(Path::new(&os)).1, &want.o);
}

#[test]
fn run_weights_and_check() {
    let Some(be) = backend("run --weights") else {
        return;
    };
    let p = Problem::new(1, 2, 1, 4, 6, 8, 10);
    let w = p.p("p.npy");
    let out = ok(p.run(be, &["--weights", &w, "--causal", "top-left", "--check"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("check weights PASS"), "{}", text(&out));
    let want = p.reference(&ReferenceOptions {
        masking: Masking {
            causal: true,
            alignment: Alignment::TopLeft,
            ..Default::default()
        },
        ..Default::default()
    });
    let (shape, got) = read_npy(Path::new(&w));
    assert_eq!(shape, [1, 2, 4, 6]);
    assert_close("weights", &got, &want.p);

    // A tolerance no f32 result meets: the check fails with exit 1, outputs still written.
    std::fs::remove_file(p.path("o.npy")).unwrap();
    let out = p.run(be, &["--check", "--tol", "1e-15"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--check failed"));
    assert!(p.path("o.npy").exists());
}

/// Whether a GL adapter is present; when not, SKIPPED, or a failure when
/// `WGPU_ATTENTION_REQUIRE_BACKENDS` names gl (as CI sets it).
fn have_gl(test: &str) -> bool {
    if backend(test).is_none() {
        return false;
    }
    if backends().iter().any(|b| b == "gl") {
        return true;
    }
    let required = std::env::var("WGPU_ATTENTION_REQUIRE_BACKENDS")
        .is_ok_and(|v| v.split(',').any(|b| b.trim().eq_ignore_ascii_case("gl")));
    assert!(
        !required,
        "{test}: WGPU_ATTENTION_REQUIRE_BACKENDS names gl, but no GL adapter was found"
    );
    eprintln!("SKIPPED {test}: no GL adapter");
    false
}

#[test]
fn run_on_gl_with_check() {
    if !have_gl("run --backend gl") {
        return;
    }
    let p = Problem::new(1, 2, 2, 4, 5, 4, 11);
    let out = ok(p.run(
        "gl",
        &["--backend", "gl", "--check", "--causal", "bottom-right"],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Gl") && stdout.contains("check o       PASS"),
        "{}",
        text(&out)
    );
}

#[test]
fn mha_matches_the_reference_layer() {
    let Some(be) = backend("mha") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, n, nk, dm) = (2, 5, 7, 16);
    let cfg = MhaConfig::new(dm, 4).unwrap().with_kv_heads(2).unwrap();
    let w = MhaWeights::random(&cfg, 3).unwrap();
    let wp = dir.path().join("w.safetensors");
    std::fs::write(&wp, w.to_safetensors("layer.").unwrap()).unwrap();
    let x = uniform(b * n * dm, 20);
    let xkv = uniform(b * nk * dm, 21);
    let (xp, xkvp, yp) = (
        dir.path().join("x.npy"),
        dir.path().join("xkv.npy"),
        dir.path().join("y.npy"),
    );
    write_npy(&xp, &[b, n, dm], &x);
    write_npy(&xkvp, &[b, nk, dm], &xkv);
    let s = |p: &Path| p.display().to_string();

    // Self-attention with sinusoidal PE and a causal mask.
    ok(attn(
        be,
        &[
            "mha",
            "--weights",
            &s(&wp),
            "--prefix",
            "layer.",
            "--heads",
            "4",
            "--x",
            &s(&xp),
            "--pe",
            "sinusoidal",
            "--causal",
            "bottom-right",
            "--out",
            &s(&yp),
        ],
    ));
    let xpe = reference::posenc(&x, b, n, dm, 0);
    let masking = Masking {
        causal: true,
        ..Default::default()
    };
    let want = reference::multi_head_attention(
        &xpe,
        &xpe,
        [b, n, n],
        &cfg,
        &w,
        &MhaReferenceOptions {
            masking,
            ..Default::default()
        },
    );
    let (shape, y) = read_npy(&yp);
    assert_eq!(shape, [b, n, dm]);
    assert_close("mha self + pe", &y, &want);

    // Cross-attention with ALiBi, checked by the binary itself too.
    ok(attn(
        be,
        &[
            "mha",
            "--weights",
            &s(&wp),
            "--prefix",
            "layer.",
            "--heads",
            "4",
            "--x",
            &s(&xp),
            "--x-kv",
            &s(&xkvp),
            "--alibi",
            "--out",
            &s(&yp),
            "--check",
        ],
    ));
    let want = reference::multi_head_attention(
        &x,
        &xkv,
        [b, n, nk],
        &cfg,
        &w,
        &MhaReferenceOptions {
            alibi: true,
            ..Default::default()
        },
    );
    assert_close("mha cross + alibi", &read_npy(&yp).1, &want);
}

fn png_size(path: &Path) -> (u32, u32) {
    let dec = png::Decoder::new(std::io::BufReader::new(File::open(path).unwrap()));
    let mut reader = dec.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("decodable PNG");
    // Not blank: the heatmap and the text put several colours in.
    let distinct: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    assert!(
        distinct.len() > 20,
        "{}: only {} colours",
        path.display(),
        distinct.len()
    );
    (info.width, info.height)
}

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

/// Exit 2, one line on stderr containing every `needle`, and no output file.
fn assert_bad_input(out: Output, needles: &[&str], not_created: &Path) {
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{}", text(&out));
    for n in needles {
        assert!(
            lines[0].contains(n),
            "stderr should name {n:?}:\n{}",
            text(&out)
        );
    }
    assert!(
        !not_created.exists(),
        "{} was created",
        not_created.display()
    );
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    // None of these reaches an adapter, except the adapter checks themselves.
    let be = backends().first().map_or("vulkan", |s| s.as_str());
    let p = Problem::new(2, 4, 2, 5, 7, 8, 13);
    let o = p.path("o.npy");
    let missing = p.p("missing.npy");
    assert_bad_input(p.run(be, &["--q", &missing]), &[], &o); // clap: --q given twice
    let (q, k, v, os) = (p.p("q.npy"), p.p("k.npy"), p.p("v.npy"), p.p("o.npy"));
    let run = |q: &str, k: &str, extra: &[&str]| {
        let mut args = vec!["run", "--q", q, "--k", k, "--v", &v, "--out", &os];
        args.extend_from_slice(extra);
        attn(be, &args)
    };
    assert_bad_input(run(&missing, &k, &[]), &["--q", "missing.npy"], &o);
    write_npy(&p.path("qi.npy"), &[2, 4, 5, 8], &vec![1i32; 2 * 4 * 5 * 8]);
    assert_bad_input(
        run(&p.p("qi.npy"), &k, &[]),
        &["--q", "qi.npy", "float32"],
        &o,
    );
    write_npy(&p.path("k3.npy"), &[2, 2, 7, 4], &vec![0f32; 2 * 2 * 7 * 4]);
    assert_bad_input(
        run(&q, &p.p("k3.npy"), &[]),
        &["--k", "k3.npy", "D = 8"],
        &o,
    );
    write_npy(&p.path("q3.npy"), &[4, 5, 8], &vec![0f32; 4 * 5 * 8]);
    assert_bad_input(run(&p.p("q3.npy"), &k, &[]), &["--q", "4-D"], &o);
    write_npy(&p.path("m.npy"), &[3, 1, 5, 7], &[true; 3 * 5 * 7]);
    assert_bad_input(
        run(&q, &k, &["--mask", &p.p("m.npy")]),
        &["--mask", "m.npy", "[B|1, H|1, Nq|1, Nk|1]"],
        &o,
    );
    write_npy(&p.path("mi.npy"), &[5, 7], &[1u8; 35]);
    assert_bad_input(
        run(&q, &k, &["--mask", &p.p("mi.npy")]),
        &["--mask", "bool"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--kv-lengths", "3"]),
        &["--kv-lengths", "B = 2"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--kv-lengths", "3,9"]),
        &["--kv-lengths", "9"],
        &o,
    );
    assert_bad_input(run(&q, &k, &["--window", "1"]), &["--window", "L,R"], &o);
    assert_bad_input(
        run(&q, &k, &["--path", "sideways"]),
        &["--path", "sideways"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--weights", &p.p("w.npy"), "--path", "fused"]),
        &["--weights", "unfused"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--backend", "vulkano"]),
        &["--backend", "vulkano"],
        &o,
    );
    let nodir = p.p("no/such/dir/o.npy");
    assert_bad_input(
        attn(
            be,
            &["run", "--q", &q, "--k", &k, "--v", &v, "--out", &nodir],
        ),
        &["--out", "does not exist"],
        &p.path("no"),
    );
    assert_bad_input(
        run(&q, &k, &["--adapter", "no-such-gpu-anywhere"]),
        &["--adapter", "no-such-gpu-anywhere"],
        &o,
    );
    assert_bad_input(
        attn(be, &["info", "--adapter", "no-such-gpu-anywhere"]),
        &["no-such-gpu-anywhere", "no GPU adapter"],
        &o,
    );
    let w = p.p("weights.safetensors");
    std::fs::write(&w, b"not safetensors").unwrap();
    assert_bad_input(
        attn(
            be,
            &[
                "mha",
                "--weights",
                &w,
                "--heads",
                "2",
                "--x",
                &q,
                "--out",
                &os,
            ],
        ),
        &["--x", "3-D"],
        &o,
    );
    write_npy(&p.path("x.npy"), &[1, 3, 8], &[0f32; 24]);
    assert_bad_input(
        attn(
            be,
            &[
                "mha",
                "--weights",
                &w,
                "--heads",
                "2",
                "--x",
                &p.p("x.npy"),
                "--out",
                &os,
            ],
        ),
        &[
            "--weights",
            "weights.safetensors",
            "not a .safetensors file",
        ],
        &o,
    );
    let png = p.path("v.png");
    assert_bad_input(
        attn(
            be,
            &[
                "viz",
                "--random",
                "1,2,4",
                "--out",
                &png.display().to_string(),
            ],
        ),
        &["--random", "B,H,N,D"],
        &png,
    );
    assert_bad_input(
        attn(
            be,
            &[
                "viz",
                "--random",
                "1,2,4,4",
                "--head",
                "2",
                "--out",
                &png.display().to_string(),
            ],
        ),
        &["--head 2", "Hq = 2"],
        &png,
    );
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

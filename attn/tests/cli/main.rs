//! The `attn` binary on generated inputs: every `run` option against the f64
//! reference, `mha` against the reference layer, `viz` PNGs, error exits, and
//! the JSON of `info`, `validate` and `bench`, the cooperative-matrix
//! kernel's flags (`coop`), and WGSL mods from files (`mods`).
//!
//! Without an adapter the tests print `SKIPPED …`, or fail when
//! `WGPU_ATTENTION_REQUIRE_ADAPTER=1`. They run on Vulkan when it is present (one
//! test each runs `info` and `run --check` on GL, when GL is present).
//!
//! Shared here: how the binary is found and run, the backend probe, temp-dir
//! problems written as `.npy`, and the checks of outputs, PNGs and bad-input exits.
//! The tests are in one module per command or topic.

mod bench;
mod coop;
mod dtype;
mod errors;
mod info_viz;
mod mha;
mod mods;
mod quiet;
mod run;
mod tune;
mod validate;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use npyz::WriterBuilder;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{verify, Report};
use wgpu_attention::AttnShape;

const TOL: f64 = 1e-5;

/// Backends the binary found (`info --json`), probed once.
fn backends() -> &'static Vec<String> {
    static B: OnceLock<Vec<String>> = OnceLock::new();
    B.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_attn"))
            .args(["info", "--json"])
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

fn attn(backend: &str, args: &[&str]) -> Output {
    attn_with(
        backend,
        args,
        &[("WGPU_ATTENTION_TUNING", "heuristic".as_ref())],
    )
}

/// [`attn`] with these environment variables instead of the deterministic
/// `WGPU_ATTENTION_TUNING=heuristic` (autotune has its own tests in `tune`).
fn attn_with(backend: &str, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attn"));
    cmd.args(args)
        .env("WGPU_BACKEND", backend)
        .env_remove("WGPU_ATTENTION_TUNING");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run attn")
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
        self.run_with(
            backend,
            extra,
            &[("WGPU_ATTENTION_TUNING", "heuristic".as_ref())],
        )
    }

    /// [`Problem::run`] with the environment of [`attn_with`].
    fn run_with(&self, backend: &str, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
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
        attn_with(backend, &args, env)
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

/// Exit 2, one line on stderr containing every `needle`, and no output file.
fn assert_bad_input(out: Output, needles: &[&str], not_created: &Path) {
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
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

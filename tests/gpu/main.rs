//! GPU tests: every test runs on every adapter present (one device per adapter,
//! shared by the whole binary), with fresh seeded inputs and poisoned outputs.
//!
//! Without an adapter the tests print a loud SKIPPED line, or fail when
//! `WGPU_ATTENTION_REQUIRE_ADAPTER=1` (CI sets it).

mod attention;
mod coop;
mod driver_limits;
mod embed;
mod errors;
mod half;
mod hf;
mod kv_cache;
mod long;
mod matmul;
mod mha;
mod mods;
mod paged;
mod posenc;
mod rms_norm;
mod rope;
mod scores;
mod seqs;
mod sinks;
mod softmax;
mod tune;
mod validation;
mod weighted_sum;

use std::sync::{Mutex, OnceLock};

use rand::{rngs::StdRng, Rng, SeedableRng};
use wgpu_attention::{Gpu, GpuOptions, Tuning};

static GPUS: OnceLock<Vec<(Gpu, Mutex<()>)>> = OnceLock::new();
/// Every adapter once, each with a lock: tests take turns on one device (wgpu's GL
/// backend panics when its context lock waits over 6 s, which a busy 2-core CI
/// machine can cause), while different adapters run in parallel.
fn gpus() -> &'static [(Gpu, Mutex<()>)] {
    GPUS.get_or_init(|| {
        let mut out = Vec::new();
        for g in Gpu::all_blocking(&GpuOptions::default()) {
            match g {
                Ok(g) => {
                    g.set_poison_outputs(true);
                    eprintln!("test adapter: {}", g.describe());
                    out.push((g, Mutex::new(())));
                }
                Err(e) => eprintln!("an adapter failed to open: {e}"),
            }
        }
        // CI lists the backends it installed; a missing one is a failure, not a skip.
        if let Ok(want) = std::env::var("WGPU_ATTENTION_REQUIRE_BACKENDS") {
            for name in want.split(',').filter(|s| !s.is_empty()) {
                let backend = wgpu_attention::parse_backend(name).expect("WGPU_ATTENTION_REQUIRE_BACKENDS");
                assert!(
                    out.iter().any(|(g, _)| backend.contains(wgpu::Backends::from(g.info().backend))),
                    "WGPU_ATTENTION_REQUIRE_BACKENDS names {name}, but no such adapter opened; present: {:?}",
                    out.iter().map(|(g, _)| g.describe()).collect::<Vec<_>>()
                );
            }
        }
        out
    })
}

/// Runs `f` on every adapter, once per kernel variant (`Tuning::staged` off and on).
/// `f` gets the variant to pass to `Recorder::with_tuning` and a context string
/// naming adapter and variant for its failure messages.
pub fn each_gpu(test: &str, f: impl Fn(&Gpu, Tuning, &str)) {
    each_gpu_with(test, false, &[], f)
}

/// Where a test does not run, declared with the test and reported (adapter,
/// variant, reason) on stderr past the test harness's capture, so a skip is
/// never silent.
#[derive(Clone, Copy, Debug)]
pub enum Skip {
    /// The staged variant (`Tuning::staged`): the test is about something both
    /// variants share.
    Staged(&'static str),
    /// Every variant but the adapter's own default.
    NonDefault(&'static str),
    /// Every adapter of this backend.
    Backend(wgpu::Backend, &'static str),
}

impl Skip {
    /// The reason when this rule skips `t` on `gpu`.
    fn applies(&self, gpu: &Gpu, t: Tuning) -> Option<&'static str> {
        match *self {
            Skip::Staged(why) => t.staged().then_some(why),
            Skip::NonDefault(why) => (t.staged() != gpu.tuning().staged()).then_some(why),
            Skip::Backend(b, why) => (gpu.info().backend == b).then_some(why),
        }
    }
}

/// [`each_gpu`] except where `skips` say; each skip is reported.
pub fn each_gpu_skipping(test: &str, skips: &[Skip], f: impl Fn(&Gpu, Tuning, &str)) {
    each_gpu_with(test, false, skips, f)
}

/// [`each_fused_gpu`] except where `skips` say; each skip is reported.
pub fn each_fused_gpu_skipping(test: &str, skips: &[Skip], f: impl Fn(&Gpu, Tuning, &str)) {
    each_gpu_with(test, true, skips, f)
}

/// Reports a skip decided inside a test (`ctx` names adapter and variant), on
/// stderr directly: the harness captures `eprintln!` of passing tests.
pub fn report_skip(ctx: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIP {ctx}: {reason}");
}

/// [`each_gpu`] for tests of the fused path: where the adapter's unstaged variant
/// uses subgroups (`Tuning::subgroup`, lavapipe), also once without them, so the
/// subgroup kernel and the plain straight-line kernel are both covered.
pub fn each_fused_gpu(test: &str, f: impl Fn(&Gpu, Tuning, &str)) {
    each_gpu_with(test, true, &[], f)
}

fn each_gpu_with(
    test: &str,
    no_subgroup_too: bool,
    skips: &[Skip],
    f: impl Fn(&Gpu, Tuning, &str),
) {
    if !in_shard(test) {
        return;
    }
    let gpus = gpus();
    if gpus.is_empty() {
        let msg = format!(
            "{test}: no GPU adapter. Install Mesa's software drivers (apt-get install mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri)"
        );
        if std::env::var("WGPU_ATTENTION_REQUIRE_ADAPTER").is_ok_and(|v| v != "0") {
            panic!("{msg} (WGPU_ATTENTION_REQUIRE_ADAPTER is set)");
        }
        report_skip(test, &format!("SKIPPED {msg}"));
        return;
    }
    let all: Vec<Vec<&(Gpu, Mutex<()>)>> = gpus.iter().map(|g| vec![g]).collect();
    for_each_free(&all, |_, gpu| {
        let base = gpu.tuning();
        let mut variants = vec![base.with_staged(false)];
        if no_subgroup_too && base.subgroup() != 0 {
            variants.push(base.with_staged(false).with_subgroup(0).unwrap());
        }
        variants.push(base.with_staged(true));
        for t in variants {
            let ctx = format!(
                "[{:?}/{}] {test} staged={} subgroup={}",
                gpu.info().backend,
                gpu.info().name,
                t.staged(),
                t.subgroup()
            );
            match skips.iter().find_map(|s| s.applies(gpu, t)) {
                Some(why) => report_skip(&ctx, why),
                None => f(gpu, t, &ctx),
            }
        }
    });
}

/// `WGPU_ATTENTION_TEST_SHARD=i/n`: this process runs the tests whose name
/// hashes to `i` modulo `n` (so `n` processes share the suite and the
/// machine's cores, llvmpipe compiling in each); all without it.
fn in_shard(test: &str) -> bool {
    let Ok(spec) = std::env::var("WGPU_ATTENTION_TEST_SHARD") else {
        return true;
    };
    let (i, n) = spec
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
        .filter(|(i, n)| i < n)
        .expect("WGPU_ATTENTION_TEST_SHARD=i/n with i < n");
    // FNV-1a: the same shard for a name on every run.
    let h = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h % n == i
}

/// Runs `f` once for each adapter of `adapters` (each a list of devices on
/// it), holding one of its devices' turn, taking first an adapter with a
/// device no other test holds: two tests then run on different devices at once
/// instead of queueing for the same one (the CI machine's two cores both
/// compile).
fn for_each_free<'a>(adapters: &[Vec<&'a (Gpu, Mutex<()>)>], mut f: impl FnMut(usize, &'a Gpu)) {
    use std::sync::TryLockError;
    let mut todo: Vec<usize> = (0..adapters.len()).collect();
    while !todo.is_empty() {
        let free = todo.iter().enumerate().find_map(|(p, &i)| {
            adapters[i].iter().find_map(|(g, m)| match m.try_lock() {
                Ok(t) => Some((p, g, t)),
                Err(TryLockError::Poisoned(t)) => Some((p, g, t.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            })
        });
        let (p, gpu, turn) = match free {
            Some(x) => x,
            None => {
                let (g, m) = adapters[todo[0]][0];
                (0, g, m.lock().unwrap_or_else(|p| p.into_inner()))
            }
        };
        let i = todo.remove(p);
        f(i, gpu);
        drop(turn);
    }
}

/// Runs `examples/NAME` (built next to the test binaries by `cargo test
/// --workspace`) with `args` on `gpu`'s adapter (the examples open wgpu's
/// default one: pointed at this one by backend and name); its stdout, after
/// checking it exited 0.
pub fn run_example(gpu: &Gpu, ctx: &str, name: &str, args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{ctx}: {} is missing: run the tests with `cargo test --workspace` (it builds the examples)",
        bin.display()
    );
    let backend = match gpu.info().backend {
        wgpu::Backend::Gl => "gl",
        _ => "vulkan",
    };
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("WGPU_BACKEND", backend)
        .env("WGPU_ADAPTER_NAME", &gpu.info().name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{ctx}: {} {args:?} failed:\n{stdout}\n{}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A fresh seed (or `WGPU_ATTENTION_SEED`), and a context string that names it.
pub fn rng(ctx: &str) -> (StdRng, String) {
    let seed = std::env::var("WGPU_ATTENTION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    (
        StdRng::seed_from_u64(seed),
        format!("{ctx} seed={seed} (rerun with WGPU_ATTENTION_SEED={seed})"),
    )
}

pub fn uniform(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

/// Checks O and the LSE (which must have been requested) of an attention result
/// against the f64 reference; `ctx` names the case.
pub fn check_o_lse(
    out: &wgpu_attention::Attention,
    want: &wgpu_attention::reference::AttentionOutput,
    ctx: &str,
) {
    use wgpu_attention::verify::{assert_close, Tolerance};
    assert_close(
        &out.o.to_vec_blocking().unwrap(),
        &want.o,
        Tolerance::F32,
        &format!("{ctx} O"),
    );
    let lse = out.lse.as_ref().expect("LSE was requested");
    assert_close(
        &lse.to_vec_blocking().unwrap(),
        &want.lse,
        Tolerance::F32,
        &format!("{ctx} LSE"),
    );
}

/// Records with `f` under tuning `t`, submits once, and returns what `f` made.
pub fn run<T>(
    gpu: &Gpu,
    t: Tuning,
    f: impl FnOnce(&mut wgpu_attention::Recorder<'_>) -> wgpu_attention::Result<T>,
) -> T {
    let mut rec = gpu.recorder().with_tuning(t);
    let out = f(&mut rec).expect("recording failed");
    rec.submit().expect("submit failed");
    out
}

/// The unstaged tile shapes (`Tuning::cpu_rows`) to run besides `t`: every shape
/// for kernels built on the shared tile routine; just `t` when staged.
pub fn tile_shapes(t: Tuning) -> Vec<Tuning> {
    if t.staged() {
        vec![t]
    } else {
        [8, 16, 32]
            .into_iter()
            .map(|cpu_rows| t.with_cpu_rows(cpu_rows).unwrap())
            .collect()
    }
}

static PACKED: OnceLock<Vec<(Gpu, Mutex<()>)>> = OnceLock::new();

/// Runs `f` on every adapter in each half-precision storage mode it has: its
/// own device (native f16 where it grants `SHADER_F16`, packed otherwise), and
/// where that is native, a second device on the same adapter without
/// `SHADER_F16` (the packed path's switch). `f` gets the device and a context
/// string naming adapter and mode, and whether it is that second device (where
/// only what reads or writes f16 differs). The adapter's default tuning.
pub fn each_storage_mode(test: &str, f: impl Fn(&Gpu, bool, &str)) {
    let gpus = gpus();
    if gpus.is_empty() {
        each_gpu(test, |_, _, _| {});
        return;
    }
    let packed = PACKED.get_or_init(|| {
        gpus.iter()
            .filter(|(g, _)| g.caps().native_f16())
            .map(|(g, _)| {
                let opts = GpuOptions {
                    disabled_features: wgpu::Features::SHADER_F16,
                    ..GpuOptions::default()
                };
                let p = pollster::block_on(Gpu::from_adapter_with(
                    g.adapter().expect("own adapter").clone(),
                    &opts,
                ))
                .expect("a second device without SHADER_F16");
                p.set_poison_outputs(true);
                (p, Mutex::new(()))
            })
            .collect()
    });
    let n = gpus.len();
    let all: Vec<Vec<&(Gpu, Mutex<()>)>> =
        gpus.iter().chain(packed.iter()).map(|g| vec![g]).collect();
    for_each_free(&all, |i, gpu| {
        let twin = i >= n;
        let mode = if gpu.caps().native_f16() {
            "native f16"
        } else {
            "packed f16"
        };
        let ctx = format!(
            "[{:?}/{}] {test} {mode}",
            gpu.info().backend,
            gpu.info().name
        );
        f(gpu, twin, &ctx);
    });
}

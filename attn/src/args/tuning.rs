//! `--tuning` and `--coop`: how `run`, `mha` and `bench` choose the attention
//! kernels' variants.

use clap::{Args, ValueEnum};
use wgpu_attention::gpu::Coop;
use wgpu_attention::plan::autotune::class_of;
use wgpu_attention::{plan, AttentionPath, AttentionProblem, Gpu, Tuning, TuningMode};

/// How the kernel variants are chosen.
#[derive(Args, Clone, Debug)]
pub struct TuningArgs {
    /// autotune: the fastest variant measured on this adapter for the problem's
    /// class, from the tuning cache (WGPU_ATTENTION_TUNE_CACHE, default
    /// ~/.cache/wgpu-attention/tune.json) or measured now, within a budget, and
    /// kept there (`attn tune` prints the table); heuristic: the adapter type's
    /// fixed rules, nothing timed.
    #[arg(
        long,
        value_enum,
        env = "WGPU_ATTENTION_TUNING",
        default_value_t = TuningArg::Autotune
    )]
    pub tuning: TuningArg,
    /// The cooperative-matrix fused kernel (tensor cores): on forces it (Q·Kᵀ
    /// on the matrices) on the fused and decode paths, full also P·V (an
    /// adapter without a usable f16×f16→f32 shape is an error); off never
    /// takes it, auto where it pays (real GPUs, f16 Q and K, many queries).
    /// Given, the call runs the class's cached autotuned variants (or the
    /// heuristic's) with this choice; nothing is measured [default:
    /// WGPU_ATTENTION_COOP, else auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub coop: Option<CoopArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TuningArg {
    Autotune,
    Heuristic,
}

/// `--coop`: the library's [`Coop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CoopArg {
    Auto,
    On,
    Off,
    Full,
}

impl CoopArg {
    pub fn coop(self) -> Coop {
        match self {
            CoopArg::Auto => Coop::Auto,
            CoopArg::On => Coop::On,
            CoopArg::Off => Coop::Off,
            CoopArg::Full => Coop::Full,
        }
    }
}

/// `auto`, `on`, `off` or `full`.
pub fn coop_name(c: Coop) -> &'static str {
    match c {
        Coop::Auto => "auto",
        Coop::On => "on",
        Coop::Off => "off",
        Coop::Full => "full",
    }
}

/// Whether `c` forces the cooperative-matrix kernel (`on`, `full`).
pub fn coop_forced(c: Coop) -> bool {
    matches!(c, Coop::On | Coop::Full)
}

impl TuningArgs {
    /// The mode of `--tuning` alone.
    pub fn mode(&self) -> TuningMode {
        match self.tuning {
            TuningArg::Autotune => TuningMode::Autotune,
            TuningArg::Heuristic => TuningMode::Heuristic,
        }
    }

    /// The mode of a call on `gpu`: without `--coop`, [`Self::mode`]; with it,
    /// fixed variants with that cooperative-matrix choice, on `problem`'s
    /// cached autotuned choice (`--tuning autotune`, where the cache has its
    /// class) or else the device's heuristic tuning.
    pub fn mode_on(&self, gpu: &Gpu, problem: Option<&AttentionProblem>) -> TuningMode {
        match self.coop {
            None => self.mode(),
            Some(c) => TuningMode::Fixed(self.base(gpu, problem).with_coop(c.coop())),
        }
    }

    /// The variants `--coop` modifies: the cached choice of `problem`'s class
    /// under autotune, else the device's own tuning.
    pub fn base(&self, gpu: &Gpu, problem: Option<&AttentionProblem>) -> Tuning {
        let heuristic = gpu.tuning();
        if self.tuning != TuningArg::Autotune {
            return heuristic;
        }
        problem
            .and_then(|p| {
                let path = plan(p, gpu.caps(), heuristic).ok()?.path;
                (path != AttentionPath::Unfused).then(|| class_of(p, path))
            })
            .and_then(|class| gpu.tuned_choice(&class))
            .unwrap_or(heuristic)
    }

    /// `autotune` or `heuristic`; with `--coop`, `autotune cache, coop on`
    /// (nothing is measured then) or `heuristic, coop on`.
    pub fn describe(&self) -> String {
        match (self.tuning, self.coop) {
            (t, None) => crate::args::value_name(t),
            (TuningArg::Autotune, Some(c)) => {
                format!("autotune cache, coop {}", coop_name(c.coop()))
            }
            (TuningArg::Heuristic, Some(c)) => format!("heuristic, coop {}", coop_name(c.coop())),
        }
    }
}

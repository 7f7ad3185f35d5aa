//! `--tuning`: how `run` and `mha` choose the attention kernels' variants.

use clap::{Args, ValueEnum};
use wgpu_attention::TuningMode;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TuningArg {
    Autotune,
    Heuristic,
}

impl TuningArgs {
    pub fn mode(&self) -> TuningMode {
        match self.tuning {
            TuningArg::Autotune => TuningMode::Autotune,
            TuningArg::Heuristic => TuningMode::Heuristic,
        }
    }
}

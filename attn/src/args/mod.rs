//! Options shared by several commands: device choice (`device`), Q/K/V inputs
//! (`inputs`), masks and score options (`masks`), programmable attention from
//! WGSL files (`mods`), the tuning mode and the cooperative-matrix choice
//! (`tuning`).

mod device;
mod inputs;
mod masks;
mod mods;
mod tuning;

use clap::ValueEnum;

pub use device::{f16_storage_name, DeviceArgs};
pub use inputs::{InputArgs, Inputs, LayoutArg};
pub use masks::{check_softcap, parse_kv_lengths, upload_mask, MaskArgs};
pub use mods::ModArgs;
pub use tuning::{coop_forced, coop_name, CoopArg, TuningArgs};

/// A dtype flag's value: `f32`, `f16` or `bf16` (clap value parser).
pub fn dtype_arg(s: &str) -> Result<wgpu_attention::DType, String> {
    wgpu_attention::DType::parse(s).map_err(|_| "expected f32, f16 or bf16".to_string())
}

/// The command-line spelling of a value.
pub fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

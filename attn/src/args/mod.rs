//! Options shared by several commands: device choice (`device`), Q/K/V inputs
//! (`inputs`), masks and score options (`masks`), the tuning mode (`tuning`).

mod device;
mod inputs;
mod masks;
mod tuning;

use clap::ValueEnum;

pub use device::DeviceArgs;
pub use inputs::{from_bhnd, InputArgs, Inputs, LayoutArg};
pub use masks::{check_softcap, upload_mask, MaskArgs};
pub use tuning::TuningArgs;

/// The command-line spelling of a value.
pub fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

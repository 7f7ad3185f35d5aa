//! Error kinds and exit codes: bad input exits 2, a failed check exits 1.

use std::fmt;

/// Input the command cannot use (missing file, wrong dtype or shape, unknown
/// value): exit code 2. The message names the flag or file and what was expected.
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// A result outside its tolerance (`--check`, `validate`): exit code 1.
#[derive(Debug)]
pub struct CheckFailed(pub String);

impl fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailed {}

/// `Err(BadInput(format!(...)))` as an `anyhow::Error`.
macro_rules! bad_input {
    ($($t:tt)*) => {
        anyhow::Error::new($crate::error::BadInput(format!($($t)*)))
    };
}
pub(crate) use bad_input;

/// Exit code of a library error: bad input (shapes, masks, options, sizes over
/// the device's limits, no adapter, a mod that does not parse, type-check or
/// fit the kernels: `InvalidMod` as `InvalidArgument`) is 2; the GPU failing at
/// run time is 1.
fn library_code(e: &wgpu_attention::Error) -> i32 {
    use wgpu_attention::Error as E;
    match e {
        E::Gpu(_) | E::DeviceLost(_) | E::Readback(_) | E::RequestDevice { .. } => 1,
        _ => 2,
    }
}

/// The exit code and the one-line message for an error.
pub fn report(e: &anyhow::Error) -> (i32, String) {
    let code = if e.downcast_ref::<BadInput>().is_some() {
        2
    } else if e.downcast_ref::<CheckFailed>().is_some() {
        1
    } else if let Some(lib) = e.downcast_ref::<wgpu_attention::Error>() {
        library_code(lib)
    } else if e.downcast_ref::<std::io::Error>().is_some() {
        2
    } else {
        1
    };
    let line = format!("{e:#}")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (code, line)
}

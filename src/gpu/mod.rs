//! The device wing: everything that talks to wgpu directly. Each file imports
//! only those above it in this list, so the wing has no import cycle:
//!
//! - `env`: the environment switches (the only place env vars are read);
//! - `tuning`: [`Tuning`], kernel variant choices, validated when made;
//! - `tune_cache`: [`TuneCache`], the variants chosen by measurement, per
//!   device and problem class, in memory and in a file;
//! - `adapter`: [`GpuOptions`], backend names, adapter choice;
//! - `caps`: [`DeviceCaps`], what a device can run as a plain value (limits,
//!   features, the driver's loop budget), what plans are made from;
//! - `pipeline`: compiled kernels and their cache;
//! - `device`: [`Gpu`], the device with its granted limits and features, error
//!   capture, device loss, loop budget;
//! - `memory`: uploads, allocations, readback;
//! - `workspace`: [`Workspace`], scratch buffers a caller keeps across recordings;
//! - `recorder`: [`Recorder`], dispatches into one encoder (its own or the
//!   caller's), timing, grid split.

mod adapter;
mod caps;
mod device;
pub(crate) use device::GpuInner;
pub(crate) mod env;
pub use env::parse_features;
mod memory;
pub(crate) mod pipeline;
mod recorder;
mod tune_cache;
mod tuning;
mod workspace;

pub use adapter::{parse_backend, GpuOptions};
pub use caps::{CoopShape, DeviceCaps, LOOP_MARGIN};
pub use device::Gpu;
pub use recorder::{split_grid, Recorder};
pub use tune_cache::{CacheKey, TuneCache};
pub use tuning::{Coop, Tuning};
pub use workspace::Workspace;

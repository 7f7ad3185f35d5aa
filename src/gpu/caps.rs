//! What a device can run, as a plain value: granted limits and features, and the
//! driver limits the API does not report. Plans are functions of this value, so
//! they can be made (and tested) without a GPU.

use crate::error::{Error, Result};

/// Loop iterations kept in reserve below the driver's budget: the kernels'
/// estimates count their main loops, not every small loop the compiler keeps.
pub const LOOP_MARGIN: u64 = 256;

/// A device's capabilities (see the module docs). [`crate::gpu::Gpu::caps`] gives a
/// real device's; tests build synthetic ones.
#[derive(Clone, Debug)]
pub struct DeviceCaps {
    /// Adapter name, for messages.
    pub name: String,
    /// CPU, integrated, discrete, ...: the adapter type's kernel rules.
    pub device_type: wgpu::DeviceType,
    /// The backend the device runs on.
    pub backend: wgpu::Backend,
    /// The granted limits (the device's, not wgpu's defaults).
    pub limits: wgpu::Limits,
    /// The optional features granted.
    pub features: wgpu::Features,
    /// Loop iterations one invocation may run in total, where the driver caps
    /// them silently (Mesa's gallivm: 65535), see [`crate::gpu::Gpu::loop_budget`].
    pub loop_budget: Option<u64>,
}

impl DeviceCaps {
    /// The capabilities of an adapter described by `info` with `limits` and
    /// `features` granted.
    pub fn new(info: &wgpu::AdapterInfo, limits: wgpu::Limits, features: wgpu::Features) -> Self {
        let gallivm = [&info.name, &info.driver, &info.driver_info]
            .iter()
            .any(|s| s.to_ascii_lowercase().contains("llvmpipe"));
        DeviceCaps {
            name: info.name.clone(),
            device_type: info.device_type,
            backend: info.backend,
            limits,
            features,
            loop_budget: gallivm.then_some(65_535),
        }
    }

    /// Whether a kernel estimated at `iterations` loop iterations per invocation
    /// stays within the loop budget with [`LOOP_MARGIN`] to spare.
    pub fn fits_loop_budget(&self, iterations: u64) -> bool {
        self.loop_budget
            .is_none_or(|b| iterations + LOOP_MARGIN <= b)
    }

    /// [`Error::DriverLimit`] unless [`DeviceCaps::fits_loop_budget`].
    pub fn check_loop_budget(&self, what: &str, iterations: u64) -> Result<()> {
        if self.fits_loop_budget(iterations) {
            return Ok(());
        }
        Err(Error::DriverLimit(format!(
            "{what} would run ≈{iterations} loop iterations per invocation, but this driver ({}) stops every loop after {} and would return wrong results; use smaller sizes (or another path) on this adapter",
            self.name,
            self.loop_budget.unwrap_or(0)
        )))
    }

    /// Whether f16 storage is read and written as WGSL `f16` (`SHADER_F16`
    /// granted); otherwise packed two per `u32` ([`crate::shaders::Elem`]).
    pub fn native_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The largest buffer one storage binding may hold.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }
}

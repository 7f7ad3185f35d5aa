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
    /// The cooperative-matrix shapes the adapter lists
    /// (`Adapter::cooperative_matrix_properties`), where the device was granted
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX`; empty otherwise (also for a caller's
    /// device given without its adapter: unlisted shapes are never used).
    pub coop_shapes: Vec<CoopShape>,
    /// The largest subgroup the device may run (`AdapterInfo::subgroup_max_size`;
    /// 0 when unknown).
    pub subgroup_max: u32,
    /// The smallest (`AdapterInfo::subgroup_min_size`; 0 when unknown).
    pub subgroup_min: u32,
    /// Threads a CPU driver divides each dispatch over, one contiguous range of
    /// workgroups per thread: Mesa's gallivm (llvmpipe, lavapipe) takes
    /// `LP_NUM_THREADS`, else one per CPU. 0 where the scheduling is unknown
    /// (every other adapter): the fused kernels then keep the grid's order.
    pub cpu_threads: u32,
}

/// One cooperative-matrix configuration a device lists: C (M×N) += A (M×K) ·
/// B (K×N), A and B of `ab`, C of `cr`. wgpu does not check a shader's shapes
/// against this list, and a shape not listed is undefined behaviour on real
/// hardware, so the plan only picks listed ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopShape {
    /// Rows of A and C.
    pub m: u32,
    /// Columns of B and C.
    pub n: u32,
    /// Columns of A, rows of B.
    pub k: u32,
    /// Element type of A and B.
    pub ab: wgpu::CooperativeScalarType,
    /// Element type of C and the result.
    pub cr: wgpu::CooperativeScalarType,
}

impl CoopShape {
    /// The shape of one of wgpu's property entries.
    pub fn of(p: &wgpu::CooperativeMatrixProperties) -> Self {
        CoopShape {
            m: p.m_size,
            n: p.n_size,
            k: p.k_size,
            ab: p.ab_type,
            cr: p.cr_type,
        }
    }

    /// `M×N×K A→C` in words, e.g. `8x8x8 f16→f32`.
    pub fn describe(&self) -> String {
        let t = |t: wgpu::CooperativeScalarType| format!("{t:?}").to_ascii_lowercase();
        format!(
            "{}x{}x{} {}→{}",
            self.m,
            self.n,
            self.k,
            t(self.ab),
            t(self.cr)
        )
    }
}

/// The threads of Mesa's gallivm compute pool: `LP_NUM_THREADS` when set,
/// else the CPUs this process may run on (Mesa counts the online CPUs; the two
/// differ only under an affinity mask or quota, and a wrong count costs balance,
/// never correctness).
fn gallivm_threads() -> u32 {
    std::env::var("LP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
        .clamp(1, 64)
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
            coop_shapes: Vec::new(),
            subgroup_max: info.subgroup_max_size,
            subgroup_min: info.subgroup_min_size,
            cpu_threads: if gallivm { gallivm_threads() } else { 0 },
        }
    }

    /// `self` listing `shapes` as its cooperative-matrix configurations (kept
    /// only where `EXPERIMENTAL_COOPERATIVE_MATRIX` is granted).
    pub fn with_coop_shapes(mut self, shapes: Vec<CoopShape>) -> Self {
        self.coop_shapes = if self
            .features
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            shapes
        } else {
            Vec::new()
        };
        self
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

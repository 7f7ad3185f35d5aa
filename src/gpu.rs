//! The GPU context: adapter choice, device with the adapter's real limits and
//! optional features, error capture, device loss, buffer allocation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::dispatch::PipelineCache;
use crate::error::{Error, Result};

/// How to choose the adapter. `Default` honours the usual environment overrides
/// (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`) and otherwise picks a
/// high-performance adapter from any backend.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backends to consider; `None` = `WGPU_BACKEND` or all.
    pub backends: Option<wgpu::Backends>,
    /// Case-insensitive substring of the adapter name; `None` = `WGPU_ADAPTER_NAME` or any.
    pub adapter_name: Option<String>,
    /// `None` = `WGPU_POWER_PREF` or high performance.
    pub power_preference: Option<wgpu::PowerPreference>,
    /// Optional features not to request even if the adapter has them, to test
    /// fallback paths. Added to `WGPU_ATTENTION_DISABLE_FEATURES=f16,subgroup,timestamp`.
    pub disabled_features: wgpu::Features,
    /// Limits to request instead of the adapter's own (each within the adapter's),
    /// e.g. `wgpu::Limits::default()` to run as a browser would, or a small
    /// storage binding to exercise the paths that split work across bindings.
    pub limits: Option<wgpu::Limits>,
}

impl GpuOptions {
    /// Only adapters of the named backend: `vulkan`, `metal`, `dx12`, `gl` or `webgpu`.
    pub fn backend(name: &str) -> Result<Self> {
        Ok(Self {
            backends: Some(parse_backend(name)?),
            ..Self::default()
        })
    }

    fn resolved_disabled_features(&self) -> Result<wgpu::Features> {
        let mut off = self.disabled_features;
        if let Ok(list) = std::env::var("WGPU_ATTENTION_DISABLE_FEATURES") {
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                off |= match name {
                    "f16" => wgpu::Features::SHADER_F16,
                    "subgroup" | "subgroups" => wgpu::Features::SUBGROUP,
                    "timestamp" | "timestamps" => wgpu::Features::TIMESTAMP_QUERY,
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "WGPU_ATTENTION_DISABLE_FEATURES: unknown feature {other:?}; use f16, subgroup or timestamp"
                        )))
                    }
                };
            }
        }
        Ok(off)
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn resolved_backends(&self) -> wgpu::Backends {
        self.backends
            .or_else(wgpu::Backends::from_env)
            .unwrap_or(wgpu::Backends::all())
    }

    /// In a browser only WebGPU is used, whatever `backends` says: a missing
    /// WebGPU is an [`Error::NoAdapter`] rather than a silent WebGL2 fallback.
    #[cfg(target_arch = "wasm32")]
    fn resolved_backends(&self) -> wgpu::Backends {
        wgpu::Backends::BROWSER_WEBGPU
    }
}

/// Fails with a clear [`Error::NoAdapter`] when the page has no usable WebGPU
/// (`navigator.gpu` missing, or `requestAdapter()` giving no adapter).
#[cfg(target_arch = "wasm32")]
async fn require_browser_webgpu() -> Result<()> {
    if wgpu::util::is_browser_webgpu_supported().await {
        Ok(())
    } else {
        Err(Error::NoAdapter(
            "this browser exposes no WebGPU: navigator.gpu is missing or requestAdapter() \
             returned no adapter. Use a WebGPU-capable browser on a secure context \
             (https:// or http://localhost / 127.0.0.1); Chromium on Linux needs \
             --enable-unsafe-webgpu (WebGL is never used as a fallback)"
                .into(),
        ))
    }
}

/// Parses a backend name as used by `WGPU_BACKEND` and the `--backend` flags.
pub fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Ok(wgpu::Backends::VULKAN),
        "metal" | "mtl" => Ok(wgpu::Backends::METAL),
        "dx12" | "d3d12" => Ok(wgpu::Backends::DX12),
        "gl" | "gles" | "opengl" => Ok(wgpu::Backends::GL),
        "webgpu" => Ok(wgpu::Backends::BROWSER_WEBGPU),
        other => Err(Error::InvalidArgument(format!(
            "unknown backend {other:?}: use vulkan, metal, dx12, gl or webgpu"
        ))),
    }
}

/// Kernel variant choices that depend on the adapter. Chosen from the adapter
/// type by default, overridable for tests and benchmarks (`WGPU_ATTENTION_STAGED=0|1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuning {
    /// Stage tiles through workgroup memory (real GPUs profit; CPU drivers such as
    /// lavapipe run a workgroup on one thread and only pay for the barriers).
    pub staged: bool,
    /// Invocations cooperating on one softmax row.
    pub softmax_workgroup: u32,
    /// Unstaged tiles (CPU drivers): rows shared by the 8 lanes of a workgroup,
    /// 8, 16 or 32 (with 32/rows columns per lane). `WGPU_ATTENTION_CPU_ROWS`.
    pub cpu_rows: u32,
    /// Query rows per invocation of the straight-line fused kernel (CPU drivers).
    /// `WGPU_ATTENTION_FUSED_ROWS`.
    pub fused_rows: u32,
    /// Unstaged fused attention uses the straight-line kernel
    /// (`flash_attention_cpu.wgsl`); off = the generic one. Off in browsers: on
    /// Chromium's SwiftShader the first dispatch of the straight-line kernel lost
    /// the device ("A valid external Instance reference no longer exists"), while
    /// the generic kernel runs.
    pub straight_line: bool,
    /// Subgroup size the straight-line fused kernel shares K/V loads across
    /// (`flash_attention_cpu.wgsl` with `S`); 0 = no subgroup operations. Set on CPU drivers
    /// that grant subgroups with one fixed size (lavapipe: 8), where it cuts the
    /// gathered loads by that factor. `WGPU_ATTENTION_SUBGROUP=0` turns it off.
    pub subgroup: u32,
}

impl Tuning {
    /// The default for an adapter of this type.
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let mut t = Tuning {
            staged: !cpu,
            softmax_workgroup: if cpu { 8 } else { 128 },
            cpu_rows: 8,
            fused_rows: 8,
            straight_line: info.backend != wgpu::Backend::BrowserWebGpu,
            subgroup: if cpu && info.subgroup_min_size == info.subgroup_max_size {
                info.subgroup_min_size
            } else {
                0
            },
        };
        if let Some(s) = std::env::var("WGPU_ATTENTION_SUBGROUP")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            t.subgroup = s;
        }
        if let Ok(v) = std::env::var("WGPU_ATTENTION_STAGED") {
            t.staged = v != "0";
        }
        if let Some(r) = std::env::var("WGPU_ATTENTION_CPU_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            t.cpu_rows = r;
        }
        if let Some(r) = std::env::var("WGPU_ATTENTION_FUSED_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            t.fused_rows = r;
        }
        t
    }
}

pub(crate) struct GpuInner {
    pub(crate) adapter: wgpu::Adapter,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) features: wgpu::Features,
    pub(crate) limits: wgpu::Limits,
    pub(crate) tuning: Mutex<Tuning>,
    pub(crate) poison: AtomicBool,
    pub(crate) error: Arc<Mutex<Option<String>>>,
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    pub(crate) pipelines: PipelineCache,
    /// Bound where an optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// GL only: wgpu's GL backend shares one context per device behind a lock it
    /// waits on for at most 6 s and then panics. A shader compile or a fence wait
    /// on a busy CPU driver can hold it that long, so calls from several threads
    /// queue here first (without a time limit).
    serial: Option<Mutex<()>>,
}

/// A device and queue on one adapter, with its granted features and limits and a
/// pipeline cache. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.describe())
    }
}

/// `t` without what a device with `features` cannot run (subgroup use needs SUBGROUP).
fn granted(mut t: Tuning, features: wgpu::Features) -> Tuning {
    if !features.contains(wgpu::Features::SUBGROUP) {
        t.subgroup = 0;
    }
    t
}

/// The optional features requested when the adapter has them.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = wgpu::InstanceFlags::from_env_or_default();
    wgpu::Instance::new(desc)
}

impl Gpu {
    /// Opens the adapter chosen by `options` (see [`GpuOptions`]).
    pub async fn new(options: &GpuOptions) -> Result<Gpu> {
        #[cfg(target_arch = "wasm32")]
        require_browser_webgpu().await?;
        let backends = options.resolved_backends();
        let inst = instance(backends);
        let name = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
        let adapter = if let Some(name) = name {
            let adapters = inst.enumerate_adapters(backends).await;
            let want = name.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters
                .into_iter()
                .find(|a| a.get_info().name.to_lowercase().contains(&want))
                .ok_or_else(|| {
                    Error::NoAdapter(format!(
                        "no adapter name contains {name:?}; present: {names:?}"
                    ))
                })?
        } else {
            let power = options
                .power_preference
                .or_else(wgpu::PowerPreference::from_env)
                .unwrap_or(wgpu::PowerPreference::HighPerformance);
            inst.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: power,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::NoAdapter(format!("backends {backends:?}: {e}")))?
        };
        Self::from_adapter_with(adapter, options).await
    }

    /// Blocking [`Gpu::new`] for native callers.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(options: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new(options))
    }

    /// Opens every adapter of the allowed backends (`WGPU_BACKEND` or all), so the
    /// same work can be run on each. Adapters that fail to open are returned as errors.
    pub async fn all(options: &GpuOptions) -> Vec<Result<Gpu>> {
        #[cfg(target_arch = "wasm32")]
        if let Err(e) = require_browser_webgpu().await {
            return vec![Err(e)];
        }
        let backends = options.resolved_backends();
        let mut out = Vec::new();
        for adapter in instance(backends).enumerate_adapters(backends).await {
            if adapter.get_info().backend == wgpu::Backend::Noop {
                continue;
            }
            out.push(Self::from_adapter_with(adapter, options).await);
        }
        out
    }

    /// Blocking [`Gpu::all`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn all_blocking(options: &GpuOptions) -> Vec<Result<Gpu>> {
        pollster::block_on(Self::all(options))
    }

    /// Opens a device on `adapter` with the adapter's own limits and the optional
    /// features it has.
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        Self::from_adapter_with(adapter, &GpuOptions::default()).await
    }

    /// [`Gpu::from_adapter`] without the features `options.disabled_features`
    /// (and `WGPU_ATTENTION_DISABLE_FEATURES`) withhold.
    pub async fn from_adapter_with(adapter: wgpu::Adapter, options: &GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let features =
            adapter.features() & (OPTIONAL_FEATURES - options.resolved_disabled_features()?);
        let limits = options.limits.clone().unwrap_or_else(|| adapter.limits());
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgpu-attention"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                reason: e.to_string(),
            })?;
        let error = Arc::new(Mutex::new(None::<String>));
        let sink = error.clone();
        // wgpu's default handler panics; record the first error and report it from
        // the next operation instead.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *lost_sink.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{reason:?}: {msg}"));
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("absent binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let tuning = Tuning::for_adapter(&info);
        let serial = (info.backend == wgpu::Backend::Gl).then(|| Mutex::new(()));
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                adapter,
                device,
                queue,
                features,
                info,
                limits,
                tuning: Mutex::new(granted(tuning, features)),
                poison: AtomicBool::new(false),
                error,
                lost,
                pipelines: PipelineCache::default(),
                dummy,
                serial,
            }),
        })
    }

    /// Whether `other` is a handle to this same device.
    pub(crate) fn is_same(&self, other: &Gpu) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The adapter's description (name, backend, device type, driver).
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The optional features granted (subset of SHADER_F16, SUBGROUP, TIMESTAMP_QUERY).
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// The limits granted (the adapter's own, not wgpu's defaults).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The underlying wgpu objects, for callers that record their own work.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter.
    pub fn adapter(&self) -> &wgpu::Adapter {
        &self.inner.adapter
    }

    /// One line: `name (backend, device type, driver)`.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!(
            "{} ({:?}, {:?}, {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// Current kernel variant choices.
    pub fn tuning(&self) -> Tuning {
        *self.inner.tuning.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the default kernel variants for new recorders (see
    /// [`Recorder::with_tuning`](crate::Recorder::with_tuning) for one recording).
    /// Pipelines of each variant are cached.
    pub fn set_tuning(&self, t: Tuning) {
        let t = self.granted_tuning(t);
        *self.inner.tuning.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// `t` without what the device was not granted (subgroup use needs SUBGROUP).
    pub(crate) fn granted_tuning(&self, t: Tuning) -> Tuning {
        granted(t, self.inner.features)
    }

    /// When on, every buffer this crate allocates for an output is filled with NaN
    /// before use, so an element a kernel forgets to write shows up in a comparison.
    pub fn set_poison_outputs(&self, on: bool) {
        self.inner.poison.store(on, Ordering::Relaxed);
    }

    /// Whether output buffers are poisoned ([`Gpu::set_poison_outputs`]).
    pub fn poison_outputs(&self) -> bool {
        self.inner.poison.load(Ordering::Relaxed)
    }

    /// Returns the first uncaptured GPU error or device loss since the last check.
    pub(crate) fn take_error(&self) -> Result<()> {
        if let Some(msg) = self
            .inner
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(Error::DeviceLost(msg));
        }
        match self
            .inner
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    /// Holds the device for one wgpu call on backends that need it (GL); see
    /// `GpuInner::serial`. Never held across an `.await`.
    pub(crate) fn exclusive(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.inner
            .serial
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Loop iterations one invocation may run in total on this driver, if capped.
    ///
    /// Mesa's llvmpipe (GL) and lavapipe (Vulkan) share gallivm, which counts every
    /// loop back-edge of an invocation against `LP_MAX_TGSI_LOOP_ITERATIONS` (65535)
    /// and silently leaves all loops once it is spent: the output is then wrong,
    /// with no error. Measured here: a fused kernel stopped after ≈65535/(2D+1)
    /// keys. Kernels check their estimate against this before dispatch.
    pub fn loop_budget(&self) -> Option<u64> {
        let i = &self.inner.info;
        let gallivm = [&i.name, &i.driver, &i.driver_info]
            .iter()
            .any(|s| s.to_ascii_lowercase().contains("llvmpipe"));
        gallivm.then_some(65_535)
    }

    /// Errors with [`Error::DriverLimit`] when `iterations` (a kernel's estimate of
    /// loop iterations per invocation) exceeds [`Gpu::loop_budget`], keeping a margin.
    pub(crate) fn check_loop_budget(&self, what: &str, iterations: u64) -> Result<()> {
        match self.loop_budget() {
            Some(budget) if iterations + 256 > budget => Err(Error::DriverLimit(format!(
                "{what} would run ≈{iterations} loop iterations per invocation, but this driver ({}) stops every loop after {budget} and would return wrong results; use smaller sizes (or another path) on this adapter",
                self.inner.info.name
            ))),
            _ => Ok(()),
        }
    }

    /// Fails once the device is lost or destroyed, before wgpu is asked for more.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match self
            .inner
            .lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(msg) => Err(Error::DeviceLost(msg)),
            None => Ok(()),
        }
    }

    /// A buffer holding `bytes` (padded to 4), written through the queue (no
    /// mapping, so a lost device is an error rather than a panic in wgpu).
    pub(crate) fn upload(
        &self,
        what: &str,
        bytes: &[u8],
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let size = (bytes.len() as u64).max(4).div_ceil(4) * 4;
        if usage.contains(wgpu::BufferUsages::STORAGE) {
            self.check_storage_size(what, size)?;
        }
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut padded = bytes.to_vec();
        padded.resize(size as usize, 0);
        let _serial = self.exclusive();
        self.inner.queue.write_buffer(&buf, 0, &padded);
        Ok(buf)
    }

    /// Checks a storage buffer size against the device limits.
    pub(crate) fn check_storage_size(&self, what: &str, bytes: u64) -> Result<()> {
        let l = &self.inner.limits;
        if bytes > l.max_buffer_size {
            return Err(Error::BufferTooLarge {
                what: what.into(),
                bytes,
                limit_name: "max_buffer_size",
                limit: l.max_buffer_size,
            });
        }
        if bytes > l.max_storage_buffer_binding_size {
            return Err(Error::BufferTooLarge {
                what: what.into(),
                bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit: l.max_storage_buffer_binding_size,
            });
        }
        Ok(())
    }

    /// Allocates a storage buffer of `bytes` (rounded up to 4), checked against the
    /// limits, NaN-filled when poisoning is on.
    pub(crate) fn alloc(&self, what: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let bytes = bytes.max(4).div_ceil(4) * 4;
        self.check_storage_size(what, bytes)?;
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if self.inner.poison.load(Ordering::Relaxed) {
            let nan = f32::NAN.to_bits().to_le_bytes();
            let fill: Vec<u8> = nan.iter().copied().cycle().take(bytes as usize).collect();
            let _serial = self.exclusive();
            self.inner.queue.write_buffer(&buf, 0, &fill);
        }
        Ok(buf)
    }
}

//! The device: opened on an adapter with its real limits and optional features,
//! errors and device loss captured, compiled kernels cached.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::adapter::{self, GpuOptions};
use super::caps::{CoopShape, DeviceCaps};
use super::env;
use super::pipeline::{self, Kernel, PipelineCache, PipelineKey};
use super::tune_cache::{CacheKey, TuneCache};
use super::tuning::Tuning;
use crate::error::{Error, Result};
use crate::shaders::Specialization;

pub(crate) struct GpuInner {
    /// `None` for a caller's device given with its adapter info only.
    pub(crate) adapter: Option<wgpu::Adapter>,
    /// The device is the caller's ([`Gpu::from_device`]): its error and
    /// device-lost handlers stay the caller's, and this crate's own wgpu calls
    /// capture their errors in error scopes instead.
    pub(crate) external: bool,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) caps: DeviceCaps,
    /// The adapter's default variants with the environment's forced values.
    pub(crate) tuning: Tuning,
    pub(crate) poison: AtomicBool,
    pub(crate) error: Arc<Mutex<Option<String>>>,
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    pub(crate) pipelines: PipelineCache,
    /// The variants chosen by measurement on this adapter, and the file they
    /// are kept in (`None`: memory only).
    tune: Mutex<TuneCache>,
    tune_path: Option<std::path::PathBuf>,
    /// Bound where an optional input is absent.
    pub(crate) dummy: wgpu::Buffer,
    /// GL only: wgpu's GL backend shares one context per device behind a lock it
    /// waits on for at most 6 s and then panics. A shader compile or a fence wait
    /// on a busy CPU driver can hold it that long, so calls from several threads
    /// queue here first (without a time limit).
    serial: Option<Mutex<()>>,
    /// Storage buffers this crate has allocated on the device ([`Gpu::storage_allocations`]).
    pub(crate) storage_allocations: AtomicU64,
}

/// What a device is opened from, before the shared parts are made.
struct Parts {
    adapter: Option<wgpu::Adapter>,
    external: bool,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
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

/// The optional features requested when the adapter has them.
const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gpu {
    /// Opens the adapter chosen by `options` (see [`GpuOptions`]).
    pub async fn new(options: &GpuOptions) -> Result<Gpu> {
        let adapter = adapter::choose(options).await?;
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
        let adapters = match adapter::enumerate(options).await {
            Ok(a) => a,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::new();
        for a in adapters {
            out.push(Self::from_adapter_with(a, options).await);
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
                experimental_features: if features
                    .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
                {
                    // SAFETY: the one experimental feature requested is
                    // cooperative matrices; the kernel using them is validated by
                    // naga (tests/shaders.rs) and checked against the reference on
                    // Mesa 26's lavapipe in CI, and only shapes the adapter lists
                    // are used (plan::coop).
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                } else {
                    wgpu::ExperimentalFeatures::disabled()
                },
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
            locked(&sink).get_or_insert_with(|| e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            *locked(&lost_sink) = Some(format!("{reason:?}: {msg}"));
        });
        let parts = Parts {
            adapter: Some(adapter),
            external: false,
            device,
            queue,
            info,
            features,
            limits,
            error,
            lost,
        };
        Self::assemble(parts, options)
    }

    /// A `Gpu` over a device and queue the caller already owns (a renderer's,
    /// an inference engine's), so attention runs on their buffers and in their
    /// command encoders ([`Gpu::recorder_for`], [`crate::Tensor::from_buffer`]).
    ///
    /// Features and limits are read from `device` (what it was created with, not
    /// what the adapter could have granted): a kernel that would use a feature
    /// the caller did not enable falls back (`SHADER_F16`: half tensors are read
    /// packed two per word; `SUBGROUP`: the kernels without subgroup operations),
    /// and what cannot fall back fails with [`Error::MissingFeature`] naming it
    /// (`TIMESTAMP_QUERY` for [`Gpu::timed_recorder`]). The caller's
    /// uncaptured-error and device-lost handlers are left in place: this crate
    /// captures the errors of its own calls in error scopes, and errors of the
    /// commands it records surface where the caller submits them.
    /// `options` applies its disabled features and tuning cache; its adapter
    /// choice and limits do not apply (the device exists).
    ///
    /// ```
    /// # fn main() -> wgpu_attention::Result<()> {
    /// use wgpu_attention::{wgpu, Gpu, GpuOptions};
    /// let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    /// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
    ///     .expect("an adapter");
    /// let (device, queue) =
    ///     pollster::block_on(adapter.request_device(&Default::default())).expect("a device");
    /// let gpu = Gpu::from_device(device, queue, adapter.get_info(), &GpuOptions::default())?;
    /// assert!(gpu.adapter().is_none());
    /// # Ok(()) }
    /// ```
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &GpuOptions,
    ) -> Result<Gpu> {
        Self::from_parts(None, device, queue, info, options)
    }

    /// [`Gpu::from_device`] keeping the adapter too ([`Gpu::adapter`]).
    pub fn from_wgpu(
        adapter: wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
        options: &GpuOptions,
    ) -> Result<Gpu> {
        let info = adapter.get_info();
        Self::from_parts(Some(adapter), device, queue, info, options)
    }

    fn from_parts(
        adapter: Option<wgpu::Adapter>,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        options: &GpuOptions,
    ) -> Result<Gpu> {
        let features =
            device.features() & (OPTIONAL_FEATURES - options.resolved_disabled_features()?);
        let limits = device.limits();
        let parts = Parts {
            adapter,
            external: true,
            device,
            queue,
            info,
            features,
            limits,
            error: Arc::new(Mutex::new(None)),
            lost: Arc::new(Mutex::new(None)),
        };
        Self::assemble(parts, options)
    }

    fn assemble(p: Parts, options: &GpuOptions) -> Result<Gpu> {
        let tuning = Tuning::for_adapter(&p.info)
            .with_overrides(&env::tuning_overrides()?)?
            .granted(p.features);
        let dummy = p.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("absent binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let serial = (p.info.backend == wgpu::Backend::Gl).then(|| Mutex::new(()));
        let tune_path = options.tune_cache.clone().or_else(env::tune_cache_path);
        let tune = match &tune_path {
            Some(path) => {
                let (cache, warning) = TuneCache::load(path);
                if let Some(w) = warning {
                    log::warn!("{w}");
                }
                cache
            }
            None => TuneCache::new(),
        };
        let coop_shapes = p
            .adapter
            .as_ref()
            .map(|a| {
                a.cooperative_matrix_properties()
                    .iter()
                    .map(CoopShape::of)
                    .collect()
            })
            .unwrap_or_default();
        let caps = DeviceCaps::new(&p.info, p.limits, p.features).with_coop_shapes(coop_shapes);
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                adapter: p.adapter,
                external: p.external,
                device: p.device,
                queue: p.queue,
                caps,
                info: p.info,
                tuning,
                poison: AtomicBool::new(false),
                error: p.error,
                lost: p.lost,
                pipelines: PipelineCache::default(),
                tune: Mutex::new(tune),
                tune_path,
                dummy,
                serial,
                storage_allocations: AtomicU64::new(0),
            }),
        })
    }

    /// Whether the device is the caller's ([`Gpu::from_device`], [`Gpu::from_wgpu`]).
    pub fn is_external(&self) -> bool {
        self.inner.external
    }

    /// Whether `other` is a handle to this same device.
    pub(crate) fn is_same(&self, other: &Gpu) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The adapter's description (name, backend, device type, driver).
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The optional features granted (subset of SHADER_F16, SUBGROUP,
    /// TIMESTAMP_QUERY, EXPERIMENTAL_COOPERATIVE_MATRIX).
    pub fn features(&self) -> wgpu::Features {
        self.inner.caps.features
    }

    /// The limits granted (the adapter's own, not wgpu's defaults).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.caps.limits
    }

    /// What this device can run, as the plans see it.
    pub fn caps(&self) -> &DeviceCaps {
        &self.inner.caps
    }

    /// The underlying wgpu objects, for callers that record their own work.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter; `None` for a caller's device given without one
    /// ([`Gpu::from_device`]).
    pub fn adapter(&self) -> Option<&wgpu::Adapter> {
        self.inner.adapter.as_ref()
    }

    /// One line: `name (backend, device type, driver)`.
    pub fn describe(&self) -> String {
        let i = &self.inner.info;
        format!(
            "{} ({:?}, {:?}, {} {})",
            i.name, i.backend, i.device_type, i.driver, i.driver_info
        )
    }

    /// This device's default kernel variants: the adapter type's, with the
    /// environment's forced values, without what the device was not granted.
    /// A call uses other variants through [`crate::gpu::Recorder::with_tuning`] or
    /// [`crate::AttentionOptions::tuning`].
    pub fn tuning(&self) -> Tuning {
        self.inner.tuning
    }

    /// The variants chosen by measurement for `class` on this adapter (driver,
    /// library version), if any.
    pub fn tuned_choice(&self, class: &str) -> Option<Tuning> {
        locked(&self.inner.tune).get(&CacheKey::new(&self.inner.info), class)
    }

    /// Every (class, variants) chosen by measurement on this adapter.
    pub fn tuned_choices(&self) -> Vec<(String, Tuning)> {
        locked(&self.inner.tune).choices(&CacheKey::new(&self.inner.info))
    }

    /// Remembers `t` for `class` on this adapter, in memory and (when the
    /// cache has a file) on disk; a file that cannot be written is a warning.
    pub fn remember_tuning(&self, class: &str, t: Tuning) {
        let mut cache = locked(&self.inner.tune);
        cache.insert(&CacheKey::new(&self.inner.info), class, t);
        if let Some(p) = &self.inner.tune_path {
            if let Err(e) = cache.save(p) {
                log::warn!("{}: tuning cache not written: {e}", p.display());
            }
        }
    }

    /// The tuning cache's file, if it has one.
    pub fn tune_cache_path(&self) -> Option<&std::path::Path> {
        self.inner.tune_path.as_deref()
    }

    /// `t` without what the device was not granted (subgroup use needs SUBGROUP).
    pub(crate) fn granted_tuning(&self, t: Tuning) -> Tuning {
        t.granted(self.inner.caps.features)
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
        self.check_alive()?;
        match locked(&self.inner.error).take() {
            Some(msg) => Err(Error::Gpu(msg)),
            None => Ok(()),
        }
    }

    /// Runs one wgpu creation call. On a caller's device the call's validation
    /// error is captured in an error scope and returned (the caller's handler
    /// never sees it); on this crate's own device the uncaptured-error handler
    /// records it for the next check.
    pub(crate) fn capture<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        #[cfg(not(target_arch = "wasm32"))]
        if self.inner.external {
            use futures::FutureExt;
            let scope = self
                .inner
                .device
                .push_error_scope(wgpu::ErrorFilter::Validation);
            let out = f();
            return match scope.pop().now_or_never() {
                Some(Some(e)) => Err(Error::Gpu(format!("{what}: {e}"))),
                _ => Ok(out),
            };
        }
        let _ = what;
        Ok(f())
    }

    /// Fails once the device is lost or destroyed, before wgpu is asked for more.
    pub(crate) fn check_alive(&self) -> Result<()> {
        match locked(&self.inner.lost).clone() {
            Some(msg) => Err(Error::DeviceLost(msg)),
            None => Ok(()),
        }
    }

    /// Holds the device for one wgpu call on backends that need it (GL); see
    /// `GpuInner::serial`. Never held across an `.await`.
    pub(crate) fn exclusive(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        self.inner.serial.as_ref().map(locked)
    }

    /// Loop iterations one invocation may run in total on this driver, if capped.
    ///
    /// Mesa's llvmpipe (GL) and lavapipe (Vulkan) share gallivm, which counts every
    /// loop back-edge of an invocation against `LP_MAX_TGSI_LOOP_ITERATIONS` (65535)
    /// and silently leaves all loops once it is spent: the output is then wrong,
    /// with no error. Measured here: a fused kernel stopped after ≈65535/(2D+1)
    /// keys. Plans and kernels check their estimate against this before dispatch.
    pub fn loop_budget(&self) -> Option<u64> {
        self.inner.caps.loop_budget
    }

    /// [`DeviceCaps::check_loop_budget`].
    pub(crate) fn check_loop_budget(&self, what: &str, iterations: u64) -> Result<()> {
        self.inner.caps.check_loop_budget(what, iterations)
    }

    /// The pipeline of `s`, compiled on first use and cached for the life of the
    /// device.
    pub(crate) fn kernel(&self, s: &Specialization) -> Result<Arc<Kernel>> {
        self.check_alive()?;
        let key = PipelineKey::of(s);
        if let Some(k) = self.inner.pipelines.get(&key) {
            #[cfg(target_arch = "wasm32")]
            if let Some(e) = k.poll_build_error() {
                return Err(self.inner.pipelines.reject(&key, e));
            }
            return Ok(k);
        }
        let t0 = web_time::Instant::now();
        let k = {
            let _serial = self.exclusive();
            Arc::new(pipeline::build(&self.inner.device, s)?)
        };
        if super::env::log_compiles() {
            eprintln!(
                "compile {:?} {} ms {} {:?} {:?} elems {:?} mods {} [{}]",
                self.inner.info.backend,
                t0.elapsed().as_millis(),
                s.kernel.name,
                s.defines,
                s.overrides,
                s.elems,
                s.mods.is_some(),
                std::thread::current().name().unwrap_or("?"),
            );
        }
        self.take_error()?;
        self.inner.pipelines.insert(key, k.clone());
        Ok(k)
    }

    /// Waits for the validation of every pipeline built so far and drops those the
    /// browser rejected from the cache, returning the first such error. Native
    /// backends validate synchronously (nothing is pending); in a browser readbacks
    /// call this, so a rejected shader surfaces with its compiler message.
    pub async fn settle_kernels(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let mut first = None;
            for (key, k) in self.inner.pipelines.entries() {
                let fut = k.pending.borrow_mut().take();
                if let Some(fut) = fut {
                    if let Some(e) = fut.await {
                        let e = self.inner.pipelines.reject(&key, e);
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Storage buffers this crate has allocated on this device so far (outputs,
    /// scratch, uploads; not the small uniform blocks of each dispatch). A
    /// recording with a [`crate::gpu::Workspace`] and the caller's output tensors
    /// allocates none once the workspace has grown to its plan.
    pub fn storage_allocations(&self) -> u64 {
        self.inner.storage_allocations.load(Ordering::Relaxed)
    }

    /// Number of pipelines compiled so far (each specialization once).
    pub fn cached_pipelines(&self) -> usize {
        self.inner.pipelines.len()
    }
}

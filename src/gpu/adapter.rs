//! Which adapter to open: options, backend names, the instance, the choice.

use super::env;
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
    /// The tuning cache's file instead of `WGPU_ATTENTION_TUNE_CACHE` or the
    /// user's cache directory (see [`crate::TuningMode::Autotune`]).
    pub tune_cache: Option<std::path::PathBuf>,
}

impl GpuOptions {
    /// Only adapters of the named backend: `vulkan`, `metal`, `dx12`, `gl` or `webgpu`.
    pub fn backend(name: &str) -> Result<Self> {
        Ok(Self {
            backends: Some(parse_backend(name)?),
            ..Self::default()
        })
    }

    pub(crate) fn resolved_disabled_features(&self) -> Result<wgpu::Features> {
        Ok(self.disabled_features | env::disabled_features()?)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn resolved_backends(&self) -> wgpu::Backends {
        self.backends
            .or_else(env::backends)
            .unwrap_or(wgpu::Backends::all())
    }

    /// In a browser only WebGPU is used, whatever `backends` says: a missing
    /// WebGPU is an [`Error::NoAdapter`] rather than a silent WebGL2 fallback.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn resolved_backends(&self) -> wgpu::Backends {
        wgpu::Backends::BROWSER_WEBGPU
    }
}

/// Fails with a clear [`Error::NoAdapter`] when the page has no usable WebGPU
/// (`navigator.gpu` missing, or `requestAdapter()` giving no adapter).
#[cfg(target_arch = "wasm32")]
pub(crate) async fn require_browser_webgpu() -> Result<()> {
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

/// The instances whose adapters are searched, in wgpu's own backend order
/// (Vulkan, Metal, DX12, GL): on Linux and FreeBSD, when `backends` has Vulkan, a
/// compute-only Vulkan instance (see [`compute_only_vulkan`]) and one ordinary
/// instance for the other backends (none when there are none); elsewhere, or
/// when that Vulkan instance cannot be made, one ordinary instance for all of
/// `backends`, as wgpu makes it.
pub(crate) fn instances(backends: wgpu::Backends) -> Vec<wgpu::Instance> {
    let flags = env::instance_flags();
    let vulkan = compute_only_vulkan(backends, flags);
    let rest = if vulkan.is_some() {
        backends - wgpu::Backends::VULKAN
    } else {
        backends
    };
    let mut out: Vec<wgpu::Instance> = vulkan.into_iter().collect();
    if !rest.is_empty() || out.is_empty() {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = rest;
        desc.flags = flags;
        out.push(wgpu::Instance::new(desc));
    }
    out
}

/// A Vulkan instance without the window-system surface extensions, or `None`
/// (logged at debug level) when Vulkan is not in `backends` or cannot be loaded.
///
/// wgpu-hal enables every WSI extension the loader offers. Mesa's implicit layer
/// `VK_LAYER_MESA_device_select` then, in `vkEnumeratePhysicalDevices`, connects
/// to Wayland when `VK_KHR_wayland_surface` is enabled (and to X when
/// `VK_KHR_xcb_surface` is), and without `XDG_RUNTIME_DIR` libwayland prints
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` on stderr,
/// twice per run (measured: Vulkan alone prints it, GL alone does not). This
/// library only computes, and wgpu uses these three extensions only to create
/// surfaces from Wayland, XCB or Xlib windows, which it never does, so removing
/// them (against `CreateInstanceCallbackArgs`' "must not remove") changes nothing
/// else. `VK_KHR_surface` and the rest stay.
///
/// Everything else is as `wgpu::Instance::new` makes it: the same hal descriptor,
/// and the same instance flags (`WGPU_VALIDATION`, `WGPU_DEBUG`, …) for wgpu-core,
/// which `wgpu::Instance::from_hal` would reset to their defaults.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn compute_only_vulkan(
    backends: wgpu::Backends,
    flags: wgpu::InstanceFlags,
) -> Option<wgpu::Instance> {
    use wgpu::{hal, wgc};
    const WSI_SURFACES: [&std::ffi::CStr; 3] = [
        c"VK_KHR_wayland_surface",
        c"VK_KHR_xcb_surface",
        c"VK_KHR_xlib_surface",
    ];
    if !backends.contains(wgpu::Backends::VULKAN) {
        return None;
    }
    let defaults = wgpu::InstanceDescriptor::new_without_display_handle();
    let desc = hal::InstanceDescriptor {
        name: "wgpu",
        flags,
        memory_budget_thresholds: defaults.memory_budget_thresholds,
        backend_options: defaults.backend_options.clone(),
        telemetry: None,
        display: None,
    };
    let callback: Box<hal::vulkan::CreateInstanceCallback> = Box::new(|args| {
        args.extensions.retain(|e| !WSI_SURFACES.contains(e));
    });
    // SAFETY: the descriptor is the one wgpu-core passes; the callback only drops
    // extensions that nothing but surface creation uses (see above).
    let raw = match unsafe { hal::vulkan::Instance::init_with_callback(&desc, Some(callback)) } {
        Ok(raw) => raw,
        Err(e) => {
            log::debug!("no compute-only Vulkan instance ({e}); using wgpu's own");
            return None;
        }
    };
    // `wgpu::Instance::from_hal`, but keeping `flags` in wgpu-core too: its
    // instance is taken out of the `Global` (which has `Drop`) by swapping in an
    // empty one.
    // SAFETY: `raw` is a valid Vulkan instance, handed over whole.
    let mut global =
        unsafe { wgc::global::Global::from_hal_instance::<hal::api::Vulkan>("wgpu", raw) };
    let mut empty = wgpu::InstanceDescriptor::new_without_display_handle();
    empty.backends = wgpu::Backends::empty();
    let mut core = std::mem::replace(
        &mut global.instance,
        wgc::instance::Instance::new("wgpu", empty, None),
    );
    drop(global);
    core.flags = flags;
    // SAFETY: `core` owns the instance made above and nothing else refers to it.
    Some(unsafe { wgpu::Instance::from_core(core) })
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn compute_only_vulkan(
    _backends: wgpu::Backends,
    _flags: wgpu::InstanceFlags,
) -> Option<wgpu::Instance> {
    None
}

/// Every adapter of `instances`, in their order (wgpu's order within each).
async fn adapters_of(instances: &[wgpu::Instance], backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let mut out = Vec::new();
    for inst in instances {
        out.extend(inst.enumerate_adapters(backends).await);
    }
    out
}

/// wgpu-core's ranking in `request_adapter` (lower first): for high performance
/// discrete, integrated, other (e.g. GL's unknown), virtual, CPU; for low power
/// integrated before discrete.
fn rank(device_type: wgpu::DeviceType, power: wgpu::PowerPreference) -> u8 {
    use wgpu::DeviceType as T;
    let low_power = power == wgpu::PowerPreference::LowPower;
    match device_type {
        T::DiscreteGpu if low_power => 2,
        T::IntegratedGpu if low_power => 1,
        T::DiscreteGpu => 1,
        T::IntegratedGpu => 2,
        T::Other => 3,
        T::VirtualGpu => 4,
        T::Cpu => 5,
    }
}

/// The adapter wgpu would have picked from one instance of all the backends:
/// `found` holds each instance's own pick in instance (backend) order, so the
/// best-ranked one wins and ties go to the earlier backend (Vulkan before GL);
/// with no preference, the first, as wgpu does not sort then.
fn best(found: Vec<wgpu::Adapter>, power: wgpu::PowerPreference) -> Option<wgpu::Adapter> {
    if power == wgpu::PowerPreference::None {
        return found.into_iter().next();
    }
    // `min_by_key` keeps the first of equal keys.
    found
        .into_iter()
        .min_by_key(|a| rank(a.get_info().device_type, power))
}

/// The adapter `options` ask for: by name substring when one is given (option or
/// `WGPU_ADAPTER_NAME`), else wgpu's choice for the power preference (see [`best`]).
pub(crate) async fn choose(options: &GpuOptions) -> Result<wgpu::Adapter> {
    #[cfg(target_arch = "wasm32")]
    require_browser_webgpu().await?;
    let backends = options.resolved_backends();
    let instances = instances(backends);
    let name = options.adapter_name.clone().or_else(env::adapter_name);
    if let Some(name) = name {
        let adapters = adapters_of(&instances, backends).await;
        let want = name.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
                    "no adapter name contains {name:?}; present: {names:?}"
                ))
            });
    }
    let power = options
        .power_preference
        .or_else(env::power_preference)
        .unwrap_or(wgpu::PowerPreference::HighPerformance);
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for inst in &instances {
        match inst
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: power,
                ..Default::default()
            })
            .await
        {
            Ok(a) => found.push(a),
            Err(e) => errors.push(e.to_string()),
        }
    }
    best(found, power)
        .ok_or_else(|| Error::NoAdapter(format!("backends {backends:?}: {}", errors.join("; "))))
}

/// Every adapter of the allowed backends but wgpu's no-op one.
pub(crate) async fn enumerate(options: &GpuOptions) -> Result<Vec<wgpu::Adapter>> {
    #[cfg(target_arch = "wasm32")]
    require_browser_webgpu().await?;
    let backends = options.resolved_backends();
    Ok(adapters_of(&instances(backends), backends)
        .await
        .into_iter()
        .filter(|a| a.get_info().backend != wgpu::Backend::Noop)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::rank;
    use wgpu::{DeviceType as T, PowerPreference as P};

    #[test]
    fn rank_follows_wgpu_request_adapter() {
        let order = |p| {
            let mut t = [
                T::Cpu,
                T::VirtualGpu,
                T::Other,
                T::IntegratedGpu,
                T::DiscreteGpu,
            ];
            t.sort_by_key(|&t| rank(t, p));
            t
        };
        assert_eq!(
            order(P::HighPerformance),
            [
                T::DiscreteGpu,
                T::IntegratedGpu,
                T::Other,
                T::VirtualGpu,
                T::Cpu
            ]
        );
        assert_eq!(
            order(P::LowPower),
            [
                T::IntegratedGpu,
                T::DiscreteGpu,
                T::Other,
                T::VirtualGpu,
                T::Cpu
            ]
        );
    }
}

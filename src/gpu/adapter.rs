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

pub(crate) fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    desc.flags = env::instance_flags();
    wgpu::Instance::new(desc)
}

/// The adapter `options` ask for: by name substring when one is given (option or
/// `WGPU_ADAPTER_NAME`), else wgpu's choice for the power preference.
pub(crate) async fn choose(options: &GpuOptions) -> Result<wgpu::Adapter> {
    #[cfg(target_arch = "wasm32")]
    require_browser_webgpu().await?;
    let backends = options.resolved_backends();
    let inst = instance(backends);
    let name = options.adapter_name.clone().or_else(env::adapter_name);
    if let Some(name) = name {
        let adapters = inst.enumerate_adapters(backends).await;
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
    inst.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: power,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::NoAdapter(format!("backends {backends:?}: {e}")))
}

/// Every adapter of the allowed backends but wgpu's no-op one.
pub(crate) async fn enumerate(options: &GpuOptions) -> Result<Vec<wgpu::Adapter>> {
    #[cfg(target_arch = "wasm32")]
    require_browser_webgpu().await?;
    let backends = options.resolved_backends();
    Ok(instance(backends)
        .enumerate_adapters(backends)
        .await
        .into_iter()
        .filter(|a| a.get_info().backend != wgpu::Backend::Noop)
        .collect())
}

//! `--backend`, `--adapter` and `--f16-storage`: which adapter a command opens,
//! and how its kernels hold f16 tensors.

use anyhow::Result;
use clap::{Args, ValueEnum};
use wgpu_attention::wgpu::Features;
use wgpu_attention::{parse_backend, Gpu, GpuOptions};

use crate::error::bad_input;

/// How kernels read and write f16 tensors (bf16 is always packed: WGSL has no bf16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum F16Storage {
    /// WGSL `f16` (SHADER_F16); an adapter without it is refused.
    Native,
    /// Two halves per `u32`, as on an adapter without SHADER_F16 (the feature is
    /// not requested; as WGPU_ATTENTION_DISABLE_FEATURES=f16).
    Packed,
}

/// `native` or `packed`: how `gpu` holds f16 tensors.
pub fn f16_storage_name(gpu: &Gpu) -> &'static str {
    if gpu.caps().native_f16() {
        "native"
    } else {
        "packed"
    }
}

/// Which adapter to open.
#[derive(Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// Backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else any).
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Adapter whose name contains this (case-insensitive; default: WGPU_ADAPTER_NAME, else the high-performance one).
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// f16 tensors as WGSL f16 (native: needs SHADER_F16) or two per u32 (packed) [default: native where the adapter has SHADER_F16, else packed].
    #[arg(long, value_enum, value_name = "MODE")]
    pub f16_storage: Option<F16Storage>,
}

impl DeviceArgs {
    pub fn options(&self) -> Result<GpuOptions> {
        let backends = match &self.backend {
            Some(name) => Some(parse_backend(name).map_err(|_| {
                bad_input!("--backend {name}: unknown backend; expected vulkan, metal, dx12 or gl")
            })?),
            None => None,
        };
        Ok(GpuOptions {
            backends,
            adapter_name: self.adapter.clone(),
            disabled_features: if self.f16_storage == Some(F16Storage::Packed) {
                Features::SHADER_F16
            } else {
                Features::empty()
            },
            ..Default::default()
        })
    }

    /// Why `gpu` cannot serve `--f16-storage native` (it has no SHADER_F16).
    fn lacks_native_f16(&self, gpu: &Gpu) -> Option<String> {
        (self.f16_storage == Some(F16Storage::Native) && !gpu.caps().native_f16()).then(|| {
            format!(
                "--f16-storage native: {} has no SHADER_F16 (or WGPU_ATTENTION_DISABLE_FEATURES names f16); use --f16-storage packed, or leave the flag out",
                gpu.describe()
            )
        })
    }

    /// Opens every adapter matching `--backend`/`--adapter`; also returns why
    /// others failed to open. None at all is a bad-input error saying what to install.
    pub fn open_all(&self) -> Result<(Vec<Gpu>, Vec<String>)> {
        let opts = self.options()?;
        let mut gpus = Vec::new();
        let mut failed = Vec::new();
        for g in Gpu::all_blocking(&opts) {
            match g {
                Ok(g) => {
                    let keep = self
                        .adapter
                        .as_ref()
                        .is_none_or(|n| g.info().name.to_lowercase().contains(&n.to_lowercase()));
                    match self.lacks_native_f16(&g) {
                        _ if !keep => {}
                        Some(why) => failed.push(why),
                        None => gpus.push(g),
                    }
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        if gpus.is_empty() {
            let what = match (&self.backend, &self.adapter) {
                (Some(b), _) => format!("--backend {b}: "),
                (None, Some(n)) => format!("--adapter {n}: "),
                _ => String::new(),
            };
            return Err(bad_input!(
                "{what}no GPU adapter found{}. Without a GPU install Mesa's software drivers: apt-get install mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri",
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed to open: {})", failed.len(), failed.join("; "))
                }
            ));
        }
        Ok((gpus, failed))
    }

    /// Opens the chosen adapter.
    pub fn open(&self) -> Result<Gpu> {
        let opts = self.options()?;
        let gpu =
            Gpu::new_blocking(&opts).map_err(|e| match (&e, &self.backend, &self.adapter) {
                (wgpu_attention::Error::NoAdapter(_), Some(b), _) => {
                    anyhow::Error::new(e).context(format!("--backend {b}"))
                }
                (wgpu_attention::Error::NoAdapter(_), None, Some(a)) => {
                    anyhow::Error::new(e).context(format!("--adapter {a}"))
                }
                _ => anyhow::Error::new(e),
            })?;
        if let Some(why) = self.lacks_native_f16(&gpu) {
            return Err(bad_input!("{why}"));
        }
        Ok(gpu)
    }
}

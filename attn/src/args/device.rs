//! `--backend` and `--adapter`: which adapter a command opens.

use anyhow::Result;
use clap::Args;
use wgpu_attention::{parse_backend, Gpu, GpuOptions};

use crate::error::bad_input;

/// Which adapter to open.
#[derive(Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// Backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else any).
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Adapter whose name contains this (case-insensitive; default: WGPU_ADAPTER_NAME, else the high-performance one).
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
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
            ..Default::default()
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
                    if keep {
                        gpus.push(g);
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
        Gpu::new_blocking(&opts).map_err(|e| match (&e, &self.backend, &self.adapter) {
            (wgpu_attention::Error::NoAdapter(_), Some(b), _) => {
                anyhow::Error::new(e).context(format!("--backend {b}"))
            }
            (wgpu_attention::Error::NoAdapter(_), None, Some(a)) => {
                anyhow::Error::new(e).context(format!("--adapter {a}"))
            }
            _ => anyhow::Error::new(e),
        })
    }
}

//! The environment switches. This is the only place in the crate that reads
//! environment variables; everything else gets their values as typed arguments.
//! A value that does not parse is an error naming the variable, never ignored.

use crate::error::{Error, Result};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &str, what: &str) -> Result<Option<T>> {
    var(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| Error::InvalidArgument(format!("{name}={v:?}: expected {what}")))
        })
        .transpose()
}

/// `WGPU_BACKEND` (wgpu's own parser).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn backends() -> Option<wgpu::Backends> {
    wgpu::Backends::from_env()
}

/// `WGPU_ADAPTER_NAME`: a case-insensitive substring of the adapter name.
pub(crate) fn adapter_name() -> Option<String> {
    var("WGPU_ADAPTER_NAME")
}

/// `WGPU_POWER_PREF` (wgpu's own parser).
pub(crate) fn power_preference() -> Option<wgpu::PowerPreference> {
    wgpu::PowerPreference::from_env()
}

/// wgpu's instance flags (`WGPU_DEBUG`, `WGPU_VALIDATION`, …).
pub(crate) fn instance_flags() -> wgpu::InstanceFlags {
    wgpu::InstanceFlags::from_env_or_default()
}

/// `WGPU_ATTENTION_LOG_COMPILES=1`: print each pipeline compile (backend,
/// kernel, specialization, milliseconds, the calling thread) to stderr: where
/// a first call's time goes.
pub(crate) fn log_compiles() -> bool {
    var("WGPU_ATTENTION_LOG_COMPILES").is_some_and(|v| v != "0")
}

/// `WGPU_ATTENTION_DISABLE_FEATURES=f16,subgroup,timestamp,coop`: optional features
/// not to request (tests the fallbacks).
pub(crate) fn disabled_features() -> Result<wgpu::Features> {
    parse_features(&var("WGPU_ATTENTION_DISABLE_FEATURES").unwrap_or_default())
        .map_err(|e| Error::InvalidArgument(format!("WGPU_ATTENTION_DISABLE_FEATURES: {e}")))
}

/// The optional features named in `list` (`"f16,subgroup,timestamp"`, any
/// subset, comma-separated), as `WGPU_ATTENTION_DISABLE_FEATURES` and the
/// browser page take them.
pub fn parse_features(list: &str) -> std::result::Result<wgpu::Features, String> {
    let mut out = wgpu::Features::empty();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out |= match name {
            "f16" => wgpu::Features::SHADER_F16,
            "subgroup" | "subgroups" => wgpu::Features::SUBGROUP,
            "timestamp" | "timestamps" => wgpu::Features::TIMESTAMP_QUERY,
            "coop" | "cooperative_matrix" => wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            other => {
                return Err(format!(
                    "unknown feature {other:?}; use f16, subgroup, timestamp or coop"
                ))
            }
        };
    }
    Ok(out)
}

/// Where the tuning cache lives: `WGPU_ATTENTION_TUNE_CACHE=PATH`, or `off` for
/// none (memory only); by default `$XDG_CACHE_HOME/wgpu-attention/tune.json`,
/// else `$HOME/.cache/wgpu-attention/tune.json`. In a browser, memory only.
pub(crate) fn tune_cache_path() -> Option<std::path::PathBuf> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    match var("WGPU_ATTENTION_TUNE_CACHE") {
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        Some(v) => Some(v.trim().into()),
        None => var("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .map(|d| d.join("wgpu-attention").join("tune.json")),
    }
}

/// Forced kernel variants (see [`crate::gpu::Tuning`]); `None` = the adapter's default.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TuningOverrides {
    /// `WGPU_ATTENTION_STAGED=0|1`.
    pub staged: Option<bool>,
    /// `WGPU_ATTENTION_SUBGROUP=0|4|8|…`.
    pub subgroup: Option<u32>,
    /// `WGPU_ATTENTION_CPU_ROWS=8|16|32`.
    pub cpu_rows: Option<u32>,
    /// `WGPU_ATTENTION_FUSED_ROWS=1..32`.
    pub fused_rows: Option<u32>,
    /// `WGPU_ATTENTION_COOP=auto|on|full|off`.
    pub coop: Option<super::tuning::Coop>,
    /// `WGPU_ATTENTION_TILE_ROWS=0|1|2|4`.
    pub tile_rows: Option<u32>,
    /// `WGPU_ATTENTION_TILE_SPLIT=0|1|2|4|8`.
    pub tile_split: Option<u32>,
}

pub(crate) fn tuning_overrides() -> Result<TuningOverrides> {
    Ok(TuningOverrides {
        staged: parse::<u8>("WGPU_ATTENTION_STAGED", "0 or 1")?.map(|v| v != 0),
        subgroup: parse("WGPU_ATTENTION_SUBGROUP", "a subgroup size (0 = off)")?,
        cpu_rows: parse("WGPU_ATTENTION_CPU_ROWS", "8, 16 or 32")?,
        fused_rows: parse("WGPU_ATTENTION_FUSED_ROWS", "1 to 32")?,
        coop: parse("WGPU_ATTENTION_COOP", "auto, on, full or off")?,
        tile_rows: parse("WGPU_ATTENTION_TILE_ROWS", "0, 1, 2 or 4")?,
        tile_split: parse("WGPU_ATTENTION_TILE_SPLIT", "0, 1, 2, 4 or 8")?,
    })
}

//! Kernel variant choices that depend on the adapter, validated when made.

use super::env::TuningOverrides;
use crate::error::{Error, Result};

/// Kernel variant choices that depend on the adapter: chosen from the adapter
/// type ([`Tuning::for_adapter`]), forced per call for tests and benchmarks with
/// the `with_*` methods (each checks its value), or by the environment switches
/// `WGPU_ATTENTION_STAGED`, `…_SUBGROUP`, `…_CPU_ROWS`, `…_FUSED_ROWS`,
/// `…_COOP`, `…_TILE_ROWS`, `…_TILE_SPLIT` when a
/// [`crate::gpu::Gpu`] opens. A tuning travels with a call
/// ([`crate::gpu::Recorder::with_tuning`], [`crate::AttentionOptions::tuning`]); the
/// device's own ([`crate::gpu::Gpu::tuning`]) never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tuning {
    staged: bool,
    softmax_workgroup: u32,
    cpu_rows: u32,
    fused_rows: u32,
    straight_line: bool,
    subgroup: u32,
    /// Lanes per workgroup of the tiled kernel; 0 = the plan's default (64).
    #[serde(default)]
    tile_lanes: u32,
    /// Keys per K/V tile of the tiled kernel, at most; 0 = as many as fit the
    /// granted workgroup memory, up to 64.
    #[serde(default)]
    tile_keys: u32,
    /// Whether the fused kernel multiplies QKᵀ on cooperative matrices.
    #[serde(default)]
    coop: Coop,
    /// Query rows per row group of the tiled kernel; 0 = the plan's choice.
    #[serde(default)]
    tile_rows: u32,
    /// Lanes per row group of the tiled kernel (splitting D, summing with
    /// subgroup shuffles); 0 = the plan's choice.
    #[serde(default)]
    tile_split: u32,
}

/// Whether the fused kernel multiplies Q·Kᵀ on cooperative matrices
/// (`flash_attention_coop.wgsl`; tensor cores where the device has them).
/// The device must grant `EXPERIMENTAL_COOPERATIVE_MATRIX`, `SHADER_F16` and
/// `SUBGROUP` and list an f16 × f16 → f32 shape the kernel has (8×8×8 or
/// 16×16×16) in `Adapter::cooperative_matrix_properties`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Coop {
    /// Where it is listed, on staged tunings (real GPUs), for many queries, when
    /// Q and K are stored in f16 (so rounding them to the matrices' f16 loses
    /// nothing); the scalar kernels otherwise.
    #[default]
    Auto,
    /// Never.
    Off,
    /// Q·Kᵀ on the matrices whenever the fused kernel runs (also decode splits and few queries, any
    /// dtype: f32 or bf16 Q and K are rounded to f16 for the product, which the
    /// result's tolerance must allow). A device without a usable shape is an
    /// error ([`crate::Error::MissingFeature`]) naming what is missing.
    On,
    /// As `On`, and P·V on the matrices too: the weights are rounded to f16
    /// (2⁻¹¹ relative) and the O tile lives in workgroup memory, so it needs
    /// more of it. Faster or slower than `On` by device: the autotuner measures
    /// both where it takes the coop kernel.
    Full,
}

impl std::str::FromStr for Coop {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Coop::Auto),
            "off" | "0" => Ok(Coop::Off),
            "on" | "1" => Ok(Coop::On),
            "full" => Ok(Coop::Full),
            other => Err(format!(
                "unknown cooperative-matrix mode {other:?}; use auto, on, full or off"
            )),
        }
    }
}

impl Tuning {
    /// The default for an adapter of this type (no environment switches).
    pub fn for_adapter(info: &wgpu::AdapterInfo) -> Self {
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        Tuning {
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
            tile_lanes: 0,
            tile_keys: 0,
            coop: Coop::Auto,
            tile_rows: 0,
            tile_split: 0,
        }
    }

    /// `self` with the environment's forced values applied (each validated).
    pub(crate) fn with_overrides(self, o: &TuningOverrides) -> Result<Self> {
        let mut t = self;
        if let Some(s) = o.staged {
            t = t.with_staged(s);
        }
        if let Some(s) = o.subgroup {
            t = t.with_subgroup(s)?;
        }
        if let Some(r) = o.cpu_rows {
            t = t.with_cpu_rows(r)?;
        }
        if let Some(r) = o.fused_rows {
            t = t.with_fused_rows(r)?;
        }
        if let Some(c) = o.coop {
            t = t.with_coop(c);
        }
        if let Some(r) = o.tile_rows {
            t = t.with_tile_rows(r)?;
        }
        if let Some(g) = o.tile_split {
            t = t.with_tile_split(g)?;
        }
        Ok(t)
    }

    /// `self` if every value is in range (a tuning read from a file is checked
    /// here, since deserializing does not go through the setters).
    pub fn validated(self) -> Result<Self> {
        self.with_softmax_workgroup(self.softmax_workgroup)?
            .with_cpu_rows(self.cpu_rows)?
            .with_fused_rows(self.fused_rows)?
            .with_subgroup(self.subgroup)?
            .with_tile_lanes(self.tile_lanes)?
            .with_tile_keys(self.tile_keys)?
            .with_tile_rows(self.tile_rows)?
            .with_tile_split(self.tile_split)
    }

    /// `self` without what a device with `features` cannot run (subgroup
    /// operations need `SUBGROUP`).
    pub(crate) fn granted(mut self, features: wgpu::Features) -> Self {
        if !features.contains(wgpu::Features::SUBGROUP) {
            self.subgroup = 0;
        }
        self
    }

    /// Stage tiles through workgroup memory (real GPUs profit; CPU drivers such as
    /// lavapipe run a workgroup on one thread and only pay for the barriers).
    pub fn staged(&self) -> bool {
        self.staged
    }

    /// Invocations cooperating on one softmax row.
    pub fn softmax_workgroup(&self) -> u32 {
        self.softmax_workgroup
    }

    /// Unstaged tiles (CPU drivers): rows shared by the 8 lanes of a workgroup,
    /// 8, 16 or 32 (with 32/rows columns per lane).
    pub fn cpu_rows(&self) -> u32 {
        self.cpu_rows
    }

    /// Query rows per invocation of the straight-line fused kernel (CPU drivers).
    pub fn fused_rows(&self) -> u32 {
        self.fused_rows
    }

    /// Unstaged fused attention uses the straight-line kernel
    /// (`flash_attention_cpu.wgsl`); off = the generic one. Off in browsers: on
    /// Chromium's SwiftShader the first dispatch of the straight-line kernel lost
    /// the device ("A valid external Instance reference no longer exists"), while
    /// the generic kernel runs.
    pub fn straight_line(&self) -> bool {
        self.straight_line
    }

    /// Subgroup size the straight-line fused kernel shares K/V loads across
    /// (`flash_attention_cpu.wgsl` with `S`); 0 = no subgroup operations. Set on
    /// CPU drivers that grant subgroups with one fixed size (lavapipe: 8), where
    /// it cuts the gathered loads by that factor.
    pub fn subgroup(&self) -> u32 {
        self.subgroup
    }

    /// Lanes (query rows) per workgroup of the tiled kernel (staged, real GPUs);
    /// 0 = the plan's default. Capped by the device's workgroup limits.
    pub fn tile_lanes(&self) -> u32 {
        self.tile_lanes
    }

    /// Keys per K/V tile of the tiled kernel, at most (fewer where the granted
    /// workgroup memory holds fewer); 0 = as many as fit, up to 64.
    pub fn tile_keys(&self) -> u32 {
        self.tile_keys
    }

    /// Query rows per row group of the tiled kernel (register blocking: each
    /// K/V element read from workgroup memory serves that many rows); 0 = the
    /// plan's choice (2 on discrete GPUs where the registers allow, else 1).
    pub fn tile_rows(&self) -> u32 {
        self.tile_rows
    }

    /// Lanes per row group of the tiled kernel: each holds every `split`-th
    /// chunk of D and the group sums its dot products with subgroup shuffles;
    /// 0 = the plan's choice (from the head dim, at most the device's smallest
    /// subgroup, 1 without `SUBGROUP` or on CPU drivers).
    pub fn tile_split(&self) -> u32 {
        self.tile_split
    }

    /// Rows per tiled row group: 0 (the plan's choice), 1, 2 or 4.
    pub fn with_tile_rows(mut self, rows: u32) -> Result<Self> {
        if ![0, 1, 2, 4].contains(&rows) {
            return Err(Error::InvalidArgument(format!(
                "Tuning tile_rows = {rows}: use 0 (the plan's choice), 1, 2 or 4"
            )));
        }
        self.tile_rows = rows;
        Ok(self)
    }

    /// Lanes per tiled row group: 0 (the plan's choice), 1, 2, 4 or 8 (more
    /// than 1 needs `SUBGROUP` and at most the device's smallest subgroup; the
    /// plan checks).
    pub fn with_tile_split(mut self, split: u32) -> Result<Self> {
        if ![0, 1, 2, 4, 8].contains(&split) {
            return Err(Error::InvalidArgument(format!(
                "Tuning tile_split = {split}: use 0 (the plan's choice), 1, 2, 4 or 8"
            )));
        }
        self.tile_split = split;
        Ok(self)
    }

    /// Whether the fused kernel uses cooperative matrices (see [`Coop`]).
    pub fn coop(&self) -> Coop {
        self.coop
    }

    /// With cooperative matrices on, off or where they pay ([`Coop`]).
    pub fn with_coop(mut self, coop: Coop) -> Self {
        self.coop = coop;
        self
    }

    /// Lanes per tiled workgroup: 0 (the default) or a power of two from 16 to 256.
    pub fn with_tile_lanes(mut self, lanes: u32) -> Result<Self> {
        if lanes != 0 && !(lanes.is_power_of_two() && (16..=256).contains(&lanes)) {
            return Err(Error::InvalidArgument(format!(
                "Tuning tile_lanes = {lanes}: use 0 (default) or a power of two from 16 to 256"
            )));
        }
        self.tile_lanes = lanes;
        Ok(self)
    }

    /// Keys per tile, at most: 0 (as many as fit) or 4 to 64.
    pub fn with_tile_keys(mut self, keys: u32) -> Result<Self> {
        if keys != 0 && !(4..=64).contains(&keys) {
            return Err(Error::InvalidArgument(format!(
                "Tuning tile_keys = {keys}: use 0 (as many as fit) or 4 to 64"
            )));
        }
        self.tile_keys = keys;
        Ok(self)
    }

    /// With or without workgroup-memory staging.
    pub fn with_staged(mut self, on: bool) -> Self {
        self.staged = on;
        self
    }

    /// With or without the straight-line fused kernel.
    pub fn with_straight_line(mut self, on: bool) -> Self {
        self.straight_line = on;
        self
    }

    /// Invocations per softmax row: a power of two from 1 to 256.
    pub fn with_softmax_workgroup(mut self, wg: u32) -> Result<Self> {
        if !(wg.is_power_of_two() && wg <= 256) {
            return Err(Error::InvalidArgument(format!(
                "Tuning softmax workgroup = {wg}: use a power of two from 1 to 256"
            )));
        }
        self.softmax_workgroup = wg;
        Ok(self)
    }

    /// Rows per unstaged tile: 8, 16 or 32.
    pub fn with_cpu_rows(mut self, rows: u32) -> Result<Self> {
        if ![8, 16, 32].contains(&rows) {
            return Err(Error::InvalidArgument(format!(
                "Tuning cpu_rows = {rows}: use 8, 16 or 32"
            )));
        }
        self.cpu_rows = rows;
        Ok(self)
    }

    /// Query rows per invocation of the straight-line fused kernel: 1 to 32
    /// (more than 8 runs faster on some drivers but compiles several times longer).
    pub fn with_fused_rows(mut self, rows: u32) -> Result<Self> {
        if !(1..=32).contains(&rows) {
            return Err(Error::InvalidArgument(format!(
                "Tuning fused_rows = {rows}: use 1 to 32"
            )));
        }
        self.fused_rows = rows;
        Ok(self)
    }

    /// Subgroup size to share K/V loads across: 0 (off) or a power of two from 4
    /// to 128, the size the device runs (the device never grants more than it has:
    /// without `SUBGROUP` it counts as 0).
    pub fn with_subgroup(mut self, size: u32) -> Result<Self> {
        if size != 0 && !(size.is_power_of_two() && (4..=128).contains(&size)) {
            return Err(Error::InvalidArgument(format!(
                "Tuning subgroup = {size}: use 0 (off) or a power of two from 4 to 128"
            )));
        }
        self.subgroup = size;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_with_the_range() {
        let info = wgpu::AdapterInfo {
            subgroup_min_size: 8,
            subgroup_max_size: 8,
            ..wgpu::AdapterInfo::new(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan)
        };
        let t = Tuning::for_adapter(&info);
        assert_eq!((t.staged(), t.subgroup()), (false, 8));
        for e in [
            t.with_cpu_rows(12).unwrap_err(),
            t.with_fused_rows(0).unwrap_err(),
            t.with_subgroup(6).unwrap_err(),
            t.with_softmax_workgroup(3).unwrap_err(),
        ] {
            assert!(
                matches!(e, Error::InvalidArgument(ref m) if m.contains("use")),
                "{e}"
            );
        }
        assert_eq!(t.granted(wgpu::Features::empty()).subgroup(), 0);
        assert_eq!("full".parse::<Coop>(), Ok(Coop::Full));
        assert_eq!(" On ".parse::<Coop>(), Ok(Coop::On));
        assert!("fast"
            .parse::<Coop>()
            .unwrap_err()
            .contains("auto, on, full or off"));
        let o = TuningOverrides {
            staged: Some(true),
            fused_rows: Some(16),
            ..Default::default()
        };
        let forced = t.with_overrides(&o).unwrap();
        assert!(forced.staged() && forced.fused_rows() == 16);
    }
}

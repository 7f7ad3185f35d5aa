//! One host module per WGSL kernel: parameter block, checks, dispatch.
//!
//! Each kernel has a `record_*` function that adds its dispatch to a
//! [`Recorder`](crate::gpu::Recorder) (so several kernels go out in one submission) and
//! a convenience function that records and submits.

pub mod block_mask;
pub mod cache_write;
pub mod cast;
pub mod decode;
pub mod flash_attention;
pub mod matmul;
pub mod posenc;
pub mod rms_norm;
pub mod rope;
pub mod scores;
pub mod softmax;
pub mod uniform;
pub mod weighted_sum;

use crate::error::{Error, Result};
use crate::shape::AttnShape;
use crate::tensor::Tensor;
use crate::transform::{MaskInfo, ScoreTransform};

/// Every specialization of the kernels besides the fused family that a device
/// with `caps` runs under `tuning` (see [`crate::plan::specializations`]).
pub(crate) fn specializations(
    caps: &crate::gpu::DeviceCaps,
    tuning: crate::gpu::Tuning,
) -> Vec<crate::shaders::Specialization> {
    use crate::shaders::Specialization;
    let mut out = Vec::new();
    let tile = TileConfig::new(tuning);
    for spec in [&scores::SPEC, &weighted_sum::SPEC, &matmul::SPEC] {
        out.push(Specialization::new(spec).overrides(&tile.constants));
    }
    out.push(softmax::specialization(softmax::workgroup(
        &caps.limits,
        tuning,
    )));
    for spec in [&decode::SPEC, &posenc::SPEC, &rope::SPEC, &cast::SPEC] {
        out.push(Specialization::new(spec));
    }
    out.push(rms_norm::specialization(rms_norm::workgroup(&caps.limits)));
    out.push(cache_write::specialization(
        crate::shaders::Elem::F32,
        crate::shaders::Elem::F32,
    ));
    out
}

/// The specializations besides the fused family that splice in a caller's
/// `mods`: the unfused scores kernel and the block-mask kernel.
pub(crate) fn mod_specializations(
    tuning: crate::gpu::Tuning,
    mods: Option<std::sync::Arc<crate::mods::ModWgsl>>,
) -> Vec<crate::shaders::Specialization> {
    use crate::shaders::Specialization;
    vec![
        Specialization::new(&scores::SPEC)
            .overrides(&TileConfig::new(tuning).constants)
            .mods(mods.clone()),
        Specialization::new(&block_mask::SPEC).mods(mods),
    ]
}

/// Every kernel's uniform block as its Rust mirror lays it out, by kernel name
/// (for the boundary test in `tests/shaders.rs`).
pub fn uniform_layouts() -> Vec<(&'static str, (Vec<uniform::Member>, usize))> {
    use uniform::layout;
    vec![
        ("scores", layout::<scores::Params>()),
        ("softmax", layout::<softmax::Params>()),
        ("weighted_sum", layout::<weighted_sum::Params>()),
        ("posenc", layout::<posenc::Params>()),
        ("matmul", layout::<matmul::Params>()),
        ("rope", layout::<rope::Params>()),
        ("decode", layout::<decode::Params>()),
        ("cast", layout::<cast::Params>()),
        ("block_mask", layout::<block_mask::Params>()),
        ("rms_norm", layout::<rms_norm::Params>()),
        ("cache_write", layout::<cache_write::Params>()),
        ("flash_attention", layout::<flash_attention::Params>()),
        ("flash_attention_cpu", layout::<flash_attention::Params>()),
        ("flash_attention_tiled", layout::<flash_attention::Params>()),
        ("flash_attention_coop", layout::<flash_attention::Params>()),
    ]
}

/// How `t`'s elements are read or written on its device (see
/// [`crate::shaders::Elem`]).
pub(crate) fn elem(t: &Tensor) -> crate::shaders::Elem {
    crate::shaders::Elem::of(t.dtype(), t.gpu().caps().native_f16())
}

/// A typed error unless `t` is f32 (`what` is an f32-only operand).
pub(crate) fn require_f32(t: &Tensor, what: &str) -> Result<()> {
    if t.dtype() == crate::DType::F32 {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "{what} must be f32 (it is {}): it is an f32 intermediate of the kernels",
        t.dtype()
    )))
}

/// The output of an elementwise kernel over `x` `[B, H, N, D]`: `out` when
/// given (shaped like `x`, contiguous in `x`'s layout from element 0, `x`'s
/// dtype; strides of dims of size 1 address nothing), else a new tensor.
pub(crate) fn output_like(x: &Tensor, out: Option<&Tensor>, what: &str) -> Result<Tensor> {
    let dims = x.dims4(what)?;
    let o_s = x.layout().strides(dims);
    match out {
        Some(o) => {
            let same = o
                .strides()
                .iter()
                .zip(&o_s)
                .zip(dims)
                .all(|((a, b), n)| n == 1 || a == b);
            if o.shape() != dims || !same || o.offset() != 0 || o.dtype() != x.dtype() {
                return Err(Error::Shape(format!(
                    "{what} output must be {} {dims:?} with strides {o_s:?} from element 0",
                    x.dtype()
                )));
            }
            Ok(o.clone())
        }
        None => Tensor::output_as(x.gpu(), what, &dims, Some(o_s.to_vec()), x.dtype()),
    }
}

/// Offset and strides of a tensor, as the u32 the shaders take. Storage bindings
/// are limited to 4 GiB, so every in-bounds element index fits.
pub(crate) fn addressing(t: &Tensor) -> (u32, [u32; 4]) {
    let mut s = [0u32; 4];
    for (d, &v) in s.iter_mut().zip(t.strides()) {
        *d = v as u32;
    }
    (t.offset() as u32, s)
}

pub(crate) use crate::tensor::same_device;

/// The attention shape of `q` (`[B, Hq, Nq, D]`) against `k` (`[B, Hkv, Nk, D]`).
pub(crate) fn attn_shape(q: &Tensor, k: &Tensor) -> Result<AttnShape> {
    same_device(q, k, "Q and K")?;
    let [b, hq, nq, d] = q.dims4("Q")?;
    let [bk, hkv, nk, dk] = k.dims4("K")?;
    if b != bk {
        return Err(Error::Shape(format!(
            "Q has batch {b} but K has batch {bk}"
        )));
    }
    if d != dk {
        return Err(Error::Shape(format!(
            "head dim differs: Q has D = {d}, K has D = {dk}"
        )));
    }
    let shape = AttnShape {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
    };
    shape.validate()?;
    Ok(shape)
}

/// The shared output-tile routine (`shaders/shared/tile_mm.wgsl`) in the variant
/// `tuning` asks for: tile size, and the `override` constants selecting it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TileConfig {
    pub staged: bool,
    pub rows: usize,
    pub cols: usize,
    pub constants: [(&'static str, f64); 3],
}

impl TileConfig {
    pub(crate) fn new(tuning: crate::gpu::Tuning) -> Self {
        if tuning.staged() {
            return TileConfig {
                staged: true,
                rows: 32,
                cols: 32,
                constants: [("STAGED", 1.0), ("WG_Y", 8.0), ("CPU_ROWS", 8.0)],
            };
        }
        // Tuning::with_cpu_rows admits 8, 16 and 32 only.
        let r = tuning.cpu_rows();
        TileConfig {
            staged: false,
            rows: r as usize,
            cols: 8 * (32 / r as usize),
            constants: [("STAGED", 0.0), ("WG_Y", 1.0), ("CPU_ROWS", r as f64)],
        }
    }

    /// Loop iterations per invocation for a reduction of length `kdim`: one per k
    /// step unstaged; per 16-deep chunk, 8 staging steps + 16 FMA steps + 1 staged.
    pub(crate) fn loop_iterations(&self, kdim: usize) -> u64 {
        if self.staged {
            kdim.div_ceil(16) as u64 * 25
        } else {
            kdim as u64
        }
    }

    /// Tiles covering an `m × n` output, as (rows of tiles, columns of tiles).
    pub(crate) fn tiles(&self, m: usize, n: usize) -> (u32, u32) {
        (m.div_ceil(self.rows) as u32, n.div_ceil(self.cols) as u32)
    }
}

crate::uniform! {
/// The mask fields of a kernel's uniform block (same order in softmax.wgsl and
/// shared/flash_common.wgsl): rules, then the dense-mask kind.
pub(crate) struct MaskFields {
    causal: u32,
    window: u32,
    left: u32,
    right: u32,
    diag_off: i32,
    has_lengths: u32,
    mask_kind: u32,
}}

impl MaskFields {
    /// The rules and dense-mask kind of `t`.
    pub(crate) fn of(t: &ScoreTransform) -> Result<Self> {
        let m = &t.masking;
        let window = m
            .window
            .unwrap_or(crate::mask::Window { left: 0, right: 0 });
        Ok(MaskFields {
            causal: m.causal as u32,
            window: m.window.is_some() as u32,
            left: window.left.min(i32::MAX as u32),
            right: window.right.min(i32::MAX as u32),
            diag_off: i32::try_from(t.diag_off).map_err(|_| {
                Error::InvalidArgument(format!(
                    "diagonal offset {} does not fit in i32",
                    t.diag_off
                ))
            })?,
            has_lengths: m.key_lengths.is_some() as u32,
            mask_kind: MaskInfo::mode(t.mask.as_ref()),
        })
    }
}

/// The key lengths of `masking` uploaded, if it has any.
pub(crate) fn upload_key_lengths(
    gpu: &crate::gpu::Gpu,
    masking: &crate::mask::Masking,
) -> Result<Option<wgpu::Buffer>> {
    masking
        .key_lengths
        .as_ref()
        .map(|l| {
            gpu.upload(
                "key lengths",
                bytemuck::cast_slice(l),
                wgpu::BufferUsages::STORAGE,
            )
        })
        .transpose()
}

/// ALiBi slopes (checked by the problem) uploaded, if any.
pub(crate) fn upload_slopes(
    gpu: &crate::gpu::Gpu,
    slopes: Option<&[f32]>,
) -> Result<Option<wgpu::Buffer>> {
    slopes
        .map(|s| {
            gpu.upload(
                "alibi slopes",
                bytemuck::cast_slice(s),
                wgpu::BufferUsages::STORAGE,
            )
        })
        .transpose()
}

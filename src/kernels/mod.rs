//! One host module per WGSL kernel: parameter block, checks, dispatch.
//!
//! Each kernel has a `record_*` function that adds its dispatch to a
//! [`Recorder`](crate::Recorder) (so several kernels go out in one submission) and
//! a convenience function that records and submits.

pub mod decode;
pub mod flash_attention;
pub mod matmul;
pub mod posenc;
pub mod rope;
pub mod scores;
pub mod softmax;
pub mod weighted_sum;

use crate::error::{Error, Result};
use crate::shape::AttnShape;
use crate::tensor::Tensor;

/// Offset and strides of a tensor, as the u32 the shaders take. Storage bindings
/// are limited to 4 GiB, so every in-bounds element index fits.
pub(crate) fn addressing(t: &Tensor) -> (u32, [u32; 4]) {
    let mut s = [0u32; 4];
    for (d, &v) in s.iter_mut().zip(t.strides()) {
        *d = v as u32;
    }
    (t.offset() as u32, s)
}

pub(crate) fn same_device(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.gpu().is_same(b.gpu()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what}: tensors live on different devices"
        )))
    }
}

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
pub(crate) struct TileConfig {
    pub staged: bool,
    pub rows: usize,
    pub cols: usize,
    pub constants: [(&'static str, f64); 3],
}

impl TileConfig {
    pub(crate) fn new(tuning: crate::gpu::Tuning) -> Result<Self> {
        if tuning.staged {
            return Ok(TileConfig {
                staged: true,
                rows: 32,
                cols: 32,
                constants: [("STAGED", 1.0), ("WG_Y", 8.0), ("CPU_ROWS", 8.0)],
            });
        }
        let r = tuning.cpu_rows;
        if ![8, 16, 32].contains(&r) {
            return Err(Error::InvalidArgument(format!(
                "Tuning::cpu_rows = {r}: use 8, 16 or 32"
            )));
        }
        Ok(TileConfig {
            staged: false,
            rows: r as usize,
            cols: 8 * (32 / r as usize),
            constants: [("STAGED", 0.0), ("WG_Y", 1.0), ("CPU_ROWS", r as f64)],
        })
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

/// The mask fields of a kernel's uniform block (same order in softmax.wgsl and
/// shared/flash_common.wgsl): rules, then the dense-mask kind.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct MaskFields {
    causal: u32,
    window: u32,
    left: u32,
    right: u32,
    diag_off: i32,
    has_lengths: u32,
    mask_kind: u32,
}

impl MaskFields {
    pub(crate) fn set_diag_off(&mut self, off: i32) {
        self.diag_off = off;
    }

    /// The dense mask's kind: 0 none, 1 additive, 2 bool (mask.wgsl's MASK_*).
    pub(crate) fn mask_kind(&self) -> u32 {
        self.mask_kind
    }
}

/// A dense mask as a kernel reads it: the tensor, its element strides for
/// `[b, h, i, j]` (0 on broadcast dims) and the element offset of the first
/// `(b, h)` the dispatch covers (non-zero for a chunk of a larger problem).
#[derive(Clone, Copy)]
pub(crate) struct MaskRef<'a> {
    pub tensor: &'a crate::mask_tensor::MaskTensor,
    pub strides: [u32; 4],
    pub offset: u32,
}

impl<'a> MaskRef<'a> {
    /// `mask` for scores of `[b, h, nq, nk]`, checked to be on `gpu` and to
    /// broadcast to them.
    pub(crate) fn whole(
        gpu: &crate::Gpu,
        mask: &'a crate::mask_tensor::MaskTensor,
        [b, h, nq, nk]: [usize; 4],
    ) -> Result<Self> {
        mask.check_device(gpu)?;
        Ok(MaskRef {
            tensor: mask,
            strides: mask.broadcast_strides(b, h, nq, nk)?,
            offset: 0,
        })
    }
}

/// Everything a masking kernel needs from `masking` and `mask` for scores of
/// `[b, h, nq, nk]`, checked: the uniform fields, the dense mask's broadcast
/// strides, and the key lengths uploaded (if any).
pub(crate) struct MaskSetup {
    pub fields: MaskFields,
    pub strides: [u32; 4],
    pub lengths: Option<wgpu::Buffer>,
}

pub(crate) fn mask_setup(
    gpu: &crate::Gpu,
    masking: &crate::mask::Masking,
    mask: Option<&crate::mask_tensor::MaskTensor>,
    dims: [usize; 4],
) -> Result<MaskSetup> {
    let mask = mask.map(|m| MaskRef::whole(gpu, m, dims)).transpose()?;
    mask_setup_ref(gpu, masking, mask, dims)
}

/// [`mask_setup`] for a mask already placed ([`MaskRef`]).
pub(crate) fn mask_setup_ref(
    gpu: &crate::Gpu,
    masking: &crate::mask::Masking,
    mask: Option<MaskRef<'_>>,
    [b, _, nq, nk]: [usize; 4],
) -> Result<MaskSetup> {
    use crate::mask_tensor::MaskKind;
    masking.validate(b, nk)?;
    let window = masking
        .window
        .unwrap_or(crate::mask::Window { left: 0, right: 0 });
    let fields = MaskFields {
        causal: masking.causal as u32,
        window: masking.window.is_some() as u32,
        left: window.left.min(i32::MAX as u32),
        right: window.right.min(i32::MAX as u32),
        diag_off: masking.diagonal_offset(nq, nk) as i32,
        has_lengths: masking.key_lengths.is_some() as u32,
        mask_kind: match mask.map(|m| m.tensor.kind()) {
            None => 0,
            Some(MaskKind::Additive) => 1,
            Some(MaskKind::Bool) => 2,
        },
    };
    let lengths = match &masking.key_lengths {
        Some(l) => Some(gpu.upload(
            "key lengths",
            bytemuck::cast_slice(l),
            wgpu::BufferUsages::STORAGE,
        )?),
        None => None,
    };
    Ok(MaskSetup {
        fields,
        strides: mask.map_or([0; 4], |m| m.strides),
        lengths,
    })
}

/// Rejects a softcap that is not finite and positive.
pub(crate) fn check_softcap(softcap: Option<f32>) -> Result<()> {
    match softcap {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(Error::InvalidArgument(format!(
            "softcap must be finite and > 0, got {c}"
        ))),
        _ => Ok(()),
    }
}

/// The ALiBi slopes checked (one finite slope per query head) and uploaded.
pub(crate) fn alibi_buffer(
    gpu: &crate::Gpu,
    slopes: Option<&[f32]>,
    hq: usize,
) -> Result<Option<wgpu::Buffer>> {
    let Some(slopes) = slopes else {
        return Ok(None);
    };
    if slopes.len() != hq {
        return Err(Error::InvalidArgument(format!(
            "ALiBi has {} slopes for {hq} query heads: give one per query head",
            slopes.len()
        )));
    }
    if slopes.iter().any(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument("ALiBi slopes must be finite".into()));
    }
    gpu.upload(
        "alibi slopes",
        bytemuck::cast_slice(slopes),
        wgpu::BufferUsages::STORAGE,
    )
    .map(Some)
}

//! Dense masks on the GPU.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::mask::{additive_floor, HostMask, MaskValues};

/// Kind of a dense mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskKind {
    /// true = attend; stored as one byte per element.
    Bool,
    /// Added to the scores; `-inf` / values `<= -1e30` exclude the key.
    Additive,
}

/// A dense mask uploaded to the GPU, broadcastable to `[B, H, Nq, Nk]`, for
/// [`crate::AttentionOptions::mask`] (and the `scores` / `softmax` kernels).
/// Cloning shares the buffer.
///
/// ```
/// use wgpu_attention::{attention, AttentionOptions, Gpu, HostMask, Layout, MaskTensor, Tensor};
/// # fn main() -> wgpu_attention::Result<()> {
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let dims = [1, 1, 2, 3]; // B, H, N, D: 2 queries and 2 keys
/// let x = [0.5, -1.0, 0.25, 1.0, 0.75, -0.5];
/// let q = Tensor::from_bhnd(&gpu, &x, dims, Layout::Bhnd)?;
/// // [1, 1, Nq, Nk], broadcast over batch and heads: each query sees one key,
/// // query 0 the second and query 1 the first.
/// let host = HostMask::bool(vec![false, true, true, false], [1, 1, 2, 2])?;
/// let mask = MaskTensor::upload(&gpu, &host)?;
/// let opts = AttentionOptions { mask: Some(&mask), ..Default::default() };
/// let o = attention(&q, &q, &q, &opts)?.o.to_vec_blocking()?;
/// // With one visible key, a row's output is that key's value.
/// let want = [1.0, 0.75, -0.5, 0.5, -1.0, 0.25];
/// assert!(o.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MaskTensor {
    gpu: Gpu,
    pub(crate) buffer: Arc<wgpu::Buffer>,
    dims: [usize; 4],
    /// Elements from one row (`[b, h, i, ·]`) to the next, see [`padded_row`].
    row_stride: usize,
    kind: MaskKind,
    dtype: crate::DType,
}

/// Row stride (in elements of `elem` bytes) for rows of `mk` elements: a multiple
/// of 4 elements, so the fused kernels can read 4 keys of a row in one aligned
/// vec4 load, and an odd number of 64-byte lines when over one line, so rows do
/// not alias in the cache. Without the second rule a [Nq, 1024] f32 bias has
/// rows 4 KiB apart that all fall in one L1 set; on lavapipe (8 lanes × 8 rows
/// read at once) the bias overhead at B1 H8 N1024 D64 was +4–30% over 6
/// processes (median +15%) unpadded and +8–15% (median +13%) padded
/// (BENCHMARKS.md, v10).
fn padded_row(mk: usize, elem: usize) -> usize {
    let bytes = (mk * elem).div_ceil(16) * 16;
    if bytes <= 64 {
        return bytes / elem;
    }
    let lines = bytes.div_ceil(64);
    let lines = if lines.is_multiple_of(2) {
        lines + 1
    } else {
        lines
    };
    lines * 64 / elem
}

impl MaskTensor {
    /// Uploads a host mask (additive values as f32, bool values one byte each),
    /// each row padded for aligned vector reads. A padded mask larger than one
    /// storage binding is [`Error::BufferTooLarge`].
    pub fn upload(gpu: &Gpu, host: &HostMask) -> Result<MaskTensor> {
        Self::upload_as(gpu, host, crate::DType::F32)
    }

    /// Uploads a host mask, an additive one stored in `dtype`: f32, or f16 (half
    /// the bytes; values rounded to nearest even, every entry at or below
    /// [`crate::mask::ADDITIVE_MASKED`] or below −65 504 excluding the key, as
    /// −inf does). Bool masks take f32 (their storage is one byte per entry).
    pub fn upload_as(gpu: &Gpu, host: &HostMask, dtype: crate::DType) -> Result<MaskTensor> {
        let [_, _, _, mk] = host.dims;
        let rows = host.dims[..3].iter().product::<usize>();
        let (kind, elem) = match (&host.values, dtype) {
            (MaskValues::Bool(_), crate::DType::F32) => (MaskKind::Bool, 1),
            (MaskValues::Additive(_), crate::DType::F32) => (MaskKind::Additive, 4),
            (MaskValues::Additive(_), crate::DType::F16) => (MaskKind::Additive, 2),
            (values, _) => {
                return Err(Error::InvalidArgument(format!(
                    "a {} mask cannot be stored as {dtype}: additive masks are f32 or f16, bool masks one byte per entry (pass DType::F32)",
                    match values {
                        MaskValues::Bool(_) => "bool",
                        MaskValues::Additive(_) => "additive",
                    }
                )))
            }
        };
        let row_stride = padded_row(mk, elem);
        let mut bytes = vec![0u8; (rows * row_stride * elem).div_ceil(16).max(1) * 16];
        for (r, dst) in bytes.chunks_mut(row_stride * elem).take(rows).enumerate() {
            let keys = r * mk..(r + 1) * mk;
            match &host.values {
                MaskValues::Bool(v) => {
                    for (d, &t) in dst.iter_mut().zip(&v[keys]) {
                        *d = t as u8;
                    }
                }
                MaskValues::Additive(v) if elem == 2 => {
                    for (d, &x) in dst.chunks_exact_mut(2).zip(&v[keys]) {
                        let h = half::f16::from_f32(additive_floor(x));
                        d.copy_from_slice(&h.to_le_bytes());
                    }
                }
                MaskValues::Additive(v) => {
                    for (d, &x) in dst.chunks_exact_mut(4).zip(&v[keys]) {
                        d.copy_from_slice(&additive_floor(x).to_ne_bytes());
                    }
                }
            }
        }
        let buffer = gpu.upload("mask", &bytes, wgpu::BufferUsages::STORAGE)?;
        Ok(MaskTensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            dims: host.dims,
            row_stride,
            kind,
            dtype,
        })
    }

    /// How an additive mask's entries are stored (f32 for bool masks).
    pub fn dtype(&self) -> crate::DType {
        self.dtype
    }

    /// The host mask's `[B|1, H|1, Nq|1, Nk|1]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

    /// Whether the values are bool (attend / not) or added to the scores.
    pub fn kind(&self) -> MaskKind {
        self.kind
    }

    /// Element strides for `[b, h, i, j]`, 0 on broadcast (size-1) dims, after
    /// checking that the mask broadcasts to `[b, h, nq, nk]`.
    pub(crate) fn broadcast_strides(
        &self,
        b: usize,
        h: usize,
        nq: usize,
        nk: usize,
    ) -> Result<[u32; 4]> {
        crate::mask::check_mask_broadcast(self.dims, b, h, nq, nk)?;
        let [_, mh, mq, _] = self.dims;
        let rs = self.row_stride;
        let full = [mh * mq * rs, mq * rs, rs, 1];
        let mut s = [0u32; 4];
        for i in 0..4 {
            s[i] = if self.dims[i] == 1 { 0 } else { full[i] as u32 };
        }
        Ok(s)
    }

    pub(crate) fn check_device(&self, gpu: &Gpu) -> Result<()> {
        if self.gpu.is_same(gpu) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "the mask was uploaded to a different device than the tensors".into(),
            ))
        }
    }

    /// Rejects a mask kind an operation cannot take.
    pub(crate) fn expect_kind(&self, kind: MaskKind, what: &str) -> Result<()> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} takes an {kind:?} mask, got a {:?} mask",
                self.kind
            )))
        }
    }
}

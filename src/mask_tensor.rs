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

/// A dense mask uploaded to the GPU, broadcastable to `[B, H, Nq, Nk]`.
#[derive(Clone, Debug)]
pub struct MaskTensor {
    gpu: Gpu,
    pub(crate) buffer: Arc<wgpu::Buffer>,
    dims: [usize; 4],
    kind: MaskKind,
}

impl MaskTensor {
    /// Uploads a host mask.
    pub fn upload(gpu: &Gpu, host: &HostMask) -> Result<MaskTensor> {
        let (bytes, kind): (Vec<u8>, _) = match &host.values {
            MaskValues::Bool(v) => {
                let mut b: Vec<u8> = v.iter().map(|&t| t as u8).collect();
                b.resize(b.len().div_ceil(4) * 4, 0);
                (b, MaskKind::Bool)
            }
            MaskValues::Additive(v) => {
                let clamped: Vec<f32> = v.iter().map(|&x| additive_floor(x)).collect();
                (bytemuck::cast_slice(&clamped).to_vec(), MaskKind::Additive)
            }
        };
        let buffer = gpu.upload("mask", &bytes, wgpu::BufferUsages::STORAGE)?;
        Ok(MaskTensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            dims: host.dims,
            kind,
        })
    }

    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

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
        let [_, mh, mq, mk] = self.dims;
        let full = [mh * mq * mk, mq * mk, mk, 1];
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

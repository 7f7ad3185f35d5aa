//! Tensors: a GPU buffer plus dtype, shape, strides and offset in elements.
//!
//! Kernels read through strides, so a logical `[B, H, N, D]` tensor can be stored
//! as BHND (PyTorch SDPA) or BNHD (what `X·W_Q` produces) without a transpose copy.

use std::sync::Arc;

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// Physical order of a logical `[B, H, N, D]` tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[B, H, N, D]` in memory (PyTorch SDPA).
    #[default]
    Bhnd,
    /// `[B, N, H, D]` in memory (FlashAttention; projection outputs).
    Bnhd,
}

impl Layout {
    /// Strides (in elements) of the logical dims `[B, H, N, D]` for this layout.
    pub fn strides(self, [_, h, n, d]: [usize; 4]) -> [usize; 4] {
        match self {
            Layout::Bhnd => [h * n * d, n * d, d, 1],
            Layout::Bnhd => [n * h * d, d, h * d, 1],
        }
    }

    /// Reorders logical BHND data into this layout's memory order.
    pub fn from_bhnd<T: Copy + bytemuck::Zeroable>(self, data: &[T], dims: [usize; 4]) -> Vec<T> {
        let s = self.strides(dims);
        let mut out = vec![T::zeroed(); data.len()];
        for (i, &v) in data.iter().enumerate() {
            out[physical_index(i, &dims, &s)] = v;
        }
        out
    }

    /// Reorders data in this layout's memory order into logical BHND (the
    /// inverse of [`Layout::from_bhnd`]); e.g. a packed `[N, H, D]` is BNHD of
    /// `[1, H, N, D]`.
    pub fn to_bhnd<T: Copy>(self, data: &[T], dims: [usize; 4]) -> Vec<T> {
        let s = self.strides(dims);
        (0..data.len())
            .map(|i| data[physical_index(i, &dims, &s)])
            .collect()
    }
}

fn physical_index(mut logical: usize, shape: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        off += (logical % n) * s;
        logical /= n;
    }
    off
}

/// Elements from the start of the buffer to one past the last addressed element.
fn span(shape: &[usize], strides: &[usize], offset: usize) -> usize {
    offset
        + shape
            .iter()
            .zip(strides)
            .map(|(&n, &s)| (n - 1) * s)
            .sum::<usize>()
        + 1
}

/// [`span`] after checking that shape and strides agree in rank and no dim is zero.
fn checked_span(what: &str, shape: &[usize], strides: &[usize], offset: usize) -> Result<usize> {
    if shape.len() != strides.len() {
        return Err(Error::Shape(format!(
            "{what}: shape {shape:?} and strides {strides:?} differ in rank"
        )));
    }
    if let Some(i) = shape.iter().position(|&n| n == 0) {
        return Err(Error::ZeroSized(format!(
            "dim {i} of {what} shape {shape:?}"
        )));
    }
    Ok(span(shape, strides, offset))
}

pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// A tensor on the GPU: f32, f16 or bf16 elements ([`DType`]).
///
/// ```no_run
/// # fn main() -> wgpu_attention::Result<()> {
/// use wgpu_attention::{DType, Gpu, GpuOptions, Tensor};
/// let gpu = Gpu::new_blocking(&GpuOptions::default())?;
/// let x = Tensor::from_slice_as(&gpu, &[1.0, 2.5, 1e-4], &[3], DType::F16)?;
/// assert_eq!(x.dtype(), DType::F16);
/// let h: Vec<half::f16> = x.to_vec_of_blocking()?;
/// assert_eq!(h[1].to_f32(), 2.5);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    gpu: Gpu,
    buffer: Arc<wgpu::Buffer>,
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Tensor {
    /// Uploads `data` (`f32`, [`half::f16`] or [`half::bf16`]) as a contiguous
    /// (row-major) tensor of `shape` in that type's dtype.
    pub fn from_slice<T: Element>(gpu: &Gpu, data: &[T], shape: &[usize]) -> Result<Tensor> {
        Self::from_strided(gpu, data, shape, &contiguous_strides(shape), 0)
    }

    /// Uploads f32 `data` rounded to `dtype` (to nearest, ties to even), contiguous.
    pub fn from_slice_as(gpu: &Gpu, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::from_bytes(gpu, &dtype.encode(data), shape, dtype)
    }

    /// Uploads `bytes`, little-endian elements of `dtype`, as a contiguous tensor.
    pub fn from_bytes(gpu: &Gpu, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Tensor> {
        if !bytes.len().is_multiple_of(dtype.size()) {
            return Err(Error::Shape(format!(
                "{} bytes is not a whole number of {dtype} elements ({} bytes each)",
                bytes.len(),
                dtype.size()
            )));
        }
        Self::upload(
            gpu,
            bytes,
            bytes.len() / dtype.size(),
            shape,
            &contiguous_strides(shape),
            0,
            dtype,
        )
    }

    /// Uploads `data` as the memory of a tensor with explicit `strides` and
    /// `offset` (elements). Every addressed element must lie inside `data`.
    pub fn from_strided<T: Element>(
        gpu: &Gpu,
        data: &[T],
        shape: &[usize],
        strides: &[usize],
        offset: usize,
    ) -> Result<Tensor> {
        Self::upload(
            gpu,
            bytemuck::cast_slice(data),
            data.len(),
            shape,
            strides,
            offset,
            T::DTYPE,
        )
    }

    fn upload(
        gpu: &Gpu,
        bytes: &[u8],
        elements: usize,
        shape: &[usize],
        strides: &[usize],
        offset: usize,
        dtype: DType,
    ) -> Result<Tensor> {
        let span = checked_span("tensor", shape, strides, offset)?;
        if span > elements {
            return Err(Error::Shape(format!(
                "shape {shape:?} with strides {strides:?} and offset {offset} addresses {span} elements but data has {elements}"
            )));
        }
        let buffer = gpu.upload(
            "tensor",
            bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        Ok(Tensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            dtype,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        })
    }

    /// Uploads logical `[B, H, N, D]` data (given in BHND order), stored in `layout`.
    pub fn from_bhnd<T: Element>(
        gpu: &Gpu,
        data: &[T],
        dims: [usize; 4],
        layout: Layout,
    ) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        if data.len() != n {
            return Err(Error::Shape(format!(
                "data has {} elements, dims {dims:?} need {n}",
                data.len()
            )));
        }
        Self::from_strided(
            gpu,
            &layout.from_bhnd(data, dims),
            &dims,
            &layout.strides(dims),
            0,
        )
    }

    /// [`Tensor::from_bhnd`] from f32 data rounded to `dtype`.
    pub fn from_bhnd_as(
        gpu: &Gpu,
        data: &[f32],
        dims: [usize; 4],
        layout: Layout,
        dtype: DType,
    ) -> Result<Tensor> {
        match dtype {
            DType::F32 => Self::from_bhnd(gpu, data, dims, layout),
            DType::F16 => Self::from_bhnd(gpu, &rounded::<half::f16>(data), dims, layout),
            DType::BF16 => Self::from_bhnd(gpu, &rounded::<half::bf16>(data), dims, layout),
        }
    }

    /// A new uninitialized (zero, or NaN when poisoning) f32 tensor for kernel output.
    pub(crate) fn output(
        gpu: &Gpu,
        what: &str,
        shape: &[usize],
        strides: Option<Vec<usize>>,
    ) -> Result<Tensor> {
        Self::output_as(gpu, what, shape, strides, DType::F32)
    }

    /// [`Tensor::output`] of `dtype`.
    pub(crate) fn output_as(
        gpu: &Gpu,
        what: &str,
        shape: &[usize],
        strides: Option<Vec<usize>>,
        dtype: DType,
    ) -> Result<Tensor> {
        if let Some(i) = shape.iter().position(|&n| n == 0) {
            return Err(Error::ZeroSized(format!(
                "dim {i} of {what} shape {shape:?}"
            )));
        }
        let n: u64 = shape.iter().map(|&v| v as u64).product();
        let strides = strides.unwrap_or_else(|| contiguous_strides(shape));
        let n = n.max(span(shape, &strides, 0) as u64);
        let buffer = gpu.alloc(what, n * dtype.size() as u64)?;
        Ok(Tensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            dtype,
            shape: shape.to_vec(),
            strides,
            offset: 0,
        })
    }

    /// A tensor over the caller's `buffer` (no copy): elements of `dtype` at
    /// `offset` elements from the buffer's start, addressed through `strides`
    /// (elements; `None`: contiguous row-major). Kernels read it in place and,
    /// as an output ([`crate::record_attention_into`]), write it in place.
    ///
    /// The buffer must have been created on `gpu`'s device with
    /// `BufferUsages::STORAGE` (and `COPY_SRC` to be read back with
    /// [`Tensor::to_vec`]); its size must be a multiple of 4 bytes, hold every
    /// addressed element, and fit one storage binding of the device (kernels
    /// bind the whole buffer). Each is checked, with an error saying what to
    /// change.
    ///
    /// ```
    /// # fn main() -> wgpu_attention::Result<()> {
    /// use wgpu_attention::{wgpu, DType, Gpu, Tensor};
    /// let gpu = Gpu::new_blocking(&Default::default())?;
    /// let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
    ///     label: Some("mine"),
    ///     size: 64,
    ///     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    ///     mapped_at_creation: false,
    /// });
    /// gpu.queue().write_buffer(&buffer, 0, bytemuck::cast_slice(&[1.0f32; 16]));
    /// // Elements 4..16 as a [3, 4] matrix.
    /// let t = Tensor::from_buffer(&gpu, &buffer, DType::F32, &[3, 4], None, 4)?;
    /// assert_eq!(t.to_vec_blocking()?, vec![1.0; 12]);
    /// # Ok(()) }
    /// ```
    pub fn from_buffer(
        gpu: &Gpu,
        buffer: &wgpu::Buffer,
        dtype: DType,
        shape: &[usize],
        strides: Option<&[usize]>,
        offset: usize,
    ) -> Result<Tensor> {
        let strides = strides.map_or_else(|| contiguous_strides(shape), <[usize]>::to_vec);
        let span = checked_span("tensor over a caller's buffer", shape, &strides, offset)?;
        let usage = buffer.usage();
        if !usage.contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidArgument(format!(
                "the buffer's usage is {usage:?}: kernels bind it as storage, so create it with BufferUsages::STORAGE"
            )));
        }
        let size = buffer.size();
        if !size.is_multiple_of(4) {
            return Err(Error::InvalidArgument(format!(
                "the buffer is {size} bytes: storage bindings need a multiple of 4"
            )));
        }
        let need = (span * dtype.size()) as u64;
        if need > size {
            return Err(Error::Shape(format!(
                "shape {shape:?} with strides {strides:?} and offset {offset} addresses {span} {dtype} elements ({need} bytes) but the buffer is {size} bytes"
            )));
        }
        gpu.check_storage_size("a caller's buffer (bound whole)", size)?;
        Ok(Tensor {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer.clone()),
            dtype,
            shape: shape.to_vec(),
            strides,
            offset,
        })
    }

    /// A contiguous tensor over a workspace's scratch buffer (at least as long).
    pub(crate) fn over_scratch(
        gpu: &Gpu,
        buffer: Arc<wgpu::Buffer>,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let strides = contiguous_strides(shape);
        checked_span("scratch", shape, &strides, 0)?;
        Ok(Tensor {
            gpu: gpu.clone(),
            buffer,
            dtype,
            shape: shape.to_vec(),
            strides,
            offset: 0,
        })
    }

    /// Whether `self` and `other` share a buffer.
    pub(crate) fn same_buffer(&self, other: &Tensor) -> bool {
        *self.buffer == *other.buffer
    }

    /// A view of the same memory with other shape, strides and offset (no copy).
    /// Used to split or merge heads as stride changes.
    pub fn view(&self, shape: &[usize], strides: &[usize], offset: usize) -> Result<Tensor> {
        let span = checked_span("view", shape, strides, offset)?;
        if (span * self.dtype.size()) as u64 > self.buffer.size() {
            return Err(Error::Shape(format!(
                "view {shape:?}/{strides:?}+{offset} reaches past the buffer"
            )));
        }
        Ok(Tensor {
            gpu: self.gpu.clone(),
            buffer: self.buffer.clone(),
            dtype: self.dtype,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset,
        })
    }

    /// The same memory with dims `d0` and `d1` swapped (a transpose as a view).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let rank = self.shape.len();
        if d0 >= rank || d1 >= rank {
            return Err(Error::Shape(format!(
                "transpose({d0}, {d1}) of a rank-{rank} tensor"
            )));
        }
        let mut t = self.clone();
        t.shape.swap(d0, d1);
        t.strides.swap(d0, d1);
        Ok(t)
    }

    /// This tensor converted to `dtype` on the GPU (a new contiguous tensor;
    /// [`crate::kernels::cast::cast`]).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        crate::kernels::cast::cast(self, dtype)
    }

    /// What each element is.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Logical dims.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Elements between neighbours along each dim.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Offset of the first element, in elements.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of logical elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Never true: zero-sized tensors are rejected at creation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer holding the elements (this crate's or the caller's,
    /// [`Tensor::from_buffer`]), to bind in the caller's own passes.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The device the tensor lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The shape as `[B, H, N, D]`, or a shape error naming `what`.
    pub fn dims4(&self, what: &str) -> Result<[usize; 4]> {
        self.shape.as_slice().try_into().map_err(|_| {
            Error::Shape(format!(
                "{what} must be 4-D [B, H, N, D], got shape {:?}",
                self.shape
            ))
        })
    }

    /// The layout whose stride order this tensor follows (BNHD when the head
    /// stride is smaller than the sequence stride).
    pub fn layout(&self) -> Layout {
        if self.strides.len() == 4 && self.strides[1] < self.strides[2] {
            Layout::Bnhd
        } else {
            Layout::Bhnd
        }
    }

    /// Downloads the logical elements in row-major order of the shape, widened
    /// to f32 (exactly: every f16 and bf16 is an f32).
    pub async fn to_vec(&self) -> Result<Vec<f32>> {
        let raw = self.to_bytes().await?;
        Ok(self.dtype.decode(&raw))
    }

    /// Downloads the logical elements as `T`: widened, or rounded to nearest
    /// (ties to even) when `T` is narrower than the dtype.
    pub async fn to_vec_of<T: Element>(&self) -> Result<Vec<T>> {
        let raw = self.to_bytes().await?;
        if T::DTYPE == self.dtype {
            return Ok(bytemuck::pod_collect_to_vec(&raw));
        }
        Ok(self
            .dtype
            .decode(&raw)
            .into_iter()
            .map(T::from_f32)
            .collect())
    }

    /// Downloads the logical elements in row-major order as the dtype's
    /// little-endian bytes.
    pub async fn to_bytes(&self) -> Result<Vec<u8>> {
        let usage = self.buffer.usage();
        if !usage.contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::InvalidArgument(format!(
                "the tensor's buffer has usage {usage:?}: reading it back copies it, so create it with BufferUsages::COPY_SRC"
            )));
        }
        let size = self.dtype.size();
        let span = span(&self.shape, &self.strides, self.offset);
        let bytes = ((span * size) as u64).div_ceil(4) * 4;
        let raw = self.gpu.read_buffer(&self.buffer, 0, bytes).await?;
        let mut out = Vec::with_capacity(self.len() * size);
        for i in 0..self.len() {
            let at = (self.offset + physical_index(i, &self.shape, &self.strides)) * size;
            out.extend_from_slice(&raw[at..at + size]);
        }
        Ok(out)
    }

    /// Blocking [`Tensor::to_vec`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec_blocking(&self) -> Result<Vec<f32>> {
        pollster::block_on(self.to_vec())
    }

    /// Blocking [`Tensor::to_vec_of`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec_of_blocking<T: Element>(&self) -> Result<Vec<T>> {
        pollster::block_on(self.to_vec_of())
    }
}

fn rounded<T: Element>(data: &[f32]) -> Vec<T> {
    data.iter().map(|&x| T::from_f32(x)).collect()
}

/// Errors unless `a` and `b` live on the same device.
pub(crate) fn same_device(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.gpu().is_same(b.gpu()) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what}: tensors live on different devices"
        )))
    }
}

//! Transformer attention as WGSL compute shaders through `wgpu`, on any Vulkan /
//! Metal / DX12 / GL adapter or a browser's WebGPU, with an f64 CPU reference to
//! check every result.
//!
//! - [`Gpu`]: adapter choice and a device with the adapter's real limits, or the
//!   caller's own device ([`Gpu::from_wgpu`]); pipeline cache.
//! - [`Tensor`]: a GPU buffer (this crate's or the caller's,
//!   [`Tensor::from_buffer`]) + dtype ([`DType`]: f32, f16, bf16) + shape +
//!   strides; BHND and BNHD through strides.
//! - [`attention()`] / [`record_attention`] / [`record_attention_into`]: fused,
//!   split-KV decode or unfused attention with every mask kind, ALiBi, softcap and
//!   GQA, as the [`plan()`] decides; into this crate's encoder or the caller's
//!   ([`Gpu::recorder_for`]), with scratch from a [`Workspace`].
//! - [`KvCache`]: paged keys and values for serving; [`MultiHeadAttention`]: the
//!   layer with projections and RoPE.
//! - [`kernels`]: one module per WGSL kernel (`scores`, `softmax`,
//!   `weighted_sum`, `posenc`, `rope`, `matmul`, `cast`, the fused and decode
//!   kernels), each with a CPU twin of the same name in
//!   [`reference`](mod@reference).
//! - [`verify`] and [`validation`]: compare GPU output with the reference; the
//!   case matrix every adapter runs.
//!
//! See `ARCHITECTURE.md` for the layering and `README.md` for the commands.

#![warn(missing_docs)]

pub mod attention;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod hf;
pub mod kernels;
pub mod kv_cache;
pub mod mask;
mod mask_tensor;
pub mod mha;
pub mod mods;
pub mod paged;
pub mod plan;
pub mod positional;
mod record;
pub mod reference;
pub mod seqs;
pub mod shaders;
mod shape;
mod tensor;
pub mod transform;
pub mod tune;
pub mod validation;
pub mod verify;
pub mod weights;

pub use attention::{
    attention, record_attention, record_attention_into, Attention, AttentionOptions,
    AttentionOutputs, AttentionPath, TuningMode,
};
pub use plan::{plan, AttentionProblem, DTypes, Plan};

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use gpu::{parse_backend, split_grid, Gpu, GpuOptions, Recorder, Tuning, Workspace};
pub use kv_cache::KvCache;
pub use mask::{Alignment, HostMask, MaskValues, Masking, Window};
pub use mask_tensor::{MaskKind, MaskTensor};
pub use mha::{MhaOptions, MultiHeadAttention};
pub use positional::{alibi_slopes, Pairing, Rope, RopeScaling};
pub use shape::AttnShape;
pub use tensor::{Layout, Tensor};
pub use weights::{Biases, Linear, MhaConfig, MhaWeights, QkNorm, RmsNorm, TensorSource};
pub use wgpu;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

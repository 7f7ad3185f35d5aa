//! Transformer attention as WGSL compute shaders through `wgpu`, on any Vulkan /
//! Metal / DX12 / GL adapter or a browser's WebGPU, with an f64 CPU reference to
//! check every result.
//!
//! - [`Gpu`]: adapter choice, device with the adapter's real limits, pipeline cache.
//! - [`Tensor`]: GPU buffer + shape + strides; BHND and BNHD through strides.
//! - [`kernels`]: one module per WGSL kernel (`scores`, `softmax`,
//!   `weighted_sum`, `posenc`), each with a CPU twin of the same name in
//!   [`reference`](mod@reference).
//! - [`attention()`]: the kernels composed, with every mask kind and GQA.
//! - [`verify`]: compare GPU output with the reference.
//!
//! See `ARCHITECTURE.md` for the layering and `README.md` for the commands.

pub mod attention;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod kv_cache;
pub mod mask;
mod mask_tensor;
pub mod mha;
pub mod plan;
pub mod positional;
mod record;
pub mod reference;
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
pub use positional::{alibi_slopes, Pairing, Rope};
pub use shape::AttnShape;
pub use tensor::{Layout, Tensor};
pub use weights::{Linear, MhaConfig, MhaWeights};
pub use wgpu;

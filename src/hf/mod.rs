//! Hugging Face checkpoints: a model's attention from its `config.json`
//! ([`HfConfig`]) and one layer's attention weights from its `.safetensors`
//! files ([`Checkpoint`], single or sharded, reading only that layer's
//! tensors). No GPU here.
//!
//! Families: `llama`, `mistral`, `qwen2`, `qwen3`, `gemma2`, `gemma3` (and
//! `gemma3_text`), `gpt_oss`, `phi3`, `gpt_neox`, `gptj`. Every field that
//! shapes attention is read: heads, KV heads, head dim, RoPE theta, scaling
//! (`rope_scaling` or `rope_parameters`) and partial rotary, which layers use
//! a sliding window and its width, softcap, `query_pre_attn_scalar`, sinks,
//! QK-norm, biases. A field this crate cannot honour (an unknown model type,
//! RoPE type or RoPE parameter, a layer type other than full or sliding, or an
//! attention feature of a related family) is an [`Error::Config`] naming the
//! field: never a silently different model. Fields that do not touch
//! attention (vocabulary, MLP, dropout, ...) are not read.
//!
//! ```
//! use wgpu_attention::hf::{HfConfig, LayerKind};
//! let cfg = HfConfig::from_json(r#"{
//!     "model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "num_hidden_layers": 4, "rope_theta": 1000000.0,
//!     "use_sliding_window": true, "sliding_window": 32, "max_window_layers": 2,
//!     "rms_norm_eps": 1e-6
//! }"#)?;
//! assert_eq!((cfg.mha.num_heads, cfg.mha.num_kv_heads, cfg.mha.head_dim), (4, 2, 16));
//! assert!(cfg.mha.bias.q && !cfg.mha.bias.o); // Qwen2: q, k, v biased
//! assert_eq!(cfg.layer_kind(0)?, LayerKind::Full);
//! assert_eq!(cfg.layer_kind(3)?, LayerKind::Sliding(32));
//! // An unsupported RoPE type names the field.
//! let e = HfConfig::from_json(r#"{"model_type": "llama", "hidden_size": 64,
//!     "num_attention_heads": 4, "rope_scaling": {"rope_type": "mrope"}}"#).unwrap_err();
//! assert!(e.to_string().contains("rope_scaling.rope_type"));
//! # Ok::<(), wgpu_attention::Error>(())
//! ```

#[cfg(not(target_arch = "wasm32"))]
mod checkpoint;
mod config;

#[cfg(not(target_arch = "wasm32"))]
pub use checkpoint::Checkpoint;
pub use config::{rope_from_hf, Family, HfConfig, LayerKind, QkvStorage, FAMILIES};

//! A model's attention from its Hugging Face `config.json` (see the module
//! docs of [`crate::hf`]).

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::mask::{Masking, Window};
use crate::mha::MhaOptions;
use crate::positional::{Pairing, Rope, RopeScaling};
use crate::reference::MhaReferenceOptions;
use crate::weights::{Biases, MhaConfig, QkNorm, RmsNorm};

/// The model families whose attention [`HfConfig`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// `llama`.
    Llama,
    /// `mistral`.
    Mistral,
    /// `qwen2`.
    Qwen2,
    /// `qwen3`.
    Qwen3,
    /// `gemma2`.
    Gemma2,
    /// `gemma3` / `gemma3_text`.
    Gemma3,
    /// `gpt_oss`.
    GptOss,
    /// `phi3`.
    Phi3,
    /// `gpt_neox`.
    GptNeox,
    /// `gptj`.
    GptJ,
}

/// Every supported `model_type` and its family.
pub const FAMILIES: [(&str, Family); 11] = [
    ("llama", Family::Llama),
    ("mistral", Family::Mistral),
    ("qwen2", Family::Qwen2),
    ("qwen3", Family::Qwen3),
    ("gemma2", Family::Gemma2),
    ("gemma3", Family::Gemma3),
    ("gemma3_text", Family::Gemma3),
    ("gpt_oss", Family::GptOss),
    ("phi3", Family::Phi3),
    ("gpt_neox", Family::GptNeox),
    ("gptj", Family::GptJ),
];

/// How a layer's Q, K and V projections are stored in the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkvStorage {
    /// `q_proj`, `k_proj`, `v_proj` (and `o_proj`; GPT-J: `out_proj`).
    Separate,
    /// One `qkv_proj` `[(Hq + 2·Hkv)·D, d_model]`: all of Q's rows, then K's,
    /// then V's (Phi-3).
    Fused,
    /// One `query_key_value` `[3·H·D, d_model]` with each head's q, k and v
    /// rows together (GPT-NeoX).
    PerHead,
}

/// Whether a layer attends to every earlier position or to a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Causal attention over every earlier position.
    Full,
    /// Causal attention over the last `W` positions (the query's own
    /// included: Hugging Face's `sliding_window = W`).
    Sliding(usize),
}

/// The attention of a model, read from its `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    /// The family.
    pub family: Family,
    /// `model_type` as the file gives it (`text_config`'s for a multimodal
    /// Gemma 3).
    pub model_type: String,
    /// Heads, head dims, biases, QK-norm, sinks.
    pub mha: MhaConfig,
    /// `num_hidden_layers`.
    pub num_layers: usize,
    /// RoPE of the full-attention layers.
    pub rope: Rope,
    /// RoPE of the sliding-window layers (Gemma 3's local base, or per layer
    /// type `rope_parameters`); `rope` when the same.
    pub sliding_rope: Rope,
    /// The softmax scale (`query_pre_attn_scalar^-½`); `None` = `1/sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// `attn_logit_softcapping`.
    pub softcap: Option<f32>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<usize>,
    /// `rms_norm_eps` (the decoder's RMSNorm; QK-norm's eps is in `mha`).
    pub rms_norm_eps: f32,
    /// How the checkpoint stores Q, K and V.
    pub qkv: QkvStorage,
    /// `vocab_size`, when given (for a decoder around the attention).
    pub vocab_size: Option<usize>,
    /// `intermediate_size`, when given.
    pub intermediate_size: Option<usize>,
    layers: Vec<LayerKind>,
}

/// Fields of related families that change attention in ways this crate does
/// not implement: present with a value other than the neutral one, they are
/// refused by name.
const REFUSED: &[(&str, &str)] = &[
    ("attention_chunk_size", "chunked attention (Llama 4)"),
    ("no_rope_layers", "layers without RoPE"),
    ("use_bidirectional_attention", "bidirectional attention"),
    ("attention_multiplier", "a score multiplier (Granite)"),
    ("use_qk_norm", "QK-norm of another family"),
    ("qk_layernorm", "QK LayerNorm"),
    ("rope_interleave", "interleaved RoPE of another family"),
    ("alibi", "ALiBi of another family"),
    (
        "position_embedding_type",
        "a position embedding other than RoPE",
    ),
];

impl HfConfig {
    /// Parses `config.json` text.
    pub fn from_json(text: &str) -> Result<HfConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("config.json is not JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Reads `dir/config.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> Result<HfConfig> {
        let path = dir.as_ref().join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_json(&text)
    }

    /// Reads a parsed `config.json`.
    pub fn from_value(v: &Value) -> Result<HfConfig> {
        let top = v
            .as_object()
            .ok_or_else(|| Error::Config("config.json must be a JSON object".into()))?;
        let model_type = str_field(top, "model_type")?
            .ok_or_else(|| Error::Config("config.json has no model_type".into()))?;
        // A multimodal Gemma 3 keeps its language model in text_config.
        let obj = match (model_type.as_str(), top.get("text_config")) {
            ("gemma3", Some(Value::Object(t))) => t,
            _ => top,
        };
        let model_type = str_field(obj, "model_type")?.unwrap_or(model_type);
        let family = FAMILIES
            .iter()
            .find(|(n, _)| *n == model_type)
            .map(|&(_, f)| f)
            .ok_or_else(|| {
                Error::Config(format!(
                    "model_type {model_type:?} is not supported: use one of {}",
                    FAMILIES.map(|(n, _)| n).join(", ")
                ))
            })?;
        for &(field, what) in REFUSED {
            if let Some(x) = obj.get(field) {
                if !(x.is_null() || x == &Value::Bool(false)) {
                    return Err(Error::Config(format!(
                        "{field} = {x} ({what}) is not supported"
                    )));
                }
            }
        }
        use Family::*;
        // Field names: GPT-J's own (n_embd, n_head, n_layer, n_positions).
        let (k_hidden, k_heads, k_layers, k_maxpos) = if family == GptJ {
            ("n_embd", "n_head", "n_layer", "n_positions")
        } else {
            (
                "hidden_size",
                "num_attention_heads",
                "num_hidden_layers",
                "max_position_embeddings",
            )
        };
        let hidden = usize_field(obj, k_hidden)?.ok_or_else(|| missing(k_hidden))?;
        let heads = usize_field(obj, k_heads)?.ok_or_else(|| missing(k_heads))?;
        let num_layers = usize_field(obj, k_layers)?.unwrap_or(1);
        let max_pos = usize_field(obj, k_maxpos)?;
        let kv_heads = match family {
            GptNeox | GptJ => heads,
            _ => usize_field(obj, "num_key_value_heads")?.unwrap_or(heads),
        };
        let default_head_dim = match family {
            Qwen3 => 128,
            Gemma2 | Gemma3 => 256,
            _ => hidden / heads.max(1),
        };
        let head_dim = match family {
            GptNeox | GptJ => hidden / heads.max(1),
            _ => usize_field(obj, "head_dim")?.unwrap_or(default_head_dim),
        };
        if family != Gemma2
            && family != Gemma3
            && family != Qwen3
            && !obj.contains_key("head_dim")
            && !hidden.is_multiple_of(heads.max(1))
        {
            return Err(Error::Config(format!(
                "{k_hidden} ({hidden}) is not a multiple of {k_heads} ({heads}) and no head_dim is given"
            )));
        }
        let default_bias = matches!(family, GptOss | GptNeox);
        let attention_bias = match family {
            Qwen2 | Phi3 | GptJ => None,
            _ => bool_field(obj, "attention_bias")?,
        }
        .unwrap_or(default_bias);
        let bias = match family {
            // Hard-coded in the modeling code, not in the config.
            Qwen2 => Biases::QKV,
            Phi3 | GptJ => Biases::NONE,
            _ => Biases::all(attention_bias),
        };
        let eps_key = if matches!(family, GptNeox) {
            "layer_norm_eps"
        } else if family == GptJ {
            "layer_norm_epsilon"
        } else {
            "rms_norm_eps"
        };
        let default_eps = match family {
            GptOss | Phi3 | GptNeox | GptJ => 1e-5,
            _ => 1e-6,
        };
        let rms_norm_eps = f64_field(obj, eps_key)?.unwrap_or(default_eps) as f32;
        let qk_norm = match family {
            Qwen3 => Some(0.0),
            Gemma3 => Some(1.0),
            _ => None,
        }
        .map(|offset| QkNorm {
            norm: RmsNorm {
                eps: rms_norm_eps,
                weight_offset: offset,
            },
            per_head: true,
        });
        let mha = MhaConfig::new(heads * head_dim, heads)
            .and_then(|c| c.with_kv_heads(kv_heads))
            .and_then(|c| c.with_head_dim(head_dim))
            .map(|c| MhaConfig {
                d_model: hidden,
                ..c
            })
            .and_then(|c| c.with_qk_norm(qk_norm))
            .map_err(|e| Error::Config(format!("config.json: {e}")))?
            .with_bias(bias)
            .with_sinks(family == GptOss);

        // RoPE: theta, partial rotary, scaling (rope_scaling or rope_parameters,
        // possibly per layer type).
        let pairing = if family == GptJ {
            Pairing::Interleaved
        } else {
            Pairing::HalfSplit
        };
        let (theta_key, default_theta) = match family {
            GptNeox => ("rotary_emb_base", 10000.0),
            Gemma3 => ("rope_theta", 1_000_000.0),
            GptOss => ("rope_theta", 150_000.0),
            _ => ("rope_theta", 10000.0),
        };
        let theta = f64_field(obj, theta_key)?;
        let partial = match family {
            GptNeox => f64_field(obj, "rotary_pct")?
                .or(f64_field(obj, "partial_rotary_factor")?)
                .or(Some(0.25)),
            GptJ => None,
            _ => f64_field(obj, "partial_rotary_factor")?,
        };
        let rotary_dims = match family {
            // Absent: the config class's 64; null (rotary over the model width
            // in Hugging Face's code) is not supported.
            GptJ if !obj.contains_key("rotary_dim") => Some(64.min(head_dim - head_dim % 2)),
            GptJ => Some(usize_field(obj, "rotary_dim")?.ok_or_else(|| {
                Error::Config(
                    "rotary_dim is null: GPT-J without a rotary_dim is not supported".into(),
                )
            })?),
            _ => partial.map(|p| (head_dim as f64 * p) as usize),
        };
        let ctx = RopeCtx {
            max_pos,
            top_original: match family {
                Phi3 => usize_field(obj, "original_max_position_embeddings")?.or(Some(4096)),
                _ => None,
            },
        };
        let base_rope = Rope {
            pairing,
            base: theta.unwrap_or(default_theta),
            rotary_dims,
            offset: 0,
            scaling: RopeScaling::None,
        };
        let gpt_oss_default = || -> Map<String, Value> {
            serde_json::from_str(
                r#"{"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                    "truncate": false, "original_max_position_embeddings": 4096}"#,
            )
            .expect("valid JSON")
        };
        let (full_params, sliding_params) = match obj.get("rope_parameters") {
            Some(Value::Object(p))
                if p.contains_key("full_attention") || p.contains_key("sliding_attention") =>
            {
                for k in p.keys() {
                    if k != "full_attention" && k != "sliding_attention" {
                        return Err(Error::Config(format!(
                            "rope_parameters.{k}: only full_attention and sliding_attention layers are supported"
                        )));
                    }
                }
                let get = |k: &str| -> Result<Option<Map<String, Value>>> {
                    match p.get(k) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::Object(m)) => Ok(Some(m.clone())),
                        Some(x) => Err(Error::Config(format!(
                            "rope_parameters.{k} must be an object, got {x}"
                        ))),
                    }
                };
                (get("full_attention")?, get("sliding_attention")?)
            }
            Some(Value::Object(p)) => (Some(p.clone()), None),
            Some(Value::Null) | None => match obj.get("rope_scaling") {
                Some(Value::Object(p)) => (Some(p.clone()), None),
                Some(Value::Null) | None => ((family == GptOss).then(gpt_oss_default), None),
                Some(x) => {
                    return Err(Error::Config(format!(
                        "rope_scaling must be an object or null, got {x}"
                    )))
                }
            },
            Some(x) => {
                return Err(Error::Config(format!(
                    "rope_parameters must be an object or null, got {x}"
                )))
            }
        };
        let field = if obj.contains_key("rope_parameters") {
            "rope_parameters"
        } else {
            "rope_scaling"
        };
        let rope = match &full_params {
            Some(p) => parse_rope(p, field, &base_rope, head_dim, &ctx)?,
            None => base_rope.clone(),
        };
        let sliding_rope = match (&sliding_params, family) {
            (Some(p), _) => parse_rope(p, field, &base_rope, head_dim, &ctx)?,
            // Gemma 3: sliding layers rotate with the local base, unscaled.
            (None, Gemma3) => Rope {
                base: f64_field(obj, "rope_local_base_freq")?.unwrap_or(10000.0),
                ..base_rope.clone()
            },
            (None, _) => rope.clone(),
        };
        rope.rotary(head_dim)
            .map_err(|e| Error::Config(format!("{field}: {e}")))?;
        sliding_rope
            .rotary(head_dim)
            .map_err(|e| Error::Config(format!("{field}: {e}")))?;

        // Which layers slide. An absent field takes the config class's default
        // (an explicit null means none).
        let sliding_window = if obj.contains_key("sliding_window") {
            usize_field(obj, "sliding_window")?
        } else {
            match family {
                Mistral | Qwen2 | Qwen3 | Gemma2 | Gemma3 => Some(4096),
                GptOss => Some(128),
                _ => None,
            }
        };
        let use_sliding = match family {
            Qwen2 | Qwen3 => bool_field(obj, "use_sliding_window")?.unwrap_or(false),
            Llama | GptNeox | GptJ => false,
            _ => true,
        };
        let window = sliding_window.filter(|_| use_sliding);
        let layers: Vec<LayerKind> = match obj.get("layer_types") {
            Some(Value::Array(types)) => {
                if types.len() != num_layers {
                    return Err(Error::Config(format!(
                        "layer_types has {} entries for num_hidden_layers = {num_layers}",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| match t.as_str() {
                        Some("full_attention") => Ok(LayerKind::Full),
                        // Without a window (null, or Qwen's use_sliding_window
                        // off) the layer attends to everything, as in the
                        // modeling code.
                        Some("sliding_attention") => Ok(match window {
                            Some(w) => LayerKind::Sliding(w),
                            None => LayerKind::Full,
                        }),
                        _ => Err(Error::Config(format!(
                            "layer_types[{i}] = {t} is not supported: full_attention or sliding_attention"
                        ))),
                    })
                    .collect::<Result<_>>()?
            }
            Some(Value::Null) | None => (0..num_layers)
                .map(|i| {
                    let slides = match family {
                        Qwen2 | Qwen3 => {
                            let from = usize_field(obj, "max_window_layers")?.unwrap_or(28);
                            i >= from
                        }
                        Gemma2 => i % 2 == 0,
                        Gemma3 => {
                            let pattern = usize_field(obj, "sliding_window_pattern")?.unwrap_or(6);
                            (i + 1) % pattern.max(1) != 0
                        }
                        GptOss => i % 2 == 0,
                        Mistral | Phi3 => true,
                        Llama | GptNeox | GptJ => false,
                    };
                    Ok(match (slides, window) {
                        (true, Some(w)) => LayerKind::Sliding(w),
                        _ => LayerKind::Full,
                    })
                })
                .collect::<Result<_>>()?,
            Some(x) => {
                return Err(Error::Config(format!(
                    "layer_types must be a list, got {x}"
                )))
            }
        };
        if layers.contains(&LayerKind::Sliding(0)) {
            return Err(Error::Config("sliding_window must be at least 1".into()));
        }
        let scale = match family {
            Gemma2 | Gemma3 => {
                let s = f64_field(obj, "query_pre_attn_scalar")?.unwrap_or(256.0);
                if s.is_nan() || s <= 0.0 {
                    return Err(Error::Config(format!(
                        "query_pre_attn_scalar = {s} must be > 0"
                    )));
                }
                Some((1.0 / s.sqrt()) as f32)
            }
            _ => None,
        };
        let softcap = match family {
            Gemma2 if !obj.contains_key("attn_logit_softcapping") => Some(50.0),
            _ => f64_field(obj, "attn_logit_softcapping")?,
        }
        .map(|c| c as f32);
        if let Some(c) = softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::Config(format!(
                    "attn_logit_softcapping = {c} must be > 0"
                )));
            }
        }
        Ok(HfConfig {
            family,
            model_type,
            mha,
            num_layers,
            rope,
            sliding_rope,
            scale,
            softcap,
            max_position_embeddings: max_pos,
            rms_norm_eps,
            qkv: match family {
                Phi3 => QkvStorage::Fused,
                GptNeox => QkvStorage::PerHead,
                _ => QkvStorage::Separate,
            },
            vocab_size: usize_field(obj, "vocab_size")?,
            intermediate_size: usize_field(obj, "intermediate_size")?,
            layers,
        })
    }

    /// Whether layer `i` attends to every earlier position or to a window
    /// ([`Error::Config`] past the last layer).
    pub fn layer_kind(&self, i: usize) -> Result<LayerKind> {
        self.layers.get(i).copied().ok_or_else(|| {
            Error::Config(format!(
                "layer {i} does not exist: the model has {} layers (0..{})",
                self.num_layers, self.num_layers
            ))
        })
    }

    /// The RoPE of layer `i`.
    pub fn layer_rope(&self, i: usize) -> Result<Rope> {
        Ok(match self.layer_kind(i)? {
            LayerKind::Full => self.rope.clone(),
            LayerKind::Sliding(_) => self.sliding_rope.clone(),
        })
    }

    /// The causal rule of layer `i` with its window (bottom-right aligned:
    /// queries are the newest positions).
    pub fn layer_masking(&self, i: usize) -> Result<Masking> {
        Ok(Masking {
            causal: true,
            window: match self.layer_kind(i)? {
                LayerKind::Full => None,
                LayerKind::Sliding(w) => Some(Window {
                    left: (w - 1) as u32,
                    right: 0,
                }),
            },
            ..Default::default()
        })
    }

    /// [`MhaOptions`] of layer `i`: causal with its window, its RoPE, the
    /// scale and softcap.
    pub fn layer_options(&self, i: usize) -> Result<MhaOptions<'static>> {
        Ok(MhaOptions {
            masking: self.layer_masking(i)?,
            rope: Some(self.layer_rope(i)?),
            scale: self.scale,
            softcap: self.softcap,
            ..Default::default()
        })
    }

    /// The same options for the f64 layer ([`crate::reference::multi_head_attention`]).
    pub fn layer_reference_options(&self, i: usize) -> Result<MhaReferenceOptions<'static>> {
        Ok(MhaReferenceOptions {
            masking: self.layer_masking(i)?,
            rope: Some(self.layer_rope(i)?),
            scale: self.scale.map(f64::from),
            softcap: self.softcap.map(f64::from),
            ..Default::default()
        })
    }

    /// The names of layer `i`'s attention tensors in the checkpoint, for
    /// each prefix a checkpoint of this family may use (the first that
    /// exists is read).
    pub fn layer_prefixes(&self, i: usize) -> Vec<String> {
        match self.family {
            Family::GptNeox => vec![format!("gpt_neox.layers.{i}.attention.")],
            Family::GptJ => vec![format!("transformer.h.{i}.attn.")],
            Family::Gemma3 => vec![
                format!("model.layers.{i}.self_attn."),
                format!("model.language_model.layers.{i}.self_attn."),
                format!("language_model.model.layers.{i}.self_attn."),
            ],
            _ => vec![format!("model.layers.{i}.self_attn.")],
        }
    }
}

/// A RoPE from a Hugging Face `rope_scaling` entry given as JSON text (e.g.
/// `{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings":
/// 32768}`) on top of `base` for head dim `head_dim`; the types that need it
/// take `max_position_embeddings`. Errors name the entry's field.
///
/// ```
/// use wgpu_attention::hf::rope_from_hf;
/// use wgpu_attention::{Rope, RopeScaling};
/// let r = rope_from_hf(r#"{"rope_type": "linear", "factor": 4}"#, &Rope::default(), 64, None)?;
/// assert_eq!(r.scaling, RopeScaling::Linear { factor: 4.0 });
/// assert!(rope_from_hf(r#"{"rope_type": "dynamic", "factor": 2}"#, &Rope::default(), 64, None).is_err());
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
pub fn rope_from_hf(
    json: &str,
    base: &Rope,
    head_dim: usize,
    max_position_embeddings: Option<usize>,
) -> Result<Rope> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| Error::Config(format!("rope_scaling is not JSON: {e}")))?;
    let p = v
        .as_object()
        .ok_or_else(|| Error::Config(format!("rope_scaling must be a JSON object, got {v}")))?;
    let ctx = RopeCtx {
        max_pos: max_position_embeddings,
        top_original: None,
    };
    let rope = parse_rope(p, "rope_scaling", base, head_dim, &ctx)?;
    rope.rotary(head_dim)
        .map_err(|e| Error::Config(format!("rope_scaling: {e}")))?;
    Ok(rope)
}

/// What a RoPE scaling needs from outside its own entry.
struct RopeCtx {
    max_pos: Option<usize>,
    /// Phi-3's top-level `original_max_position_embeddings` (it wins over one
    /// inside the scaling entry, as in Hugging Face's `standardize_rope_params`).
    top_original: Option<usize>,
}

/// A `rope_scaling` / `rope_parameters` entry on top of `base`.
fn parse_rope(
    p: &Map<String, Value>,
    field: &str,
    base: &Rope,
    head_dim: usize,
    ctx: &RopeCtx,
) -> Result<Rope> {
    let ty = match (p.get("rope_type"), p.get("type")) {
        (Some(Value::String(t)), _) | (None, Some(Value::String(t))) => t.as_str(),
        (None, None) => "default",
        (Some(x), _) | (_, Some(x)) => {
            return Err(Error::Config(format!(
                "{field}.rope_type must be a string, got {x}"
            )))
        }
    };
    let ty = if ty == "su" { "longrope" } else { ty };
    let known: &[&str] = match ty {
        "default" => &[],
        "linear" => &["factor"],
        "dynamic" => &["factor"],
        "llama3" => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        "yarn" => &[
            "factor",
            "original_max_position_embeddings",
            "beta_fast",
            "beta_slow",
            "attention_factor",
            "mscale",
            "mscale_all_dim",
            "truncate",
        ],
        "longrope" => &[
            "short_factor",
            "long_factor",
            "factor",
            "attention_factor",
            "original_max_position_embeddings",
            // In some Phi-3 configs; Hugging Face's LongRoPE does not read them.
            "short_mscale",
            "long_mscale",
        ],
        other => {
            return Err(Error::Config(format!(
                "{field}.rope_type = {other:?} is not supported: default, linear, dynamic, llama3, yarn or longrope"
            )))
        }
    };
    for k in p.keys() {
        let generic = ["rope_type", "type", "rope_theta", "partial_rotary_factor"];
        if !generic.contains(&k.as_str()) && !known.contains(&k.as_str()) {
            return Err(Error::Config(format!(
                "{field}.{k} is not supported for rope_type {ty:?} (known: {})",
                known.join(", ")
            )));
        }
    }
    let num = |k: &str| -> Result<Option<f64>> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| Error::Config(format!("{field}.{k} must be a number, got {x}"))),
        }
    };
    let need = |k: &str| -> Result<f64> {
        num(k)?
            .ok_or_else(|| Error::Config(format!("{field}.{k} is required for rope_type {ty:?}")))
    };
    let max_pos = || -> Result<usize> {
        ctx.max_pos.ok_or_else(|| {
            Error::Config(format!(
                "{field}: rope_type {ty:?} needs max_position_embeddings"
            ))
        })
    };
    let original = || -> Result<usize> {
        match (ctx.top_original, num("original_max_position_embeddings")?) {
            (Some(o), _) => Ok(o),
            (None, Some(o)) => Ok(o as usize),
            (None, None) => max_pos(),
        }
    };
    let mut rope = base.clone();
    if let Some(t) = num("rope_theta")? {
        rope.base = t;
    }
    if let Some(f) = num("partial_rotary_factor")? {
        rope.rotary_dims = Some((head_dim as f64 * f) as usize);
    }
    rope.scaling = match ty {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: need("factor")?,
            max_position: max_pos()?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position: need("original_max_position_embeddings")? as usize,
        },
        "yarn" => {
            let orig = original()?;
            let factor = match num("factor")? {
                Some(f) => f,
                None => max_pos()? as f64 / orig as f64,
            };
            RopeScaling::Yarn {
                factor,
                original_max_position: orig,
                beta_fast: num("beta_fast")?.filter(|&b| b != 0.0).unwrap_or(32.0),
                beta_slow: num("beta_slow")?.filter(|&b| b != 0.0).unwrap_or(1.0),
                attention_factor: num("attention_factor")?,
                mscale: num("mscale")?,
                mscale_all_dim: num("mscale_all_dim")?,
                truncate: match p.get("truncate") {
                    None | Some(Value::Null) => true,
                    Some(Value::Bool(b)) => *b,
                    Some(x) => {
                        return Err(Error::Config(format!(
                            "{field}.truncate must be true or false, got {x}"
                        )))
                    }
                },
            }
        }
        "longrope" => {
            let list = |k: &str| -> Result<Vec<f64>> {
                match p.get(k) {
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|x| {
                            x.as_f64().ok_or_else(|| {
                                Error::Config(format!("{field}.{k} must hold numbers, got {x}"))
                            })
                        })
                        .collect(),
                    _ => Err(Error::Config(format!(
                        "{field}.{k} (a list, one per rotated pair) is required for longrope"
                    ))),
                }
            };
            let orig = original()?;
            let factor = match num("factor")? {
                Some(f) => f,
                None => max_pos()? as f64 / orig as f64,
            };
            let attention_factor = match num("attention_factor")? {
                Some(a) => a,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (orig as f64).ln()).sqrt(),
            };
            RopeScaling::LongRope {
                short: list("short_factor")?,
                long: list("long_factor")?,
                original_max_position: orig,
                attention_factor,
            }
        }
        _ => unreachable!("checked above"),
    };
    Ok(rope)
}

fn missing(field: &str) -> Error {
    Error::Config(format!("config.json has no {field}"))
}

fn usize_field(obj: &Map<String, Value>, k: &str) -> Result<Option<usize>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|v| Some(v as usize))
            .ok_or_else(|| Error::Config(format!("{k} must be a non-negative integer, got {x}"))),
    }
}

fn f64_field(obj: &Map<String, Value>, k: &str) -> Result<Option<f64>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::Config(format!("{k} must be a number, got {x}"))),
    }
}

fn bool_field(obj: &Map<String, Value>, k: &str) -> Result<Option<bool>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(x) => Err(Error::Config(format!("{k} must be true or false, got {x}"))),
    }
}

fn str_field(obj: &Map<String, Value>, k: &str) -> Result<Option<String>> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(x) => Err(Error::Config(format!("{k} must be a string, got {x}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> HfConfig {
        HfConfig::from_json(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err(json: &str) -> String {
        match HfConfig::from_json(json) {
            Err(Error::Config(m)) => m,
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }

    #[test]
    fn llama_3_1_8b() {
        let c = cfg(
            r#"{"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32,
            "num_key_value_heads": 8, "num_hidden_layers": 32, "rope_theta": 500000.0,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "mlp_bias": false,
            "rope_scaling": {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
              "original_max_position_embeddings": 8192, "rope_type": "llama3"}}"#,
        );
        assert_eq!(
            (c.mha.num_heads, c.mha.num_kv_heads, c.mha.head_dim),
            (32, 8, 128)
        );
        assert_eq!(c.mha.bias, Biases::NONE);
        assert!(matches!(
            c.rope.scaling,
            RopeScaling::Llama3 {
                original_max_position: 8192,
                ..
            }
        ));
        assert_eq!(c.rope.base, 500000.0);
        assert_eq!(c.layer_kind(31).unwrap(), LayerKind::Full);
        assert!(c.layer_kind(32).is_err());
        assert_eq!(c.scale, None);
    }

    #[test]
    fn mistral_defaults_its_window() {
        // An absent sliding_window is the config class's 4096; null is none.
        let c = cfg(
            r#"{"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}"#,
        );
        assert_eq!(c.layer_kind(1).unwrap(), LayerKind::Sliding(4096));
        let c = cfg(
            r#"{"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "sliding_window": null}"#,
        );
        assert_eq!(c.layer_kind(1).unwrap(), LayerKind::Full);
        let m = c.layer_masking(0).unwrap();
        assert!(m.causal && m.window.is_none());
    }

    #[test]
    fn qwen2_windows_follow_use_sliding_window() {
        let base = r#""model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 4, "sliding_window": 16, "max_window_layers": 3"#;
        let off = cfg(&format!("{{{base}}}"));
        assert_eq!(off.layer_kind(3).unwrap(), LayerKind::Full);
        let on = cfg(&format!("{{{base}, \"use_sliding_window\": true}}"));
        assert_eq!(on.layer_kind(2).unwrap(), LayerKind::Full);
        assert_eq!(on.layer_kind(3).unwrap(), LayerKind::Sliding(16));
        assert_eq!(
            on.layer_masking(3).unwrap().window,
            Some(Window { left: 15, right: 0 })
        );
        assert_eq!(on.mha.bias, Biases::QKV);
    }

    #[test]
    fn gemma3_local_and_global_rope() {
        let c = cfg(
            r#"{"model_type": "gemma3_text", "hidden_size": 2560, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 256, "num_hidden_layers": 34,
            "query_pre_attn_scalar": 256, "sliding_window": 1024, "rope_theta": 1000000.0,
            "rope_local_base_freq": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
            "rms_norm_eps": 1e-06, "attn_logit_softcapping": null}"#,
        );
        assert_eq!(c.layer_kind(4).unwrap(), LayerKind::Sliding(1024));
        assert_eq!(c.layer_kind(5).unwrap(), LayerKind::Full);
        assert_eq!(c.layer_rope(5).unwrap().base, 1e6);
        assert_eq!(
            c.layer_rope(5).unwrap().scaling,
            RopeScaling::Linear { factor: 8.0 }
        );
        assert_eq!(c.layer_rope(4).unwrap().base, 1e4);
        assert_eq!(c.layer_rope(4).unwrap().scaling, RopeScaling::None);
        assert_eq!(c.scale, Some(1.0 / 16.0));
        assert_eq!(c.softcap, None);
        let n = c.mha.qk_norm.unwrap();
        assert_eq!((n.norm.weight_offset, n.per_head), (1.0, true));
    }

    #[test]
    fn gemma2_softcap_default_and_alternation() {
        let c = cfg(
            r#"{"model_type": "gemma2", "hidden_size": 64, "num_attention_heads": 4, "head_dim": 16, "num_hidden_layers": 4}"#,
        );
        assert_eq!(c.softcap, Some(50.0));
        assert_eq!(c.layer_kind(0).unwrap(), LayerKind::Sliding(4096));
        assert_eq!(c.layer_kind(1).unwrap(), LayerKind::Full);
        assert_eq!(c.scale, Some(1.0 / 16.0));
    }

    #[test]
    fn v5_rope_parameters_per_layer_type() {
        let c = cfg(
            r#"{"model_type": "gemma3_text", "hidden_size": 64, "num_attention_heads": 4,
            "head_dim": 16, "num_hidden_layers": 2, "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}}}"#,
        );
        assert_eq!(c.layer_rope(0).unwrap().base, 1e4);
        assert_eq!(
            c.layer_rope(1).unwrap().scaling,
            RopeScaling::Linear { factor: 4.0 }
        );
        assert_eq!(c.layer_rope(1).unwrap().base, 1e6);
    }

    #[test]
    fn gpt_oss_and_phi3_scalings() {
        let c = cfg(
            r#"{"model_type": "gpt_oss", "hidden_size": 2880, "num_attention_heads": 64,
            "num_key_value_heads": 8, "head_dim": 64, "num_hidden_layers": 2,
            "layer_types": ["sliding_attention", "full_attention"], "sliding_window": 128,
            "max_position_embeddings": 131072,
            "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
              "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false}}"#,
        );
        assert!(c.mha.sinks && c.mha.bias == Biases::ALL);
        assert_eq!(c.rope.base, 150000.0);
        let RopeScaling::Yarn {
            factor, truncate, ..
        } = c.rope.scaling
        else {
            panic!()
        };
        assert_eq!((factor, truncate), (32.0, false));
        // The attention factor of YaRN at factor 32: 0.1 ln 32 + 1.
        let (_, attn) = c.rope.frequencies(64, 1).unwrap();
        assert!((attn - (0.1 * 32f64.ln() + 1.0)).abs() < 1e-12);
        // Phi-3 128k: the top-level original context wins, the attention factor
        // comes from max / original.
        let p = cfg(
            r#"{"model_type": "phi3", "hidden_size": 96, "num_attention_heads": 4,
            "num_hidden_layers": 1, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                             "long_factor": [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]}}"#,
        );
        let RopeScaling::LongRope {
            original_max_position,
            attention_factor,
            ..
        } = &p.rope.scaling
        else {
            panic!()
        };
        assert_eq!(*original_max_position, 4096);
        assert!((attention_factor - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn unsupported_fields_are_named() {
        let base = r#""hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2"#;
        let e = err(&format!("{{\"model_type\": \"falcon\", {base}}}"));
        assert!(e.contains("model_type \"falcon\""), "{e}");
        let e = err(&format!("{{\"model_type\": \"llama\", {base}, \"rope_scaling\": {{\"rope_type\": \"mrope\", \"mrope_section\": [1]}}}}"));
        assert!(e.contains("rope_scaling.rope_type"), "{e}");
        let e = err(&format!("{{\"model_type\": \"llama\", {base}, \"rope_scaling\": {{\"rope_type\": \"linear\", \"factor\": 2, \"mystery\": 1}}}}"));
        assert!(e.contains("rope_scaling.mystery"), "{e}");
        let e = err(&format!("{{\"model_type\": \"llama\", {base}, \"rope_scaling\": {{\"rope_type\": \"llama3\", \"factor\": 8}}}}"));
        assert!(e.contains("rope_scaling.low_freq_factor"), "{e}");
        let e = err(&format!(
            "{{\"model_type\": \"llama\", {base}, \"attention_chunk_size\": 8192}}"
        ));
        assert!(e.contains("attention_chunk_size"), "{e}");
        let e = err(&format!(
            "{{\"model_type\": \"gemma3_text\", {base}, \"use_bidirectional_attention\": true}}"
        ));
        assert!(e.contains("use_bidirectional_attention"), "{e}");
        let e = err(&format!("{{\"model_type\": \"gpt_oss\", {base}, \"layer_types\": [\"full_attention\", \"chunked_attention\"]}}"));
        assert!(e.contains("layer_types[1]"), "{e}");
        let e = err(&format!("{{\"model_type\": \"llama\", {base}, \"rope_scaling\": {{\"rope_type\": \"dynamic\", \"factor\": 2}}}}"));
        assert!(e.contains("max_position_embeddings"), "{e}");
        let e = err(r#"{"model_type": "gptj", "n_embd": 64, "n_head": 4, "rotary_dim": null}"#);
        assert!(e.contains("rotary_dim"), "{e}");
        let e = err(&format!(
            "{{\"model_type\": \"llama\", {base}, \"num_key_value_heads\": 3}}"
        ));
        assert!(e.contains("num_kv_heads"), "{e}");
        let e = err(&format!(
            "{{\"model_type\": \"llama\", {base}, \"hidden_size\": \"big\"}}"
        ));
        assert!(e.contains("hidden_size"), "{e}");
    }
}

//! The multi-head layer's configuration and weights on the host: random
//! initialization from a seed, and loading/saving `.safetensors` by tensor name
//! (a file, or one layer of a Hugging Face checkpoint: [`crate::hf`]).
//! No GPU here: the reference uses these directly.

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

mod safetensors_io;

pub use safetensors_io::TensorSource;
// For reading checkpoints (crate::hf, native only).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use safetensors_io::{dtype_of, read_linear, read_shaped, to_f32};

/// Which projections carry a bias (Qwen2: q, k and v; gpt-oss and GPT-NeoX:
/// all four; Llama, Gemma, Phi-3: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Biases {
    /// The query projection.
    pub q: bool,
    /// The key projection.
    pub k: bool,
    /// The value projection.
    pub v: bool,
    /// The output projection.
    pub o: bool,
}

impl Biases {
    /// Every projection.
    pub const ALL: Biases = Biases {
        q: true,
        k: true,
        v: true,
        o: true,
    };
    /// None.
    pub const NONE: Biases = Biases {
        q: false,
        k: false,
        v: false,
        o: false,
    };
    /// q, k and v but not o (Qwen2).
    pub const QKV: Biases = Biases {
        q: true,
        k: true,
        v: true,
        o: false,
    };

    /// All four or none.
    pub fn all(on: bool) -> Biases {
        if on {
            Biases::ALL
        } else {
            Biases::NONE
        }
    }

    /// `[q, k, v, o]`.
    pub fn each(&self) -> [bool; 4] {
        [self.q, self.k, self.v, self.o]
    }

    /// Whether any projection has one.
    pub fn any(&self) -> bool {
        self.each().iter().any(|&b| b)
    }
}

impl std::fmt::Display for Biases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on: Vec<&str> = ["q", "k", "v", "o"]
            .into_iter()
            .zip(self.each())
            .filter_map(|(n, b)| b.then_some(n))
            .collect();
        if on.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", on.join(","))
        }
    }
}

/// The parameters of an RMSNorm: `y = x / sqrt(mean(x²) + eps) · (w + weight_offset)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsNorm {
    /// Added to the mean square (> 0; 1e-6 in most models).
    pub eps: f32,
    /// Added to each weight: 0 (Llama, Qwen) or 1 (Gemma's `(1 + w)`).
    pub weight_offset: f32,
}

impl RmsNorm {
    /// Checks `eps` (finite, > 0) and the offset (finite).
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "RMSNorm eps = {} must be finite and > 0",
                self.eps
            )));
        }
        if !self.weight_offset.is_finite() {
            return Err(Error::InvalidArgument(
                "RMSNorm weight offset must be finite".into(),
            ));
        }
        Ok(())
    }
}

/// QK-norm: an RMSNorm of Q and K after the projections and before RoPE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QkNorm {
    /// eps and weight offset.
    pub norm: RmsNorm,
    /// `true`: each head vector (Qwen3, Gemma 3; weights `[head_dim]`);
    /// `false`: each token's whole projection (OLMo 2; weights `[H·head_dim]`).
    pub per_head: bool,
}

/// Shape of a multi-head attention layer, and which parts it has (biases,
/// QK-norm, attention sinks).
///
/// ```
/// use wgpu_attention::{Biases, MhaConfig};
/// let cfg = MhaConfig::new(512, 8)?; // head_dim 64, 8 K/V heads, biases
/// assert_eq!((cfg.head_dim, cfg.q_dim(), cfg.kv_dim()), (64, 512, 512));
/// let gqa = cfg.with_kv_heads(2)?; // grouped-query: 4 query heads per K/V head
/// assert_eq!(gqa.kv_dim(), 128);
/// assert!(cfg.with_kv_heads(3).is_err()); // 8 heads cannot be split in 3 groups
/// assert!(MhaConfig::new(500, 8).is_err());
/// // Qwen2-style biases on q, k and v only; value heads of 32 channels.
/// let q2 = cfg.with_bias(Biases::QKV).with_v_head_dim(32)?;
/// assert_eq!((q2.v_dim(), q2.o_in()), (256, 256));
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MhaConfig {
    /// Width of the layer's input and output rows (`[B, N, d_model]`).
    pub d_model: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (`num_heads` for MHA, fewer for GQA, 1 for MQA).
    pub num_kv_heads: usize,
    /// Channels per query and key head `D`: `d_model / num_heads` from
    /// [`MhaConfig::new`]; set directly, any size (`num_heads · head_dim` need
    /// not be `d_model`).
    pub head_dim: usize,
    /// Channels per value head (`head_dim` unless set).
    pub v_head_dim: usize,
    /// Which projections have biases.
    pub bias: Biases,
    /// RMSNorm of Q and K before RoPE (Qwen3, Gemma 3, OLMo 2).
    pub qk_norm: Option<QkNorm>,
    /// A learned attention sink per query head (gpt-oss): weights
    /// [`MhaWeights::sinks`].
    pub sinks: bool,
}

impl MhaConfig {
    /// The classic layer: `head_dim = d_model / num_heads`, as many KV heads as
    /// query heads, with biases. [`Error::Config`] unless `num_heads` divides
    /// `d_model`.
    pub fn new(d_model: usize, num_heads: usize) -> Result<Self> {
        if num_heads == 0 || !d_model.is_multiple_of(num_heads) {
            return Err(Error::Config(format!(
                "d_model ({d_model}) must be a multiple of num_heads ({num_heads}); or set head_dim explicitly"
            )));
        }
        let cfg = MhaConfig {
            d_model,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: d_model / num_heads,
            v_head_dim: d_model / num_heads,
            bias: Biases::ALL,
            qk_norm: None,
            sinks: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Grouped-query (or, with 1, multi-query) attention: `num_kv_heads` K/V
    /// heads, [`Error::Config`] unless it divides `num_heads`.
    pub fn with_kv_heads(mut self, num_kv_heads: usize) -> Result<Self> {
        self.num_kv_heads = num_kv_heads;
        self.validate()?;
        Ok(self)
    }

    /// Query/key heads of `head_dim` channels and value heads of as many.
    pub fn with_head_dim(mut self, head_dim: usize) -> Result<Self> {
        self.head_dim = head_dim;
        self.v_head_dim = head_dim;
        self.validate()?;
        Ok(self)
    }

    /// Value heads of `v_head_dim` channels (the query/key heads keep theirs).
    pub fn with_v_head_dim(mut self, v_head_dim: usize) -> Result<Self> {
        self.v_head_dim = v_head_dim;
        self.validate()?;
        Ok(self)
    }

    /// With biases on these projections.
    pub fn with_bias(mut self, bias: Biases) -> Self {
        self.bias = bias;
        self
    }

    /// With QK-norm.
    pub fn with_qk_norm(mut self, qk_norm: Option<QkNorm>) -> Result<Self> {
        self.qk_norm = qk_norm;
        self.validate()?;
        Ok(self)
    }

    /// With (or without) an attention sink per query head.
    pub fn with_sinks(mut self, sinks: bool) -> Self {
        self.sinks = sinks;
        self
    }

    /// Checks that every size is positive, the head counts divide and the
    /// QK-norm is valid ([`Error::Config`], naming the field).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("d_model", self.d_model),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("v_head_dim", self.v_head_dim),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be at least 1")));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::Config(format!(
                "num_heads ({}) must be a multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            )));
        }
        if let Some(n) = &self.qk_norm {
            n.norm
                .validate()
                .map_err(|e| Error::Config(format!("qk_norm: {e}")))?;
            if !n.per_head && self.v_head_dim > self.head_dim {
                return Err(Error::Config(format!(
                    "a QK-norm over whole projections (per_head = false) with value heads wider than the key heads ({} > {}) is not supported: use per-head QK-norm or equal head dims",
                    self.v_head_dim, self.head_dim
                )));
            }
        }
        Ok(())
    }

    /// Width of the query projection (`num_heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key projection (`num_kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Width of the value projection (`num_kv_heads · v_head_dim`).
    pub fn v_dim(&self) -> usize {
        self.num_kv_heads * self.v_head_dim
    }

    /// Width of the output projection's input (`num_heads · v_head_dim`).
    pub fn o_in(&self) -> usize {
        self.num_heads * self.v_head_dim
    }

    /// Length of the QK-norm weights of Q and of K (`head_dim` per head, or
    /// the whole projections).
    pub fn qk_norm_lens(&self) -> Option<(usize, usize)> {
        self.qk_norm.map(|n| {
            if n.per_head {
                (self.head_dim, self.head_dim)
            } else {
                (self.q_dim(), self.kv_dim())
            }
        })
    }
}

/// A linear map `y = x·Wᵀ + b` stored as PyTorch does: `weight` `[out, in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Rows of `weight`: the width of `y`.
    pub out_features: usize,
    /// Columns of `weight`: the width of `x`.
    pub in_features: usize,
    /// `[out_features, in_features]`, row-major; the values (each exactly
    /// representable in `dtype`).
    pub weight: Vec<f32>,
    /// `[out_features]`, added to every row of `x·Wᵀ`; `None` for a layer
    /// without biases.
    pub bias: Option<Vec<f32>>,
    /// How the weights are stored, on file and on the GPU (f16/bf16 files stay
    /// f16/bf16 there: half the memory and bandwidth; the GEMM widens each
    /// element and accumulates in f32).
    pub dtype: crate::DType,
}

impl Linear {
    /// PyTorch's default init: uniform in `±1/sqrt(in)` for weight and bias.
    fn random(rng: &mut impl Rng, out_features: usize, in_features: usize, bias: bool) -> Linear {
        let bound = 1.0 / (in_features as f32).sqrt();
        let mut draw = |n: usize| {
            (0..n)
                .map(|_| rng.random_range(-bound..bound))
                .collect::<Vec<f32>>()
        };
        let weight = draw(out_features * in_features);
        let bias = bias.then(|| draw(out_features));
        Linear {
            out_features,
            in_features,
            weight,
            bias,
            dtype: crate::DType::F32,
        }
    }

    /// The same map stored in `dtype` (values rounded to nearest even).
    pub fn to_dtype(&self, dtype: crate::DType) -> Linear {
        let r = |v: &[f32]| v.iter().map(|&x| dtype.round(x)).collect::<Vec<f32>>();
        Linear {
            weight: r(&self.weight),
            bias: self.bias.as_deref().map(r),
            dtype,
            ..self.clone()
        }
    }

    /// The weight transposed to `[in, out]` (what `x·Wᵀ` multiplies by).
    pub fn weight_t(&self) -> Vec<f32> {
        let mut t = vec![0.0; self.weight.len()];
        for o in 0..self.out_features {
            for i in 0..self.in_features {
                t[i * self.out_features + o] = self.weight[o * self.in_features + i];
            }
        }
        t
    }
}

/// Weights of a multi-head layer: projections `q`, `k`, `v` from `d_model` and the
/// output projection `o` back to `d_model`, and what the config adds (QK-norm
/// weights, attention sinks).
///
/// ```
/// use wgpu_attention::{DType, MhaConfig, MhaWeights};
/// let cfg = MhaConfig::new(16, 4)?.with_kv_heads(2)?;
/// let w = MhaWeights::random(&cfg, 7)?; // the same on every platform
/// w.check(&cfg)?;
/// assert_eq!((w.k.out_features, w.k.in_features), (8, 16));
/// // Stored as bf16 and read back: PyTorch names under a prefix.
/// let bytes = w.to_dtype(DType::BF16).to_safetensors("layers.0.attn.")?;
/// let back = MhaWeights::from_safetensors(&bytes, &cfg, "layers.0.attn.")?;
/// assert_eq!(back.dtype(), Some(DType::BF16));
/// assert_eq!(back, w.to_dtype(DType::BF16));
/// // A file for another shape is refused, naming the tensor.
/// let other = MhaConfig::new(32, 4)?;
/// let err = MhaWeights::from_safetensors(&bytes, &other, "layers.0.attn.").unwrap_err();
/// assert!(err.to_string().contains("q_proj.weight"));
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MhaWeights {
    /// Query projection: `[num_heads · head_dim, d_model]`.
    pub q: Linear,
    /// Key projection: `[num_kv_heads · head_dim, d_model]`.
    pub k: Linear,
    /// Value projection: `[num_kv_heads · v_head_dim, d_model]`.
    pub v: Linear,
    /// Output projection: `[d_model, num_heads · v_head_dim]`.
    pub o: Linear,
    /// QK-norm weight of Q ([`MhaConfig::qk_norm_lens`]), stored as `q_norm.weight`.
    pub q_norm: Option<Vec<f32>>,
    /// QK-norm weight of K, stored as `k_norm.weight`.
    pub k_norm: Option<Vec<f32>>,
    /// One attention-sink logit per query head, stored as `sinks`.
    pub sinks: Option<Vec<f32>>,
}

/// Tensor names in a `.safetensors` file, after a caller-chosen prefix
/// (e.g. `"model.layers.0.self_attn."`): `{q,k,v,o}_proj.{weight,bias}`.
pub const PROJECTIONS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

impl MhaWeights {
    /// Every projection stored in `dtype` (values rounded to nearest even);
    /// the norm weights and sinks (f32 on the GPU) are rounded the same way.
    pub fn to_dtype(&self, dtype: crate::DType) -> MhaWeights {
        let r = |v: &Option<Vec<f32>>| {
            v.as_ref()
                .map(|v| v.iter().map(|&x| dtype.round(x)).collect())
        };
        MhaWeights {
            q: self.q.to_dtype(dtype),
            k: self.k.to_dtype(dtype),
            v: self.v.to_dtype(dtype),
            o: self.o.to_dtype(dtype),
            q_norm: r(&self.q_norm),
            k_norm: r(&self.k_norm),
            sinks: r(&self.sinks),
        }
    }

    /// The projections' dtype when they share one (`None` for a mix).
    pub fn dtype(&self) -> Option<crate::DType> {
        let d = self.q.dtype;
        [&self.k, &self.v, &self.o]
            .iter()
            .all(|l| l.dtype == d)
            .then_some(d)
    }

    /// Random weights (PyTorch's `nn.Linear` init; QK-norm weights around
    /// 1 (around 0 with Gemma's offset of 1), sinks in [-1, 1)) from `seed`;
    /// the same seed gives the same weights on every platform (ChaCha8).
    pub fn random(cfg: &MhaConfig, seed: u64) -> Result<MhaWeights> {
        cfg.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (d, qd, kvd, vd) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.v_dim());
        let q = Linear::random(&mut rng, qd, d, cfg.bias.q);
        let k = Linear::random(&mut rng, kvd, d, cfg.bias.k);
        let v = Linear::random(&mut rng, vd, d, cfg.bias.v);
        let o = Linear::random(&mut rng, d, cfg.o_in(), cfg.bias.o);
        let (q_norm, k_norm) = match (cfg.qk_norm, cfg.qk_norm_lens()) {
            (Some(n), Some((lq, lk))) => {
                let mut draw = |len: usize| -> Vec<f32> {
                    (0..len)
                        .map(|_| 1.0 - n.norm.weight_offset + rng.random_range(-0.25..0.25))
                        .collect()
                };
                (Some(draw(lq)), Some(draw(lk)))
            }
            _ => (None, None),
        };
        let sinks = cfg.sinks.then(|| {
            (0..cfg.num_heads)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect()
        });
        Ok(MhaWeights {
            q,
            k,
            v,
            o,
            q_norm,
            k_norm,
            sinks,
        })
    }

    fn all(&self) -> [&Linear; 4] {
        [&self.q, &self.k, &self.v, &self.o]
    }

    /// Checks every weight and bias shape against `cfg`: [`Error::Weights`]
    /// naming the tensor and both shapes ([`Error::Config`] for an invalid
    /// `cfg`).
    pub fn check(&self, cfg: &MhaConfig) -> Result<()> {
        cfg.validate()?;
        let want = [
            (cfg.q_dim(), cfg.d_model),
            (cfg.kv_dim(), cfg.d_model),
            (cfg.v_dim(), cfg.d_model),
            (cfg.d_model, cfg.o_in()),
        ];
        for (((lin, name), (out, inp)), has_bias) in self
            .all()
            .into_iter()
            .zip(PROJECTIONS)
            .zip(want)
            .zip(cfg.bias.each())
        {
            if (lin.out_features, lin.in_features) != (out, inp) || lin.weight.len() != out * inp {
                return Err(Error::Weights(format!(
                    "{name}.weight is [{}, {}] with {} values, the config needs [{out}, {inp}]",
                    lin.out_features,
                    lin.in_features,
                    lin.weight.len()
                )));
            }
            match (&lin.bias, has_bias) {
                (Some(b), true) if b.len() == out => {}
                (None, false) => {}
                (Some(b), true) => {
                    return Err(Error::Weights(format!(
                        "{name}.bias has {} values, the config needs {out}",
                        b.len()
                    )))
                }
                (None, true) => {
                    return Err(Error::Weights(format!(
                        "{name}.bias is missing but the config has a bias on {name}"
                    )))
                }
                (Some(_), false) => {
                    return Err(Error::Weights(format!(
                        "{name}.bias is present but the config has no bias on {name}"
                    )))
                }
            }
        }
        let lens = cfg.qk_norm_lens();
        for (name, w, want) in [
            ("q_norm.weight", &self.q_norm, lens.map(|l| l.0)),
            ("k_norm.weight", &self.k_norm, lens.map(|l| l.1)),
            ("sinks", &self.sinks, cfg.sinks.then_some(cfg.num_heads)),
        ] {
            match (w, want) {
                (Some(w), Some(n)) if w.len() == n => {
                    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
                        return Err(Error::Weights(format!(
                            "{name}[{i}] is {}: weights must be finite",
                            w[i]
                        )));
                    }
                }
                (None, None) => {}
                (Some(w), Some(n)) => {
                    return Err(Error::Weights(format!(
                        "{name} has {} values, the config needs {n}",
                        w.len()
                    )))
                }
                (None, Some(n)) => {
                    return Err(Error::Weights(format!(
                        "{name} ({n} values) is missing but the config uses it"
                    )))
                }
                (Some(_), None) => {
                    return Err(Error::Weights(format!(
                        "{name} is present but the config does not use it"
                    )))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{tensor::TensorView, Dtype};

    #[test]
    fn config_errors() {
        assert!(matches!(MhaConfig::new(10, 3), Err(Error::Config(m)) if m.contains("multiple")));
        assert!(matches!(
            MhaConfig::new(12, 4).unwrap().with_kv_heads(3),
            Err(Error::Config(_))
        ));
        assert_eq!(
            MhaConfig::new(12, 4)
                .unwrap()
                .with_kv_heads(2)
                .unwrap()
                .kv_dim(),
            6
        );
    }

    #[test]
    fn random_is_seeded_and_in_torch_bounds() {
        let cfg = MhaConfig::new(16, 4).unwrap();
        let a = MhaWeights::random(&cfg, 7).unwrap();
        assert_eq!(a, MhaWeights::random(&cfg, 7).unwrap());
        assert_ne!(a, MhaWeights::random(&cfg, 8).unwrap());
        assert!(a.q.weight.iter().all(|w| w.abs() <= 0.25));
        a.check(&cfg).unwrap();
    }

    #[test]
    fn safetensors_round_trip_and_f16_conversion() {
        let cfg = MhaConfig::new(8, 2).unwrap().with_kv_heads(1).unwrap();
        let w = MhaWeights::random(&cfg, 1).unwrap();
        let bytes = w.to_safetensors("layer.").unwrap();
        assert_eq!(
            MhaWeights::from_safetensors(&bytes, &cfg, "layer.").unwrap(),
            w
        );
        // The same tensors stored as f16 come back rounded to f16.
        let halves: Vec<(String, Vec<usize>, Vec<u8>)> = [
            ("q_proj", &w.q),
            ("k_proj", &w.k),
            ("v_proj", &w.v),
            ("o_proj", &w.o),
        ]
        .iter()
        .flat_map(|(p, l)| {
            let enc = |v: &[f32]| {
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect::<Vec<u8>>()
            };
            [
                (
                    format!("{p}.weight"),
                    vec![l.out_features, l.in_features],
                    enc(&l.weight),
                ),
                (
                    format!("{p}.bias"),
                    vec![l.out_features],
                    enc(l.bias.as_ref().unwrap()),
                ),
            ]
        })
        .collect();
        let views: Vec<_> = halves
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F16, s.clone(), d).unwrap(),
                )
            })
            .collect();
        let f16_bytes = safetensors::serialize(views, None).unwrap();
        let back = MhaWeights::from_safetensors(&f16_bytes, &cfg, "").unwrap();
        for (a, b) in back.q.weight.iter().zip(&w.q.weight) {
            assert_eq!(*a, half::f16::from_f32(*b).to_f32());
        }
    }

    #[test]
    fn safetensors_errors_name_the_tensor() {
        let cfg = MhaConfig::new(8, 2).unwrap();
        let bytes = MhaWeights::random(&cfg, 1)
            .unwrap()
            .to_safetensors("")
            .unwrap();
        let other = MhaConfig::new(16, 2).unwrap();
        assert!(
            matches!(MhaWeights::from_safetensors(&bytes, &other, ""), Err(Error::Weights(m)) if m.contains("q_proj.weight") && m.contains("[16, 16]"))
        );
        assert!(
            matches!(MhaWeights::from_safetensors(&bytes, &cfg, "x."), Err(Error::Weights(m)) if m.contains("not found"))
        );
        assert!(matches!(
            MhaWeights::from_safetensors(b"garbage", &cfg, ""),
            Err(Error::Weights(_))
        ));
        let ints: Vec<u8> = vec![0; 8 * 8 * 4];
        let views = vec![(
            "q_proj.weight".to_string(),
            TensorView::new(Dtype::I32, vec![8, 8], &ints).unwrap(),
        )];
        let st = safetensors::serialize(views, None).unwrap();
        assert!(
            matches!(MhaWeights::from_safetensors(&st, &cfg, ""), Err(Error::Weights(m)) if m.contains("I32"))
        );
        assert!(matches!(
            MhaWeights::load("/nonexistent/w.safetensors", &cfg, ""),
            Err(Error::Io { .. })
        ));
    }
}

//! The multi-head layer's configuration and weights on the host: random
//! initialization from a seed, and loading/saving `.safetensors` by tensor name.
//! No GPU here: the reference uses these directly.

use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

mod safetensors_io;

/// Shape of a multi-head attention layer.
///
/// ```
/// use wgpu_attention::MhaConfig;
/// let cfg = MhaConfig::new(512, 8)?; // head_dim 64, 8 K/V heads, biases
/// assert_eq!((cfg.head_dim, cfg.q_dim(), cfg.kv_dim()), (64, 512, 512));
/// let gqa = cfg.with_kv_heads(2)?; // grouped-query: 4 query heads per K/V head
/// assert_eq!(gqa.kv_dim(), 128);
/// assert!(cfg.with_kv_heads(3).is_err()); // 8 heads cannot be split in 3 groups
/// assert!(MhaConfig::new(500, 8).is_err());
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MhaConfig {
    /// Width of the layer's input and output rows (`[B, N, d_model]`).
    pub d_model: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (`num_heads` for MHA, fewer for GQA, 1 for MQA).
    pub num_kv_heads: usize,
    /// Channels per head `D`: `d_model / num_heads` from [`MhaConfig::new`];
    /// set directly, any size (`num_heads · head_dim` need not be `d_model`).
    pub head_dim: usize,
    /// Whether the four projections have biases.
    pub bias: bool,
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
            bias: true,
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

    /// Checks that every size is positive and the head counts divide
    /// ([`Error::Config`], naming the field).
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("d_model", self.d_model),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
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
        Ok(())
    }

    /// Width of the query projection (`num_heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
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
/// output projection `o` back to `d_model`.
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
    /// Value projection: `[num_kv_heads · head_dim, d_model]`.
    pub v: Linear,
    /// Output projection: `[d_model, num_heads · head_dim]`.
    pub o: Linear,
}

/// Tensor names in a `.safetensors` file, after a caller-chosen prefix
/// (e.g. `"model.layers.0.self_attn."`): `{q,k,v,o}_proj.{weight,bias}`.
pub const PROJECTIONS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

impl MhaWeights {
    /// Every projection stored in `dtype` (values rounded to nearest even).
    pub fn to_dtype(&self, dtype: crate::DType) -> MhaWeights {
        MhaWeights {
            q: self.q.to_dtype(dtype),
            k: self.k.to_dtype(dtype),
            v: self.v.to_dtype(dtype),
            o: self.o.to_dtype(dtype),
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

    /// Random weights (PyTorch's `nn.Linear` init) from `seed`; the same seed gives
    /// the same weights on every platform (ChaCha8).
    pub fn random(cfg: &MhaConfig, seed: u64) -> Result<MhaWeights> {
        cfg.validate()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (d, qd, kvd) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim());
        Ok(MhaWeights {
            q: Linear::random(&mut rng, qd, d, cfg.bias),
            k: Linear::random(&mut rng, kvd, d, cfg.bias),
            v: Linear::random(&mut rng, kvd, d, cfg.bias),
            o: Linear::random(&mut rng, d, qd, cfg.bias),
        })
    }

    fn all(&self) -> [&Linear; 4] {
        [&self.q, &self.k, &self.v, &self.o]
    }

    /// Checks every weight and bias shape against `cfg`: [`Error::Weights`]
    /// naming the projection and both shapes ([`Error::Config`] for an invalid
    /// `cfg`).
    pub fn check(&self, cfg: &MhaConfig) -> Result<()> {
        cfg.validate()?;
        let want = [
            (cfg.q_dim(), cfg.d_model),
            (cfg.kv_dim(), cfg.d_model),
            (cfg.kv_dim(), cfg.d_model),
            (cfg.d_model, cfg.q_dim()),
        ];
        for ((lin, name), (out, inp)) in self.all().into_iter().zip(PROJECTIONS).zip(want) {
            if (lin.out_features, lin.in_features) != (out, inp) || lin.weight.len() != out * inp {
                return Err(Error::Weights(format!(
                    "{name}.weight is [{}, {}] with {} values, the config needs [{out}, {inp}]",
                    lin.out_features,
                    lin.in_features,
                    lin.weight.len()
                )));
            }
            match (&lin.bias, cfg.bias) {
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
                        "{name}.bias is missing but the config has bias = true"
                    )))
                }
                (Some(_), false) => {
                    return Err(Error::Weights(format!(
                        "{name}.bias is present but the config has bias = false"
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

//! The layer's weights as `.safetensors`: reading by tensor name (f32, f16,
//! bf16), writing, and files written through a temporary name.

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use super::{Linear, MhaConfig, MhaWeights, PROJECTIONS};
use crate::error::{Error, Result};

/// Where a layer's tensors come from: a `.safetensors` file in memory, or one
/// layer of a (possibly sharded) checkpoint read tensor by tensor
/// ([`crate::hf::Checkpoint`]).
pub trait TensorSource {
    /// The tensor's shape, `None` when there is no such tensor.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The tensor's values widened to f32 (exactly) and its dtype (F32, F16
    /// or BF16); [`Error::Weights`] naming it when it is missing or of
    /// another dtype.
    fn read(&self, name: &str) -> Result<(Vec<f32>, crate::DType)>;
    /// Every tensor name, sorted (for error messages).
    fn names(&self) -> Vec<String>;
}

impl TensorSource for SafeTensors<'_> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).ok().map(|t| t.shape().to_vec())
    }

    fn read(&self, name: &str) -> Result<(Vec<f32>, crate::DType)> {
        let t = self.tensor(name).map_err(|_| {
            Error::Weights(format!(
                "tensor {name:?} not found; the file has {:?}",
                TensorSource::names(self)
            ))
        })?;
        Ok((to_f32(name, t.dtype(), t.data())?, dtype_of(t.dtype())))
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = SafeTensors::names(self)
            .into_iter()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}

/// Our dtype of a safetensors dtype (F32 for the ones [`to_f32`] refuses).
pub(crate) fn dtype_of(d: Dtype) -> crate::DType {
    match d {
        Dtype::F16 => crate::DType::F16,
        Dtype::BF16 => crate::DType::BF16,
        _ => crate::DType::F32,
    }
}

/// Reads tensor `name` of `shape` from `src`.
pub(crate) fn read_shaped(
    src: &dyn TensorSource,
    name: &str,
    shape: &[usize],
) -> Result<(Vec<f32>, crate::DType)> {
    match src.shape(name) {
        None => {
            return Err(Error::Weights(format!(
                "tensor {name:?} not found; the file has {:?}",
                src.names()
            )))
        }
        Some(s) if s != shape => {
            return Err(Error::Weights(format!(
                "{name} has shape {s:?}, expected {shape:?}"
            )))
        }
        _ => {}
    }
    src.read(name)
}

/// The linear map `{base}.weight` `[out, inp]` (and `{base}.bias` `[out]` when
/// `bias`) from `src`, in the weight's dtype.
pub(crate) fn read_linear(
    src: &dyn TensorSource,
    base: &str,
    out: usize,
    inp: usize,
    bias: bool,
) -> Result<Linear> {
    let (weight, dtype) = read_shaped(src, &format!("{base}.weight"), &[out, inp])?;
    let bias = if bias {
        let name = format!("{base}.bias");
        let (b, bdt) = read_shaped(src, &name, &[out])?;
        if bdt != dtype {
            return Err(Error::Weights(format!(
                "{name} is {bdt} but its weight is {dtype}: store a projection's weight and bias in one dtype"
            )));
        }
        Some(b)
    } else {
        None
    };
    Ok(Linear {
        out_features: out,
        in_features: inp,
        weight,
        bias,
        dtype,
    })
}

impl MhaWeights {
    /// Reads the weights from `.safetensors` bytes: `{prefix}{q,k,v,o}_proj.weight`
    /// `[out, in]`, `.bias` `[out]` on the projections `cfg.bias` names, and
    /// with QK-norm `{prefix}q_norm.weight` / `k_norm.weight`, with sinks
    /// `{prefix}sinks` `[num_heads]`; f32, f16 or bf16 (each [`Linear::dtype`]
    /// as stored). A missing tensor (the error lists the file's names), a
    /// wrong shape, another element type, or a bias in another dtype than its
    /// weight is [`Error::Weights`]. Extra tensors are ignored.
    pub fn from_safetensors(bytes: &[u8], cfg: &MhaConfig, prefix: &str) -> Result<MhaWeights> {
        cfg.validate()?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Weights(format!("not a safetensors file: {e}")))?;
        Self::from_source(&st, cfg, prefix)
    }

    /// [`MhaWeights::from_safetensors`] from any [`TensorSource`].
    pub fn from_source(
        src: &dyn TensorSource,
        cfg: &MhaConfig,
        prefix: &str,
    ) -> Result<MhaWeights> {
        cfg.validate()?;
        let (d, qd, kvd, vd) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.v_dim());
        let b = cfg.bias;
        let lin =
            |p: &str, out, inp, bias| read_linear(src, &format!("{prefix}{p}"), out, inp, bias);
        let vec = |name: &str, len: usize| -> Result<Vec<f32>> {
            Ok(read_shaped(src, &format!("{prefix}{name}"), &[len])?.0)
        };
        let (q_norm, k_norm) = match cfg.qk_norm_lens() {
            Some((lq, lk)) => (
                Some(vec("q_norm.weight", lq)?),
                Some(vec("k_norm.weight", lk)?),
            ),
            None => (None, None),
        };
        let w = MhaWeights {
            q: lin("q_proj", qd, d, b.q)?,
            k: lin("k_proj", kvd, d, b.k)?,
            v: lin("v_proj", vd, d, b.v)?,
            o: lin("o_proj", d, cfg.o_in(), b.o)?,
            q_norm,
            k_norm,
            sinks: if cfg.sinks {
                Some(vec("sinks", cfg.num_heads)?)
            } else {
                None
            },
        };
        w.check(cfg)?;
        Ok(w)
    }

    /// [`MhaWeights::from_safetensors`] from a file; an unreadable file is
    /// [`Error::Io`] with its path.
    pub fn load(
        path: impl AsRef<std::path::Path>,
        cfg: &MhaConfig,
        prefix: &str,
    ) -> Result<MhaWeights> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_safetensors(&bytes, cfg, prefix)
    }

    /// The weights as `.safetensors` bytes in each projection's dtype, named as
    /// [`MhaWeights::from_safetensors`] reads them.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
        for (lin, p) in self.all().into_iter().zip(PROJECTIONS) {
            let st = match lin.dtype {
                crate::DType::F32 => Dtype::F32,
                crate::DType::F16 => Dtype::F16,
                crate::DType::BF16 => Dtype::BF16,
            };
            tensors.push((
                format!("{prefix}{p}.weight"),
                vec![lin.out_features, lin.in_features],
                lin.dtype.encode(&lin.weight),
                st,
            ));
            if let Some(b) = &lin.bias {
                tensors.push((
                    format!("{prefix}{p}.bias"),
                    vec![lin.out_features],
                    lin.dtype.encode(b),
                    st,
                ));
            }
        }
        for (name, w) in [
            ("q_norm.weight", &self.q_norm),
            ("k_norm.weight", &self.k_norm),
            ("sinks", &self.sinks),
        ] {
            if let Some(w) = w {
                tensors.push((
                    format!("{prefix}{name}"),
                    vec![w.len()],
                    crate::DType::F32.encode(w),
                    Dtype::F32,
                ));
            }
        }
        let views = tensors
            .iter()
            .map(|(name, shape, data, st)| {
                TensorView::new(*st, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Weights(format!("{name}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, None).map_err(|e| Error::Weights(e.to_string()))
    }

    /// [`MhaWeights::to_safetensors`] into a file (written to a temporary name, then renamed).
    pub fn save(&self, path: impl AsRef<std::path::Path>, prefix: &str) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, self.to_safetensors(prefix)?).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Little-endian f32 / f16 / bf16 bytes as f32.
pub(crate) fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    let words = |n: usize| data.chunks_exact(n);
    Ok(match dtype {
        Dtype::F32 => words(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => words(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => words(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::Weights(format!(
                "{name} has dtype {other:?}; supported: F32, F16, BF16"
            )))
        }
    })
}

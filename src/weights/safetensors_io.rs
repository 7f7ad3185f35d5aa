//! The layer's weights as `.safetensors`: reading by tensor name (f32, f16,
//! bf16), writing, and files written through a temporary name.

use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use super::{Linear, MhaConfig, MhaWeights, PROJECTIONS};
use crate::error::{Error, Result};

impl MhaWeights {
    /// Reads the weights from `.safetensors` bytes: `{prefix}{q,k,v,o}_proj.weight`
    /// `[out, in]` and, when `cfg.bias`, `.bias` `[out]`, as f32, f16 or bf16
    /// (each [`Linear::dtype`] as stored). A missing tensor (the error lists
    /// the file's names), a wrong shape, another element type, or a bias in
    /// another dtype than its weight is [`Error::Weights`]. Extra tensors are
    /// ignored.
    pub fn from_safetensors(bytes: &[u8], cfg: &MhaConfig, prefix: &str) -> Result<MhaWeights> {
        cfg.validate()?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Weights(format!("not a safetensors file: {e}")))?;
        let read = |name: String, shape: &[usize]| -> Result<(Vec<f32>, crate::DType)> {
            let t = st.tensor(&name).map_err(|_| {
                let mut names = st.names();
                names.sort();
                Error::Weights(format!("tensor {name:?} not found; the file has {names:?}"))
            })?;
            if t.shape() != shape {
                return Err(Error::Weights(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.shape()
                )));
            }
            let dtype = match t.dtype() {
                Dtype::F16 => crate::DType::F16,
                Dtype::BF16 => crate::DType::BF16,
                _ => crate::DType::F32,
            };
            Ok((to_f32(&name, t.dtype(), t.data())?, dtype))
        };
        let (d, qd, kvd) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim());
        let lin = |p: &str, out: usize, inp: usize| -> Result<Linear> {
            let (weight, dtype) = read(format!("{prefix}{p}.weight"), &[out, inp])?;
            let bias = if cfg.bias {
                let name = format!("{prefix}{p}.bias");
                let (b, bdt) = read(name.clone(), &[out])?;
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
        };
        Ok(MhaWeights {
            q: lin("q_proj", qd, d)?,
            k: lin("k_proj", kvd, d)?,
            v: lin("v_proj", kvd, d)?,
            o: lin("o_proj", d, qd)?,
        })
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
fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
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

//! A checkpoint directory's `.safetensors` files, read tensor by tensor: the
//! header of a shard (8-byte length + JSON) gives each tensor's dtype, shape
//! and byte range, so one layer's attention weights are read without reading
//! the rest of a multi-gigabyte file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use safetensors::Dtype;
use serde_json::Value;

use super::config::{HfConfig, QkvStorage};
use crate::error::{Error, Result};
use crate::weights::{read_linear, read_shaped, to_f32, Linear, MhaWeights, TensorSource};

/// The largest header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry in a shard's header.
#[derive(Clone, Debug)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    range: (u64, u64),
}

/// A Hugging Face checkpoint directory: `model.safetensors`, or shards listed
/// in `model.safetensors.index.json` (`weight_map`: tensor → file). A
/// [`TensorSource`]: each read opens the tensor's shard and reads only its
/// header (once) and the tensor's bytes.
///
/// ```no_run
/// use wgpu_attention::hf::{Checkpoint, HfConfig};
/// # fn main() -> wgpu_attention::Result<()> {
/// let dir = "/models/Qwen3-0.6B";
/// let cfg = HfConfig::from_dir(dir)?;
/// let ckpt = Checkpoint::open(dir)?;
/// let w = ckpt.layer_weights(&cfg, 3)?; // layer 3's q/k/v/o, q_norm, k_norm
/// w.check(&cfg.mha)?;
/// println!("{} bytes read", ckpt.bytes_read());
/// # Ok(()) }
/// ```
pub struct Checkpoint {
    dir: PathBuf,
    /// Tensor name → file, for a sharded checkpoint; `None`: one file.
    index: Option<HashMap<String, String>>,
    single: String,
    headers: Mutex<HashMap<String, HashMap<String, Entry>>>,
    bytes: AtomicU64,
}

impl Checkpoint {
    /// Opens `dir`: reads `model.safetensors.index.json` when present, else
    /// expects `model.safetensors`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Checkpoint> {
        let dir = dir.as_ref().to_path_buf();
        let io = |p: &Path, e: std::io::Error| Error::Io {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        let index_path = dir.join("model.safetensors.index.json");
        let index = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| io(&index_path, e))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| Error::Weights(format!("{}: not JSON: {e}", index_path.display())))?;
            let map = v
                .get("weight_map")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    Error::Weights(format!("{}: no weight_map object", index_path.display()))
                })?;
            let mut index = HashMap::new();
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    Error::Weights(format!(
                        "{}: weight_map[{name:?}] is not a file name",
                        index_path.display()
                    ))
                })?;
                if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                    return Err(Error::Weights(format!(
                        "{}: weight_map[{name:?}] = {file:?} is not a file of the directory",
                        index_path.display()
                    )));
                }
                index.insert(name.clone(), file.to_string());
            }
            Some(index)
        } else {
            let single = dir.join("model.safetensors");
            if !single.exists() {
                return Err(Error::Io {
                    path: dir.display().to_string(),
                    reason: "neither model.safetensors nor model.safetensors.index.json is there"
                        .into(),
                });
            }
            None
        };
        Ok(Checkpoint {
            dir,
            index,
            single: "model.safetensors".into(),
            headers: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
        })
    }

    /// Bytes read from the files so far (headers and tensors).
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The file holding `name`, if any.
    fn file_of(&self, name: &str) -> Option<&str> {
        match &self.index {
            Some(ix) => ix.get(name).map(String::as_str),
            None => Some(&self.single),
        }
    }

    /// The header of `file`, read once.
    fn entry(&self, file: &str, name: &str) -> Result<Option<Entry>> {
        let mut headers = self.headers.lock().unwrap_or_else(|p| p.into_inner());
        if !headers.contains_key(file) {
            let h = self.read_header(file)?;
            headers.insert(file.to_string(), h);
        }
        Ok(headers[file].get(name).cloned())
    }

    fn read_header(&self, file: &str) -> Result<HashMap<String, Entry>> {
        let path = self.dir.join(file);
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let bad = |why: String| Error::Weights(format!("{}: {why}", path.display()));
        let mut f = File::open(&path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(io)?;
        let n = u64::from_le_bytes(len);
        if n > MAX_HEADER || 8 + n > size {
            return Err(bad(format!(
                "header length {n} does not fit the file ({size} bytes)"
            )));
        }
        let mut text = vec![0u8; n as usize];
        f.read_exact(&mut text).map_err(io)?;
        self.bytes.fetch_add(8 + n, Ordering::Relaxed);
        let v: Value = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("the header is not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the header is not a JSON object".into()))?;
        let data = 8 + n;
        let mut out = HashMap::new();
        for (name, e) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype = e.get("dtype").and_then(Value::as_str);
            let shape: Option<Vec<usize>> = e
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(|x| x.as_u64().map(|v| v as usize)).collect());
            let offs: Option<Vec<u64>> = e
                .get("data_offsets")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_u64).collect());
            let (Some(dtype), Some(shape), Some(offs)) = (dtype, shape, offs) else {
                return Err(bad(format!(
                    "header entry {name:?} lacks dtype, shape or data_offsets"
                )));
            };
            let [start, end] = offs[..] else {
                return Err(bad(format!("{name}: data_offsets must be [start, end]")));
            };
            if start > end || data + end > size {
                return Err(bad(format!(
                    "{name}: bytes {start}..{end} lie outside the file's data"
                )));
            }
            out.insert(
                name.clone(),
                Entry {
                    dtype: dtype.to_string(),
                    shape,
                    range: (data + start, data + end),
                },
            );
        }
        Ok(out)
    }

    /// Layer `layer`'s attention weights as `cfg` describes them, read from
    /// the tensors of that layer only (fused `qkv_proj` and GPT-NeoX's
    /// per-head `query_key_value` split into q, k and v).
    pub fn layer_weights(&self, cfg: &HfConfig, layer: usize) -> Result<MhaWeights> {
        cfg.layer_kind(layer)?;
        let m = &cfg.mha;
        let probe = match cfg.qkv {
            QkvStorage::Separate => "q_proj.weight",
            QkvStorage::Fused => "qkv_proj.weight",
            QkvStorage::PerHead => "query_key_value.weight",
        };
        let prefixes = cfg.layer_prefixes(layer);
        let prefix = prefixes
            .iter()
            .find(|p| self.shape(&format!("{p}{probe}")).is_some())
            .ok_or_else(|| {
                Error::Weights(format!(
                    "layer {layer}: no tensor {probe:?} under {prefixes:?} in {}",
                    self.dir.display()
                ))
            })?
            .clone();
        let (dm, hq, d) = (m.d_model, m.num_heads, m.head_dim);
        let (qd, kvd, vd) = (m.q_dim(), m.kv_dim(), m.v_dim());
        let b = m.bias;
        let (q, k, v) = match cfg.qkv {
            QkvStorage::Separate => (
                read_linear(self, &format!("{prefix}q_proj"), qd, dm, b.q)?,
                read_linear(self, &format!("{prefix}k_proj"), kvd, dm, b.k)?,
                read_linear(self, &format!("{prefix}v_proj"), vd, dm, b.v)?,
            ),
            QkvStorage::Fused => {
                let all = read_linear(self, &format!("{prefix}qkv_proj"), qd + kvd + vd, dm, b.q)?;
                let rows = |r0: usize, n: usize| -> Vec<usize> { (r0..r0 + n).collect() };
                (
                    take_rows(&all, &rows(0, qd)),
                    take_rows(&all, &rows(qd, kvd)),
                    take_rows(&all, &rows(qd + kvd, vd)),
                )
            }
            QkvStorage::PerHead => {
                let all = read_linear(self, &format!("{prefix}query_key_value"), 3 * qd, dm, b.q)?;
                // Head h's rows: q at h·3D, k at h·3D + D, v at h·3D + 2D.
                let part = |j: usize| -> Vec<usize> {
                    (0..hq)
                        .flat_map(|h| (0..d).map(move |c| h * 3 * d + j * d + c))
                        .collect()
                };
                (
                    take_rows(&all, &part(0)),
                    take_rows(&all, &part(1)),
                    take_rows(&all, &part(2)),
                )
            }
        };
        let o_name = match (cfg.qkv, cfg.family) {
            (QkvStorage::PerHead, _) => "dense",
            (_, super::Family::GptJ) => "out_proj",
            _ => "o_proj",
        };
        let o = read_linear(self, &format!("{prefix}{o_name}"), dm, m.o_in(), b.o)?;
        let vec = |name: &str, len: usize| -> Result<Vec<f32>> {
            Ok(read_shaped(self, &format!("{prefix}{name}"), &[len])?.0)
        };
        let (q_norm, k_norm) = match m.qk_norm_lens() {
            Some((lq, lk)) => (
                Some(vec("q_norm.weight", lq)?),
                Some(vec("k_norm.weight", lk)?),
            ),
            None => (None, None),
        };
        let sinks = if m.sinks {
            Some(vec("sinks", hq)?)
        } else {
            None
        };
        let w = MhaWeights {
            q,
            k,
            v,
            o,
            q_norm,
            k_norm,
            sinks,
        };
        w.check(m)?;
        Ok(w)
    }
}

/// The rows `rows` of `lin` (and of its bias).
fn take_rows(lin: &Linear, rows: &[usize]) -> Linear {
    let inp = lin.in_features;
    Linear {
        out_features: rows.len(),
        in_features: inp,
        weight: rows
            .iter()
            .flat_map(|&r| lin.weight[r * inp..(r + 1) * inp].iter().copied())
            .collect(),
        bias: lin
            .bias
            .as_ref()
            .map(|b| rows.iter().map(|&r| b[r]).collect()),
        dtype: lin.dtype,
    }
}

impl TensorSource for Checkpoint {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let file = self.file_of(name)?;
        self.entry(file, name).ok().flatten().map(|e| e.shape)
    }

    fn read(&self, name: &str) -> Result<(Vec<f32>, crate::DType)> {
        let file = self.file_of(name).ok_or_else(|| {
            Error::Weights(format!(
                "tensor {name:?} is not in the checkpoint's weight_map ({})",
                self.dir.display()
            ))
        })?;
        let e = self
            .entry(file, name)?
            .ok_or_else(|| Error::Weights(format!("tensor {name:?} not found in {file}")))?;
        let dtype = match e.dtype.as_str() {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            other => {
                return Err(Error::Weights(format!(
                    "{name} has dtype {other}; supported: F32, F16, BF16"
                )))
            }
        };
        let elem = if dtype == Dtype::F32 { 4 } else { 2 };
        let (start, end) = e.range;
        let want = e.shape.iter().product::<usize>() as u64 * elem;
        if end - start != want {
            return Err(Error::Weights(format!(
                "{name}: {} bytes for shape {:?} of {}",
                end - start,
                e.shape,
                e.dtype
            )));
        }
        let path = self.dir.join(file);
        let io = |err: std::io::Error| Error::Io {
            path: path.display().to_string(),
            reason: err.to_string(),
        };
        let mut f = File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut data = vec![0u8; want as usize];
        f.read_exact(&mut data).map_err(io)?;
        self.bytes.fetch_add(want, Ordering::Relaxed);
        Ok((to_f32(name, dtype, &data)?, crate::weights::dtype_of(dtype)))
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.index {
            Some(ix) => ix.keys().cloned().collect(),
            None => self
                .entry(&self.single, "")
                .ok()
                .map(|_| {
                    self.headers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&self.single)
                        .map(|h| h.keys().cloned().collect())
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
        };
        names.sort();
        names
    }
}

/// One tensor to write: name, shape, dtype and little-endian bytes.
type Blob = (String, Vec<usize>, Dtype, Vec<u8>);

impl Checkpoint {
    /// Writes a checkpoint directory in `cfg`'s family naming: `config.json`
    /// (`config_json` as given), each layer's attention weights from `layers`
    /// (fused or per-head Q/K/V as the family stores them, each projection in
    /// its dtype, norms and sinks in f32) plus the caller's `extra` tensors
    /// (name, shape, f32 values), in `shards` files with
    /// `model.safetensors.index.json` when `shards > 1`. What
    /// [`Checkpoint::open`] and [`HfConfig::from_dir`] read back: for tests,
    /// examples, and exporting weights.
    pub fn save(
        dir: impl AsRef<Path>,
        config_json: &str,
        cfg: &HfConfig,
        layers: &[MhaWeights],
        extra: &[(String, Vec<usize>, Vec<f32>)],
        shards: usize,
    ) -> Result<()> {
        let dir = dir.as_ref();
        let io = |p: &Path, e: std::io::Error| Error::Io {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let st = |d: crate::DType| match d {
            crate::DType::F32 => Dtype::F32,
            crate::DType::F16 => Dtype::F16,
            crate::DType::BF16 => Dtype::BF16,
        };
        let mut blobs: Vec<Blob> = Vec::new();
        let push_lin = |blobs: &mut Vec<Blob>, base: String, lin: &Linear| {
            blobs.push((
                format!("{base}.weight"),
                vec![lin.out_features, lin.in_features],
                st(lin.dtype),
                lin.dtype.encode(&lin.weight),
            ));
            if let Some(b) = &lin.bias {
                blobs.push((
                    format!("{base}.bias"),
                    vec![b.len()],
                    st(lin.dtype),
                    lin.dtype.encode(b),
                ));
            }
        };
        let m = &cfg.mha;
        for (i, w) in layers.iter().enumerate() {
            w.check(m)?;
            let prefix = cfg.layer_prefixes(i).pop().expect("a prefix");
            match cfg.qkv {
                QkvStorage::Separate => {
                    for (name, lin) in [("q_proj", &w.q), ("k_proj", &w.k), ("v_proj", &w.v)] {
                        push_lin(&mut blobs, format!("{prefix}{name}"), lin);
                    }
                }
                QkvStorage::Fused => {
                    push_lin(
                        &mut blobs,
                        format!("{prefix}qkv_proj"),
                        &stack(&[&w.q, &w.k, &w.v], None),
                    );
                }
                QkvStorage::PerHead => {
                    let d = m.head_dim;
                    push_lin(
                        &mut blobs,
                        format!("{prefix}query_key_value"),
                        &stack(&[&w.q, &w.k, &w.v], Some(d)),
                    );
                }
            }
            let o_name = match (cfg.qkv, cfg.family) {
                (QkvStorage::PerHead, _) => "dense",
                (_, super::Family::GptJ) => "out_proj",
                _ => "o_proj",
            };
            push_lin(&mut blobs, format!("{prefix}{o_name}"), &w.o);
            for (name, v) in [
                ("q_norm.weight", &w.q_norm),
                ("k_norm.weight", &w.k_norm),
                ("sinks", &w.sinks),
            ] {
                if let Some(v) = v {
                    blobs.push((
                        format!("{prefix}{name}"),
                        vec![v.len()],
                        Dtype::F32,
                        crate::DType::F32.encode(v),
                    ));
                }
            }
        }
        for (name, shape, v) in extra {
            blobs.push((
                name.clone(),
                shape.clone(),
                Dtype::F32,
                crate::DType::F32.encode(v),
            ));
        }
        let shards = shards.max(1).min(blobs.len().max(1));
        let per = blobs.len().div_ceil(shards);
        let mut map = serde_json::Map::new();
        for (s, chunk) in blobs.chunks(per.max(1)).enumerate() {
            let file = if shards == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{shards:05}.safetensors", s + 1)
            };
            let views = chunk
                .iter()
                .map(|(n, shape, dt, data)| {
                    safetensors::tensor::TensorView::new(*dt, shape.clone(), data)
                        .map(|v| (n.clone(), v))
                        .map_err(|e| Error::Weights(format!("{n}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let bytes =
                safetensors::serialize(views, None).map_err(|e| Error::Weights(e.to_string()))?;
            let path = dir.join(&file);
            std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
            for (n, ..) in chunk {
                map.insert(n.clone(), Value::String(file.clone()));
            }
        }
        if shards > 1 {
            let index = serde_json::json!({ "metadata": {}, "weight_map": map });
            let path = dir.join("model.safetensors.index.json");
            std::fs::write(&path, index.to_string()).map_err(|e| io(&path, e))?;
        }
        let path = dir.join("config.json");
        std::fs::write(&path, config_json).map_err(|e| io(&path, e))
    }
}

/// q, k and v stacked into one map: all rows in turn, or (`per_head = Some(D)`)
/// each head's q, k and v rows together (GPT-NeoX). One dtype: q's.
fn stack(parts: &[&Linear; 3], per_head: Option<usize>) -> Linear {
    let inp = parts[0].in_features;
    let order: Vec<(usize, usize)> = match per_head {
        None => parts
            .iter()
            .enumerate()
            .flat_map(|(p, l)| (0..l.out_features).map(move |r| (p, r)))
            .collect(),
        Some(d) => (0..parts[0].out_features / d)
            .flat_map(|h| (0..3).flat_map(move |p| (0..d).map(move |c| (p, h * d + c))))
            .collect(),
    };
    Linear {
        out_features: order.len(),
        in_features: inp,
        weight: order
            .iter()
            .flat_map(|&(p, r)| parts[p].weight[r * inp..(r + 1) * inp].iter().copied())
            .collect(),
        bias: parts[0].bias.as_ref().map(|_| {
            order
                .iter()
                .map(|&(p, r)| parts[p].bias.as_ref().map_or(0.0, |b| b[r]))
                .collect()
        }),
        dtype: parts[0].dtype,
    }
}

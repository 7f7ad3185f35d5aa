//! Reading `.npy` / `.safetensors` arrays and writing outputs atomically (a
//! temporary file in the output's directory, renamed into place once complete).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use npyz::{DType, TypeChar, WriterBuilder};
use wgpu_attention::mods::ModData;
use wgpu_attention::DType as WDType;

use crate::error::bad_input;

/// A dense array in C order.
#[derive(Clone, Debug)]
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

/// A dense float array in C order as stored: its dtype and little-endian bytes.
#[derive(Clone, Debug)]
pub struct RawArray {
    pub shape: Vec<usize>,
    pub dtype: WDType,
    pub bytes: Vec<u8>,
}

impl RawArray {
    /// An f32 array.
    pub fn f32(shape: Vec<usize>, data: &[f32]) -> RawArray {
        RawArray {
            shape,
            dtype: WDType::F32,
            bytes: WDType::F32.encode(data),
        }
    }
}

/// Float or bool contents of a mask file.
pub enum MaskData {
    Bool(Vec<bool>),
    Float(Vec<f32>),
}

/// A mask file: its shape and values.
pub struct MaskArray {
    pub shape: Vec<usize>,
    pub data: MaskData,
}

type Npy = npyz::NpyFile<std::io::BufReader<std::fs::File>>;

fn open_npy(path: &Path, flag: &str) -> Result<Npy> {
    open_npy_as(path, &format!("{flag} {}", path.display()))
}

/// Opens a C-order `.npy`; errors start with `what` (the flag and file).
fn open_npy_as(path: &Path, what: &str) -> Result<Npy> {
    let file = std::fs::File::open(path).map_err(|e| bad_input!("{what}: cannot open: {e}"))?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| bad_input!("{what}: not a readable .npy file: {e}"))?;
    if npy.order() != npyz::Order::C {
        return Err(bad_input!(
            "{what}: array is in Fortran order; save it C-contiguous (np.ascontiguousarray)"
        ));
    }
    Ok(npy)
}

/// (type char, bytes per element) of a plain dtype.
fn plain(dtype: &DType) -> Option<(TypeChar, usize)> {
    match dtype {
        DType::Plain(ts) => Some((ts.type_char(), ts.num_bytes()?)),
        _ => None,
    }
}

fn dtype_name(dtype: &DType) -> String {
    match dtype {
        DType::Plain(ts) => ts.to_string(),
        _ => "a structured dtype".into(),
    }
}

fn shape_of(npy: &npyz::NpyFile<impl std::io::Read>) -> Vec<usize> {
    npy.shape().iter().map(|&n| n as usize).collect()
}

fn read_err(flag: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    bad_input!("{flag} {}: cannot read the data: {e}", path.display())
}

/// Reads a float `.npy` (f32, f16 or f64; C order) as f32.
pub fn read_f32(path: &Path, flag: &str) -> Result<Array<f32>> {
    let a = read_float(path, flag)?;
    Ok(Array {
        data: a.dtype.decode(&a.bytes),
        shape: a.shape,
    })
}

/// Reads a float `.npy` as it is stored: float32 and float16 keep their dtype
/// (little-endian bytes, nothing widened), float64 is rounded to f32.
pub fn read_float(path: &Path, flag: &str) -> Result<RawArray> {
    let npy = open_npy(path, flag)?;
    let shape = shape_of(&npy);
    let dtype = npy.dtype();
    let (dtype, bytes) = match plain(&dtype) {
        Some((TypeChar::Float, 4)) => (
            WDType::F32,
            npy.into_vec::<f32>()
                .map_err(|e| read_err(flag, path, e))?
                .into_iter()
                .flat_map(f32::to_le_bytes)
                .collect(),
        ),
        Some((TypeChar::Float, 2)) => (
            WDType::F16,
            npy.into_vec::<half::f16>()
                .map_err(|e| read_err(flag, path, e))?
                .into_iter()
                .flat_map(half::f16::to_le_bytes)
                .collect(),
        ),
        Some((TypeChar::Float, 8)) => (
            WDType::F32,
            npy.into_vec::<f64>()
                .map_err(|e| read_err(flag, path, e))?
                .into_iter()
                .flat_map(|v| (v as f32).to_le_bytes())
                .collect(),
        ),
        _ => {
            return Err(bad_input!(
                "{flag} {}: dtype {} is not supported; expected float32 or float16 (float64 is converted)",
                path.display(),
                dtype_name(&dtype)
            ))
        }
    };
    Ok(RawArray {
        shape,
        dtype,
        bytes,
    })
}

/// Reads a mask `.npy`: bool (true = attend) or float (added to the scores).
pub fn read_mask(path: &Path, flag: &str) -> Result<MaskArray> {
    let npy = open_npy(path, flag)?;
    let dtype = npy.dtype();
    if let Some((TypeChar::Bool, 1)) = plain(&dtype) {
        let shape = shape_of(&npy);
        let data = npy
            .into_vec::<bool>()
            .map_err(|e| read_err(flag, path, e))?;
        return Ok(MaskArray {
            shape,
            data: MaskData::Bool(data),
        });
    }
    if let Some((TypeChar::Float, _)) = plain(&dtype) {
        drop(npy);
        let a = read_f32(path, flag)?;
        return Ok(MaskArray {
            shape: a.shape,
            data: MaskData::Float(a.data),
        });
    }
    Err(bad_input!(
        "{flag} {}: dtype {} is not a mask; expected bool (true = attend) or float (added to the scores)",
        path.display(),
        dtype_name(&dtype)
    ))
}

/// Reads a 1-D integer `.npy` (any int width) as u64, rejecting negative values.
pub fn read_ints(path: &Path, flag: &str) -> Result<Vec<u64>> {
    let npy = open_npy(path, flag)?;
    let dtype = npy.dtype();
    let shape = shape_of(&npy);
    if shape.len() != 1 {
        return Err(bad_input!(
            "{flag} {}: shape {shape:?}; expected a 1-D array with one length per batch",
            path.display()
        ));
    }
    let signed: Vec<i64> = match plain(&dtype) {
        Some((TypeChar::Int, 1)) => conv(npy.into_vec::<i8>(), flag, path)?,
        Some((TypeChar::Int, 2)) => conv(npy.into_vec::<i16>(), flag, path)?,
        Some((TypeChar::Int, 4)) => conv(npy.into_vec::<i32>(), flag, path)?,
        Some((TypeChar::Int, 8)) => conv(npy.into_vec::<i64>(), flag, path)?,
        Some((TypeChar::Uint, 1)) => conv(npy.into_vec::<u8>(), flag, path)?,
        Some((TypeChar::Uint, 2)) => conv(npy.into_vec::<u16>(), flag, path)?,
        Some((TypeChar::Uint, 4)) => conv(npy.into_vec::<u32>(), flag, path)?,
        Some((TypeChar::Uint, 8)) => npy
            .into_vec::<u64>()
            .map_err(|e| read_err(flag, path, e))?
            .into_iter()
            .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
            .collect(),
        _ => {
            return Err(bad_input!(
                "{flag} {}: dtype {} is not an integer type",
                path.display(),
                dtype_name(&dtype)
            ))
        }
    };
    signed
        .into_iter()
        .map(|v| {
            u64::try_from(v)
                .map_err(|_| bad_input!("{flag} {}: negative value {v}", path.display()))
        })
        .collect()
}

/// Reads a `--mod-buffer` `.npy`: 1-D float32, int32 or uint32 as stored;
/// int64 and uint64 narrowed to i32 and u32 when every value fits (the
/// kernels read 32-bit words). `what` names the flag and file in errors.
pub fn read_mod_buffer(path: &Path, what: &str) -> Result<ModData> {
    let npy = open_npy_as(path, what)?;
    let dtype = npy.dtype();
    let shape = shape_of(&npy);
    const SUPPORTED: &str = "expected float32, int32 or uint32 (int64 and uint64 are narrowed to 32 bits when every value fits)";
    if shape.len() != 1 {
        return Err(bad_input!(
            "{what}: shape {shape:?}; expected a 1-D array (np.ravel it; the mods index it with one u32)"
        ));
    }
    let err = |e: std::io::Error| bad_input!("{what}: cannot read the data: {e}");
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        v: Vec<S>,
        what: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<T>> {
        v.iter()
            .enumerate()
            .map(|(i, &x)| {
                T::try_from(x).map_err(|_| {
                    bad_input!(
                        "{what}: {from} value {x} at index {i} does not fit {to}; the mods read 32-bit buffers (store it as float32, int32 or uint32)"
                    )
                })
            })
            .collect()
    }
    let data = match plain(&dtype) {
        Some((TypeChar::Float, 4)) => ModData::F32(npy.into_vec::<f32>().map_err(err)?),
        Some((TypeChar::Int, 4)) => ModData::I32(npy.into_vec::<i32>().map_err(err)?),
        Some((TypeChar::Uint, 4)) => ModData::U32(npy.into_vec::<u32>().map_err(err)?),
        Some((TypeChar::Int, 8)) => ModData::I32(narrow(
            npy.into_vec::<i64>().map_err(err)?,
            what,
            "int64",
            "int32",
        )?),
        Some((TypeChar::Uint, 8)) => ModData::U32(narrow(
            npy.into_vec::<u64>().map_err(err)?,
            what,
            "uint64",
            "uint32",
        )?),
        _ => {
            return Err(bad_input!(
                "{what}: dtype {} is not supported; {SUPPORTED}",
                dtype_name(&dtype)
            ))
        }
    };
    if shape[0] == 0 {
        return Err(bad_input!(
            "{what}: the array is empty; a mod buffer needs at least one element"
        ));
    }
    Ok(data)
}

fn conv<T: Into<i64>>(v: std::io::Result<Vec<T>>, flag: &str, path: &Path) -> Result<Vec<i64>> {
    Ok(v.map_err(|e| read_err(flag, path, e))?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// A `.safetensors` file held in memory.
pub struct SafeFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
}

impl SafeFile {
    pub fn open(path: &Path, flag: &str) -> Result<SafeFile> {
        let bytes = std::fs::read(path)
            .map_err(|e| bad_input!("{flag} {}: cannot open: {e}", path.display()))?;
        safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad_input!("{flag} {}: not a .safetensors file: {e}", path.display()))?;
        Ok(SafeFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn tensors(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes).expect("checked in open")
    }

    /// Sorted tensor names.
    pub fn names(&self) -> Vec<String> {
        let st = self.tensors();
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        names
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors().tensor(name).ok().map(|t| t.shape().to_vec())
    }

    /// Tensor `name` as stored (F32, F16 or BF16: its dtype and bytes, nothing
    /// widened). `flag` names the option that chose the name, for the error message.
    pub fn read_raw(&self, name: &str, flag: &str) -> Result<RawArray> {
        let st = self.tensors();
        let t = st.tensor(name).map_err(|_| {
            bad_input!(
                "{flag} {name}: no tensor of that name in {}; it has {:?}",
                self.path.display(),
                self.names()
            )
        })?;
        use safetensors::Dtype;
        let dtype = match t.dtype() {
            Dtype::F32 => WDType::F32,
            Dtype::F16 => WDType::F16,
            Dtype::BF16 => WDType::BF16,
            other => {
                return Err(bad_input!(
                "{flag} {name}: dtype {other:?} in {} is not supported; expected F32, F16 or BF16",
                self.path.display()
            ))
            }
        };
        Ok(RawArray {
            shape: t.shape().to_vec(),
            dtype,
            bytes: t.data().to_vec(),
        })
    }
}

/// An output path checked before any work: its directory must exist, and it may
/// not name a directory.
pub fn check_output(path: &Path, flag: &str) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(bad_input!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(bad_input!(
            "{flag} {}: is a directory; expected a file name",
            path.display()
        ));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so
/// the path holds either its old contents or the complete new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".attn-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("{}: write failed", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| {
        format!(
            "{}: cannot rename the temporary file into place",
            path.display()
        )
    })?;
    Ok(())
}

/// `.npy` bytes of an f32 array.
pub fn npy_f32(shape: &[usize], data: &[f32]) -> Result<Vec<u8>> {
    npy_of(shape, data.iter().copied())
}

fn npy_of<T: npyz::AutoSerialize>(
    shape: &[usize],
    data: impl Iterator<Item = T>,
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let shape: Vec<u64> = shape.iter().map(|&n| n as u64).collect();
        let mut w = npyz::WriteOptions::<T>::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut buf)
            .begin_nd()?;
        w.extend(data)?;
        w.finish()?;
    }
    Ok(buf)
}

/// Writes an f32 array as `.npy`, atomically.
pub fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    write_atomic(path, &npy_f32(shape, data)?)
}

/// Whether `path` names a `.safetensors` file (by its extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Why an output of `dtype` cannot go to `path`, before any work: NumPy has no
/// bfloat16, so a bf16 output needs a `.safetensors` path. `why` says where the
/// dtype came from (`--dtype bf16`, or the input's dtype).
pub fn check_output_dtype(path: &Path, flag: &str, dtype: WDType, why: &str) -> Result<()> {
    if dtype == WDType::BF16 && !is_safetensors(path) {
        return Err(bad_input!(
            "{flag} {}: the output would be bf16 ({why}), and .npy cannot hold it (NumPy has no bfloat16 dtype); write it as safetensors (--out o.safetensors) or compute in another dtype (--dtype f16 or --dtype f32)",
            path.display()
        ));
    }
    Ok(())
}

/// The bytes of `raw` as a file for `path`: a `.safetensors` holding one tensor
/// `name` in its dtype when the path ends in `.safetensors`, otherwise `.npy`
/// (float32 or float16; bf16 is refused, see [`check_output_dtype`]).
pub fn output_bytes(path: &Path, name: &str, raw: &RawArray) -> Result<Vec<u8>> {
    if is_safetensors(path) {
        use safetensors::tensor::TensorView;
        use safetensors::Dtype;
        let dtype = match raw.dtype {
            WDType::F32 => Dtype::F32,
            WDType::F16 => Dtype::F16,
            WDType::BF16 => Dtype::BF16,
        };
        let view = TensorView::new(dtype, raw.shape.clone(), &raw.bytes)
            .map_err(|e| anyhow::anyhow!("{}: cannot build tensor {name}: {e}", path.display()))?;
        return safetensors::serialize([(name.to_string(), view)], None)
            .map_err(|e| anyhow::anyhow!("{}: cannot serialize: {e}", path.display()));
    }
    match raw.dtype {
        WDType::F32 => npy_f32(&raw.shape, &WDType::F32.decode(&raw.bytes)),
        WDType::F16 => npy_of(
            &raw.shape,
            raw.bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]])),
        ),
        WDType::BF16 => Err(bad_input!(
            "{}: .npy cannot hold bf16 (NumPy has no bfloat16 dtype); name a .safetensors file",
            path.display()
        )),
    }
}

/// Writes `raw` to `path` ([`output_bytes`]), atomically.
pub fn write_output(path: &Path, name: &str, raw: &RawArray) -> Result<()> {
    write_atomic(path, &output_bytes(path, name, raw)?)
}

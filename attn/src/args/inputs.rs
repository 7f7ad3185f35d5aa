//! Where Q, K and V come from (`.npy` or `.safetensors`), their layout, and the
//! conversions to and from logical BHND order.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use wgpu_attention::{AttnShape, DType, Gpu, Layout, Tensor};

use crate::error::bad_input;
use crate::io;

/// Memory order of Q, K, V (and O) in the files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// [B, H, N, D] (PyTorch SDPA).
    #[default]
    Bhnd,
    /// [B, N, H, D] (FlashAttention, projection outputs).
    Bnhd,
}

impl LayoutArg {
    pub fn layout(self) -> Layout {
        match self {
            LayoutArg::Bhnd => Layout::Bhnd,
            LayoutArg::Bnhd => Layout::Bnhd,
        }
    }

    /// The file shape of logical `[b, h, n, d]`.
    pub fn file_shape(self, [b, h, n, d]: [usize; 4]) -> [usize; 4] {
        match self {
            LayoutArg::Bhnd => [b, h, n, d],
            LayoutArg::Bnhd => [b, n, h, d],
        }
    }

    fn letters(self) -> &'static str {
        match self {
            LayoutArg::Bhnd => "bhnd",
            LayoutArg::Bnhd => "bnhd",
        }
    }
}

/// Where Q, K and V come from.
#[derive(Args, Clone, Debug, Default)]
pub struct InputArgs {
    /// Queries .npy [B, Hq, Nq, D] (bnhd: [B, Nq, Hq, D]); float32 or float16 (read as it is), C order.
    #[arg(long, value_name = "FILE", conflicts_with = "safetensors")]
    pub q: Option<PathBuf>,
    /// Keys .npy [B, Hkv, Nk, D] (bnhd: [B, Nk, Hkv, D]).
    #[arg(long, value_name = "FILE", conflicts_with = "safetensors")]
    pub k: Option<PathBuf>,
    /// Values .npy, shaped like the keys.
    #[arg(long, value_name = "FILE", conflicts_with = "safetensors")]
    pub v: Option<PathBuf>,
    /// Q, K and V from one .safetensors file (F32, F16 or BF16), named by --q-name/--k-name/--v-name.
    #[arg(long, value_name = "FILE")]
    pub safetensors: Option<PathBuf>,
    /// Name of Q in --safetensors.
    #[arg(long, value_name = "NAME", default_value = "q")]
    pub q_name: String,
    /// Name of K in --safetensors.
    #[arg(long, value_name = "NAME", default_value = "k")]
    pub k_name: String,
    /// Name of V in --safetensors.
    #[arg(long, value_name = "NAME", default_value = "v")]
    pub v_name: String,
    /// Memory order of Q, K, V in the files; O is written in the same order.
    #[arg(long, value_enum, default_value_t = LayoutArg::Bhnd)]
    pub layout: LayoutArg,
}

/// Q, K, V as read, in the file's order and dtype, with the logical shape.
pub struct Inputs {
    pub shape: AttnShape,
    pub layout: LayoutArg,
    pub q: io::RawArray,
    pub k: io::RawArray,
    pub v: io::RawArray,
}

impl Inputs {
    pub fn q_dims(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.b, s.hq, s.nq, s.d]
    }

    pub fn kv_dims(&self) -> [usize; 4] {
        let s = &self.shape;
        [s.b, s.hkv, s.nk, s.d]
    }

    /// The dtypes of Q, K and V in the files.
    pub fn dtypes(&self) -> [DType; 3] {
        [self.q.dtype, self.k.dtype, self.v.dtype]
    }

    /// Uploads the file-order bytes as logical `[B, H, N, D]` tensors with the
    /// layout's strides: in the files' dtypes as they are, or each converted to
    /// `dtype` (rounded to nearest, ties to even) when given.
    pub fn upload(&self, gpu: &Gpu, dtype: Option<DType>) -> Result<[Tensor; 3]> {
        let layout = self.layout.layout();
        let up = |a: &io::RawArray, dims: [usize; 4]| -> Result<Tensor> {
            let t = match dtype {
                Some(d) if d != a.dtype => {
                    Tensor::from_bytes(gpu, &d.encode(&a.dtype.decode(&a.bytes)), &dims, d)?
                }
                _ => Tensor::from_bytes(gpu, &a.bytes, &dims, a.dtype)?,
            };
            Ok(t.view(&dims, &layout.strides(dims), 0)?)
        };
        Ok([
            up(&self.q, self.q_dims())?,
            up(&self.k, self.kv_dims())?,
            up(&self.v, self.kv_dims())?,
        ])
    }
}

impl InputArgs {
    /// True when no input was named.
    pub fn is_empty(&self) -> bool {
        self.q.is_none() && self.k.is_none() && self.v.is_none() && self.safetensors.is_none()
    }

    pub fn load(&self) -> Result<Inputs> {
        let l = self.layout;
        let (q, k, v, names) = if let Some(st) = &self.safetensors {
            let file = io::SafeFile::open(st, "--safetensors")?;
            let q = file.read_raw(&self.q_name, "--q-name")?;
            let k = file.read_raw(&self.k_name, "--k-name")?;
            let v = file.read_raw(&self.v_name, "--v-name")?;
            let src = |n: &str| format!("{}:{n}", st.display());
            (
                q,
                k,
                v,
                [
                    format!("--q-name {}", src(&self.q_name)),
                    format!("--k-name {}", src(&self.k_name)),
                    format!("--v-name {}", src(&self.v_name)),
                ],
            )
        } else {
            let need = |p: &Option<PathBuf>, flag: &str| -> Result<PathBuf> {
                p.clone().ok_or_else(|| {
                    bad_input!("{flag} is required (a .npy file), or give --safetensors FILE")
                })
            };
            let (qp, kp, vp) = (
                need(&self.q, "--q")?,
                need(&self.k, "--k")?,
                need(&self.v, "--v")?,
            );
            (
                io::read_float(&qp, "--q")?,
                io::read_float(&kp, "--k")?,
                io::read_float(&vp, "--v")?,
                [
                    format!("--q {}", qp.display()),
                    format!("--k {}", kp.display()),
                    format!("--v {}", vp.display()),
                ],
            )
        };
        let four = |shape: &[usize], what: &str, src: &str| -> Result<[usize; 4]> {
            let s: [usize; 4] = shape.try_into().map_err(|_| {
                bad_input!(
                    "{src}: shape {shape:?}; expected a 4-D array {what} (layout {})",
                    l.letters()
                )
            })?;
            if s.contains(&0) {
                return Err(bad_input!("{src}: shape {shape:?} has a zero dimension"));
            }
            Ok(s)
        };
        let (q_what, kv_what) = match l {
            LayoutArg::Bhnd => ("[B, Hq, Nq, D]", "[B, Hkv, Nk, D]"),
            LayoutArg::Bnhd => ("[B, Nq, Hq, D]", "[B, Nk, Hkv, D]"),
        };
        let qs = four(&q.shape, q_what, &names[0])?;
        let ks = four(&k.shape, kv_what, &names[1])?;
        let vs = four(&v.shape, kv_what, &names[2])?;
        // Logical [B, H, N, D] of each.
        let logical = |s: [usize; 4]| match l {
            LayoutArg::Bhnd => s,
            LayoutArg::Bnhd => [s[0], s[2], s[1], s[3]],
        };
        let [b, hq, nq, d] = logical(qs);
        let [bk, hkv, nk, dk] = logical(ks);
        if bk != b || dk != d {
            return Err(bad_input!(
                "{}: shape {:?}; expected {} with B = {b} and D = {d} as in Q",
                names[1],
                k.shape,
                l.file_shape([b, hkv, nk, d])
                    .map(|n| n.to_string())
                    .join(", ")
            ));
        }
        if vs != ks {
            return Err(bad_input!(
                "{}: shape {:?}; expected the shape of K, {:?}",
                names[2],
                v.shape,
                k.shape
            ));
        }
        if hq % hkv != 0 {
            return Err(bad_input!(
                "{}: {hkv} key/value heads; Q's {hq} heads must be a multiple of them (grouped-query attention)",
                names[1]
            ));
        }
        Ok(Inputs {
            shape: AttnShape {
                b,
                hq,
                hkv,
                nq,
                nk,
                d,
            },
            layout: l,
            q,
            k,
            v,
        })
    }
}

//! Options shared by several commands: device choice, Q/K/V inputs, masks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use wgpu_attention::{
    parse_backend, Alignment, AttnShape, Gpu, GpuOptions, HostMask, Layout, MaskTensor, Masking,
    Window,
};

use crate::error::bad_input;
use crate::io::{self, MaskData};

/// Which adapter to open.
#[derive(Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// Backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else any).
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Adapter whose name contains this (case-insensitive; default: WGPU_ADAPTER_NAME, else the high-performance one).
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
}

impl DeviceArgs {
    pub fn options(&self) -> Result<GpuOptions> {
        let backends = match &self.backend {
            Some(name) => Some(parse_backend(name).map_err(|_| {
                bad_input!("--backend {name}: unknown backend; expected vulkan, metal, dx12 or gl")
            })?),
            None => None,
        };
        Ok(GpuOptions {
            backends,
            adapter_name: self.adapter.clone(),
            ..Default::default()
        })
    }

    /// Opens every adapter matching `--backend`/`--adapter`; also returns why
    /// others failed to open. None at all is a bad-input error saying what to install.
    pub fn open_all(&self) -> Result<(Vec<Gpu>, Vec<String>)> {
        let opts = self.options()?;
        let mut gpus = Vec::new();
        let mut failed = Vec::new();
        for g in Gpu::all_blocking(&opts) {
            match g {
                Ok(g) => {
                    let keep = self
                        .adapter
                        .as_ref()
                        .is_none_or(|n| g.info().name.to_lowercase().contains(&n.to_lowercase()));
                    if keep {
                        gpus.push(g);
                    }
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        if gpus.is_empty() {
            let what = match (&self.backend, &self.adapter) {
                (Some(b), _) => format!("--backend {b}: "),
                (None, Some(n)) => format!("--adapter {n}: "),
                _ => String::new(),
            };
            return Err(bad_input!(
                "{what}no GPU adapter found{}. Without a GPU install Mesa's software drivers: apt-get install mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri",
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed to open: {})", failed.len(), failed.join("; "))
                }
            ));
        }
        Ok((gpus, failed))
    }

    /// Opens the chosen adapter.
    pub fn open(&self) -> Result<Gpu> {
        let opts = self.options()?;
        Gpu::new_blocking(&opts).map_err(|e| match (&e, &self.backend, &self.adapter) {
            (wgpu_attention::Error::NoAdapter(_), Some(b), _) => {
                anyhow::Error::new(e).context(format!("--backend {b}"))
            }
            (wgpu_attention::Error::NoAdapter(_), None, Some(a)) => {
                anyhow::Error::new(e).context(format!("--adapter {a}"))
            }
            _ => anyhow::Error::new(e),
        })
    }
}

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
    /// Queries .npy [B, Hq, Nq, D] (bnhd: [B, Nq, Hq, D]); float32 or float16, C order.
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

/// Q, K, V as read, in the file's order, with the logical shape.
pub struct Inputs {
    pub shape: AttnShape,
    pub layout: LayoutArg,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
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

    /// Uploads file-order data as a logical `[B, H, N, D]` tensor with the layout's strides.
    pub fn upload(&self, gpu: &Gpu) -> Result<[wgpu_attention::Tensor; 3]> {
        let layout = self.layout.layout();
        let up = |data: &[f32], dims: [usize; 4]| {
            wgpu_attention::Tensor::from_strided(gpu, data, &dims, &layout.strides(dims), 0)
        };
        Ok([
            up(&self.q, self.q_dims())?,
            up(&self.k, self.kv_dims())?,
            up(&self.v, self.kv_dims())?,
        ])
    }

    /// Q, K, V in logical BHND order (for the reference).
    pub fn bhnd(&self) -> [Vec<f32>; 3] {
        [
            to_bhnd(&self.q, self.q_dims(), self.layout),
            to_bhnd(&self.k, self.kv_dims(), self.layout),
            to_bhnd(&self.v, self.kv_dims(), self.layout),
        ]
    }
}

/// File-order data of logical `dims` → logical BHND order.
pub fn to_bhnd(data: &[f32], [b, h, n, d]: [usize; 4], layout: LayoutArg) -> Vec<f32> {
    match layout {
        LayoutArg::Bhnd => data.to_vec(),
        LayoutArg::Bnhd => {
            let mut out = vec![0.0; data.len()];
            for bi in 0..b {
                for ni in 0..n {
                    for hi in 0..h {
                        let src = ((bi * n + ni) * h + hi) * d;
                        let dst = ((bi * h + hi) * n + ni) * d;
                        out[dst..dst + d].copy_from_slice(&data[src..src + d]);
                    }
                }
            }
            out
        }
    }
}

/// Logical BHND data → the file order of `layout`.
pub fn from_bhnd(data: &[f32], dims: [usize; 4], layout: LayoutArg) -> Vec<f32> {
    layout.layout().from_bhnd(data, dims)
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
            let q = file.read_f32(&self.q_name, "--q-name")?;
            let k = file.read_f32(&self.k_name, "--k-name")?;
            let v = file.read_f32(&self.v_name, "--v-name")?;
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
                io::read_f32(&qp, "--q")?,
                io::read_f32(&kp, "--k")?,
                io::read_f32(&vp, "--v")?,
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
            q: q.data,
            k: k.data,
            v: v.data,
        })
    }
}

/// Alignment of the causal diagonal (and the window) when Nq != Nk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AlignArg {
    /// Query i sees keys j <= i (PyTorch is_causal).
    TopLeft,
    /// Query i sees keys j <= i + Nk - Nq (FlashAttention; KV-cache decoding).
    BottomRight,
}

impl AlignArg {
    fn alignment(self) -> Alignment {
        match self {
            AlignArg::TopLeft => Alignment::TopLeft,
            AlignArg::BottomRight => Alignment::BottomRight,
        }
    }
}

/// Masks and score options shared by `run`, `mha` and `viz`.
#[derive(Args, Clone, Debug, Default)]
pub struct MaskArgs {
    /// Causal mask with this alignment of the diagonal.
    #[arg(long, value_enum, value_name = "ALIGN")]
    pub causal: Option<AlignArg>,
    /// Sliding window: query i (diagonal i') sees keys i'-L ..= i'+R.
    #[arg(long, value_name = "L,R", value_parser = parse_window)]
    pub window: Option<Window>,
    /// Alignment of the window without --causal [default: bottom-right].
    #[arg(long, value_enum, value_name = "ALIGN")]
    pub align: Option<AlignArg>,
    /// Dense mask .npy broadcastable to [B|1, H|1, Nq, Nk]: bool (true = attend) or float (added to the scores; -inf excludes).
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// Valid keys per batch (key padding): "5,7,0", or a file (.npy of integers, or text).
    #[arg(long, value_name = "LIST|FILE")]
    pub kv_lengths: Option<String>,
    /// ALiBi biases with the paper's slopes for the query heads.
    #[arg(long)]
    pub alibi: bool,
    /// Softmax scale [default: 1/sqrt(D)].
    #[arg(long, value_name = "S")]
    pub scale: Option<f32>,
}

/// Uploads the `--mask` tensor read by [`MaskArgs::host_mask`], if any.
pub fn upload_mask(gpu: &Gpu, host: Option<&HostMask>) -> Result<Option<MaskTensor>> {
    host.map(|m| MaskTensor::upload(gpu, m))
        .transpose()
        .context("--mask")
}

/// `--softcap C` must be a positive finite number (checked before any device work).
pub fn check_softcap(c: Option<f32>) -> Result<()> {
    match c {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(bad_input!(
            "--softcap {c}: expected a positive finite number"
        )),
        _ => Ok(()),
    }
}

fn parse_window(s: &str) -> std::result::Result<Window, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    match parts[..] {
        [l, r] => match (l.parse::<u32>(), r.parse::<u32>()) {
            (Ok(left), Ok(right)) => Ok(Window { left, right }),
            _ => Err(format!(
                "expected L,R (keys visible left and right of the diagonal, non-negative integers), got {s:?}"
            )),
        },
        _ => Err(format!(
            "expected L,R (keys visible left and right of the diagonal), got {s:?}"
        )),
    }
}

impl MaskArgs {
    pub fn alignment(&self) -> Result<Alignment> {
        match (self.causal, self.align) {
            (Some(c), Some(a)) if c != a => Err(bad_input!(
                "--align {:?} contradicts --causal {:?}: give one alignment",
                a.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                c.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            )),
            (Some(c), _) => Ok(c.alignment()),
            (None, Some(a)) => Ok(a.alignment()),
            (None, None) => Ok(Alignment::BottomRight),
        }
    }

    /// The rule-based masks for `b` batches and `nk` keys.
    pub fn masking(&self, b: usize, nk: usize) -> Result<Masking> {
        let key_lengths = match &self.kv_lengths {
            Some(spec) => {
                let lens = parse_kv_lengths(spec)?;
                if lens.len() != b {
                    return Err(bad_input!(
                        "--kv-lengths {spec}: {} values; expected one per batch (B = {b})",
                        lens.len()
                    ));
                }
                if let Some(bad) = lens.iter().find(|&&l| l as usize > nk) {
                    return Err(bad_input!(
                        "--kv-lengths {spec}: {bad} is more than the {nk} keys; expected values 0..={nk}"
                    ));
                }
                Some(lens)
            }
            None => None,
        };
        if let Some(s) = self.scale {
            if !s.is_finite() {
                return Err(bad_input!("--scale {s}: expected a finite number"));
            }
        }
        Ok(Masking {
            causal: self.causal.is_some(),
            window: self.window,
            alignment: self.alignment()?,
            key_lengths,
        })
    }

    /// The dense mask, checked to broadcast to `[b, h, nq, nk]`.
    pub fn host_mask(&self, [b, h, nq, nk]: [usize; 4]) -> Result<Option<HostMask>> {
        let Some(path) = &self.mask else {
            return Ok(None);
        };
        let m = io::read_mask(path, "--mask")?;
        let full = [b, h, nq, nk];
        let expected = format!(
            "expected a shape broadcastable to [B, H, Nq, Nk] = {full:?}, each dim 1 or full ([B|1, H|1, Nq|1, Nk|1])"
        );
        if m.shape.len() > 4 || m.shape.is_empty() {
            return Err(bad_input!(
                "--mask {}: shape {:?}; {expected}",
                path.display(),
                m.shape
            ));
        }
        // NumPy broadcasting: missing leading dims are 1.
        let mut dims = [1usize; 4];
        dims[4 - m.shape.len()..].copy_from_slice(&m.shape);
        let fits = dims.iter().zip(full).all(|(&m, f)| m == 1 || m == f);
        if !fits {
            return Err(bad_input!(
                "--mask {}: shape {:?}; {expected}",
                path.display(),
                m.shape
            ));
        }
        let host = match m.data {
            MaskData::Bool(v) => HostMask::bool(v, dims),
            MaskData::Float(v) => HostMask::additive(v, dims),
        }
        .map_err(|e| bad_input!("--mask {}: {e}", path.display()))?;
        Ok(Some(host))
    }
}

/// "5,7,0", or a file: `.npy` integers or text separated by commas/whitespace.
pub fn parse_kv_lengths(spec: &str) -> Result<Vec<u32>> {
    let list = |s: &str| -> Option<Vec<u64>> {
        let items: Vec<&str> = s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .collect();
        if items.is_empty() {
            return None;
        }
        items.iter().map(|t| t.parse::<u64>().ok()).collect()
    };
    let values = if let Some(v) = list(spec) {
        v
    } else {
        let path = Path::new(spec);
        if !path.is_file() {
            return Err(bad_input!(
                "--kv-lengths {spec}: neither a comma-separated list of non-negative integers nor an existing file"
            ));
        }
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
        {
            io::read_ints(path, "--kv-lengths")?
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--kv-lengths {spec}: cannot read"))
                .map_err(|e| bad_input!("{e:#}"))?;
            list(&text).ok_or_else(|| {
                bad_input!(
                    "--kv-lengths {spec}: expected non-negative integers separated by commas or whitespace"
                )
            })?
        }
    };
    values
        .into_iter()
        .map(|v| u32::try_from(v).map_err(|_| bad_input!("--kv-lengths {spec}: {v} is too large")))
        .collect()
}

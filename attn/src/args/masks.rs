//! Masks and score options shared by `run`, `mha` and `viz`: causal alignment,
//! sliding windows, dense masks, key lengths, ALiBi, scale and soft-capping.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use wgpu_attention::{Alignment, Gpu, HostMask, MaskTensor, Masking, Window};

use crate::error::bad_input;
use crate::io::{self, MaskData};

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
    /// Attention sinks (gpt-oss): a float .npy of one logit per query head, [H]; each joins its head's softmax denominator and receives no value.
    #[arg(long, value_name = "FILE")]
    pub sinks: Option<PathBuf>,
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

    /// The `--sinks` logits, checked to be `[h]` (or `[1, h]`) and finite.
    pub fn sinks(&self, h: usize) -> Result<Option<Vec<f32>>> {
        let Some(path) = &self.sinks else {
            return Ok(None);
        };
        let a = io::read_f32(path, "--sinks")?;
        if a.shape.iter().product::<usize>() != h || a.shape.iter().rev().skip(1).any(|&d| d != 1) {
            return Err(bad_input!(
                "--sinks {}: shape {:?}; expected one logit per query head, [H] = [{h}]",
                path.display(),
                a.shape
            ));
        }
        if let Some(i) = a.data.iter().position(|x| !x.is_finite()) {
            return Err(bad_input!(
                "--sinks {}: element {i} is {}; expected finite logits",
                path.display(),
                a.data[i]
            ));
        }
        Ok(Some(a.data))
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

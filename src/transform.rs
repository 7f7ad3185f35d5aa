//! The score transform: everything between `q·k` and the softmax, described once
//! for the scores, softmax and fused kernels. No GPU.

use crate::error::{Error, Result};
use crate::mask::Masking;
use crate::mask_tensor::{MaskKind, MaskTensor};

/// A dense mask as the kernels read it: its kind, its element strides for
/// `[b, h, i, j]` (0 on broadcast dims), the element offset of the first
/// `(b, h)` a dispatch covers, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaskInfo {
    /// Bool or additive.
    pub kind: MaskKind,
    /// Element strides for `[b, h, i, j]` of the scores; 0 where the mask
    /// broadcasts (a size-1 dim).
    pub strides: [u32; 4],
    /// Element index of the mask's entry for the dispatch's first `(b, h)` (0
    /// unless the call runs in chunks of heads).
    pub offset: u32,
    /// Size of the mask's buffer in bytes (rows padded), counted in
    /// [`crate::Plan::peak_bytes`].
    pub bytes: u64,
    /// An additive mask stored as f16 ([`MaskTensor::upload_as`]).
    pub f16: bool,
}

impl MaskInfo {
    /// `mask` for scores of `dims = [b, h, nq, nk]`, checked to broadcast.
    pub(crate) fn of(mask: &MaskTensor, [b, h, nq, nk]: [usize; 4]) -> Result<Self> {
        Ok(MaskInfo {
            kind: mask.kind(),
            strides: mask.broadcast_strides(b, h, nq, nk)?,
            offset: 0,
            bytes: mask.buffer.size(),
            f16: mask.dtype() == crate::DType::F16,
        })
    }

    /// Whether an additive mask can be read as one vec4 per row and 4 keys:
    /// contiguous along keys, every row at a multiple of 4 elements.
    pub fn vec4_aligned(&self) -> bool {
        let [sb, sh, sq, sk] = self.strides;
        self.kind == MaskKind::Additive
            && sk == 1
            && [sb, sh, sq, self.offset]
                .iter()
                .all(|s| s.is_multiple_of(4))
    }

    /// The dense mask's kind as the kernels number it (mask.wgsl's MASK_*).
    pub fn mode(info: Option<&MaskInfo>) -> u32 {
        match info.map(|m| m.kind) {
            None => 0,
            Some(MaskKind::Additive) if info.is_some_and(|m| m.f16) => 3,
            Some(MaskKind::Additive) => 1,
            Some(MaskKind::Bool) => 2,
        }
    }
}

/// Everything between `q·k` and the softmax, in one description shared by the
/// scores and softmax kernels (each applies its part: scale, softcap, additive
/// mask and ALiBi before the softmax; rules and the bool mask in it) and by the
/// fused kernels (all of it per key):
///
/// `s = scale·q·k → softcap c·tanh(s/c) → + additive mask − slope·|i + diag_off − j|`,
/// then excluded by the rules (causal, window, key lengths), the bool mask, or
/// an additive entry at or below [`crate::mask::ADDITIVE_MASKED`]; the head's
/// attention sink, if any, joins each row's softmax denominator.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreTransform {
    /// Resolved softmax scale (`1/sqrt(D)` unless given).
    pub scale: f32,
    /// `c·tanh(s/c)` with `c > 0`.
    pub softcap: Option<f32>,
    /// One ALiBi slope per query head of the problem.
    pub alibi: Option<Vec<f32>>,
    /// Causal / window / key-length rules.
    pub masking: Masking,
    /// Query `i` has diagonal `i + diag_off` (the rules' alignment; shifted when
    /// the keys are a slice of a longer sequence, as a KV-cache page is).
    pub diag_off: i64,
    /// The dense mask, if any (its tensor travels with the call).
    pub mask: Option<MaskInfo>,
    /// A caller's score and mask mods ([`crate::mods`]), applied after ALiBi
    /// (`score_mod`) and with the rules (`mask_mod`).
    pub mods: Option<crate::mods::ModRef>,
    /// One attention-sink logit per query head (gpt-oss, StreamingLLM): a
    /// term `exp(sink_h)` in every row's softmax denominator that receives no
    /// value, so the weights sum to less than 1 and the LSE includes it.
    pub sinks: Option<Vec<f32>>,
}

impl ScoreTransform {
    /// Checks the options a caller gives: a finite scale, a softcap finite and
    /// above 0, one finite ALiBi slope per query head (`hq`).
    pub fn validate(&self, hq: usize) -> Result<()> {
        if !self.scale.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "scale must be finite, got {}",
                self.scale
            )));
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "softcap must be finite and > 0, got {c}"
                )));
            }
        }
        if let Some(slopes) = &self.alibi {
            if slopes.len() != hq {
                return Err(Error::InvalidArgument(format!(
                    "ALiBi has {} slopes for {hq} query heads: give one per query head",
                    slopes.len()
                )));
            }
            if slopes.iter().any(|s| !s.is_finite()) {
                return Err(Error::InvalidArgument("ALiBi slopes must be finite".into()));
            }
        }
        if let Some(sinks) = &self.sinks {
            if sinks.len() != hq {
                return Err(Error::InvalidArgument(format!(
                    "attention sinks: {} logits for {hq} query heads: give one per query head",
                    sinks.len()
                )));
            }
            if let Some(i) = sinks.iter().position(|s| s.is_nan() || s.abs() >= 1e30) {
                return Err(Error::InvalidArgument(format!(
                    "attention sink {i} is {}: sinks must be finite logits (|s| < 1e30)",
                    sinks[i]
                )));
            }
        }
        Ok(())
    }

    /// Whether any rule (causal, window, key lengths) applies.
    pub fn uses_rules(&self) -> bool {
        let m = &self.masking;
        m.causal || m.window.is_some() || m.key_lengths.is_some()
    }

    /// The additive part of the dense mask (applied by the scores kernel).
    pub fn additive(&self) -> Option<MaskInfo> {
        self.mask.filter(|m| m.kind == MaskKind::Additive)
    }

    /// The bool part of the dense mask (applied by the softmax).
    pub fn bool_mask(&self) -> Option<MaskInfo> {
        self.mask.filter(|m| m.kind == MaskKind::Bool)
    }

    /// The per-head table the fused kernels read (their `slopes` binding):
    /// the ALiBi slopes (zeros without ALiBi) for the `hq` heads, then the
    /// sinks when there are any; `None` when neither is used.
    pub(crate) fn head_table(&self, hq: usize) -> Option<Vec<f32>> {
        match (&self.alibi, &self.sinks) {
            (a, None) => a.clone(),
            (a, Some(s)) => {
                let mut t = a.clone().unwrap_or_else(|| vec![0.0; hq]);
                t.extend_from_slice(s);
                Some(t)
            }
        }
    }

    /// The fused kernels' `override`s: only what this transform uses is compiled
    /// into the per-key code.
    pub fn fused_overrides(&self) -> [(&'static str, f64); 4] {
        [
            ("USE_RULES", self.uses_rules() as u32 as f64),
            ("MASK_MODE", MaskInfo::mode(self.mask.as_ref()) as f64),
            ("USE_ALIBI", self.alibi.is_some() as u32 as f64),
            ("USE_SOFTCAP", self.softcap.is_some() as u32 as f64),
        ]
    }

    /// The transform of heads `h0..h0 + heads` of batch `b` alone (a chunk of
    /// the unfused path): that batch's key length, those heads' slopes, the mask
    /// placed at that (b, h0).
    pub(crate) fn for_chunk(&self, b: usize, h0: usize, heads: usize) -> Self {
        ScoreTransform {
            masking: Masking {
                key_lengths: self.masking.key_lengths.as_ref().map(|l| vec![l[b]]),
                ..self.masking.clone()
            },
            alibi: self.alibi.as_ref().map(|s| s[h0..h0 + heads].to_vec()),
            sinks: self.sinks.as_ref().map(|s| s[h0..h0 + heads].to_vec()),
            mask: self.mask.map(|m| MaskInfo {
                offset: m.offset + b as u32 * m.strides[0] + h0 as u32 * m.strides[1],
                ..m
            }),
            mods: self.mods.as_ref().map(|m| crate::mods::ModRef {
                b0: m.b0 + b as u32,
                h0: m.h0 + h0 as u32,
                ..m.clone()
            }),
            ..self.clone()
        }
    }

    /// The transform for keys `p0 .. p0 + n` of the sequence seen alone (a page
    /// of a KV cache): key lengths and the diagonal shifted to the page.
    pub(crate) fn for_page(&self, p0: usize, n: usize) -> Self {
        ScoreTransform {
            masking: Masking {
                key_lengths: self.masking.key_lengths.as_ref().map(|lens| {
                    lens.iter()
                        .map(|&l| (l as usize).saturating_sub(p0).min(n) as u32)
                        .collect()
                }),
                ..self.masking.clone()
            },
            diag_off: self.diag_off - p0 as i64,
            mods: self.mods.as_ref().map(|m| crate::mods::ModRef {
                kv0: m.kv0 + p0 as u32,
                ..m.clone()
            }),
            ..self.clone()
        }
    }
}

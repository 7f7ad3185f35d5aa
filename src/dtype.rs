//! Element types of tensors: f32, and the half-precision storage types models
//! keep their weights and KV caches in. Kernels read every dtype, convert to f32
//! before any arithmetic, accumulate in f32, and round once on store.
//!
//! How a half is read on a device is the storage mode ([`crate::shaders::Elem`]):
//! native `f16` where the device grants `SHADER_F16`, otherwise packed two per
//! `u32` (bf16 is always packed: WGSL has no bf16). Both read the same bytes, so a
//! tensor's dtype says nothing about the device.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// What one element of a tensor is.
///
/// ```
/// use wgpu_attention::DType;
/// let dt: DType = "bfloat16".parse()?;
/// assert_eq!((dt, dt.size(), dt.name()), (DType::BF16, 2, "bf16"));
/// // bf16 keeps 8 significant bits: 1 + 2⁻⁹ rounds to 1, 1 + 2⁻⁷ is exact.
/// assert_eq!(dt.round(1.0 + 2f32.powi(-9)), 1.0);
/// assert_eq!(dt.round(1.0 + 2f32.powi(-7)), 1.0 + 2f32.powi(-7));
/// assert_eq!(DType::F16.round(1e5), f32::INFINITY); // past f16's 65 504
/// // Bytes as a tensor of that dtype holds them, little-endian.
/// let bytes = DType::F16.encode(&[1.0, -2.0]);
/// assert_eq!(bytes, [0x00, 0x3c, 0x00, 0xc0]);
/// assert_eq!(DType::F16.decode(&bytes), [1.0, -2.0]);
/// assert!(DType::parse("f64").is_err());
/// # Ok::<(), wgpu_attention::Error>(())
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary32.
    #[default]
    F32,
    /// IEEE binary16: 11 significant bits, largest finite 65 504.
    F16,
    /// bfloat16: f32's exponent range with 8 significant bits.
    BF16,
}

impl DType {
    /// Every dtype, in the order the CLI lists them.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }

    /// Parses `f32`, `f16` or `bf16` (also `float32`, `float`, `float16`,
    /// `half`, `bfloat16`; any case, surrounding spaces ignored);
    /// [`Error::InvalidArgument`] otherwise.
    pub fn parse(s: &str) -> Result<DType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" => Ok(DType::F32),
            "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            other => Err(Error::InvalidArgument(format!(
                "unknown dtype `{other}`: use f32, f16 or bf16"
            ))),
        }
    }

    /// Relative rounding of one element stored in this dtype (half an ulp):
    /// 2⁻²⁴, 2⁻¹¹, 2⁻⁸.
    pub fn unit_roundoff(self) -> f64 {
        match self {
            DType::F32 => 2f64.powi(-24),
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
        }
    }

    /// `x` rounded to this dtype (to nearest, ties to even) and widened back.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => f16::from_f32(x).to_f32(),
            DType::BF16 => bf16::from_f32(x).to_f32(),
        }
    }

    /// `data` rounded to this dtype, as this dtype's little-endian bytes.
    pub fn encode(self, data: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => data
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
            DType::BF16 => data
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        }
    }

    /// Element `i` of `bytes` (this dtype's little-endian elements) widened to f32.
    ///
    /// # Panics
    /// If `bytes` holds fewer than `i + 1` elements.
    pub fn decode_at(self, bytes: &[u8], i: usize) -> f32 {
        let s = self.size();
        let b = &bytes[i * s..(i + 1) * s];
        match self {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F16 => f16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        }
    }

    /// Every element of `bytes` widened to f32 (a trailing partial element is
    /// ignored).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        (0..bytes.len() / self.size())
            .map(|i| self.decode_at(bytes, i))
            .collect()
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<DType> {
        DType::parse(s)
    }
}

/// A host element type a tensor can be uploaded from and downloaded to:
/// `f32`, [`half::f16`], [`half::bf16`].
pub trait Element: Copy + bytemuck::Pod + Send + Sync + 'static {
    /// The dtype a tensor uploaded from this type has.
    const DTYPE: DType;
    /// Rounded to nearest (ties to even) from f32.
    fn from_f32(x: f32) -> Self;
    /// Widened to f32 (exact).
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_each_dtype() {
        let xs = [0.0f32, -0.0, 1.0, -2.5, 65504.0, 1e-7, 2.71, -1e30];
        for dt in DType::ALL {
            let bytes = dt.encode(&xs);
            assert_eq!(bytes.len(), xs.len() * dt.size());
            let back = dt.decode(&bytes);
            for (x, y) in xs.iter().zip(&back) {
                assert_eq!(dt.round(*x).to_bits(), y.to_bits(), "{dt} {x}");
            }
        }
        assert_eq!(DType::parse("BF16").unwrap(), DType::BF16);
        assert!(DType::parse("f64")
            .unwrap_err()
            .to_string()
            .contains("f32, f16 or bf16"));
    }
}

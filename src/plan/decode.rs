//! Key splits of the decode path (flash-decoding) and of a KV cache's pages.

use crate::gpu::DeviceCaps;

use crate::kernels::flash_attention::FusedVariant;

use super::fused::Splits;

/// Default keys per split.
pub const DEFAULT_SPLIT: usize = 512;

/// Splits the default split length aims at, at most: more adds little parallelism
/// and lengthens the combine (its loops run ≈ D·splits iterations, which Mesa's
/// loop budget caps).
pub const TARGET_SPLITS: usize = 256;

/// At most this many queries count as "few": decode then takes many short
/// splits, and [`crate::AttentionPath::Auto`] takes the decode path against 1024
/// keys or more.
pub const FEW_QUERIES: usize = 16;

/// The preferred split length for `nq` queries against `nk` keys: few queries get
/// many short splits (parallelism), many queries one split per loop budget.
pub(crate) fn preferred_split(nq: usize, nk: usize) -> usize {
    if nq <= FEW_QUERIES {
        DEFAULT_SPLIT.max(nk.div_ceil(TARGET_SPLITS))
    } else {
        nk
    }
}

/// The splits of `nk` keys of dim `d`: `explicit` keys each when given
/// ([`crate::AttentionOptions::kv_split`]), else at most `preferred` and few enough
/// for the driver's loop budget (halved until `variant` fits).
pub(crate) fn splits(
    caps: &DeviceCaps,
    variant: FusedVariant,
    nk: usize,
    d: usize,
    preferred: usize,
    explicit: Option<usize>,
) -> Splits {
    let len = match explicit {
        Some(s) => s.max(1),
        None => {
            let mut len = preferred.clamp(1, nk.max(1));
            while len > 1 && !caps.fits_loop_budget(variant.loop_iterations(len, d)) {
                len /= 2;
            }
            len.max(1)
        }
    };
    Splits {
        splits: nk.div_ceil(len),
        len,
    }
}

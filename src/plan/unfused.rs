//! The unfused path's chunking: when its `[B, Hq, Nq, Nk]` scores exceed one
//! storage binding, it runs in chunks of (batch, heads) through reused scratch.

use super::problem::AttentionProblem;
use super::UnfusedLaunch;
use crate::error::Result;
use crate::gpu::{DeviceCaps, Tuning};
use crate::kernels::{softmax, TileConfig};
use crate::shape::AttnShape;

/// The unfused kernels for `p` under `tuning`, checked against the driver's
/// loop budget: tiles from the tuning, the softmax row width within the
/// granted limits, chunks when the scores exceed one binding (never with
/// weights, which must exist whole).
pub(crate) fn launch(
    p: &AttentionProblem,
    caps: &DeviceCaps,
    tuning: Tuning,
) -> Result<UnfusedLaunch> {
    let sh = &p.shape;
    let tile = TileConfig::new(tuning);
    let softmax_wg = softmax::workgroup(&caps.limits, tuning);
    caps.check_loop_budget("scores", tile.loop_iterations(sh.d))?;
    caps.check_loop_budget("softmax", softmax::loop_iterations(sh.nk, softmax_wg))?;
    caps.check_loop_budget("weighted_sum", tile.loop_iterations(sh.nk))?;
    Ok(UnfusedLaunch {
        tile,
        softmax_wg,
        chunk_heads: if p.want_weights {
            None
        } else {
            chunk_heads(caps, sh)
        },
    })
}

/// Query heads per chunk of the unfused path without weights, when its
/// `[B, Hq, Nq, Nk]` scores do not fit one storage binding (or buffer) but one
/// batch's share of some heads does: the largest divisor of Hq that fits and
/// keeps whole KV heads per chunk (a multiple or a divisor of the GQA group).
/// `None` when everything fits (one pass) or not even one head does (the
/// allocation then reports the size and the limit).
pub(crate) fn chunk_heads(caps: &DeviceCaps, sh: &AttnShape) -> Option<usize> {
    let limit = caps.max_binding_bytes();
    let bytes = |heads: usize| (heads * sh.nq * sh.nk) as u64 * 4;
    if bytes(sh.b * sh.hq) <= limit {
        return None;
    }
    let g = sh.group();
    (1..=sh.hq).rev().find(|&h| {
        sh.hq.is_multiple_of(h) && (h.is_multiple_of(g) || g.is_multiple_of(h)) && bytes(h) <= limit
    })
}

//! The unfused path's chunking: when its `[B, Hq, Nq, Nk]` scores exceed one
//! storage binding, it runs in chunks of (batch, heads) through reused scratch.

use crate::gpu::DeviceCaps;
use crate::shape::AttnShape;

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

// Mask constants and rule helpers; shared/mask_words.wgsl reads the dense mask.

// A score at or below this is excluded from the softmax (additive -inf is uploaded
// as -1e38). Finite on purpose: WGSL may assume inf/NaN never occur.
const MASKED: f32 = -1.0e30;
// Start value of running maxima and the value of excluded entries.
const NEG_BIG: f32 = -3.0e38;

const MASK_NONE: u32 = 0u;
const MASK_ADDITIVE: u32 = 1u;
const MASK_BOOL: u32 = 2u;
// Additive, stored as f16 (two per u32; -inf bits = excluded).
const MASK_ADDITIVE_F16: u32 = 3u;

// An f16 additive entry (`bits`: its 16 bits) widened to f32; -inf (0xfc00,
// what the host stores for every excluded entry) becomes the finite floor.
fn mask_half(bits: u32) -> f32 {
    return select(unpack2x16float(bits).x, -1.0e38, bits == 0xfc00u);
}

// Whether byte idx % 4 of `word` (bool mask element idx, four per u32) is set.
fn mask_byte_set(word: u32, idx: u32) -> bool {
    return ((word >> ((idx & 3u) * 8u)) & 0xffu) != 0u;
}

// Rule masks: causal and sliding window around the diagonal i + diag_off, and the
// key-padding length of the row's batch.
fn rule_visible(i: u32, j: u32, causal: u32, window: u32, left: u32, right: u32, diag_off: i32, key_len: u32) -> bool {
    let diag = i32(i) + diag_off;
    let jj = i32(j);
    if (causal != 0u && jj > diag) {
        return false;
    }
    if (window != 0u && (jj < diag - i32(left) || jj > diag + i32(right))) {
        return false;
    }
    return j < key_len;
}

// The keys row i may see under the same rules, as an inclusive range [lo, hi]
// (empty when lo > hi), for kernels that check many keys of one row: computed
// once per row, then two comparisons per key.
fn rule_range(i: u32, causal: u32, window: u32, left: u32, right: u32, diag_off: i32, key_len: u32) -> vec2<i32> {
    let diag = i32(i) + diag_off;
    var lo = 0;
    var hi = i32(key_len) - 1;
    if (causal != 0u) {
        hi = min(hi, diag);
    }
    if (window != 0u) {
        lo = max(lo, diag - i32(left));
        hi = min(hi, diag + i32(right));
    }
    return vec2(lo, hi);
}

// c·tanh(s/c) without inf: tanh(x) = 1 − 2/(e^{2x} + 1), |x| clamped to 15 where
// tanh is 1 in f32 anyway.
fn soft_cap(s: f32, c: f32) -> f32 {
    // s·(1/c): the reciprocal is loop-invariant, so one division per score remains.
    let x = clamp(s * (1.0 / c), -15.0, 15.0);
    return c * (1.0 - 2.0 / (exp(2.0 * x) + 1.0));
}

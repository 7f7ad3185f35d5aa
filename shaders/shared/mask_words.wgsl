// Dense-mask reads. The importing shader declares `mask_words: array<u32>` (one
// f32 per element for additive masks, two f16 per word for f16 additive masks,
// four bools per word for bool masks).

fn mask_additive_at(idx: u32) -> f32 {
    return bitcast<f32>(mask_words[idx]);
}

fn mask_additive_f16_at(idx: u32) -> f32 {
    return mask_half((mask_words[idx >> 1u] >> ((idx & 1u) * 16u)) & 0xffffu);
}

fn mask_bool_at(idx: u32) -> bool {
    return mask_byte_set(mask_words[idx >> 2u], idx);
}

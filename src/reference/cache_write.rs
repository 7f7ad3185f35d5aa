/// The twin of `shaders/cache_write.wgsl`: `pool` `[blocks, block_size, Hkv,
/// D]` (flat) with token `t` of `x` `[n, Hkv, D]` written at row `slots[t]`;
/// later tokens win on a repeated slot (the kernel leaves that unordered).
///
/// # Panics
/// If a slot lies outside the pool or `x` is shorter than `slots.len()` rows.
pub fn cache_write(pool: &[f64], x: &[f32], slots: &[u32], row_len: usize) -> Vec<f64> {
    let mut out = pool.to_vec();
    for (t, &row) in slots.iter().enumerate() {
        let (src, dst) = (t * row_len, row as usize * row_len);
        for c in 0..row_len {
            out[dst + c] = x[src + c] as f64;
        }
    }
    out
}

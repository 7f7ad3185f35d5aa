// Shared by the fused kernels (flash_attention.wgsl, flash_attention_cpu.wgsl):
// parameters, bindings, work decomposition, key range, and the per-key score
// transform, so both apply exactly the same semantics.
//
#import shared/half

// Per key: s = scale·q·k → softcap c·tanh(s/c) → + additive mask − ALiBi →
// excluded (NEG_BIG) by rules / bool mask / s <= MASKED.

// What the per-key score transform must do, fixed per pipeline so the plain case
// compiles to nothing (the host sets each to what the call uses).
override USE_RULES: bool = true;    // causal / window / key lengths
// The dense mask's kind (MASK_NONE / MASK_ADDITIVE / MASK_BOOL /
// MASK_ADDITIVE_F16), a constant and
// not a uniform: on CPU drivers both arms of a uniform branch run under an
// all-false mask, and the unused arm's load still costs a loop over the lanes.
override MASK_MODE: u32 = 1u;
override USE_ALIBI: bool = true;
override USE_SOFTCAP: bool = true;
// Keys through a block table (a paged KV pool, vLLM's layout): key j of
// sequence b is row table[b][j / block_size]·block_size + j % block_size.
override PAGED: bool = false;
// A pool split over several bindings: this launch reads blocks [seg_lo,
// seg_hi) (its binding's), keys in other blocks are excluded (their part's
// launch has them; the decode merge joins the parts).
override PAGED_PARTS: bool = false;

struct Params {
    b: u32, hq: u32, group: u32, nq: u32,
    nk: u32, d: u32, blocks_q: u32, scale: f32,
    q_off: u32, q_sb: u32, q_sh: u32, q_sn: u32,
    q_sd: u32, k_off: u32, k_sb: u32, k_sh: u32,
    k_sn: u32, k_sd: u32, v_off: u32, v_sb: u32,
    v_sh: u32, v_sn: u32, v_sd: u32, o_off: u32,
    o_sb: u32, o_sh: u32, o_sn: u32, o_sd: u32,
    causal: u32, window: u32, left: u32, right: u32,
    diag_off: i32, has_lengths: u32, mask_kind: u32, write_lse: u32,
    m_sb: u32, m_sh: u32, m_sq: u32, m_sk: u32,
    alibi: u32, neg_inf_bits: u32, softcap: f32, splits: u32,
    split_len: u32, o_ss: u32, lse_ss: u32, lane_splits: u32,
    head_rows: u32, lse_off: u32, kv_base: u32, mod_nkb: u32,
    sink: u32, packed_out: u32, lse_sb: u32, lse_sh: u32,
    seqs: u32, cuq_off: u32, cuk_off: u32, seq_diag: u32,
    bt_off: u32, block_size: u32, max_blocks: u32, num_blocks: u32,
    seg_lo: u32, seg_hi: u32, spread: u32, spread_cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Q, K, V and O in their tensors' dtypes (src/shaders/mod.rs, Elem): q_at(i),
// k_at(i), v_at(i) widen to f32, o_put(i, x) rounds once.
#storage 1 q read
#storage 2 k read
#storage 3 v read
// The dense mask (one f32 per element for additive masks, four bools per u32 for
// bool masks), as vec4s so that four aligned keys of an additive mask come in one
// load (flash_bias4); MaskTensor pads its buffer to 16 bytes.
@group(0) @binding(4) var<storage, read> mask4: array<vec4<u32>>;
// The sequences' u32 index: key lengths [B] from 0 (has_lengths), and where
// given the prefix sums of the query rows cu_q [B + 1] (at cuq_off) and of the
// key rows cu_k [B + 1] (cuk_off) of packed variable-length batches, and the
// block table [B, max_blocks] of a paged KV pool (bt_off).
@group(0) @binding(5) var<storage, read> key_lengths: array<u32>;
// Per query head: the ALiBi slopes [0, hq), then the attention sinks [hq, 2·hq).
@group(0) @binding(6) var<storage, read> slopes: array<f32>;
#storage 7 o read_write
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;

struct FlashWork {
    valid: bool,
    b: u32, h: u32, hk: u32, bh: u32,
    split: u32,
    block0: u32, // first row of the workgroup's block
    row0: u32,   // first of this invocation's rows
    j_lo: i32,   // keys any row of the block may see: [j_lo, j_hi)
    j_hi: i32,
    key_len: u32,
    block_last: u32, // last query row of the block (head_rows > 1: nq - 1)
    nq: u32,   // query rows of this sequence (p.nq unless packed)
    q0: u32,   // first row of this sequence in packed Q (0 unless packed)
    o0: u32,   // ... in packed O and LSE (q0 for final packed outputs, else 0)
    k0: u32,   // first row of this sequence in packed K/V (0 unless packed)
    diag: i32, // query i's diagonal is key i + diag (per sequence when seq_diag)
}

// Workgroup = (batch·head, key split, query block), `rows` rows per invocation.
// With splits > 1 each split covers keys [split·split_len, (split+1)·split_len)
// and writes a partial O and LSE at split·o_ss / split·lse_ss, merged by
// decode.wgsl (flash-decoding). lane_splits = 1 (few queries): lanes take
// different key splits and every lane owns all `rows` rows of the block, so a
// block is `rows` rows instead of lanes·rows.
//
// head_rows > 1 (GQA, when the group's rows fit one block): a workgroup serves
// head_rows consecutive query heads (one KV head's group), its rows running over
// (head, query) pairs (see flash_row), so each K/V element loaded serves every
// query head of the group. w.h is then the group's first head, and the host
// makes it a single block (block0 = 0), so the key range below, computed from
// query positions, is conservative for every head's rows.
// CPU drivers hand each thread one contiguous range of a dispatch's
// workgroups (Mesa's gallivm: the grid divided by its threads, in order), so
// work that is heavy in one region of the grid (the long sequences of a batch,
// the sequences whose blocks lie in one pool part) runs on one thread while the
// others idle: measured on lavapipe with 2 threads, a batched decode step over
// two pool parts took 297 ms where its 32 sequences one call each took 174.
// With p.spread = N workgroups and p.spread_cols = T threads (the host sets
// them for gallivm), thread t's range (positions t·q .. t·q + q - 1, q = N / T)
// runs, round r by round, work item r·T + t, or r·T + T - 1 - t on odd rounds
// (a snake; the last N % T items keep their place): every thread samples the
// whole grid (171 ms above). The snake, not plain t + r·T, because a
// sequence's first splits hold its keys and its last ones are empty: with T =
// 2, thread 0 took the odd count's extra split of every sequence (+6% on a
// mixed-length step, none with the snake). A bijection: each item runs once.
fn spread_workgroup(wid: u32) -> u32 {
    let cols = max(p.spread_cols, 1u);
    let q = p.spread / cols;
    if (q == 0u || wid >= q * cols) {
        return wid;
    }
    let t = wid / q;
    let r = wid % q;
    return r * cols + select(cols - 1u - t, t, (r & 1u) == 0u);
}

fn flash_work(wid_in: u32, lid: u32, lanes: u32, rows: u32) -> FlashWork {
    let wid = spread_workgroup(wid_in);
    var w: FlashWork;
    var span = lanes * rows;
    if (p.lane_splits != 0u) {
        let groups = (p.splits + lanes - 1u) / lanes;
        w.split = (wid % groups) * lanes + lid;
        let t = wid / groups;
        w.bh = t / p.blocks_q;
        w.block0 = (t % p.blocks_q) * rows;
        w.row0 = w.block0;
        span = rows;
    } else {
        let t = wid / p.blocks_q;
        w.split = t % p.splits;
        w.bh = t / p.splits;
        w.block0 = (wid % p.blocks_q) * lanes * rows;
        w.row0 = w.block0 + lid * rows;
    }
    // Workgroup heads per batch: hq, or hq / head_rows groups of heads.
    let heads = p.hq / p.head_rows;
    w.valid = w.bh < p.b * heads && w.split < p.splits;
    w.b = w.bh / heads;
    w.h = (w.bh % heads) * p.head_rows;
    w.hk = w.h / p.group;
    w.key_len = p.nk;
    w.nq = p.nq;
    w.q0 = 0u;
    w.k0 = 0u;
    if (w.valid) {
        if (p.has_lengths != 0u) {
            w.key_len = min(key_lengths[w.b], p.nk);
        }
        // Packed sequences: rows from the prefix sums (a malformed pair gives
        // an empty sequence; indices stay clamped by the bindings).
        if ((p.seqs & 1u) != 0u) {
            let lo = key_lengths[p.cuq_off + w.b];
            let hi = key_lengths[p.cuq_off + w.b + 1u];
            w.q0 = lo;
            w.nq = min(hi - min(lo, hi), p.nq);
        }
        if ((p.seqs & 2u) != 0u) {
            let lo = key_lengths[p.cuk_off + w.b];
            let hi = key_lengths[p.cuk_off + w.b + 1u];
            w.k0 = lo;
            w.key_len = min(hi - min(lo, hi), p.nk);
        }
    }
    w.o0 = select(0u, w.q0, p.packed_out != 0u);
    w.diag = p.diag_off;
    if (p.seq_diag != 0u) {
        // Bottom-right per sequence: its queries are its newest positions.
        w.diag = i32(w.key_len) - i32(w.nq);
    }
    // The block's rows [block0, rows_end); none (a surplus block, an empty
    // sequence) leaves an empty key range.
    let rows_end = min(w.block0 + span, w.nq);
    let block_last = max(rows_end, w.block0 + 1u) - 1u;
    w.block_last = block_last;
    w.j_lo = i32(w.split * p.split_len);
    w.j_hi = min(i32(w.key_len), i32((w.split + 1u) * p.split_len));
    if (rows_end <= w.block0) {
        w.j_hi = w.j_lo;
    }
    if (p.causal != 0u) {
        w.j_hi = min(w.j_hi, i32(block_last) + w.diag + 1);
    }
    if (p.window != 0u) {
        w.j_hi = min(w.j_hi, i32(block_last) + w.diag + i32(p.right) + 1);
        w.j_lo = max(w.j_lo, i32(w.block0) + w.diag - i32(p.left));
    }
    return w;
}

// One query row of the workgroup: its head h and position n (n = nq marks a
// surplus row), with what its scores need that does not depend on the key,
// computed once before the key loop: the keys it may see [lo, hi] (rules, Nq,
// the block's key range), its start in the dense mask and its ALiBi slope (a
// load inside the key loop is a gather on CPU drivers).
struct FlashRow {
    h: u32,
    n: u32,
    lo: i32,
    hi: i32,
    mbase: u32,
    slope: f32,
}

// Row `vr` of the workgroup's rows (w.row0 + r): query position vr of head w.h,
// or with head_rows > 1 query vr % nq of head w.h + vr / nq.
fn flash_row(w: FlashWork, vr: u32) -> FlashRow {
    var f: FlashRow;
    f.h = w.h;
    f.n = vr;
    if (p.head_rows > 1u) {
        let i = vr / p.nq;
        f.h = w.h + min(i, p.head_rows - 1u);
        f.n = select(vr % p.nq, p.nq, i >= p.head_rows);
    }
    // Keys from j_hi on are invisible to the whole block (or belong to the next
    // split), including the tail of a block of keys that runs past it.
    f.lo = 0;
    f.hi = select(-1, w.j_hi - 1, f.n < w.nq);
    if (USE_RULES) {
        let r = rule_range(f.n, p.causal, p.window, p.left, p.right, w.diag, w.key_len);
        f.lo = r.x;
        f.hi = min(f.hi, r.y);
    }
    f.mbase = 0u;
    if (MASK_MODE != MASK_NONE) {
        f.mbase = w.b * p.m_sb + f.h * p.m_sh + min(f.n, p.nq - 1u) * p.m_sq;
    }
    f.slope = 0.0;
    if (USE_ALIBI && p.alibi != 0u) {
        f.slope = slopes[f.h];
    }
    return f;
}

// Start of row f's Q vector.
fn flash_q_row(w: FlashWork, f: FlashRow) -> u32 {
    return p.q_off + w.b * p.q_sb + f.h * p.q_sh + (w.q0 + min(f.n, max(w.nq, 1u) - 1u)) * p.q_sn;
}

// The row of key j of the work's sequence in K and V (times k_sn / v_sn):
// j itself, after the sequence's first row when packed, or through the block
// table when paged (the block clamped to the pool).
// A key past the sequence's length (the tail of a block of keys, which no row
// sees) reads the sequence's last key: never a row it does not own (an
// unwritten pool row, another sequence's) whose value times a zero weight
// could still be NaN.
fn flash_key(w: FlashWork, j: u32) -> u32 {
    let jj = min(j, max(w.key_len, 1u) - 1u);
    if (PAGED) {
        let blk = flash_block(w, jj);
        let local = min(blk - min(blk, p.seg_lo), p.num_blocks - 1u);
        return local * p.block_size + jj % p.block_size;
    }
    return w.k0 + jj;
}

// The pool block holding key j of the work's sequence.
fn flash_block(w: FlashWork, j: u32) -> u32 {
    return key_lengths[p.bt_off + w.b * p.max_blocks + min(j / p.block_size, p.max_blocks - 1u)];
}

// Whether pool block `blk` is in this launch's part (every block with one part).
fn flash_block_in_part(blk: u32) -> bool {
    return blk >= p.seg_lo && blk < p.seg_hi;
}

// Whether keys [j_first, j_last] of the work's sequence touch a block of this
// launch's part of a pool split over bindings (always with one part). Key loops
// skip a tile of keys that does not: flash_score would exclude each of its keys,
// so without the skip every part's launch walks the whole sequence (measured on
// lavapipe, 32 sequences over 2 parts: 2× the one-part time).
fn flash_in_part(w: FlashWork, j_first: u32, j_last: u32) -> bool {
    if (!PAGED_PARTS) {
        return true;
    }
    let last = min(j_last, max(w.key_len, 1u) - 1u);
    for (var blk = j_first / p.block_size; blk <= last / p.block_size; blk++) {
        if (flash_block_in_part(flash_block(w, blk * p.block_size))) {
            return true;
        }
    }
    return false;
}

// Keys to add to j0, besides the loop's own step of `step`, when the tile
// [j0, j0 + step - 1] is outside the launch's part: whole steps up to the end of
// the run of the sequence's pool blocks outside it, from the tile's last key's
// block on (so every key skipped lies in another part). Advancing the loop
// variable is what saves the work on CPU drivers, which run the body of a
// skipped iteration under an all-false mask (a `continue` alone saves nothing:
// measured on lavapipe, the launch of a part holding one block of 513 still took
// 49 ms of the 85 ms the other part took).
fn flash_part_skip(w: FlashWork, j0: u32, step: u32) -> u32 {
    let last = max(w.key_len, 1u) - 1u;
    var blk = (j0 + step - 1u) / p.block_size;
    loop {
        let next = blk + 1u;
        if (next * p.block_size > last) {
            break;
        }
        if (flash_block_in_part(flash_block(w, next * p.block_size))) {
            break;
        }
        blk = next;
    }
    let end = (blk + 1u) * p.block_size;
    return (max((end - j0) / step, 1u) - 1u) * step;
}

// The class of a tile of keys [j_first, j_last] for the tiled kernels, the
// same for every lane: TILE_EMPTY when no row sees any of its keys (outside
// the launch's pool part, or excluded by the caller's block mask), TILE_FULL
// when the block mask includes it whole, else TILE_PARTIAL.
const TILE_EMPTY: u32 = 0u;
const TILE_PARTIAL: u32 = 1u;
const TILE_FULL: u32 = 2u;
// Whether the caller's block mask is compiled in (then tiles are classified
// even with one pool part).
//?MOD_BLOCKS:const TILE_MOD_BLOCKS: bool = true;
//?!MOD_BLOCKS:const TILE_MOD_BLOCKS: bool = false;

fn flash_tile_class(w: FlashWork, j_first: u32, j_last: u32) -> u32 {
    var c = TILE_PARTIAL;
//?MOD_BLOCKS:    c = flash_mod_class(w, j_first, j_last);
    if (c != TILE_EMPTY && !flash_in_part(w, j_first, j_last)) {
        c = TILE_EMPTY;
    }
    return c;
}

// Word `i` of the dense mask.
fn mask_word(i: u32) -> u32 {
    return mask4[i >> 2u][i & 3u];
}

// The additive mask's entry for (row f, key j); 0 without one.
fn flash_bias(f: FlashRow, j: u32) -> f32 {
    let i = f.mbase + min(j, p.nk - 1u) * p.m_sk;
    if (MASK_MODE == MASK_ADDITIVE) {
        return bitcast<f32>(mask_word(i));
    }
    if (MASK_MODE == MASK_ADDITIVE_F16) {
        return mask_half((mask_word(i >> 1u) >> ((i & 1u) * 16u)) & 0xffffu);
    }
    return 0.0;
}

// The additive mask's entries for (row f, keys j0..j0+3) in one load: only when
// the mask is contiguous along keys and f.mbase + j0 is a multiple of 4 (the host
// checks the strides, the kernel aligns j0). On CPU drivers every load whose
// address differs per lane is a loop over the lanes; one vec4 load per row and
// four keys costs one loop instead of four. Keys past Nk read the next row or the
// padding: flash_score excludes them.
fn flash_bias4(f: FlashRow, j0: u32) -> vec4<f32> {
    let e = f.mbase + j0;
    if (MASK_MODE == MASK_ADDITIVE_F16) {
        // Four halves: one half of a vec4 of words (e is a multiple of 4).
        let v = mask4[e >> 3u];
        let w = select(v.xy, v.zw, (e & 4u) != 0u);
        return vec4(mask_half(w.x & 0xffffu), mask_half(w.x >> 16u), mask_half(w.y & 0xffffu), mask_half(w.y >> 16u));
    }
    return bitcast<vec4<f32>>(mask4[e >> 2u]);
}

// The score of (row f, key j) after softcap, biases and every mask; NEG_BIG when
// the key is excluded (also for rows past Nq and keys past the block's range).
// `bias` is the additive mask's entry (flash_bias / flash_bias4), unused without
// one.
fn flash_score(s: f32, w: FlashWork, f: FlashRow, j: u32, bias: f32) -> f32 {
    var x = s;
    if (USE_SOFTCAP && p.softcap > 0.0) {
        x = soft_cap(x, p.softcap);
    }
    var visible = i32(j) <= f.hi;
    if (USE_RULES) {
        visible = visible && i32(j) >= f.lo;
    }
    if (MASK_MODE == MASK_ADDITIVE || MASK_MODE == MASK_ADDITIVE_F16) {
        x += bias;
    } else if (MASK_MODE == MASK_BOOL) {
        let idx = f.mbase + min(j, p.nk - 1u) * p.m_sk;
        visible = visible && mask_byte_set(mask_word(idx >> 2u), idx);
    }
    if (USE_ALIBI && p.alibi != 0u) {
        x -= f.slope * abs(f32(i32(f.n) + w.diag - i32(j)));
    }
    if (PAGED_PARTS) {
        visible = visible && flash_block_in_part(flash_block(w, min(j, p.nk - 1u)));
    }
//?SCORE_MOD:    if (x > MASKED) {
//?SCORE_MOD:        let y = score_mod(x, w.b, f.h, f.n, j + p.kv_base);
//?SCORE_MOD:        x = select(NEG_BIG, min(y, 1.0e38), y > MASKED);
//?SCORE_MOD:    }
//?MASK_MOD:    if (!mod_full) {
//?MASK_MOD:        visible = visible && mask_mod(w.b, f.h, f.n, j + p.kv_base);
//?MASK_MOD:    }
    return select(NEG_BIG, x, visible && x > MASKED);
}

// A caller's mask_mod (src/mods.rs): true while the key loop is in a block the
// block mask classified full (the predicate is then not evaluated).
//?MASK_MOD:var<private> mod_full: bool = false;

// The block mask (src/mods.rs): one class per (b, h, query block, key block)
// after the caller's buffers in the mods binding, mod_nkb key blocks per row
// (0 = no block mask for this launch).
//?MOD_BLOCKS:const MOD_BQ: u32 = 64u;
//?MOD_BLOCKS:const MOD_BK: u32 = 64u;
//?MOD_BLOCKS:
//?MOD_BLOCKS:// The class of keys [j_first, j_last] for every row the workgroup owns (its
//?MOD_BLOCKS:// query blocks, and with head_rows > 1 each of its heads): empty when every
//?MOD_BLOCKS:// block is, full when every block is, else partial.
//?MOD_BLOCKS:fn flash_mod_class(w: FlashWork, j_first: u32, j_last: u32) -> u32 {
//?MOD_BLOCKS:    if (p.mod_nkb == 0u) {
//?MOD_BLOCKS:        return TILE_PARTIAL;
//?MOD_BLOCKS:    }
//?MOD_BLOCKS:    let nqb = (p.nq + MOD_BQ - 1u) / MOD_BQ;
//?MOD_BLOCKS:    let kb0 = min((j_first + p.kv_base) / MOD_BK, p.mod_nkb - 1u);
//?MOD_BLOCKS:    let kb1 = min((j_last + p.kv_base) / MOD_BK, p.mod_nkb - 1u);
//?MOD_BLOCKS:    let qb0 = min(w.block0, p.nq - 1u) / MOD_BQ;
//?MOD_BLOCKS:    let qb1 = w.block_last / MOD_BQ;
//?MOD_BLOCKS:    var any = false;
//?MOD_BLOCKS:    var all = true;
//?MOD_BLOCKS:    for (var hh = 0u; hh < p.head_rows; hh++) {
//?MOD_BLOCKS:        let h = min(w.h + hh, p.hq - 1u);
//?MOD_BLOCKS:        for (var qb = qb0; qb <= qb1; qb++) {
//?MOD_BLOCKS:            let row = MOD_CLASSES + ((w.b * p.hq + h) * nqb + qb) * p.mod_nkb;
//?MOD_BLOCKS:            for (var kb = kb0; kb <= kb1; kb++) {
//?MOD_BLOCKS:                let c = mods[row + kb];
//?MOD_BLOCKS:                any = any || c != TILE_EMPTY;
//?MOD_BLOCKS:                all = all && c == TILE_FULL;
//?MOD_BLOCKS:            }
//?MOD_BLOCKS:        }
//?MOD_BLOCKS:    }
//?MOD_BLOCKS:    return select(select(TILE_EMPTY, TILE_PARTIAL, any), TILE_FULL, all);
//?MOD_BLOCKS:}
//?MOD_BLOCKS:
//?MOD_BLOCKS:// Keys to add to j0, besides the loop's own step of `step`, to leave an empty
//?MOD_BLOCKS:// class of [j0, j0 + step - 1]: whole steps up to the end of the key block
//?MOD_BLOCKS:// holding its last key (so the keys skipped all lie in empty blocks).
//?MOD_BLOCKS:fn flash_mod_skip(j0: u32, step: u32) -> u32 {
//?MOD_BLOCKS:    let end = ((j0 + step - 1u + p.kv_base) / MOD_BK + 1u) * MOD_BK - p.kv_base;
//?MOD_BLOCKS:    return (max((end - j0) / step, 1u) - 1u) * step;
//?MOD_BLOCKS:}

// Element c of row `base` of Q / K / V; Q is zero past D (so padded chunks add
// nothing), K and V clamp to the last element (valid memory, times zero).
fn ld_q(base: u32, c: u32) -> f32 {
    return select(0.0, q_at(base + min(c, p.d - 1u) * p.q_sd), c < p.d);
}

fn ld_k(base: u32, c: u32) -> f32 {
    return k_at(base + min(c, p.d - 1u) * p.k_sd);
}

fn ld_v(base: u32, c: u32) -> f32 {
    return v_at(base + min(c, p.d - 1u) * p.v_sd);
}

// The finished row's normalization: (factor of acc, LSE). Without a sink,
// 1/l and m + log l (the LSE's −inf case is the caller's); with the head's
// attention sink (p.sink, never on a split's partial: the merge adds it once)
// the denominator gains exp(sink), so a row that saw no key gets O = 0 and
// LSE = sink.
fn flash_norm(f: FlashRow, m: f32, l: f32) -> vec2<f32> {
    if (p.sink != 0u) {
        let s = slopes[p.hq + min(f.h, p.hq - 1u)];
        let mm = max(m, s);
        let a = select(0.0, exp(m - mm), l > 0.0);
        let tot = l * a + exp(s - mm);
        return vec2(a / tot, mm + log(tot));
    }
    return vec2(select(0.0, 1.0 / l, l > 0.0), m + log(max(l, 1.0e-30)));
}

// Writes the finished row: O = acc · flash_norm (0 when no key was seen).
fn flash_store4(w: FlashWork, f: FlashRow, c: u32, acc: vec4<f32>, m: f32, l: f32) {
    if (f.n >= w.nq) {
        return;
    }
    let inv = flash_norm(f, m, l).x;
    let base = p.o_off + w.split * p.o_ss + w.b * p.o_sb + f.h * p.o_sh + (w.o0 + f.n) * p.o_sn;
    for (var e = 0u; e < 4u; e++) {
        if (c + e < p.d) {
            o_put(base + (c + e) * p.o_sd, acc[e] * inv);
        }
    }
}

// The LSE (−inf bits when no key was seen and there is no sink).
fn flash_store_lse(w: FlashWork, f: FlashRow, m: f32, l: f32) {
    if (f.n < w.nq && p.write_lse != 0u) {
        lse[p.lse_off + w.split * p.lse_ss + w.b * p.lse_sb + f.h * p.lse_sh + w.o0 + f.n] = select(bitcast<f32>(p.neg_inf_bits), flash_norm(f, m, l).y, l > 0.0 || p.sink != 0u);
    }
}

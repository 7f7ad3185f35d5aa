//! Serving-grade batches: sequences of different lengths in one dispatch.
//!
//! - **Packed (varlen)**, as FlashAttention's varlen API: Q `[total_q, Hq, D]`,
//!   K and V `[total_k, Hkv, D]`, sequence `b` at rows `cu_seqlens_q[b] ..
//!   cu_seqlens_q[b + 1]` (and `cu_seqlens_k` for the keys); O is packed the
//!   same way and the LSE is `[Hq, total_q]` ([`varlen_attention`]).
//! - **Paged**, as vLLM's: K and V in a pool `[num_blocks, block_size, Hkv, D]`,
//!   sequence `b`'s key `j` in block `block_table[b][j / block_size]` at row
//!   `j % block_size`, `seq_lens[b]` keys; packed queries against it cover
//!   decode (one query per sequence), chunked prefill (new queries against
//!   cached plus new keys) and speculative verification (a few queries per
//!   sequence) ([`paged_attention`]; [`crate::paged`] manages the pool).
//!
//! Every option applies per sequence: causal and window rules align
//! bottom-right to each sequence (its queries are its newest positions) or
//! top-left, ALiBi, softcap, sinks, GQA and mods (`b` the sequence, `q` and
//! `kv` indices within it). Empty and one-token sequences are normal. The
//! prefix sums, block table and lengths are u32 arrays given from the host
//! (checked: monotone, within the tensors, the table within the pool) or as
//! the caller's GPU buffers ([`U32s::Gpu`], updated with no readback; copied
//! into the kernels' index inside the recording, so they need `COPY_SRC`;
//! malformed values there cannot make a kernel touch memory outside the bound
//! buffers, but give wrong rows).
//!
//! ```
//! use wgpu_attention::seqs::{varlen_attention, U32s, Varlen};
//! use wgpu_attention::{AttentionOptions, Gpu, Tensor};
//! # fn main() -> wgpu_attention::Result<()> {
//! let gpu = Gpu::new_blocking(&Default::default())?;
//! // Three sequences of 5, 0 and 2 tokens, 2 heads of 8 channels, packed.
//! let (total, h, d) = (7, 2, 8);
//! let x: Vec<f32> = (0..total * h * d).map(|i| (i as f32 * 0.3).sin()).collect();
//! let q = Tensor::from_slice(&gpu, &x, &[total, h, d])?;
//! let cu = [0, 5, 5, 7];
//! let varlen = Varlen {
//!     cu_seqlens_q: U32s::Host(&cu),
//!     cu_seqlens_k: U32s::Host(&cu),
//!     max_seqlen_q: 5,
//!     max_seqlen_k: 5,
//! };
//! let mut opts = AttentionOptions { return_lse: true, ..Default::default() };
//! opts.masking.causal = true;
//! let out = varlen_attention(&q, &q, &q, &varlen, &opts)?;
//! assert_eq!(out.o.shape(), [total, h, d]);
//! assert_eq!(out.lse.unwrap().shape(), [h, total]);
//! # Ok(()) }
//! ```

use crate::attention::{plan_for, Attention, AttentionOptions};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::kernels::flash_attention::{record_fused, FusedOut, SeqIndex};
use crate::mask::Alignment;
use crate::plan::{AttentionProblem, DTypes, Keys, PagedLayout, SeqLayout, Steps};
use crate::shape::AttnShape;
use crate::tensor::Tensor;

/// u32 values the kernels read: from the host (checked, then uploaded) or a
/// GPU buffer of the caller's (`len` values from byte 0; `COPY_SRC`).
#[derive(Clone, Copy, Debug)]
pub enum U32s<'a> {
    /// Values on the host.
    Host(&'a [u32]),
    /// The first `len` u32 of a buffer on the device.
    Gpu {
        /// The buffer (with `COPY_SRC`).
        buffer: &'a wgpu::Buffer,
        /// Values in it.
        len: usize,
    },
}

impl U32s<'_> {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            U32s::Host(v) => v.len(),
            U32s::Gpu { len, .. } => *len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn host(&self) -> Option<&[u32]> {
        match self {
            U32s::Host(v) => Some(v),
            U32s::Gpu { .. } => None,
        }
    }
}

/// The sequences of a packed batch: prefix sums of the query and key rows
/// (`B + 1` each) and the longest of each.
#[derive(Clone, Copy, Debug)]
pub struct Varlen<'a> {
    /// `[B + 1]`: sequence `b`'s queries are rows `cu[b] .. cu[b + 1]` of Q.
    pub cu_seqlens_q: U32s<'a>,
    /// `[B + 1]`: its keys are rows `cu[b] .. cu[b + 1]` of K and V.
    pub cu_seqlens_k: U32s<'a>,
    /// The longest query sequence (at least every `cu[b + 1] - cu[b]`).
    pub max_seqlen_q: usize,
    /// The longest key sequence.
    pub max_seqlen_k: usize,
}

/// Keys and values in a paged pool.
#[derive(Clone, Copy, Debug)]
pub struct PagedKv<'a> {
    /// `[num_blocks, block_size, Hkv, D]`, contiguous.
    pub k_pool: &'a Tensor,
    /// Shaped and stored like `k_pool` (any dtype).
    pub v_pool: &'a Tensor,
    /// `[B, max_blocks]` row-major: block ids in the pool.
    pub block_table: U32s<'a>,
    /// Table entries per sequence.
    pub max_blocks: usize,
    /// `[B]`: each sequence's keys (at most `max_blocks · block_size`).
    pub seq_lens: U32s<'a>,
    /// The longest sequence (at least every `seq_lens[b]`).
    pub max_seq_len: usize,
}

/// Packed variable-length attention in one submission: `q` `[total_q, Hq,
/// D]`, `k` and `v` `[total_k, Hkv, D]` (any strides), the sequences of
/// `varlen`; O `[total_q, Hq, D]` contiguous, LSE `[Hq, total_q]` when asked
/// for. Fused and decode paths ([`crate::AttentionPath`]; `Auto` picks).
pub fn varlen_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    varlen: &Varlen<'_>,
    opts: &AttentionOptions,
) -> Result<Attention> {
    let mut rec = q.gpu().recorder();
    let out = record_varlen_attention(&mut rec, q, k, v, varlen, opts)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`varlen_attention`] without submitting.
pub fn record_varlen_attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    varlen: &Varlen<'_>,
    opts: &AttentionOptions,
) -> Result<Attention> {
    let [total_q, hq, d] = dims3(q, "Q")?;
    let [total_k, hkv, dk] = dims3(k, "K")?;
    if v.shape() != k.shape() || dk != d {
        return Err(Error::Shape(format!(
            "packed K {:?} and V {:?} must both be [total_k, Hkv, D = {d}]",
            k.shape(),
            v.shape()
        )));
    }
    let b = sequences(&varlen.cu_seqlens_q, "cu_seqlens_q")?;
    if varlen.cu_seqlens_k.len() != b + 1 {
        return Err(Error::InvalidArgument(format!(
            "cu_seqlens_k has {} values but cu_seqlens_q has {}: both are [B + 1]",
            varlen.cu_seqlens_k.len(),
            b + 1
        )));
    }
    check_prefix(
        &varlen.cu_seqlens_q,
        "cu_seqlens_q",
        total_q,
        varlen.max_seqlen_q,
    )?;
    check_prefix(
        &varlen.cu_seqlens_k,
        "cu_seqlens_k",
        total_k,
        varlen.max_seqlen_k,
    )?;
    let layout = SeqLayout {
        packed_q: true,
        packed_k: true,
        paged: None,
        total_q,
        per_seq_diag: opts.masking.alignment == Alignment::BottomRight,
    };
    let parts = [
        (None, 0),
        (Some(varlen.cu_seqlens_q), b + 1),
        (Some(varlen.cu_seqlens_k), b + 1),
    ];
    let shape = AttnShape {
        b,
        hq,
        hkv,
        nq: varlen.max_seqlen_q.max(1),
        nk: varlen.max_seqlen_k.max(1),
        d,
    };
    let part = KvPart {
        k: rows_view(k)?,
        v: rows_view(v)?,
        blocks: None,
    };
    record_seqs(rec, q, &[part], shape, layout, &parts, opts)
}

/// Packed queries against a paged KV pool in one submission: `q` `[total_q,
/// Hq, D]` with `cu_seqlens_q` (`[B + 1]`; decode: `0, 1, …, B`), the keys of
/// sequence `b` the `seq_lens[b]` first positions of its blocks. O `[total_q,
/// Hq, D]`, LSE `[Hq, total_q]`.
pub fn paged_attention(
    q: &Tensor,
    cu_seqlens_q: U32s<'_>,
    max_seqlen_q: usize,
    kv: &PagedKv<'_>,
    opts: &AttentionOptions,
) -> Result<Attention> {
    let mut rec = q.gpu().recorder();
    let out = record_paged_attention(&mut rec, q, cu_seqlens_q, max_seqlen_q, kv, opts)?;
    rec.submit()?;
    Ok(out)
}

/// Records [`paged_attention`] without submitting (with a KV append before
/// it, a whole decode step in one encoder: [`crate::paged::PagedKvCache`]).
pub fn record_paged_attention(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    cu_seqlens_q: U32s<'_>,
    max_seqlen_q: usize,
    kv: &PagedKv<'_>,
    opts: &AttentionOptions,
) -> Result<Attention> {
    let [total_q, hq, d] = dims3(q, "Q")?;
    let pool = kv.k_pool.shape();
    let [num_blocks, block_size, hkv, dk] = pool[..] else {
        return Err(Error::Shape(format!(
            "the K pool must be [num_blocks, block_size, Hkv, D], got {pool:?}"
        )));
    };
    if kv.v_pool.shape() != pool || dk != d {
        return Err(Error::Shape(format!(
            "the V pool {:?} must be shaped like the K pool {pool:?}, with D = {d} as Q",
            kv.v_pool.shape()
        )));
    }
    let b = sequences(&cu_seqlens_q, "cu_seqlens_q")?;
    check_prefix(&cu_seqlens_q, "cu_seqlens_q", total_q, max_seqlen_q)?;
    if kv.seq_lens.len() != b {
        return Err(Error::InvalidArgument(format!(
            "seq_lens has {} values for {b} sequences (cu_seqlens_q has {}): give one per sequence",
            kv.seq_lens.len(),
            b + 1
        )));
    }
    if kv.max_blocks == 0 || kv.block_table.len() != b * kv.max_blocks {
        return Err(Error::InvalidArgument(format!(
            "the block table has {} entries; [B, max_blocks] = [{b}, {}] needs {}",
            kv.block_table.len(),
            kv.max_blocks,
            b * kv.max_blocks
        )));
    }
    if kv.max_seq_len > kv.max_blocks * block_size {
        return Err(Error::InvalidArgument(format!(
            "max_seq_len {} is more than the table's {} blocks of {block_size} hold",
            kv.max_seq_len, kv.max_blocks
        )));
    }
    if let Some(lens) = kv.seq_lens.host() {
        if let Some((i, &l)) = lens
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize > kv.max_seq_len)
        {
            return Err(Error::InvalidArgument(format!(
                "seq_lens[{i}] = {l} is more than max_seq_len {}",
                kv.max_seq_len
            )));
        }
        if let Some(table) = kv.block_table.host() {
            for (s, &l) in lens.iter().enumerate() {
                let used = (l as usize).div_ceil(block_size);
                let row = &table[s * kv.max_blocks..][..used];
                if let Some(&bad) = row.iter().find(|&&blk| blk as usize >= num_blocks) {
                    return Err(Error::InvalidArgument(format!(
                        "block_table[{s}] points at block {bad}, past the pool of {num_blocks} blocks"
                    )));
                }
            }
        }
    }
    for (t, what) in [(kv.k_pool, "K pool"), (kv.v_pool, "V pool")] {
        let want = [block_size * hkv * d, hkv * d, d, 1];
        if t.strides() != want {
            return Err(Error::Shape(format!(
                "the {what} must be contiguous [num_blocks, block_size, Hkv, D] (strides {want:?}), got {:?}",
                t.strides()
            )));
        }
    }
    let layout = SeqLayout {
        packed_q: true,
        packed_k: false,
        paged: Some(PagedLayout {
            block_size,
            max_blocks: kv.max_blocks,
            num_blocks,
            split: false,
        }),
        total_q,
        per_seq_diag: opts.masking.alignment == Alignment::BottomRight,
    };
    let parts = [
        (Some(kv.seq_lens), b),
        (Some(cu_seqlens_q), b + 1),
        (None, 0),
        (Some(kv.block_table), b * kv.max_blocks),
    ];
    let shape = AttnShape {
        b,
        hq,
        hkv,
        nq: max_seqlen_q.max(1),
        nk: kv.max_seq_len.max(1),
        d,
    };
    // The pool's rows as [1, Hkv, blocks·block_size, D].
    let rows = |t: &Tensor| {
        t.view(
            &[1, hkv, num_blocks * block_size, d],
            &[num_blocks * block_size * hkv * d, d, hkv * d, 1],
            t.offset(),
        )
    };
    let part = KvPart {
        k: rows(kv.k_pool)?,
        v: rows(kv.v_pool)?,
        blocks: None,
    };
    record_seqs(rec, q, &[part], shape, layout, &parts, opts)
}

fn dims3(t: &Tensor, what: &str) -> Result<[usize; 3]> {
    match *t.shape() {
        [n, h, d] => Ok([n, h, d]),
        _ => Err(Error::Shape(format!(
            "packed {what} must be [total, H, D], got {:?}",
            t.shape()
        ))),
    }
}

/// `[total, H, D]` seen as `[1, H, total, D]`.
fn rows_view(t: &Tensor) -> Result<Tensor> {
    let [n, h, d] = dims3(t, "tensor")?;
    let s = t.strides();
    t.view(
        &[1, h, n, d],
        &[n * s[0].max(1), s[1], s[0], s[2]],
        t.offset(),
    )
}

/// The number of sequences of prefix sums `cu` (`B + 1` values).
fn sequences(cu: &U32s<'_>, what: &str) -> Result<usize> {
    match cu.len() {
        0 => Err(Error::InvalidArgument(format!(
            "{what} is empty: give B + 1 prefix sums (0 first)"
        ))),
        n => Ok(n - 1),
    }
}

/// Host prefix sums: non-decreasing, within `total` rows, no sequence over `max`.
fn check_prefix(cu: &U32s<'_>, what: &str, total: usize, max: usize) -> Result<()> {
    let Some(v) = cu.host() else {
        return Ok(());
    };
    for (i, w) in v.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(Error::InvalidArgument(format!(
                "{what} is not monotone: [{i}] = {} > [{}] = {}",
                w[0],
                i + 1,
                w[1]
            )));
        }
        if (w[1] - w[0]) as usize > max {
            return Err(Error::InvalidArgument(format!(
                "{what}: sequence {i} has {} rows, more than the maximum {max} given",
                w[1] - w[0]
            )));
        }
    }
    if let Some(&last) = v.last() {
        if last as usize > total {
            return Err(Error::InvalidArgument(format!(
                "{what} ends at {last}, past the tensor's {total} rows"
            )));
        }
    }
    Ok(())
}

/// The kernels' index (binding 5) from `parts` in order (`None`: absent; a
/// GPU part is copied in inside the recording), with each part's offset.
fn build_index(
    rec: &mut Recorder<'_>,
    gpu: &Gpu,
    parts: &[(Option<U32s<'_>>, usize)],
) -> Result<(wgpu::Buffer, Vec<Option<u32>>)> {
    let mut host = Vec::new();
    let mut offsets = Vec::new();
    let mut copies = Vec::new();
    for (part, len) in parts {
        match part {
            None => offsets.push(None),
            Some(p) => {
                offsets.push(Some(host.len() as u32));
                match p {
                    U32s::Host(v) => host.extend_from_slice(v),
                    U32s::Gpu { buffer, len: n } => {
                        if !buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
                            return Err(Error::InvalidArgument(
                                "a GPU buffer of sequence data lacks BufferUsages::COPY_SRC, which copying it into the kernels' index needs".into(),
                            ));
                        }
                        if (*n as u64) * 4 > buffer.size() {
                            return Err(Error::InvalidArgument(format!(
                                "a GPU buffer of sequence data holds {} bytes, fewer than its {n} values",
                                buffer.size()
                            )));
                        }
                        copies.push((*buffer, host.len() as u64 * 4, *n as u64 * 4));
                        host.resize(host.len() + len, 0);
                    }
                }
            }
        }
    }
    let index = gpu.upload(
        "sequence index",
        bytemuck::cast_slice(&host),
        wgpu::BufferUsages::STORAGE,
    )?;
    for (src, at, bytes) in copies {
        if bytes > 0 {
            rec.encoder()
                .copy_buffer_to_buffer(src, 0, &index, at, bytes);
        }
    }
    Ok((index, offsets))
}

/// K and V rows of one storage binding as `[1, Hkv, rows, D]` views, and for
/// a pool split over bindings the blocks `[lo, hi)` they hold.
pub(crate) struct KvPart {
    pub k: Tensor,
    pub v: Tensor,
    pub blocks: Option<(u32, u32)>,
}

/// Plans and records a problem over packed or paged sequences whose keys and
/// values are `kv` (one part, or the parts of a pool split over bindings:
/// then the decode path per part, merged).
pub(crate) fn record_seqs(
    rec: &mut Recorder<'_>,
    q: &Tensor,
    kv: &[KvPart],
    shape: AttnShape,
    layout: SeqLayout,
    parts: &[(Option<U32s<'_>>, usize)],
    opts: &AttentionOptions,
) -> Result<Attention> {
    let gpu = q.gpu();
    for part in kv {
        for (t, what) in [(&part.k, "K"), (&part.v, "V")] {
            if !t.gpu().is_same(gpu) {
                return Err(Error::InvalidArgument(format!(
                    "{what} lives on another device than Q"
                )));
            }
        }
    }
    let (k, v) = (&kv[0].k, &kv[0].v);
    if kv.len() > 1 && opts.path == crate::AttentionPath::Fused {
        return Err(Error::InvalidArgument(format!(
            "the pool spans {} storage bindings: it runs on the decode path (per binding, merged); use AttentionPath::Decode or Auto",
            kv.len()
        )));
    }
    let q4 = rows_view(q)?;
    let dtypes = DTypes {
        q: q.dtype(),
        k: k.dtype(),
        v: v.dtype(),
        o: opts.out_dtype.unwrap_or(q.dtype()),
    };
    let mut problem = AttentionProblem::with_shape(shape, &q4, opts, Keys::Tensors, dtypes)?;
    problem.seqs = Some(layout);
    if kv.len() > 1 {
        problem.path = crate::AttentionPath::Decode;
    }
    // The autotuner measures rectangular problems: packed and paged ones take
    // the recorder's (heuristic) variants.
    let opts = &AttentionOptions {
        tuning: match opts.tuning {
            crate::TuningMode::Autotune => crate::TuningMode::Heuristic,
            t => t,
        },
        ..opts.clone()
    };
    let plan = plan_for(rec, q, &problem, opts)?;
    let (index, offsets) = build_index(rec, gpu, parts)?;
    let seq_index = SeqIndex {
        buffer: &index,
        layout,
        has_lengths: offsets[0].is_some(),
        cuq_off: offsets.get(1).copied().flatten(),
        cuk_off: offsets.get(2).copied().flatten(),
        bt_off: offsets.get(3).copied().flatten().unwrap_or(0),
        part: None,
    };
    let part_index = |p: &KvPart| SeqIndex {
        part: p.blocks,
        cuq_off: seq_index.cuq_off,
        cuk_off: seq_index.cuk_off,
        ..seq_index
    };
    let sh = shape;
    let o = Tensor::output_as(
        gpu,
        "packed attention output",
        &[layout.total_q, sh.hq, sh.d],
        None,
        dtypes.o,
    )?;
    let o4 = rows_view(&o)?;
    let lse = problem
        .want_lse
        .then(|| Tensor::output(gpu, "packed lse", &[sh.hq, layout.total_q], None))
        .transpose()?;
    let dims_q = [sh.b, sh.hq, sh.nq, sh.d];
    let dims_k = [sh.b, sh.hkv, sh.nk, sh.d];
    let t = &problem.transform;
    let mark = rec.scratch_mark();
    let result = (|| -> Result<()> {
        match &plan.steps {
            Steps::Fused(launch) => {
                let out = FusedOut {
                    o: &o4,
                    lse: lse.as_ref(),
                    o_ss: 0,
                    lse_ss: 0,
                    partial: false,
                };
                let idx = part_index(&kv[0]);
                record_fused(
                    rec,
                    launch,
                    [&q4, k, v],
                    t,
                    None,
                    out,
                    Some((&idx, dims_q, dims_k)),
                )
            }
            Steps::Decode {
                pages,
                total_splits,
            } => {
                let rows = sh.b * sh.hq * sh.nq;
                let per_part = *total_splits;
                let total = per_part * kv.len();
                let f32 = crate::DType::F32;
                let o_part =
                    rec.scratch("decode partial O", &[total, sh.b, sh.hq, sh.nq, sh.d], f32)?;
                let lse_part = rec.scratch("decode partial LSE", &[total, rows], f32)?;
                for (pi, part) in kv.iter().enumerate() {
                    let idx = part_index(part);
                    for page in pages {
                        let first = pi * per_part + page.first_split;
                        let first_o = o_part.view(
                            &dims_q,
                            &[sh.hq * sh.nq * sh.d, sh.nq * sh.d, sh.d, 1],
                            first * rows * sh.d,
                        )?;
                        let lse_p =
                            lse_part.view(&[page.launch.splits, rows], &[rows, 1], first * rows)?;
                        let out = FusedOut {
                            o: &first_o,
                            lse: Some(&lse_p),
                            o_ss: (rows * sh.d) as u32,
                            lse_ss: rows as u32,
                            partial: true,
                        };
                        let tp = t.for_page(page.p0, page.n);
                        record_fused(
                            rec,
                            &page.launch,
                            [&q4, &part.k, &part.v],
                            &tp,
                            None,
                            out,
                            Some((&idx, dims_q, dims_k)),
                        )?;
                    }
                }
                crate::kernels::decode::record_combine(
                    rec,
                    &o_part,
                    &lse_part,
                    total,
                    &sh,
                    t.sinks.as_deref(),
                    &o4,
                    lse.as_ref(),
                    Some((&index, seq_index.cuq_off.unwrap_or(0), layout.total_q)),
                )
            }
            Steps::Unfused(_) => Err(Error::InvalidArgument(
                "packed or paged sequences run on the fused and decode paths".into(),
            )),
        }
    })();
    rec.release_scratch(mark);
    result?;
    Ok(Attention {
        o,
        lse,
        weights: None,
        path: plan.path,
        kernels: plan.describe(),
    })
}

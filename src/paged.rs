//! A paged KV cache for serving: a pool of fixed-size blocks shared by many
//! sequences (vLLM's layout), a block manager on the host, and the GPU work
//! of a step recorded into one encoder with nothing read back.
//!
//! ```text
//! BlockManager (host): free list, a refcount per block, per sequence its blocks and length
//!   reserve(seq, n) ─▶ pool rows (slots) of the n new positions
//!                      + copies of a shared partial last block (copy-on-write)
//!   fork(seq)       ─▶ a new sequence sharing every block (refcounts + 1)
//! PagedKvCache (GPU): K and V pools [blocks, block_size, Hkv, D] in parts of one
//!   storage binding each (a pool larger than a binding is split, not refused)
//!   record_append: copy-on-write block copies, then cache_write.wgsl of the new
//!                  tokens' K and V into their slots (every part)
//!   record_attend: seqs::record_paged_attention over the manager's block table and
//!                  lengths (per part, merged by LSE, when the pool is split)
//! ```
//!
//! ```
//! use wgpu_attention::paged::PagedKvCache;
//! use wgpu_attention::{AttentionOptions, DType, Gpu, Tensor};
//! # fn main() -> wgpu_attention::Result<()> {
//! let gpu = Gpu::new_blocking(&Default::default())?;
//! let (hkv, hq, d) = (2, 4, 8);
//! let mut cache = PagedKvCache::new(&gpu, 64, 16, hkv, d, DType::F32)?;
//! let (a, b) = (cache.add_sequence(), cache.add_sequence());
//! // Prompts of 5 and 3 tokens, packed [8, Hkv, D].
//! let kv = Tensor::from_slice(&gpu, &vec![0.1f32; 8 * hkv * d], &[8, hkv, d])?;
//! let mut rec = gpu.recorder();
//! cache.record_append(&mut rec, &[a, b], &[5, 3], &kv, &kv)?;
//! // One decode step: a query per sequence, in the same encoder.
//! let q = Tensor::from_slice(&gpu, &vec![0.2f32; 2 * hq * d], &[2, hq, d])?;
//! let mut opts = AttentionOptions::default();
//! opts.masking.causal = true;
//! let out = cache.record_attend(&mut rec, &q, &[a, b], &[1, 1], &opts)?;
//! rec.submit()?;
//! assert_eq!(out.o.shape(), [2, hq, d]);
//! let c = cache.fork(a)?; // shares a's blocks; its next append copies the partial one
//! assert_eq!(cache.manager().len(c)?, 5);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use crate::attention::{Attention, AttentionOptions};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::plan::{PagedLayout, SeqLayout};
use crate::seqs::{record_seqs, KvPart, U32s};
use crate::shape::AttnShape;
use crate::tensor::Tensor;

/// A sequence of a [`BlockManager`].
pub type SeqId = u64;

/// One sequence's blocks and length.
#[derive(Clone, Debug, Default, PartialEq)]
struct SeqBlocks {
    blocks: Vec<u32>,
    len: usize,
}

/// What an append needs done on the GPU ([`BlockManager::reserve`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reservation {
    /// Pool rows (`block · block_size + offset`) of the new positions.
    pub slots: Vec<u32>,
    /// `(from, to)` block copies to make first: a partial last block shared
    /// with a fork is copied before this sequence writes into it.
    pub copies: Vec<(u32, u32)>,
}

/// The host side of a paged pool: which blocks each sequence holds, shared
/// blocks counted, copy-on-write of a shared partial block. No GPU here.
///
/// ```
/// use wgpu_attention::paged::BlockManager;
/// let mut m = BlockManager::new(8, 4).unwrap();
/// let a = m.add_sequence();
/// let r = m.reserve(a, 6).unwrap(); // two blocks, the second half full
/// assert_eq!((r.slots.len(), m.free_blocks()), (6, 6));
/// let b = m.fork(a).unwrap(); // shares both blocks
/// assert_eq!(m.free_blocks(), 6);
/// let r = m.reserve(b, 1).unwrap(); // writes into the shared partial block: copy it first
/// assert_eq!(r.copies.len(), 1);
/// assert_eq!(m.free_blocks(), 5);
/// m.free_sequence(a).unwrap();
/// assert_eq!(m.free_blocks(), 6); // a's second block; the first is still b's
/// assert!(m.reserve(b, 100).is_err()); // out of blocks: typed, nothing reserved
/// assert_eq!(m.len(b).unwrap(), 7);
/// ```
#[derive(Clone, Debug)]
pub struct BlockManager {
    block_size: usize,
    num_blocks: usize,
    free: Vec<u32>,
    refs: Vec<u32>,
    seqs: BTreeMap<SeqId, SeqBlocks>,
    next: SeqId,
}

impl BlockManager {
    /// `num_blocks` blocks of `block_size` positions, all free.
    pub fn new(num_blocks: usize, block_size: usize) -> Result<Self> {
        if num_blocks == 0 || block_size == 0 || num_blocks > u32::MAX as usize / block_size {
            return Err(Error::InvalidArgument(format!(
                "a pool of {num_blocks} blocks of {block_size} positions: both must be at least 1 and their product fit u32"
            )));
        }
        Ok(BlockManager {
            block_size,
            num_blocks,
            // Handed out from the end: block 0 first.
            free: (0..num_blocks as u32).rev().collect(),
            refs: vec![0; num_blocks],
            seqs: BTreeMap::new(),
            next: 0,
        })
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Blocks no sequence holds.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// A new, empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let id = self.next;
        self.next += 1;
        self.seqs.insert(id, SeqBlocks::default());
        id
    }

    fn seq(&self, seq: SeqId) -> Result<&SeqBlocks> {
        self.seqs.get(&seq).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "sequence {seq} is not in the pool (never added, or freed)"
            ))
        })
    }

    /// Positions sequence `seq` holds.
    pub fn len(&self, seq: SeqId) -> Result<usize> {
        Ok(self.seq(seq)?.len)
    }

    /// The blocks of `seq` in order.
    pub fn blocks(&self, seq: SeqId) -> Result<&[u32]> {
        Ok(&self.seq(seq)?.blocks)
    }

    /// Room for `n` more positions of `seq`: blocks allocated as needed, a
    /// shared partial last block replaced by a copy (the copy listed). On
    /// [`Error::OutOfBlocks`] nothing changes.
    pub fn reserve(&mut self, seq: SeqId, n: usize) -> Result<Reservation> {
        let bs = self.block_size;
        let s = self.seq(seq)?.clone();
        let partial = !s.len.is_multiple_of(bs);
        let cow =
            partial && self.refs[*s.blocks.last().expect("a partial block") as usize] > 1 && n > 0;
        let needed = (s.len + n).div_ceil(bs) - s.blocks.len() + cow as usize;
        if needed > self.free.len() {
            return Err(Error::OutOfBlocks {
                needed,
                free: self.free.len(),
            });
        }
        let mut s = s;
        let mut out = Reservation::default();
        if cow {
            let old = s.blocks.pop().expect("a partial block");
            let new = self.take();
            self.refs[old as usize] -= 1;
            out.copies.push((old, new));
            s.blocks.push(new);
        }
        while s.blocks.len() < (s.len + n).div_ceil(bs) {
            let b = self.take();
            s.blocks.push(b);
        }
        out.slots = (s.len..s.len + n)
            .map(|p| s.blocks[p / bs] * bs as u32 + (p % bs) as u32)
            .collect();
        s.len += n;
        self.seqs.insert(seq, s);
        Ok(out)
    }

    fn take(&mut self) -> u32 {
        let b = self.free.pop().expect("counted before");
        self.refs[b as usize] = 1;
        b
    }

    /// A new sequence sharing every block of `seq` (its prefix): each append
    /// to either copies a shared partial last block first.
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId> {
        let s = self.seq(seq)?.clone();
        for &b in &s.blocks {
            self.refs[b as usize] += 1;
        }
        let id = self.next;
        self.next += 1;
        self.seqs.insert(id, s);
        Ok(id)
    }

    /// Drops `seq`: its blocks no other sequence shares become free.
    pub fn free_sequence(&mut self, seq: SeqId) -> Result<()> {
        self.seq(seq)?;
        let s = self.seqs.remove(&seq).expect("checked");
        for b in s.blocks {
            self.refs[b as usize] -= 1;
            if self.refs[b as usize] == 0 {
                self.free.push(b);
            }
        }
        Ok(())
    }

    /// The block table `[B, max_blocks]` of `seqs` (row-major, unused entries
    /// 0) and `max_blocks` (at least 1).
    pub fn block_table(&self, seqs: &[SeqId]) -> Result<(Vec<u32>, usize)> {
        let rows = seqs
            .iter()
            .map(|&s| self.seq(s).map(|s| s.blocks.as_slice()))
            .collect::<Result<Vec<_>>>()?;
        let max_blocks = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut table = vec![0u32; seqs.len() * max_blocks];
        for (i, r) in rows.iter().enumerate() {
            table[i * max_blocks..i * max_blocks + r.len()].copy_from_slice(r);
        }
        Ok((table, max_blocks))
    }

    /// The lengths of `seqs`.
    pub fn seq_lens(&self, seqs: &[SeqId]) -> Result<Vec<u32>> {
        seqs.iter()
            .map(|&s| self.seq(s).map(|s| s.len as u32))
            .collect()
    }
}

/// One storage binding's part of the pools: blocks `[first, first + blocks)`.
struct Part {
    k: Tensor,
    v: Tensor,
    first: u32,
    blocks: u32,
}

/// K and V pools on the GPU with their [`BlockManager`]; see the module docs.
pub struct PagedKvCache {
    gpu: Gpu,
    hkv: usize,
    d: usize,
    dtype: DType,
    manager: BlockManager,
    parts: Vec<Part>,
}

impl PagedKvCache {
    /// Pools of `num_blocks` blocks of `block_size` positions of `hkv` heads
    /// of `d` channels, holding `dtype`; split into parts of at most one
    /// storage binding each.
    pub fn new(
        gpu: &Gpu,
        num_blocks: usize,
        block_size: usize,
        hkv: usize,
        d: usize,
        dtype: DType,
    ) -> Result<Self> {
        let manager = BlockManager::new(num_blocks, block_size)?;
        if hkv == 0 || d == 0 {
            return Err(Error::ZeroSized("Hkv and D of a paged pool".into()));
        }
        let block_elems = block_size * hkv * d;
        let block_bytes = (block_elems * dtype.size()) as u64;
        if !block_bytes.is_multiple_of(4) {
            return Err(Error::InvalidArgument(format!(
                "a block of {block_size}·{hkv}·{d} {dtype} elements is {block_bytes} bytes: blocks are copied in multiples of 4 bytes; use an even block size"
            )));
        }
        let limit = gpu
            .limits()
            .max_storage_buffer_binding_size
            .min(gpu.limits().max_buffer_size);
        let per_part = (limit / block_bytes).min(num_blocks as u64) as usize;
        if per_part == 0 {
            return Err(Error::BufferTooLarge {
                what: "one block of the paged pool".into(),
                bytes: block_bytes,
                limit_name: "max_storage_buffer_binding_size",
                limit,
            });
        }
        let mut parts = Vec::new();
        let mut first = 0;
        while first < num_blocks {
            let n = per_part.min(num_blocks - first);
            let make = |what| Tensor::output_as(gpu, what, &[n, block_size, hkv, d], None, dtype);
            parts.push(Part {
                k: make("paged K pool")?,
                v: make("paged V pool")?,
                first: first as u32,
                blocks: n as u32,
            });
            first += n;
        }
        Ok(PagedKvCache {
            gpu: gpu.clone(),
            hkv,
            d,
            dtype,
            manager,
            parts,
        })
    }

    /// The block manager (lengths, blocks, free count).
    pub fn manager(&self) -> &BlockManager {
        &self.manager
    }

    /// Storage bindings the pools span (1 unless a pool is over the limit).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// The K and V pools of part `i` (`[blocks, block_size, Hkv, D]`, blocks
    /// from the part's first): to read or export them.
    pub fn pool(&self, i: usize) -> Option<(&Tensor, &Tensor)> {
        self.parts.get(i).map(|p| (&p.k, &p.v))
    }

    /// What the pools hold.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// [`BlockManager::add_sequence`].
    pub fn add_sequence(&mut self) -> SeqId {
        self.manager.add_sequence()
    }

    /// [`BlockManager::fork`].
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId> {
        self.manager.fork(seq)
    }

    /// [`BlockManager::free_sequence`].
    pub fn free_sequence(&mut self, seq: SeqId) -> Result<()> {
        self.manager.free_sequence(seq)
    }

    /// Records the append of `new[i]` positions to each sequence `seqs[i]`:
    /// `k` and `v` `[Σ new, Hkv, D]` packed in that order (any dtype and
    /// strides). Copy-on-write block copies first, then the new rows into
    /// their slots; all in `rec`'s encoder, nothing read back. On an error
    /// (e.g. [`Error::OutOfBlocks`]) no sequence grew.
    pub fn record_append(
        &mut self,
        rec: &mut Recorder<'_>,
        seqs: &[SeqId],
        new: &[usize],
        k: &Tensor,
        v: &Tensor,
    ) -> Result<()> {
        let total: usize = new.iter().sum();
        let want = [total, self.hkv, self.d];
        if seqs.len() != new.len() || k.shape() != want || v.shape() != want {
            return Err(Error::Shape(format!(
                "append of {new:?} positions to {} sequences: K {:?} and V {:?} must be [Σ new, Hkv, D] = {want:?}, one count per sequence",
                seqs.len(),
                k.shape(),
                v.shape()
            )));
        }
        let mut m = self.manager.clone();
        let mut slots = Vec::with_capacity(total);
        let mut copies = Vec::new();
        for (&s, &n) in seqs.iter().zip(new) {
            let r = m.reserve(s, n)?;
            slots.extend(r.slots);
            copies.extend(r.copies);
        }
        let bs = m.block_size();
        let block_bytes = (bs * self.hkv * self.d * self.dtype.size()) as u64;
        // Copy-on-write: through a staging block (a copy within one buffer is
        // not allowed).
        let staging = (!copies.is_empty())
            .then(|| self.gpu.alloc("paged block staging", block_bytes))
            .transpose()?;
        for (from, to) in copies {
            let (pf, pt) = (self.part_of(from), self.part_of(to));
            let (of, ot) = (
                (from - pf.first) as u64 * block_bytes,
                (to - pt.first) as u64 * block_bytes,
            );
            let tmp = staging.as_ref().expect("made for the copies");
            let enc = rec.encoder();
            for (src, dst) in [
                (pf.k.buffer(), pt.k.buffer()),
                (pf.v.buffer(), pt.v.buffer()),
            ] {
                enc.copy_buffer_to_buffer(src, of, tmp, 0, block_bytes);
                enc.copy_buffer_to_buffer(tmp, 0, dst, ot, block_bytes);
            }
        }
        if total > 0 {
            let slot_buf = self.gpu.upload(
                "paged slots",
                bytemuck::cast_slice(&slots),
                wgpu::BufferUsages::STORAGE,
            )?;
            for p in &self.parts {
                let row0 = p.first * bs as u32;
                crate::kernels::cache_write::record_cache_write(rec, k, &slot_buf, &p.k, row0)?;
                crate::kernels::cache_write::record_cache_write(rec, v, &slot_buf, &p.v, row0)?;
            }
        }
        self.manager = m;
        Ok(())
    }

    fn part_of(&self, block: u32) -> &Part {
        self.parts
            .iter()
            .find(|p| block >= p.first && block < p.first + p.blocks)
            .expect("a block of the pool")
    }

    /// Records attention of packed queries `q` `[Σ new_q, Hq, D]` (`new_q[i]`
    /// queries of sequence `seqs[i]`, its newest positions: decode 1, chunked
    /// prefill or speculative verification more) against every cached
    /// position of each sequence; O `[Σ new_q, Hq, D]`, LSE `[Hq, Σ new_q]`.
    /// Causal rules align bottom-right per sequence (the default alignment).
    pub fn record_attend(
        &self,
        rec: &mut Recorder<'_>,
        q: &Tensor,
        seqs: &[SeqId],
        new_q: &[usize],
        opts: &AttentionOptions,
    ) -> Result<Attention> {
        let [total_q, hq, d] = match *q.shape() {
            [n, h, d] => [n, h, d],
            _ => {
                return Err(Error::Shape(format!(
                    "packed queries must be [total, Hq, D], got {:?}",
                    q.shape()
                )))
            }
        };
        if seqs.len() != new_q.len() || new_q.iter().sum::<usize>() != total_q || d != self.d {
            return Err(Error::Shape(format!(
                "queries {:?} for {} sequences with counts {new_q:?}: Q must be [Σ counts, Hq, D = {}]",
                q.shape(),
                seqs.len(),
                self.d
            )));
        }
        let (table, max_blocks) = self.manager.block_table(seqs)?;
        let lens = self.manager.seq_lens(seqs)?;
        if let Some((i, _)) = new_q
            .iter()
            .zip(&lens)
            .enumerate()
            .find(|(_, (n, l))| **n > **l as usize)
        {
            return Err(Error::InvalidArgument(format!(
                "sequence {} has {} queries but holds {} positions: append its new tokens first",
                seqs[i], new_q[i], lens[i]
            )));
        }
        let mut cu = vec![0u32];
        for &n in new_q {
            cu.push(cu.last().expect("non-empty") + n as u32);
        }
        let bs = self.manager.block_size();
        let layout = SeqLayout {
            packed_q: true,
            packed_k: false,
            paged: Some(PagedLayout {
                block_size: bs,
                max_blocks,
                num_blocks: self.manager.num_blocks(),
                split: self.parts.len() > 1,
            }),
            total_q,
            per_seq_diag: opts.masking.alignment == crate::mask::Alignment::BottomRight,
        };
        let b = seqs.len();
        let index = [
            (Some(U32s::Host(&lens)), b),
            (Some(U32s::Host(&cu)), b + 1),
            (None, 0),
            (Some(U32s::Host(&table)), b * max_blocks),
        ];
        let shape = AttnShape {
            b,
            hq,
            hkv: self.hkv,
            nq: new_q.iter().copied().max().unwrap_or(1).max(1),
            nk: lens.iter().map(|&l| l as usize).max().unwrap_or(1).max(1),
            d,
        };
        let kv = self
            .parts
            .iter()
            .map(|p| {
                let rows = p.blocks as usize * bs;
                let view = |t: &Tensor| {
                    t.view(
                        &[1, self.hkv, rows, d],
                        &[rows * self.hkv * d, d, self.hkv * d, 1],
                        0,
                    )
                };
                Ok(KvPart {
                    k: view(&p.k)?,
                    v: view(&p.v)?,
                    blocks: (self.parts.len() > 1).then_some((p.first, p.first + p.blocks)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        record_seqs(rec, q, &kv, shape, layout, &index, opts)
    }
}

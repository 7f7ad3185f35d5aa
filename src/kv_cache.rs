//! A preallocated K/V cache for autoregressive decoding: append the new keys and
//! values of each step, attend with the current length.
//!
//! The cache is a list of *pages*, each a K and a V buffer of `[B, Hkv, P, D]`
//! (BHND) holding keys `p·P .. (p+1)·P`. `P` is as large as one storage binding
//! allows (`max_storage_buffer_binding_size`, 128 MiB on lavapipe), so a cache
//! longer than one binding is several pages, not an error. While the current
//! length fits in one page, [`KvCache::attend`] is exactly [`crate::attention()`] on views
//! of that page (every path and option). Past one page it runs the fused kernel
//! per page as splits (partial O and LSE per chunk of keys, the masking rules
//! shifted to the page's first key) and merges them by LSE, as the decode path
//! does: O(N) memory, any length.
//!
//! The cache holds f32, f16 or bf16 ([`KvCache::new_with_dtype`]): a page of
//! halves holds twice the positions of an f32 page in the same bytes. Appends
//! convert on the GPU (`cast`, rounding to nearest even), so the appended data
//! may have any dtype ([`KvCache::append_tensors`]).
//!
//! ```
//! use wgpu_attention::{AttentionOptions, Gpu, KvCache, Layout, Tensor};
//! # fn main() -> wgpu_attention::Result<()> {
//! let gpu = Gpu::new_blocking(&Default::default())?;
//! let (b, h, d) = (1, 2, 8);
//! let mut cache = KvCache::new(&gpu, b, h, d, 64)?;
//! // Prompt of 5 tokens, then one token per step.
//! cache.append(&vec![0.1; b * h * 5 * d], &vec![0.2; b * h * 5 * d], 5)?;
//! cache.append(&vec![0.3; b * h * d], &vec![0.4; b * h * d], 1)?;
//! assert_eq!(cache.len(), 6);
//! let q = Tensor::from_bhnd(&gpu, &vec![0.5; b * h * d], [b, h, 1, d], Layout::Bhnd)?;
//! let mut opts = AttentionOptions::default();
//! opts.masking.causal = true; // bottom-right: the query is the newest position
//! let o = cache.attend(&q, &opts)?.o.to_vec_blocking()?;
//! assert_eq!(o.len(), b * h * d);
//! # Ok(()) }
//! ```

use crate::attention::{
    plan_for, record_attention_into, Attention, AttentionOptions, AttentionOutputs,
};
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, Recorder};
use crate::plan::{AttentionProblem, DTypes, Keys};
use crate::record::{record_plan, KvSource};
use crate::shape::AttnShape;
use crate::tensor::Tensor;

/// One page: K and V `[B, Hkv, P, D]`, BHND.
struct Page {
    k: Tensor,
    v: Tensor,
}

/// A K/V cache of fixed capacity on one device; see the module docs.
pub struct KvCache {
    gpu: Gpu,
    b: usize,
    hkv: usize,
    d: usize,
    page_len: usize,
    capacity: usize,
    len: usize,
    pages: Vec<Page>,
    dtype: DType,
}

impl KvCache {
    /// A cache for `capacity` positions of `b` sequences, `hkv` key/value heads of
    /// dim `d`, with pages as long as one storage binding allows.
    pub fn new(gpu: &Gpu, b: usize, hkv: usize, d: usize, capacity: usize) -> Result<Self> {
        Self::new_with_dtype(gpu, b, hkv, d, capacity, DType::F32)
    }

    /// [`KvCache::new`] holding `dtype` elements (pages of f16 or bf16 hold
    /// twice the positions of f32 pages).
    pub fn new_with_dtype(
        gpu: &Gpu,
        b: usize,
        hkv: usize,
        d: usize,
        capacity: usize,
        dtype: DType,
    ) -> Result<Self> {
        let row = (b * hkv * d * dtype.size()).max(1) as u64;
        let limit = gpu
            .limits()
            .max_storage_buffer_binding_size
            .min(gpu.limits().max_buffer_size);
        let page_len = (limit / row) as usize;
        if page_len == 0 {
            return Err(Error::InvalidArgument(format!(
                "one position of the cache ({row} bytes for B={b}, Hkv={hkv}, D={d}) is over the \
                 storage binding limit ({limit} bytes): use fewer batches or heads per cache"
            )));
        }
        Self::with_page_len_dtype(gpu, b, hkv, d, capacity, page_len, dtype)
    }

    /// [`KvCache::new`] with at most `page_len` positions per page (tests and
    /// memory tuning; must fit one storage binding).
    pub fn with_page_len(
        gpu: &Gpu,
        b: usize,
        hkv: usize,
        d: usize,
        capacity: usize,
        page_len: usize,
    ) -> Result<Self> {
        Self::with_page_len_dtype(gpu, b, hkv, d, capacity, page_len, DType::F32)
    }

    /// [`KvCache::with_page_len`] holding `dtype` elements.
    pub fn with_page_len_dtype(
        gpu: &Gpu,
        b: usize,
        hkv: usize,
        d: usize,
        capacity: usize,
        page_len: usize,
        dtype: DType,
    ) -> Result<Self> {
        if b == 0 || hkv == 0 || d == 0 || capacity == 0 || page_len == 0 {
            return Err(Error::Shape(format!(
                "KV cache B={b}, Hkv={hkv}, D={d}, capacity={capacity}, page_len={page_len}: all must be at least 1"
            )));
        }
        let page_len = page_len.min(capacity);
        let pages = (0..capacity.div_ceil(page_len))
            .map(|p| {
                let n = page_len.min(capacity - p * page_len);
                let dims = [b, hkv, n, d];
                Ok(Page {
                    k: Tensor::output_as(gpu, "KV cache K page", &dims, None, dtype)?,
                    v: Tensor::output_as(gpu, "KV cache V page", &dims, None, dtype)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            gpu: gpu.clone(),
            b,
            hkv,
            d,
            page_len,
            capacity,
            len: 0,
            pages,
            dtype,
        })
    }

    /// The dtype the cache holds.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of K and V per position (all batches and heads).
    pub fn bytes_per_position(&self) -> usize {
        2 * self.b * self.hkv * self.d * self.dtype.size()
    }

    /// Positions filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been appended yet (or since [`KvCache::clear`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions per page (the last page may be shorter).
    pub fn page_len(&self) -> usize {
        self.page_len
    }

    /// Pages holding the current length.
    pub fn pages_in_use(&self) -> usize {
        self.len.div_ceil(self.page_len)
    }

    /// Forgets every position (the memory stays allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `n` positions: `k` and `v` hold `[B, Hkv, n, D]` in logical (BHND)
    /// order, as f32, [`half::f16`] or [`half::bf16`] (converted to the cache's
    /// dtype on the GPU). Submitted before it returns, so ordered before any
    /// later submission.
    pub fn append<T: Element>(&mut self, k: &[T], v: &[T], n: usize) -> Result<()> {
        let want = self.b * self.hkv * n * self.d;
        if k.len() != want || v.len() != want {
            return Err(Error::Shape(format!(
                "append of {n} positions needs K and V of B·Hkv·n·D = {want} values (B={}, Hkv={}, D={}), got {} and {}",
                self.b,
                self.hkv,
                self.d,
                k.len(),
                v.len()
            )));
        }
        self.check_room(n)?;
        // Uploaded in chunks of at most a page of positions, so each staging
        // tensor fits one storage binding like the pages do.
        let gpu = self.gpu.clone();
        let rows = self.b * self.hkv;
        let mut done = 0;
        while done < n {
            let run = (n - done).min(self.page_len);
            let gather = |x: &[T]| -> Vec<T> {
                (0..rows)
                    .flat_map(|r| &x[(r * n + done) * self.d..(r * n + done + run) * self.d])
                    .copied()
                    .collect()
            };
            let dims = [self.b, self.hkv, run, self.d];
            let kt = Tensor::from_slice(&gpu, &gather(k), &dims)?;
            let vt = Tensor::from_slice(&gpu, &gather(v), &dims)?;
            let mut rec = gpu.recorder();
            self.record_append(&mut rec, &kt, &vt)?;
            rec.submit()?;
            done += run;
        }
        Ok(())
    }

    /// Appends the positions of `k` and `v` `[B, Hkv, n, D]` (any dtype, any
    /// strides) without a host round trip; submitted before it returns.
    pub fn append_tensors(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let gpu = self.gpu.clone();
        let mut rec = gpu.recorder();
        self.record_append(&mut rec, k, v)?;
        rec.submit().map(|_| ())
    }

    /// Records [`KvCache::append_tensors`] into `rec` (the cache counts the
    /// positions as soon as they are recorded).
    pub fn record_append(&mut self, rec: &mut Recorder<'_>, k: &Tensor, v: &Tensor) -> Result<()> {
        let [b, h, n, d] = k.dims4("appended K")?;
        if k.shape() != v.shape() || (b, h, d) != (self.b, self.hkv, self.d) {
            return Err(Error::Shape(format!(
                "append of K {:?} and V {:?} to a cache of B={}, Hkv={}, D={}: both must be [B, Hkv, n, D]",
                k.shape(),
                v.shape(),
                self.b,
                self.hkv,
                self.d
            )));
        }
        if !k.gpu().is_same(&self.gpu) || !v.gpu().is_same(&self.gpu) {
            return Err(Error::InvalidArgument(
                "appended K/V and the KV cache are on different devices".into(),
            ));
        }
        self.check_room(n)?;
        // Runs of consecutive positions inside one page: one strided copy each.
        let mut done = 0;
        while done < n {
            let pos = self.len + done;
            let (page, at) = (pos / self.page_len, pos % self.page_len);
            let run = (n - done).min(self.page_len - at);
            let pg = &self.pages[page];
            let rows = pg.k.shape()[2];
            let dims = [self.b, self.hkv, run, self.d];
            let strides = [self.hkv * rows * self.d, rows * self.d, self.d, 1];
            for (src, dst) in [(k, &pg.k), (v, &pg.v)] {
                let s = src.strides();
                let from = src.view(&dims, s, src.offset() + done * s[2])?;
                let to = dst.view(&dims, &strides, at * self.d)?;
                crate::kernels::cast::record_cast_into(rec, &from, &to)?;
            }
            done += run;
        }
        self.len += n;
        Ok(())
    }

    /// A typed error unless `n` more positions fit.
    fn check_room(&self, n: usize) -> Result<()> {
        if self.len + n > self.capacity {
            return Err(Error::InvalidArgument(format!(
                "append of {n} positions to a cache holding {} of {}: over capacity; create the cache with a larger capacity",
                self.len, self.capacity
            )));
        }
        Ok(())
    }

    /// Views of K and V of page `p` over its filled positions.
    fn page_views(&self, p: usize) -> Result<(Tensor, Tensor, usize)> {
        let pg = &self.pages[p];
        let rows = pg.k.shape()[2];
        let n = (self.len - p * self.page_len).min(rows);
        let dims = [self.b, self.hkv, n, self.d];
        let strides = [self.hkv * rows * self.d, rows * self.d, self.d, 1];
        Ok((
            pg.k.view(&dims, &strides, 0)?,
            pg.v.view(&dims, &strides, 0)?,
            n,
        ))
    }

    /// K and V of the current length as tensors `[B, Hkv, len, D]`, when they fit
    /// in one page (`None` past one page).
    pub fn kv(&self) -> Result<Option<(Tensor, Tensor)>> {
        if self.len == 0 || self.pages_in_use() > 1 {
            return Ok(None);
        }
        let (k, v, _) = self.page_views(0)?;
        Ok(Some((k, v)))
    }

    /// Attention of `q` `[B, Hq, Nq, D]` against the cached positions
    /// `0..len` (causal masks align bottom-right by default: the queries are the
    /// newest positions), in one submission.
    pub fn attend(&self, q: &Tensor, opts: &AttentionOptions) -> Result<Attention> {
        let mut rec = q.gpu().recorder();
        let out = self.record_attend(&mut rec, q, opts)?;
        rec.submit()?;
        Ok(out)
    }

    /// Records [`KvCache::attend`] without submitting.
    pub fn record_attend(
        &self,
        rec: &mut Recorder<'_>,
        q: &Tensor,
        opts: &AttentionOptions,
    ) -> Result<Attention> {
        self.record_attend_into(rec, q, opts, AttentionOutputs::default())
    }

    /// [`KvCache::record_attend`] into the caller's outputs (as
    /// [`crate::record_attention_into`]).
    pub fn record_attend_into(
        &self,
        rec: &mut Recorder<'_>,
        q: &Tensor,
        opts: &AttentionOptions,
        outs: AttentionOutputs<'_>,
    ) -> Result<Attention> {
        if !q.gpu().is_same(&self.gpu) {
            return Err(Error::InvalidArgument(
                "Q and the KV cache are on different devices".into(),
            ));
        }
        if self.pages_in_use() <= 1 {
            let (k, v) = self.kv()?.ok_or_else(|| {
                Error::InvalidArgument("attend on an empty KV cache: append positions first".into())
            })?;
            return record_attention_into(rec, q, &k, &v, opts, outs);
        }
        // Several pages: the plan runs split-KV over them.
        let opts = &crate::attention::opts_for_outputs(opts, outs);
        let [b, hq, nq, d] = q.dims4("Q")?;
        if (b, d) != (self.b, self.d) {
            return Err(Error::Shape(format!(
                "Q is [{b}, {hq}, {nq}, {d}] but the cache holds B={}, D={}",
                self.b, self.d
            )));
        }
        let sh = AttnShape {
            b,
            hq,
            hkv: self.hkv,
            nq,
            nk: self.len,
            d,
        };
        let problem = AttentionProblem::with_shape(
            sh,
            q,
            opts,
            Keys::Pages {
                page_len: self.page_len,
            },
            DTypes {
                q: q.dtype(),
                k: self.dtype,
                v: self.dtype,
                o: opts.out_dtype.unwrap_or(q.dtype()),
            },
        )?;
        // Pages are contiguous [B, Hkv, P, D] from element 0.
        let problem = AttentionProblem {
            kv_aligned: self.d.is_multiple_of(2),
            ..problem
        };
        let plan = plan_for(rec, q, &problem, opts)?;
        let views = (0..self.pages_in_use())
            .map(|p| self.page_views(p).map(|(k, v, _)| (k, v)))
            .collect::<Result<Vec<_>>>()?;
        record_plan(rec, &plan, &problem, q, &KvSource::Pages(views), None, outs)
    }
}

//! One attention problem, validated once: its shapes and layout, its score
//! transform, what it returns, and where its keys live. No GPU data: the plan is
//! a function of this value and the device, so it can be tested without a GPU.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::attn_shape;
use crate::mask::Masking;
use crate::mask_tensor::MaskTensor;
use crate::shaders::Elem;
use crate::shape::AttnShape;
use crate::tensor::{same_device, Layout, Tensor};
use crate::transform::{MaskInfo, ScoreTransform};

/// What to compute besides `O`, and how to mask.
#[derive(Clone, Debug, Default)]
pub struct AttentionOptions<'a> {
    /// Softmax scale; `None` = `1/sqrt(D)`.
    pub scale: Option<f32>,
    /// Causal / sliding-window / key-padding rules.
    pub masking: Masking,
    /// A dense bool or additive mask broadcastable to `[B, Hq, Nq, Nk]`.
    pub mask: Option<&'a MaskTensor>,
    /// ALiBi slopes, one per query head ([`crate::alibi_slopes`] gives the paper's):
    /// `− slope·|i + offset − j|`, distance from the diagonal aligned as `masking.alignment`.
    pub alibi: Option<&'a [f32]>,
    /// `c·tanh(s/c)` on the scaled scores before masks and biases (Gemma-2 style).
    pub softcap: Option<f32>,
    /// Also return the attention weights `P` `[B, Hq, Nq, Nk]` (unfused path only).
    pub return_weights: bool,
    /// Also return the log-sum-exp `[B, Hq, Nq]` (`-inf` for fully masked rows).
    pub return_lse: bool,
    /// Which kernels run; [`AttentionPath::Auto`] by default.
    pub path: AttentionPath,
    /// Keys per split of the decode path; `None` = 512, longer past 256 splits
    /// (`Nk / 256`), and shorter where the driver's loop budget requires.
    pub kv_split: Option<usize>,
    /// How this call's kernel variants are chosen ([`TuningMode::Heuristic`]:
    /// the recorder's).
    pub tuning: TuningMode,
    /// O's dtype; `None` = Q's. The LSE is always f32.
    pub out_dtype: Option<DType>,
    /// A caller's WGSL `score_mod` / `mask_mod` with their buffers
    /// ([`crate::mods`]), on every path, combined with the options above.
    pub mods: Option<&'a crate::mods::Mods>,
    /// Attention sinks: one logit per query head that joins every row's
    /// softmax denominator and receives no value (gpt-oss, StreamingLLM), on
    /// every path. The weights then sum to less than 1, a row with no visible
    /// key gets O = 0, and the LSE includes the sink (`log(Σ exp(s_j) +
    /// exp(sink))`, finite on every row).
    pub sinks: Option<&'a [f32]>,
}

/// How a call's kernel variants are chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TuningMode {
    /// The recorder's tuning ([`crate::gpu::Gpu::tuning`], the adapter type's
    /// rules, unless [`crate::gpu::Recorder::with_tuning`] says otherwise):
    /// deterministic, nothing timed. What the tests use.
    #[default]
    Heuristic,
    /// The fastest of the candidates measured on this device for the problem's
    /// class ([`crate::plan::autotune`]): from the tuning cache, or measured on
    /// first use (within a time budget) and remembered there. A browser cannot
    /// block on the measuring: a page awaits [`crate::tune::autotune`] for its
    /// classes first (with a shorter budget); a class not tuned yet runs the
    /// heuristic's variants there.
    Autotune,
    /// These variants (checked against what the device grants).
    Fixed(crate::gpu::Tuning),
}

/// The kernels that compute attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AttentionPath {
    /// Unfused when the weights are requested; decode for few queries (≤ 16)
    /// against 1024 keys or more; otherwise fused (twice the unfused speed on
    /// lavapipe: BENCHMARKS.md), or decode where the fused kernel would exceed the
    /// driver's loop budget.
    #[default]
    Auto,
    /// One fused kernel with an online softmax: O(N) memory, no weights.
    Fused,
    /// `scores` → `softmax` → `weighted_sum`: materializes `[B, Hq, Nq, Nk]`.
    Unfused,
    /// Split-KV (flash-decoding): the fused kernel over chunks of keys in
    /// parallel, merged by LSE. For few queries against a long KV.
    Decode,
}

/// Where the keys and values live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// K and V tensors `[B, Hkv, Nk, D]`.
    Tensors,
    /// A [`crate::KvCache`] in pages of `page_len` positions (one storage
    /// binding each); more than one page is in use.
    Pages {
        /// Positions per page (the last page in use may hold fewer).
        page_len: usize,
    },
}

/// The element types of a problem's tensors: Q, K, V as given (any mix: an f32
/// or f16 Q against an f16 or bf16 KV cache), O as asked for. Kernels widen
/// every element to f32 before any arithmetic and round once when they store O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DTypes {
    /// Q's element type.
    pub q: DType,
    /// K's element type.
    pub k: DType,
    /// V's element type.
    pub v: DType,
    /// O's element type ([`AttentionOptions::out_dtype`], else Q's); the LSE
    /// and weights are always f32.
    pub o: DType,
}

impl DTypes {
    /// Every tensor of `dtype`.
    pub fn all(dtype: DType) -> Self {
        DTypes {
            q: dtype,
            k: dtype,
            v: dtype,
            o: dtype,
        }
    }

    /// `q/k/v→o` in words, `f32` when all are.
    pub fn describe(&self) -> String {
        if *self == DTypes::all(self.q) {
            return self.q.name().to_string();
        }
        format!("q {} k {} v {} → o {}", self.q, self.k, self.v, self.o)
    }
}

/// One attention problem, validated: see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionProblem {
    /// The logical sizes of Q, K and V.
    pub shape: AttnShape,
    /// Q's layout, which O is written in.
    pub layout: Layout,
    /// Scale, softcap, ALiBi and masks, resolved and checked (the scale is
    /// `1/sqrt(D)` unless given).
    pub transform: ScoreTransform,
    /// The LSE is returned ([`AttentionOptions::return_lse`]).
    pub want_lse: bool,
    /// The weights are returned ([`AttentionOptions::return_weights`]; only
    /// the unfused path builds them).
    pub want_weights: bool,
    /// The path asked for ([`AttentionPath::Auto`] lets the plan choose).
    pub path: AttentionPath,
    /// Keys per decode split asked for.
    pub kv_split: Option<usize>,
    /// Where K and V live: tensors, or the pages of a [`crate::KvCache`].
    pub keys: Keys,
    /// The element types of Q, K, V and O.
    pub dtypes: DTypes,
    /// Every K and V row starts at an even element and D has unit stride (set
    /// from the tensors; KV-cache pages of an even D are).
    pub kv_aligned: bool,
    /// Sequences of different lengths ([`crate::seqs`]): packed queries and
    /// keys, or keys in a paged pool; `None` for rectangular tensors.
    pub seqs: Option<SeqLayout>,
}

/// Sequences of different lengths in one problem ([`crate::seqs`]): `shape`
/// holds the longest (`nq` = `max_seqlen_q`, `nk` = `max_seqlen_k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqLayout {
    /// Q and O packed `[total_q, Hq, D]`, sequence `b`'s rows from
    /// `cu_seqlens_q[b]`; the LSE is `[Hq, total_q]`.
    pub packed_q: bool,
    /// K and V packed `[total_k, Hkv, D]` from `cu_seqlens_k[b]`.
    pub packed_k: bool,
    /// K and V in a pool of blocks through a block table.
    pub paged: Option<PagedLayout>,
    /// Rows of packed Q.
    pub total_q: usize,
    /// Causal and window rules align bottom-right per sequence (its queries
    /// are its newest positions); else top-left.
    pub per_seq_diag: bool,
}

/// A paged KV pool: `num_blocks` blocks of `block_size` positions,
/// `max_blocks` block-table entries per sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagedLayout {
    /// Positions per block.
    pub block_size: usize,
    /// Table entries per sequence.
    pub max_blocks: usize,
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// The pool spans several storage bindings: each launch reads one and
    /// excludes the keys of the others' blocks (decode path, merged).
    pub split: bool,
}

/// Largest head dim of the fused kernels (private row buffers are sized for it).
pub const MAX_HEAD_DIM: usize = 256;

impl AttentionProblem {
    /// `q` `[B, Hq, Nq, D]` against `k`, `v` `[B, Hkv, Nk, D]` under `opts`, every
    /// input checked: devices, shapes, head counts, key lengths, softcap, ALiBi
    /// slopes, the mask's broadcast, weights only on the unfused path.
    pub fn new(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Self> {
        let shape = attn_shape(q, k)?;
        same_device(k, v, "K and V")?;
        let (b, hkv, nk, d) = (shape.b, shape.hkv, shape.nk, shape.d);
        let [bv, hv, nv, dv] = v.dims4("V")?;
        if (bv, hv, nv, dv) != (b, hkv, nk, d) {
            return Err(Error::Shape(format!(
                "V is [{bv}, {hv}, {nv}, {dv}] but K is [{b}, {hkv}, {nk}, {d}]: V must be shaped like K"
            )));
        }
        let dtypes = DTypes {
            q: q.dtype(),
            k: k.dtype(),
            v: v.dtype(),
            o: opts.out_dtype.unwrap_or(q.dtype()),
        };
        let even_rows = |t: &Tensor| {
            let s = t.strides();
            s[3] == 1 && t.offset().is_multiple_of(2) && s[..3].iter().all(|x| x.is_multiple_of(2))
        };
        let mut p = Self::with_shape(shape, q, opts, Keys::Tensors, dtypes)?;
        p.kv_aligned = even_rows(k) && even_rows(v);
        Ok(p)
    }

    /// The problem of `q` against `shape.nk` positions held as `keys` (the KV
    /// cache's pages), `opts` checked as in [`AttentionProblem::new`].
    pub(crate) fn with_shape(
        shape: AttnShape,
        q: &Tensor,
        opts: &AttentionOptions,
        keys: Keys,
        dtypes: DTypes,
    ) -> Result<Self> {
        shape.validate()?;
        let sh = shape;
        opts.masking.validate(sh.b, sh.nk)?;
        let mask = match opts.mask {
            Some(m) => {
                m.check_device(q.gpu())?;
                Some(MaskInfo::of(m, [sh.b, sh.hq, sh.nq, sh.nk])?)
            }
            None => None,
        };
        if opts.return_weights && matches!(opts.path, AttentionPath::Fused | AttentionPath::Decode)
        {
            return Err(Error::InvalidArgument(
                "only the unfused path builds the weights: use AttentionPath::Unfused (or Auto) with return_weights".into(),
            ));
        }
        let transform = ScoreTransform {
            scale: opts.scale.unwrap_or(sh.default_scale() as f32),
            softcap: opts.softcap,
            alibi: opts.alibi.map(<[f32]>::to_vec),
            sinks: opts.sinks.map(<[f32]>::to_vec),
            masking: opts.masking.clone(),
            diag_off: opts.masking.diagonal_offset(sh.nq, sh.nk),
            mask,
            mods: opts.mods.map(|m| crate::mods::ModRef {
                mods: m.clone(),
                b0: 0,
                h0: 0,
                kv0: 0,
                dims: [sh.b, sh.hq, sh.nq, sh.nk],
            }),
        };
        transform.validate(sh.hq)?;
        Ok(AttentionProblem {
            shape: sh,
            layout: q.layout(),
            transform,
            want_lse: opts.return_lse,
            want_weights: opts.return_weights,
            path: opts.path,
            kv_split: opts.kv_split,
            keys,
            dtypes,
            kv_aligned: false,
            seqs: None,
        })
    }

    /// A problem of `shape` with default options and no data (plans, tests,
    /// memory estimates).
    pub fn of_shape(shape: AttnShape) -> Result<Self> {
        shape.validate()?;
        Ok(AttentionProblem {
            shape,
            layout: Layout::Bhnd,
            transform: ScoreTransform {
                scale: shape.default_scale() as f32,
                softcap: None,
                alibi: None,
                sinks: None,
                masking: Masking::default(),
                diag_off: Masking::default().diagonal_offset(shape.nq, shape.nk),
                mask: None,
                mods: None,
            },
            want_lse: false,
            want_weights: false,
            path: AttentionPath::Auto,
            kv_split: None,
            keys: Keys::Tensors,
            dtypes: DTypes::default(),
            kv_aligned: false,
            seqs: None,
        })
    }

    /// The same problem over tensors of `dtypes`.
    pub fn with_dtypes(mut self, dtypes: DTypes) -> Self {
        self.dtypes = dtypes;
        self
    }

    /// Bytes of Q, K, V and the dense mask.
    pub fn input_bytes(&self) -> u64 {
        let sh = &self.shape;
        let t = &self.dtypes;
        (sh.q_len() * t.q.size() + sh.kv_len() * (t.k.size() + t.v.size())) as u64
            + self.transform.mask.map_or(0, |m| m.bytes)
    }

    /// The element storage of the fused kernels' Q, K, V and O bindings on a
    /// device that does (`native_f16`) or does not grant `SHADER_F16`; O is f32
    /// when a launch writes split-KV partials (`partials`); K and V packed when
    /// the kernel loads them as words of two halves (`pairs`).
    pub(crate) fn elems(
        &self,
        native_f16: bool,
        partials: bool,
        pairs: bool,
    ) -> [(&'static str, Elem); 4] {
        let e = |d| Elem::of(d, native_f16);
        let kv = |d| Elem::of(d, native_f16 && !pairs);
        let o = if partials {
            Elem::F32
        } else {
            e(self.dtypes.o)
        };
        [
            ("q", e(self.dtypes.q)),
            ("k", kv(self.dtypes.k)),
            ("v", kv(self.dtypes.v)),
            ("o", o),
        ]
    }

    /// Whether Q and K are both stored in f16, so the cooperative-matrix kernel's
    /// f16 products read them exactly ([`crate::gpu::Coop::Auto`]).
    pub fn qk_f16(&self) -> bool {
        self.dtypes.q == DType::F16 && self.dtypes.k == DType::F16
    }

    /// Whether K and V can be loaded as words of two halves: both f16 or bf16,
    /// every row starting at an even element with unit stride along D.
    pub fn kv_pairs(&self) -> bool {
        self.kv_aligned && self.dtypes.k != DType::F32 && self.dtypes.v != DType::F32
    }
}

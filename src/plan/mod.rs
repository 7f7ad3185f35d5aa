//! The plan: which kernels run for a problem on a device, in what shape, with
//! which grid, splits, chunks and pages, and how much memory they hold. It is
//! the one place that decides; `attention()`, `KvCache::attend`, `attn bench`,
//! `attn info` and the web page all go through [`plan()`].
//!
//! A plan is a function of an [`AttentionProblem`] (shapes and options, no
//! data), a device's [`DeviceCaps`] and a [`Tuning`], so it is tested without a
//! GPU (`plan/tests.rs`); recording a plan is `attention.rs`'s job.

pub mod autotune;
mod coop;
mod decode;
mod fused;
mod problem;
mod specs;
#[cfg(test)]
mod tests;
mod unfused;

pub use decode::{DEFAULT_SPLIT, FEW_QUERIES, TARGET_SPLITS};
pub use problem::{
    AttentionOptions, AttentionPath, AttentionProblem, DTypes, Keys, PagedLayout, SeqLayout,
    TuningMode, MAX_HEAD_DIM,
};
pub use specs::specializations;

use crate::error::{Error, Result};
use crate::gpu::{DeviceCaps, Tuning};
use crate::kernels::decode::combine_loop_iterations;
use crate::kernels::flash_attention::FusedLaunch;
use crate::kernels::TileConfig;
use crate::shape::AttnShape;
use fused::Splits;

/// One fused launch over keys `p0 .. p0 + n` (a KV-cache page, or all keys),
/// writing split-KV partials from split `first_split` of the stack on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PageLaunch {
    pub p0: usize,
    pub n: usize,
    pub first_split: usize,
    pub launch: FusedLaunch,
}

/// What runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Steps {
    /// One fused kernel.
    Fused(FusedLaunch),
    /// The fused kernel over key splits (per page), writing `total_splits`
    /// partials, then their merge.
    Decode {
        pages: Vec<PageLaunch>,
        total_splits: usize,
    },
    /// scores → softmax → weighted sum, whole or in chunks of query heads.
    Unfused(UnfusedLaunch),
}

/// The unfused path's kernels: output tiles of scores and weighted sum,
/// invocations per softmax row, and the chunk of query heads per pass (`None`:
/// all at once).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UnfusedLaunch {
    pub tile: TileConfig,
    pub softmax_wg: u32,
    pub chunk_heads: Option<usize>,
}

/// A decided plan for one problem on one device: see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The path that runs (what [`AttentionPath::Auto`] resolved to).
    pub path: AttentionPath,
    pub(crate) steps: Steps,
    pub(crate) tuning: Tuning,
    shape: AttnShape,
    peak_bytes: u64,
    scratch_bytes: u64,
}

impl Plan {
    /// Bytes of the buffers held during the run: Q, K, V, the dense mask, the
    /// outputs (O, LSE, weights) and the path's scratch (split-KV partials,
    /// unfused scores and weights of one pass).
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes
    }

    /// Bytes of the path's scratch alone: split-KV partials (decode), scores and
    /// weights of one pass and a chunk's LSE (unfused); 0 for the fused path.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch_bytes
    }

    /// The kernel variants the plan was made with (granted by the device).
    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Split-KV partials written (decode), 1 otherwise.
    pub fn splits(&self) -> usize {
        match &self.steps {
            Steps::Decode { total_splits, .. } => *total_splits,
            _ => 1,
        }
    }

    /// Query heads the unfused path holds scores for at once (all B·Hq in one
    /// pass unless it runs in chunks); `None` on the other paths.
    pub fn unfused_heads_per_pass(&self) -> Option<usize> {
        match &self.steps {
            Steps::Unfused(u) => Some(u.chunk_heads.unwrap_or(self.shape.b * self.shape.hq)),
            _ => None,
        }
    }

    /// The plan in one line, e.g. `fused: flash_attention_cpu: 8 rows × 4 keys
    /// per lane, K/V shared across subgroups of 8, D bucket 64; 128 workgroups`.
    pub fn describe(&self) -> String {
        match &self.steps {
            Steps::Fused(l) => format!(
                "fused: {}; {} workgroups",
                l.variant.describe(),
                l.workgroups
            ),
            Steps::Decode {
                pages,
                total_splits,
            } => {
                let l = &pages[0].launch;
                format!(
                    "decode: {total_splits} splits of {} keys{} ({}{}) + combine",
                    l.split_len,
                    if pages.len() > 1 {
                        format!(" over {} pages", pages.len())
                    } else {
                        String::new()
                    },
                    l.variant.describe(),
                    if l.lane_splits {
                        ", lanes over splits"
                    } else {
                        ""
                    }
                )
            }
            Steps::Unfused(u) => match u.chunk_heads {
                None => "unfused: scores → softmax → weighted_sum".into(),
                Some(h) => {
                    format!("unfused: scores → softmax → weighted_sum in chunks of {h} query heads")
                }
            },
        }
    }
}

/// The plan of `problem` on a device with `caps`, under `tuning` (the device's
/// granted one: [`crate::gpu::Gpu::tuning`] or a call's own). Fails with the typed
/// error the run would hit: a head dim the fused kernels lack, a driver loop
/// budget, an option the path cannot give.
///
/// No GPU is needed: here a discrete GPU with WebGPU's default limits is
/// described as a value.
///
/// ```
/// use wgpu_attention::gpu::{DeviceCaps, Tuning};
/// use wgpu_attention::{plan, wgpu, AttentionPath, AttentionProblem, AttnShape};
/// # fn main() -> wgpu_attention::Result<()> {
/// let info = wgpu::AdapterInfo {
///     name: "a GPU".into(),
///     subgroup_min_size: 32,
///     subgroup_max_size: 32,
///     ..wgpu::AdapterInfo::new(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan)
/// };
/// let caps = DeviceCaps::new(&info, wgpu::Limits::default(), wgpu::Features::SUBGROUP);
/// let tuning = Tuning::for_adapter(&info);
///
/// let prefill = AttnShape { b: 1, hq: 8, hkv: 8, nq: 1024, nk: 1024, d: 64 };
/// let p = plan(&AttentionProblem::of_shape(prefill)?, &caps, tuning)?;
/// assert_eq!(p.path, AttentionPath::Fused);
/// assert_eq!(p.peak_bytes(), 4 * (2 << 20)); // Q, K, V and O: 2 MiB each, no scratch
/// println!("{}", p.describe());
///
/// // One query against 32k keys: split-KV decode, partials merged by LSE.
/// let decode = AttnShape { nq: 1, nk: 32768, ..prefill };
/// let p = plan(&AttentionProblem::of_shape(decode)?, &caps, tuning)?;
/// assert_eq!(p.path, AttentionPath::Decode);
/// assert!(p.splits() > 1 && p.scratch_bytes() > 0);
/// # Ok(()) }
/// ```
pub fn plan(problem: &AttentionProblem, caps: &DeviceCaps, tuning: Tuning) -> Result<Plan> {
    let tuning = tuning.granted(caps.features);
    let sh = problem.shape;
    let path = choose_path(problem, caps, tuning)?;
    let steps = match path {
        AttentionPath::Fused => Steps::Fused(fused::launch(
            &sh,
            &problem.transform,
            caps,
            tuning,
            None,
            problem,
        )?),
        AttentionPath::Decode => decode_steps(problem, caps, tuning)?,
        _ => Steps::Unfused(unfused::launch(problem, caps, tuning)?),
    };
    let rows = (sh.b * sh.hq * sh.nq) as u64;
    let outputs =
        (problem.dtypes.o.size() * sh.q_len()) as u64 + if problem.want_lse { 4 * rows } else { 0 };
    let scratch = match &steps {
        Steps::Fused(_) => 0,
        Steps::Decode { total_splits, .. } => 4 * *total_splits as u64 * rows * (sh.d as u64 + 1),
        Steps::Unfused(u) => {
            let heads = u.chunk_heads.unwrap_or(sh.b * sh.hq) as u64;
            let lse_chunk = if u.chunk_heads.is_some() && problem.want_lse {
                4 * heads * sh.nq as u64
            } else {
                0
            };
            2 * 4 * heads * (sh.nq * sh.nk) as u64 + lse_chunk
        }
    };
    Ok(Plan {
        path,
        steps,
        tuning,
        shape: sh,
        peak_bytes: problem.input_bytes() + outputs + scratch,
        scratch_bytes: scratch,
    })
}

/// The path: the one asked for, or what [`AttentionPath::Auto`] resolves to.
fn choose_path(p: &AttentionProblem, caps: &DeviceCaps, tuning: Tuning) -> Result<AttentionPath> {
    let sh = &p.shape;
    if let Keys::Pages { .. } = p.keys {
        if p.want_weights || p.path == AttentionPath::Unfused {
            return Err(Error::InvalidArgument(format!(
                "the KV cache holds {} positions in several pages (one storage binding each): only the \
                 fused/decode paths run across pages; the weights ([B, Hq, Nq, {}]) cannot be built",
                sh.nk, sh.nk
            )));
        }
        if p.transform.mask.is_some() {
            return Err(Error::InvalidArgument(format!(
                "the KV cache holds {} positions in several pages: dense mask tensors are not supported \
                 across pages; express the mask with Masking rules (causal, window, key_lengths)",
                sh.nk
            )));
        }
        return Ok(AttentionPath::Decode);
    }
    if p.seqs.is_some() {
        if p.want_weights || p.path == AttentionPath::Unfused {
            return Err(Error::InvalidArgument(
                "packed or paged sequences run on the fused and decode paths: the weights cannot be built; use AttentionPath::Fused, Decode or Auto".into(),
            ));
        }
        if p.transform.mask.is_some() || p.transform.masking.key_lengths.is_some() {
            return Err(Error::InvalidArgument(
                "packed or paged sequences take their lengths from cu_seqlens / the sequence lengths: give no dense mask or key_lengths (use causal, window, ALiBi, softcap, sinks or mods)".into(),
            ));
        }
    }
    Ok(match p.path {
        AttentionPath::Auto if p.want_weights => AttentionPath::Unfused,
        AttentionPath::Auto if sh.nq <= FEW_QUERIES && sh.nk >= 1024 => AttentionPath::Decode,
        AttentionPath::Auto if fused::fits_unsplit(caps, tuning, p)? => AttentionPath::Fused,
        AttentionPath::Auto => AttentionPath::Decode,
        other => other,
    })
}

/// Decode: the key range (or each page) in splits, then the merge.
fn decode_steps(p: &AttentionProblem, caps: &DeviceCaps, tuning: Tuning) -> Result<Steps> {
    let sh = p.shape;
    let page_len = match p.keys {
        Keys::Pages { page_len } => page_len,
        Keys::Tensors => sh.nk,
    };
    let preferred = decode::preferred_split(sh.nq, sh.nk).min(page_len);
    let variant = fused::variant_for(caps, tuning, sh.d, sh.nq, p.qk_f16())?;
    let mut pages = Vec::new();
    let mut total = 0;
    for p0 in (0..sh.nk).step_by(page_len) {
        let n = page_len.min(sh.nk - p0);
        let s: Splits = decode::splits(caps, variant, n, sh.d, preferred, p.kv_split);
        let page_shape = AttnShape { nk: n, ..sh };
        let t = p.transform.for_page(p0, n);
        pages.push(PageLaunch {
            p0,
            n,
            first_split: total,
            launch: fused::launch(&page_shape, &t, caps, tuning, Some(s), p)?,
        });
        total += s.splits;
    }
    caps.check_loop_budget("decode combine", combine_loop_iterations(total, sh.d))?;
    Ok(Steps::Decode {
        pages,
        total_splits: total,
    })
}

/// The fused kernel a device with `caps` runs for head dim `d` under `tuning`
/// with many queries over f32 Q and K, in words (for `attn info` and logs).
pub fn describe_fused_kernel(caps: &DeviceCaps, tuning: Tuning, d: usize) -> String {
    describe_fused_kernel_for(caps, tuning, d, crate::DType::F32)
}

/// [`describe_fused_kernel`] for Q and K of `dtype` (f16 ones may take the
/// cooperative-matrix kernel, [`crate::gpu::Coop`]); a forced kernel the device
/// cannot run is described by its error.
pub fn describe_fused_kernel_for(
    caps: &DeviceCaps,
    tuning: Tuning,
    d: usize,
    dtype: crate::DType,
) -> String {
    let t = tuning.granted(caps.features);
    match fused::variant_for(caps, t, d, fused::MANY_QUERIES, dtype == crate::DType::F16) {
        Ok(v) => v.describe(),
        Err(e) => format!("none: {e}"),
    }
}

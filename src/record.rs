//! Recording a plan: the kernels a [`Plan`] lists, over the problem's tensors
//! (or a KV cache's pages), into one command encoder. Decides nothing.

use crate::error::{Error, Result};
use crate::gpu::Recorder;
use crate::kernels::flash_attention::{record_fused, FusedOut};
use crate::kernels::{decode, scores, softmax, weighted_sum};
use crate::mask_tensor::MaskTensor;
use crate::plan::{AttentionPath, AttentionProblem, PageLaunch, Plan, Steps, UnfusedLaunch};
use crate::tensor::Tensor;
use crate::transform::ScoreTransform;

/// Results of [`crate::attention()`].
#[derive(Clone, Debug)]
pub struct Attention {
    /// `[B, Hq, Nq, D]`, stored in the same layout as Q.
    pub o: Tensor,
    /// Log-sum-exp of each row's scores, f32 `[B, Hq, Nq]` (`-inf` for a fully
    /// masked row), when asked for ([`crate::AttentionOptions::return_lse`]).
    pub lse: Option<Tensor>,
    /// The softmax weights `P`, f32 `[B, Hq, Nq, Nk]`, when asked for
    /// ([`crate::AttentionOptions::return_weights`]; unfused path).
    pub weights: Option<Tensor>,
    /// The path that ran (what [`AttentionPath::Auto`] resolved to).
    pub path: AttentionPath,
    /// The kernels that ran and their shapes ([`crate::Plan::describe`]), e.g.
    /// what [`crate::TuningMode::Autotune`] chose.
    pub kernels: String,
}

/// Where a recording writes its results: the caller's tensors, or (`None`)
/// new ones ([`crate::record_attention_into`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionOutputs<'a> {
    /// O `[B, Hq, Nq, D]`, any strides, in the output dtype
    /// ([`crate::AttentionOptions::out_dtype`], which defaults to this tensor's
    /// dtype when O is given).
    pub o: Option<&'a Tensor>,
    /// The LSE, f32 `[B, Hq, Nq]` contiguous (at any element offset); giving
    /// one asks for it.
    pub lse: Option<&'a Tensor>,
}

/// The keys and values a plan reads: tensors, or a KV cache's pages in order
/// (each `[B, Hkv, n, D]`).
pub(crate) enum KvSource<'a> {
    Tensors(&'a Tensor, &'a Tensor),
    Pages(Vec<(Tensor, Tensor)>),
}

/// Records `plan` for `problem` (whose dense mask is `mask`) into `outs` or
/// new outputs. Its scratch comes from the recorder's workspace, if any, and
/// is handed back once the plan is recorded.
pub(crate) fn record_plan(
    rec: &mut Recorder<'_>,
    plan: &Plan,
    problem: &AttentionProblem,
    q: &Tensor,
    keys: &KvSource<'_>,
    mask: Option<&MaskTensor>,
    outs: AttentionOutputs<'_>,
) -> Result<Attention> {
    check_outputs(problem, q, keys, outs, plan)?;
    let mark = rec.scratch_mark();
    let out = record_plan_steps(rec, plan, problem, q, keys, mask, outs);
    rec.release_scratch(mark);
    out
}

/// Checks the caller's outputs against the problem before anything is recorded.
fn check_outputs(
    problem: &AttentionProblem,
    q: &Tensor,
    keys: &KvSource<'_>,
    outs: AttentionOutputs<'_>,
    plan: &Plan,
) -> Result<()> {
    let sh = problem.shape;
    let mut inputs: Vec<(&str, &Tensor)> = vec![("Q", q)];
    match keys {
        KvSource::Tensors(k, v) => inputs.extend([("K", *k), ("V", *v)]),
        KvSource::Pages(pages) => {
            for (k, v) in pages {
                inputs.extend([("a KV-cache page", k), ("a KV-cache page", v)]);
            }
        }
    }
    let aliases = |what: &str, t: &Tensor| -> Result<()> {
        if !t.gpu().is_same(q.gpu()) {
            return Err(Error::InvalidArgument(format!(
                "{what} lives on another device than Q"
            )));
        }
        match inputs.iter().find(|(_, i)| i.same_buffer(t)) {
            Some((name, _)) => Err(Error::InvalidArgument(format!(
                "{what} shares its buffer with {name}: a kernel cannot write its output into a buffer it reads; give the output a buffer of its own"
            ))),
            None => Ok(()),
        }
    };
    if let Some(o) = outs.o {
        let want = [sh.b, sh.hq, sh.nq, sh.d];
        if o.shape() != want {
            return Err(Error::Shape(format!(
                "the output O is {:?} but this problem's O is [B, Hq, Nq, D] = {want:?}",
                o.shape()
            )));
        }
        if o.dtype() != problem.dtypes.o {
            return Err(Error::InvalidArgument(format!(
                "the output O is {} but the options ask for {} (AttentionOptions::out_dtype): make them agree, or leave out_dtype None",
                o.dtype(),
                problem.dtypes.o
            )));
        }
        aliases("the output O", o)?;
    }
    if let Some(lse) = outs.lse {
        let want = [sh.b, sh.hq, sh.nq];
        if lse.shape() != want || lse.dtype() != crate::DType::F32 {
            return Err(Error::Shape(format!(
                "the output LSE is {} {:?} but must be f32 [B, Hq, Nq] = {want:?}",
                lse.dtype(),
                lse.shape()
            )));
        }
        if lse.strides() != [sh.hq * sh.nq, sh.nq, 1] {
            return Err(Error::InvalidArgument(format!(
                "the output LSE has strides {:?}: it must be contiguous [B, Hq, Nq] (any element offset)",
                lse.strides()
            )));
        }
        aliases("the output LSE", lse)?;
        if outs.o.is_some_and(|o| o.same_buffer(lse)) {
            return Err(Error::InvalidArgument(
                "the outputs O and LSE share a buffer: give each its own".into(),
            ));
        }
        let chunked = matches!(&plan.steps, Steps::Unfused(u) if u.chunk_heads.is_some());
        if chunked && !lse.buffer().usage().contains(wgpu::BufferUsages::COPY_DST) {
            return Err(Error::InvalidArgument(
                "the output LSE's buffer lacks BufferUsages::COPY_DST, which the unfused path in chunks of heads copies each chunk's LSE in with".into(),
            ));
        }
    }
    Ok(())
}

fn record_plan_steps(
    rec: &mut Recorder<'_>,
    plan: &Plan,
    problem: &AttentionProblem,
    q: &Tensor,
    keys: &KvSource<'_>,
    mask: Option<&MaskTensor>,
    outs: AttentionOutputs<'_>,
) -> Result<Attention> {
    // Every kernel's variant comes from the plan (its launches carry their
    // specializations), not from the recorder's tuning.
    let gpu = q.gpu();
    let sh = problem.shape;
    let t = &problem.transform;
    let o_dims = [sh.b, sh.hq, sh.nq, sh.d];
    let new_o = || match outs.o {
        Some(o) => Ok(o.clone()),
        None => Tensor::output_as(
            gpu,
            "attention output",
            &o_dims,
            Some(problem.layout.strides(o_dims).to_vec()),
            problem.dtypes.o,
        ),
    };
    let new_lse = || match outs.lse {
        Some(lse) => Ok(Some(lse.clone())),
        None => problem
            .want_lse
            .then(|| Tensor::output(gpu, "lse", &[sh.b, sh.hq, sh.nq], None))
            .transpose(),
    };
    let (o, lse, weights) = match (&plan.steps, keys) {
        (Steps::Fused(launch), KvSource::Tensors(k, v)) => {
            let (o, lse) = (new_o()?, new_lse()?);
            let out = FusedOut {
                o: &o,
                lse: lse.as_ref(),
                o_ss: 0,
                lse_ss: 0,
                partial: false,
            };
            record_fused(rec, launch, [q, k, v], t, mask, out, None)?;
            (o, lse, None)
        }
        (
            Steps::Decode {
                pages,
                total_splits,
            },
            keys,
        ) => {
            let (o, lse) = (new_o()?, new_lse()?);
            record_decode(
                rec,
                problem,
                q,
                keys,
                mask,
                pages,
                *total_splits,
                &o,
                lse.as_ref(),
            )?;
            (o, lse, None)
        }
        (Steps::Unfused(u), KvSource::Tensors(k, v)) => {
            let (o, lse) = (new_o()?, new_lse()?);
            let weights = match u.chunk_heads {
                None => record_unfused(rec, problem, u, [q, k, v], mask, &o, lse.as_ref())?,
                Some(heads) => {
                    record_unfused_chunked(
                        rec,
                        problem,
                        u,
                        [q, k, v],
                        mask,
                        heads,
                        &o,
                        lse.as_ref(),
                    )?;
                    None
                }
            };
            (o, lse, weights)
        }
        _ => unreachable!("plans over KV-cache pages are decode plans"),
    };
    Ok(Attention {
        o,
        lse,
        weights,
        path: plan.path,
        kernels: plan.describe(),
    })
}

/// Split-KV: each page's launch writes its partials into its place in one
/// stack, then the merge into `o` (and `lse`).
#[expect(
    clippy::too_many_arguments,
    reason = "the problem, its inputs, the plan's pages and the two outputs"
)]
fn record_decode(
    rec: &mut Recorder<'_>,
    problem: &AttentionProblem,
    q: &Tensor,
    keys: &KvSource<'_>,
    mask: Option<&MaskTensor>,
    pages: &[PageLaunch],
    total: usize,
    o: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let sh = problem.shape;
    let rows = sh.b * sh.hq * sh.nq;
    let o_part = rec.scratch(
        "decode partial O",
        &[total, sh.b, sh.hq, sh.nq, sh.d],
        crate::DType::F32,
    )?;
    let lse_part = rec.scratch("decode partial LSE", &[total, rows], crate::DType::F32)?;
    for (i, page) in pages.iter().enumerate() {
        let (k, v) = match keys {
            KvSource::Tensors(k, v) => (*k, *v),
            KvSource::Pages(views) => (&views[i].0, &views[i].1),
        };
        let first_o = o_part.view(
            &[sh.b, sh.hq, sh.nq, sh.d],
            &[sh.hq * sh.nq * sh.d, sh.nq * sh.d, sh.d, 1],
            page.first_split * sh.q_len(),
        )?;
        let lse_p = lse_part.view(
            &[page.launch.splits, rows],
            &[rows, 1],
            page.first_split * rows,
        )?;
        let out = FusedOut {
            o: &first_o,
            lse: Some(&lse_p),
            o_ss: sh.q_len() as u32,
            lse_ss: rows as u32,
            partial: true,
        };
        let t = problem.transform.for_page(page.p0, page.n);
        record_fused(rec, &page.launch, [q, k, v], &t, mask, out, None)?;
    }
    let sinks = problem.transform.sinks.as_deref();
    decode::record_combine(rec, &o_part, &lse_part, total, &sh, sinks, o, lse, None)
}

/// The unfused path in one pass, into `o` and `lse`; the weights when the
/// problem asks for them.
fn record_unfused(
    rec: &mut Recorder<'_>,
    problem: &AttentionProblem,
    u: &UnfusedLaunch,
    [q, k, v]: [&Tensor; 3],
    mask: Option<&MaskTensor>,
    o: &Tensor,
    lse: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    let sh = problem.shape;
    let t = &problem.transform;
    let dims = [sh.b, sh.hq, sh.nq, sh.nk];
    let s = rec.scratch("scores", &dims, crate::DType::F32)?;
    scores::record_scores_into(rec, q, k, t, mask, &s, &u.tile)?;
    let p = if problem.want_weights {
        Tensor::output(q.gpu(), "attention weights", &dims, None)?
    } else {
        rec.scratch("attention weights", &dims, crate::DType::F32)?
    };
    softmax::record_softmax_into(rec, &s, &softmax_part(t), mask, &p, lse, u.softmax_wg)?;
    weighted_sum::record_weighted_sum_into(rec, &p, v, o, &u.tile)?;
    Ok(problem.want_weights.then_some(p))
}

/// What the softmax applies in the unfused path: the rules and a bool mask (an
/// additive one went into the scores).
fn softmax_part(t: &ScoreTransform) -> ScoreTransform {
    ScoreTransform {
        mask: t.bool_mask(),
        ..t.clone()
    }
}

/// The unfused path in chunks of (batch b, `heads` query heads from h0): each
/// chunk's scores and weights go to the same two scratch tensors (recorded in
/// order, so each chunk waits for the previous one), O to its view of the whole
/// output, LSE through a scratch copied into place.
#[expect(
    clippy::too_many_arguments,
    reason = "the chunked recording's inputs and outputs, each used once"
)]
fn record_unfused_chunked(
    rec: &mut Recorder<'_>,
    problem: &AttentionProblem,
    u: &UnfusedLaunch,
    [q, k, v]: [&Tensor; 3],
    mask: Option<&MaskTensor>,
    heads: usize,
    o: &Tensor,
    lse: Option<&Tensor>,
) -> Result<()> {
    let sh = problem.shape;
    let chunk = [1, heads, sh.nq, sh.nk];
    let f32 = crate::DType::F32;
    let s = rec.scratch("scores (chunk)", &chunk, f32)?;
    let p = rec.scratch("attention weights (chunk)", &chunk, f32)?;
    let lse_part = lse
        .map(|_| rec.scratch("lse (chunk)", &[1, heads, sh.nq], f32))
        .transpose()?;
    let kv_heads = (heads / sh.group()).max(1);
    for b in 0..sh.b {
        for h0 in (0..sh.hq).step_by(heads) {
            let t = problem.transform.for_chunk(b, h0, heads);
            let qc = heads_view(q, b, h0, heads)?;
            let kc = heads_view(k, b, h0 / sh.group(), kv_heads)?;
            let vc = heads_view(v, b, h0 / sh.group(), kv_heads)?;
            scores::record_scores_into(rec, &qc, &kc, &t, mask, &s, &u.tile)?;
            let sm = softmax_part(&t);
            softmax::record_softmax_into(rec, &s, &sm, mask, &p, lse_part.as_ref(), u.softmax_wg)?;
            let oc = heads_view(o, b, h0, heads)?;
            weighted_sum::record_weighted_sum_into(rec, &p, &vc, &oc, &u.tile)?;
            if let (Some(all), Some(part)) = (lse, &lse_part) {
                rec.encoder().copy_buffer_to_buffer(
                    part.buffer(),
                    0,
                    all.buffer(),
                    ((all.offset() + (b * sh.hq + h0) * sh.nq) * 4) as u64,
                    (heads * sh.nq * 4) as u64,
                );
            }
        }
    }
    Ok(())
}

/// `[1, n, N, D]`: heads h0..h0+n of batch b of a `[B, H, N, D]` tensor.
fn heads_view(t: &Tensor, b: usize, h0: usize, n: usize) -> Result<Tensor> {
    let st = t.strides();
    let shape = t.shape();
    t.view(
        &[1, n, shape[2], shape[3]],
        st,
        t.offset() + b * st[0] + h0 * st[1],
    )
}

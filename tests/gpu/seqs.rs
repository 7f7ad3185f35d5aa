//! Packed variable-length batches and paged KV pools (`wgpu_attention::seqs`)
//! against the f64 reference per sequence: ragged lengths including 0 and 1,
//! every option, fused and decode paths, block tables that are not contiguous
//! and share blocks, block sizes that do not divide the lengths, prefix sums
//! and tables given from the host or as GPU buffers, and the typed errors.

use super::{each_fused_gpu, each_gpu_skipping, rng, run, uniform, Skip};
use rand::seq::SliceRandom;
use rand::Rng;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::seqs::{
    record_paged_attention, record_varlen_attention, PagedKv, U32s, Varlen,
};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    Alignment, AttentionOptions, AttentionPath, AttnShape, Error, Gpu, Layout, Masking, Tensor,
    Window,
};

/// The options a case runs with, on GPU and reference alike.
#[derive(Clone)]
struct Opts {
    masking: Masking,
    alibi: bool,
    softcap: Option<f32>,
    sinks: bool,
}

fn option_sets() -> Vec<Opts> {
    let br = Masking {
        causal: true,
        ..Default::default()
    };
    vec![
        Opts {
            masking: br.clone(),
            alibi: false,
            softcap: None,
            sinks: false,
        },
        Opts {
            masking: Masking {
                causal: true,
                alignment: Alignment::TopLeft,
                ..Default::default()
            },
            alibi: true,
            softcap: None,
            sinks: false,
        },
        Opts {
            masking: Masking {
                window: Some(Window { left: 3, right: 1 }),
                ..Default::default()
            },
            alibi: false,
            softcap: Some(2.0),
            sinks: true,
        },
        Opts {
            masking: Masking::default(),
            alibi: false,
            softcap: None,
            sinks: true,
        },
    ]
}

/// Expected O rows `[nq, Hq, D]` (packed order) and LSE `[Hq][nq]` of one
/// sequence: q `[nq, Hq, D]`, k and v `[nk, Hkv, D]` in packed order.
#[allow(clippy::too_many_arguments)]
fn expect_seq(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (nq, nk, hq, hkv, d): (usize, usize, usize, usize, usize),
    o: &Opts,
    slopes: &[f32],
    sinks: &[f32],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    // Packed [n, H, D] → [1, H, n, D].
    let bhnd =
        |x: &[f32], n: usize, h: usize| -> Vec<f32> { Layout::Bnhd.to_bhnd(x, [1, h, n, d]) };
    if nk == 0 {
        // No key: O = 0, LSE = −inf (the sink with sinks).
        let lse = (0..hq)
            .map(|h| {
                vec![
                    if o.sinks {
                        sinks[h] as f64
                    } else {
                        f64::NEG_INFINITY
                    };
                    nq
                ]
            })
            .collect();
        return (vec![0.0; nq * hq * d], lse);
    }
    let sh = AttnShape {
        b: 1,
        hq,
        hkv,
        nq,
        nk,
        d,
    };
    let want = reference::attention(
        &bhnd(q, nq, hq),
        &bhnd(k, nk, hkv),
        &bhnd(v, nk, hkv),
        &sh,
        &ReferenceOptions {
            masking: o.masking.clone(),
            alibi: o.alibi.then_some(slopes),
            softcap: o.softcap.map(f64::from),
            sinks: o.sinks.then_some(sinks),
            ..Default::default()
        },
    );
    let mut rows = vec![0.0; nq * hq * d];
    for i in 0..nq {
        for h in 0..hq {
            for c in 0..d {
                rows[(i * hq + h) * d + c] = want.o[(h * nq + i) * d + c];
            }
        }
    }
    let lse = (0..hq)
        .map(|h| want.lse[h * nq..(h + 1) * nq].to_vec())
        .collect();
    (rows, lse)
}

/// Checks a packed result (O `[total_q, Hq, D]`, LSE `[Hq, total_q]`) against
/// the sequences' expectations from [`expect_seq`], in order.
fn assert_packed(
    out: &wgpu_attention::Attention,
    hq: usize,
    seqs: impl IntoIterator<Item = (Vec<f64>, Vec<Vec<f64>>)>,
    c: &str,
) {
    let got_o = out.o.to_vec_blocking().unwrap();
    let got_lse = out.lse.as_ref().unwrap().to_vec_blocking().unwrap();
    let (mut want_o, mut want_lse) = (Vec::new(), vec![Vec::new(); hq]);
    for (e_o, e_lse) in seqs {
        want_o.extend(e_o);
        for (h, l) in e_lse.into_iter().enumerate() {
            want_lse[h].extend(l);
        }
    }
    assert_close(&got_o, &want_o, Tolerance::F32, &format!("{c} O"));
    assert_close(
        &got_lse,
        &want_lse.concat(),
        Tolerance::F32,
        &format!("{c} LSE"),
    );
}

fn prefix(lens: &[usize]) -> Vec<u32> {
    let mut cu = vec![0u32];
    for &l in lens {
        cu.push(cu.last().unwrap() + l as u32);
    }
    cu
}

/// A GPU buffer of u32 with COPY_SRC (how a server keeps its metadata).
fn gpu_u32(gpu: &Gpu, v: &[u32]) -> wgpu::Buffer {
    use wgpu::util::DeviceExt;
    gpu.device()
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("test u32"),
            contents: bytemuck::cast_slice(if v.is_empty() { &[0u32] } else { v }),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

#[test]
fn varlen_matches_the_reference_per_sequence() {
    each_fused_gpu("varlen", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let (hq, hkv, d) = (4, 2, 24);
        // Empty, one-token and longer sequences; keys shorter than queries
        // (bottom-right causal then hides whole rows), and longer.
        let lq = [5usize, 0, 1, 17, 3, 2];
        let lk = [9usize, 4, 1, 17, 0, 40];
        let (cq, ck) = (prefix(&lq), prefix(&lk));
        let (tq, tk) = (*cq.last().unwrap() as usize, *ck.last().unwrap() as usize);
        let q = uniform(&mut r, tq * hq * d, 1.0);
        let k = uniform(&mut r, tk * hkv * d, 1.0);
        let v = uniform(&mut r, tk * hkv * d, 1.0);
        let qt = Tensor::from_slice(gpu, &q, &[tq, hq, d]).unwrap();
        let kt = Tensor::from_slice(gpu, &k, &[tk, hkv, d]).unwrap();
        let vt = Tensor::from_slice(gpu, &v, &[tk, hkv, d]).unwrap();
        let slopes = wgpu_attention::alibi_slopes(hq);
        let sinks: Vec<f32> = (0..hq).map(|_| r.random_range(-1.0f32..2.0)).collect();
        let (gq, gk) = (gpu_u32(gpu, &cq), gpu_u32(gpu, &ck));
        for (oi, o) in option_sets().into_iter().enumerate() {
            for path in [AttentionPath::Fused, AttentionPath::Decode] {
                // Host prefix sums, and GPU buffers on every other case.
                let on_gpu = (oi + path as usize) % 2 == 1;
                let (cu_q, cu_k) = if on_gpu {
                    (
                        U32s::Gpu {
                            buffer: &gq,
                            len: cq.len(),
                        },
                        U32s::Gpu {
                            buffer: &gk,
                            len: ck.len(),
                        },
                    )
                } else {
                    (U32s::Host(&cq), U32s::Host(&ck))
                };
                let varlen = Varlen {
                    cu_seqlens_q: cu_q,
                    cu_seqlens_k: cu_k,
                    max_seqlen_q: 17,
                    max_seqlen_k: 40,
                };
                let opts = AttentionOptions {
                    masking: o.masking.clone(),
                    alibi: o.alibi.then_some(&slopes[..]),
                    softcap: o.softcap,
                    sinks: o.sinks.then_some(&sinks[..]),
                    return_lse: true,
                    path,
                    kv_split: Some(7),
                    ..Default::default()
                };
                let out = run(gpu, t, |rec| {
                    record_varlen_attention(rec, &qt, &kt, &vt, &varlen, &opts)
                });
                let c = format!(
                    "{ctx} options {oi} {path:?} gpu-index={on_gpu} ({})",
                    out.kernels
                );
                let want = (0..lq.len()).map(|s| {
                    let (q0, k0) = (cq[s] as usize, ck[s] as usize);
                    expect_seq(
                        &q[q0 * hq * d..(q0 + lq[s]) * hq * d],
                        &k[k0 * hkv * d..(k0 + lk[s]) * hkv * d],
                        &v[k0 * hkv * d..(k0 + lk[s]) * hkv * d],
                        (lq[s], lk[s], hq, hkv, d),
                        &o,
                        &slopes,
                        &sinks,
                    )
                });
                assert_packed(&out, hq, want, &c);
            }
        }
    });
}

/// A pool of `blocks` blocks of `bs` positions; sequences whose blocks are a
/// shuffled, partly shared, set; queries per sequence as given (decode,
/// chunked prefill, speculative verification).
#[test]
fn paged_attention_matches_the_reference_per_sequence() {
    each_fused_gpu("paged", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let (hq, hkv, d) = (4, 2, 24);
        for bs in [16usize, 5] {
            let lens = [37usize, 1, 0, 50, 16];
            let max_blocks = 50usize.div_ceil(bs);
            let num_blocks = lens.iter().map(|l| l.div_ceil(bs)).sum::<usize>() + 3;
            // Shuffled block ids; sequence 4 shares sequence 0's first block
            // (a shared prefix), the rest of its own.
            let mut free: Vec<u32> = (0..num_blocks as u32).collect();
            free.shuffle(&mut r);
            let mut table = vec![0u32; lens.len() * max_blocks];
            for (s, &l) in lens.iter().enumerate() {
                for i in 0..l.div_ceil(bs) {
                    table[s * max_blocks + i] = if s == 4 && i == 0 {
                        table[0]
                    } else {
                        free.pop().unwrap()
                    };
                }
            }
            let pool_k = uniform(&mut r, num_blocks * bs * hkv * d, 1.0);
            let pool_v = uniform(&mut r, num_blocks * bs * hkv * d, 1.0);
            let kt = Tensor::from_slice(gpu, &pool_k, &[num_blocks, bs, hkv, d]).unwrap();
            let vt = Tensor::from_slice(gpu, &pool_v, &[num_blocks, bs, hkv, d]).unwrap();
            // Keys of sequence s gathered through the table, packed [len, Hkv, D].
            let gather = |pool: &[f32], s: usize| -> Vec<f32> {
                (0..lens[s])
                    .flat_map(|j| {
                        let row = table[s * max_blocks + j / bs] as usize * bs + j % bs;
                        pool[row * hkv * d..(row + 1) * hkv * d].to_vec()
                    })
                    .collect()
            };
            let lens_u32: Vec<u32> = lens.iter().map(|&l| l as u32).collect();
            let slopes = wgpu_attention::alibi_slopes(hq);
            let sinks: Vec<f32> = (0..hq).map(|_| r.random_range(-1.0f32..2.0)).collect();
            let (g_table, g_lens) = (gpu_u32(gpu, &table), gpu_u32(gpu, &lens_u32));
            // Decode (one query each; the empty sequence too), chunked prefill
            // (the last 9 and 1 positions are new), speculative verification (4).
            for (qi, lq) in [[1usize, 1, 1, 1, 1], [9, 1, 0, 12, 16], [4, 1, 0, 4, 4]]
                .into_iter()
                .enumerate()
            {
                let cq = prefix(&lq);
                let tq = *cq.last().unwrap() as usize;
                let q = uniform(&mut r, tq * hq * d, 1.0);
                let qt = Tensor::from_slice(gpu, &q, &[tq, hq, d]).unwrap();
                let o = &option_sets()[qi % 4];
                let on_gpu = (qi + bs) % 2 == 0;
                let kv = PagedKv {
                    k_pool: &kt,
                    v_pool: &vt,
                    block_table: if on_gpu {
                        U32s::Gpu {
                            buffer: &g_table,
                            len: table.len(),
                        }
                    } else {
                        U32s::Host(&table)
                    },
                    max_blocks,
                    seq_lens: if on_gpu {
                        U32s::Gpu {
                            buffer: &g_lens,
                            len: lens.len(),
                        }
                    } else {
                        U32s::Host(&lens_u32)
                    },
                    max_seq_len: 50,
                };
                for path in [AttentionPath::Fused, AttentionPath::Decode] {
                    let opts = AttentionOptions {
                        masking: o.masking.clone(),
                        alibi: o.alibi.then_some(&slopes[..]),
                        softcap: o.softcap,
                        sinks: o.sinks.then_some(&sinks[..]),
                        return_lse: true,
                        path,
                        kv_split: Some(13),
                        ..Default::default()
                    };
                    let out = run(gpu, t, |rec| {
                        record_paged_attention(rec, &qt, U32s::Host(&cq), 16, &kv, &opts)
                    });
                    let c = format!(
                        "{ctx} block {bs} queries {lq:?} {path:?} gpu-index={on_gpu} ({})",
                        out.kernels
                    );
                    let want = (0..lens.len()).map(|s| {
                        let q0 = cq[s] as usize;
                        expect_seq(
                            &q[q0 * hq * d..(q0 + lq[s]) * hq * d],
                            &gather(&pool_k, s),
                            &gather(&pool_v, s),
                            (lq[s], lens[s], hq, hkv, d),
                            o,
                            &slopes,
                            &sinks,
                        )
                    });
                    assert_packed(&out, hq, want, &c);
                }
            }
        }
    });
}

#[test]
fn malformed_sequences_are_typed_errors() {
    let skip = [Skip::NonDefault("about input checks")];
    each_gpu_skipping("seqs errors", &skip, |gpu, _, ctx| {
        let q = Tensor::from_slice(gpu, &[0.1f32; 6 * 2 * 4], &[6, 2, 4]).unwrap();
        let err = |cq: &[u32], ck: &[u32], mq: usize| -> String {
            let v = Varlen {
                cu_seqlens_q: U32s::Host(cq),
                cu_seqlens_k: U32s::Host(ck),
                max_seqlen_q: mq,
                max_seqlen_k: 6,
            };
            match wgpu_attention::seqs::varlen_attention(
                &q,
                &q,
                &q,
                &v,
                &AttentionOptions::default(),
            ) {
                Err(Error::InvalidArgument(m)) => m,
                other => panic!("{ctx}: expected InvalidArgument, got {other:?}"),
            }
        };
        assert!(
            err(&[0, 4, 2, 6], &[0, 2, 4, 6], 6).contains("not monotone"),
            "{ctx}"
        );
        assert!(
            err(&[0, 4, 7], &[0, 2, 6], 6).contains("past the tensor"),
            "{ctx}"
        );
        assert!(err(&[0, 4, 6], &[0, 6], 6).contains("[B + 1]"), "{ctx}");
        assert!(
            err(&[0, 4, 6], &[0, 2, 6], 3).contains("more than the maximum"),
            "{ctx}"
        );
        // A block table pointing past the pool.
        let pool = Tensor::from_slice(gpu, &[0.0f32; 3 * 4 * 2 * 4], &[3, 4, 2, 4]).unwrap();
        let table = [0u32, 5];
        let kv = PagedKv {
            k_pool: &pool,
            v_pool: &pool,
            block_table: U32s::Host(&table),
            max_blocks: 2,
            seq_lens: U32s::Host(&[6]),
            max_seq_len: 8,
        };
        let q1 = Tensor::from_slice(gpu, &[0.1f32; 2 * 4], &[1, 2, 4]).unwrap();
        match wgpu_attention::seqs::paged_attention(
            &q1,
            U32s::Host(&[0, 1]),
            1,
            &kv,
            &AttentionOptions::default(),
        ) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("past the pool"), "{ctx}: {m}"),
            other => panic!("{ctx}: expected InvalidArgument, got {other:?}"),
        }
        // The unfused path and dense masks do not take packed sequences.
        let v = Varlen {
            cu_seqlens_q: U32s::Host(&[0, 6]),
            cu_seqlens_k: U32s::Host(&[0, 6]),
            max_seqlen_q: 6,
            max_seqlen_k: 6,
        };
        let opts = AttentionOptions {
            path: AttentionPath::Unfused,
            ..Default::default()
        };
        assert!(
            matches!(wgpu_attention::seqs::varlen_attention(&q, &q, &q, &v, &opts), Err(Error::InvalidArgument(m)) if m.contains("fused and decode")),
            "{ctx}"
        );
    });
}

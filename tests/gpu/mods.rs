//! Programmable attention (`wgpu_attention::mods`): WGSL `score_mod` and
//! `mask_mod` against their CPU twins on every path and fused variant, the
//! block mask against the CPU classification, the built-in options written as
//! mods against the native ones, a KV cache's pages, and the typed errors of
//! mods that do not parse, type-check or fit. The validation matrix runs two
//! mod kinds too (`document`, `score-mod`), also in the browser.

use rand::Rng;

use super::{check_o_lse, each_fused_gpu, each_gpu, rng, run, uniform};
use wgpu_attention::mods::{
    MaskMod, ModData, ModIndex, Mods, ScoreMod, BLOCK_EMPTY, BLOCK_FULL, BLOCK_PARTIAL,
};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{
    record_attention, AttentionOptions, AttentionPath, AttnShape, Error, HostMask, KvCache, Layout,
    MaskTensor, Masking, Tensor, Window,
};

/// Document ids of `n` positions, documents of random lengths in `lens`.
fn doc_ids(r: &mut impl Rng, n: usize, lens: std::ops::Range<usize>) -> Vec<u32> {
    let mut out = Vec::with_capacity(n);
    let mut doc = 0;
    while out.len() < n {
        let len = r.random_range(lens.clone());
        out.extend(std::iter::repeat_n(doc, len.min(n - out.len())));
        doc += 1;
    }
    out
}

/// The WGSL of causal attention within documents (queries at the last `nq` of
/// `nk` positions), per batch: buffer `doc` holds `b · nk` ids.
fn document_wgsl(nq: usize, nk: usize) -> String {
    let off = nk - nq;
    format!(
        "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {{
    let pos = q + {off}u;
    return kv <= pos && doc(b * {nk}u + pos) == doc(b * {nk}u + kv);
}}"
    )
}

/// Its CPU twin.
fn document_twin(doc: Vec<u32>, nq: usize, nk: usize) -> impl Fn(ModIndex) -> bool + Send + Sync {
    let off = nk - nq;
    move |i: ModIndex| {
        let pos = i.q + off;
        i.kv <= pos && doc[i.b * nk + pos] == doc[i.b * nk + i.kv]
    }
}

/// [`document_wgsl`] as mods, with or without the block mask.
fn document_causal(doc: Vec<u32>, nq: usize, nk: usize, blocks: bool) -> Mods {
    Mods::builder()
        .mask_mod(MaskMod::new(
            document_wgsl(nq, nk),
            document_twin(doc.clone(), nq, nk),
        ))
        .buffer("doc", ModData::U32(doc))
        .block_mask(blocks)
        .build()
        .unwrap()
}

/// A score_mod with an f32 table per head and an i32 table per key.
fn table_score_mod(r: &mut impl Rng, hq: usize, nk: usize) -> (ScoreMod, Vec<f32>, Vec<i32>) {
    let heads: Vec<f32> = (0..hq).map(|_| r.random_range(0.5..1.5)).collect();
    let keys: Vec<i32> = (0..nk).map(|_| r.random_range(-3..4)).collect();
    let (h, k) = (heads.clone(), keys.clone());
    let m = ScoreMod::new(
        "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {
    return score * hs(h) + 0.125 * f32(kb(kv));
}",
        move |s, i: ModIndex| s * h[i.h] as f64 + 0.125 * k[i.kv] as f64,
    );
    (m, heads, keys)
}

/// The document-causal mask_mod with the table score_mod and its buffers.
fn document_and_table(
    doc: &[u32],
    sh: &AttnShape,
    (score, heads, keys): (&ScoreMod, &[f32], &[i32]),
    blocks: bool,
) -> Mods {
    Mods::builder()
        .mask_mod(MaskMod::new(
            document_wgsl(sh.nq, sh.nk),
            document_twin(doc.to_vec(), sh.nq, sh.nk),
        ))
        .score_mod(score.clone())
        .buffer("doc", ModData::U32(doc.to_vec()))
        .buffer("hs", ModData::F32(heads.to_vec()))
        .buffer("kb", ModData::I32(keys.to_vec()))
        .block_mask(blocks)
        .build()
        .unwrap()
}

struct Inputs {
    sh: AttnShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn inputs(r: &mut impl Rng, sh: AttnShape) -> Inputs {
    let mut u = |n| -> Vec<f32> { (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect() };
    Inputs {
        q: u(sh.q_len()),
        k: u(sh.kv_len()),
        v: u(sh.kv_len()),
        sh,
    }
}

/// Runs `opts` on the fused, decode (splits of 100 keys) and unfused paths and
/// checks O and the LSE against `want`.
fn every_path(
    gpu: &wgpu_attention::Gpu,
    t: wgpu_attention::Tuning,
    x: &Inputs,
    opts: &AttentionOptions,
    want: &reference::AttentionOutput,
    ctx: &str,
) {
    let sh = &x.sh;
    let qt = Tensor::from_bhnd(gpu, &x.q, [sh.b, sh.hq, sh.nq, sh.d], Layout::Bhnd).unwrap();
    let kt = Tensor::from_bhnd(gpu, &x.k, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bnhd).unwrap();
    let vt = Tensor::from_bhnd(gpu, &x.v, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bhnd).unwrap();
    for (path, split) in [
        (AttentionPath::Fused, None),
        (AttentionPath::Decode, Some(100)),
        (AttentionPath::Unfused, None),
    ] {
        let o = AttentionOptions {
            path,
            kv_split: split,
            return_lse: true,
            ..opts.clone()
        };
        let out = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &o));
        check_o_lse(&out, want, &format!("{ctx} {path:?}"));
    }
}

#[test]
fn mods_match_their_cpu_twins_on_every_path() {
    each_fused_gpu("mods on every path", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        // GQA, lengths no block or tile divides, queries at the last positions,
        // a shorter key length in batch 1.
        let sh = AttnShape {
            b: 2,
            hq: 4,
            hkv: 2,
            nq: 150,
            nk: 300,
            d: 40,
        };
        let x = inputs(&mut r, sh);
        let doc: Vec<u32> = (0..sh.b)
            .flat_map(|_| doc_ids(&mut r, sh.nk, 20..120))
            .collect();
        let (score, heads, keys) = table_score_mod(&mut r, sh.hq, sh.nk);
        let masking = Masking {
            key_lengths: Some(vec![300, 211]),
            ..Default::default()
        };
        for blocks in [true, false] {
            let mask = document_causal(doc.clone(), sh.nq, sh.nk, blocks);
            // Both mods in one: the document mask_mod with the table score_mod.
            let both = document_and_table(&doc, &sh, (&score, &heads, &keys), blocks);
            // Without the block mask once (the per-key predicate everywhere).
            let runs: &[(&str, &Mods)] = if blocks {
                &[("document", &mask), ("document+score", &both)]
            } else {
                &[("document+score", &both)]
            };
            for &(name, mods) in runs {
                let opts = AttentionOptions {
                    masking: masking.clone(),
                    mods: Some(mods),
                    ..Default::default()
                };
                let want = reference::attention(
                    &x.q,
                    &x.k,
                    &x.v,
                    &sh,
                    &ReferenceOptions {
                        masking: masking.clone(),
                        mods: Some(mods),
                        ..Default::default()
                    },
                );
                // Some rows see no key at all (key length 211 below their
                // document): O = 0 and LSE = -inf there, as with built-in masks.
                every_path(
                    gpu,
                    t,
                    &x,
                    &opts,
                    &want,
                    &format!("{ctx} {name} blocks={blocks}"),
                );
            }
        }
    });
}

/// Mods combined with every built-in option at once: a dense additive mask,
/// causal, ALiBi, softcap and key lengths, under GQA, on every path.
#[test]
fn mods_combine_with_the_built_in_options() {
    each_gpu("mods with built-in options", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let sh = AttnShape {
            b: 2,
            hq: 4,
            hkv: 1,
            nq: 70,
            nk: 140,
            d: 24,
        };
        let x = inputs(&mut r, sh);
        let doc: Vec<u32> = (0..sh.b)
            .flat_map(|_| doc_ids(&mut r, sh.nk, 15..70))
            .collect();
        let (score, heads, keys) = table_score_mod(&mut r, sh.hq, sh.nk);
        let mods = document_and_table(&doc, &sh, (&score, &heads, &keys), true);
        let bias = HostMask::additive(
            (0..sh.nq * sh.nk)
                .map(|_| {
                    if r.random_range(0..6) == 0 {
                        -2.0
                    } else {
                        0.25
                    }
                })
                .collect(),
            [1, 1, sh.nq, sh.nk],
        )
        .unwrap();
        let mt = MaskTensor::upload(gpu, &bias).unwrap();
        let slopes = wgpu_attention::alibi_slopes(sh.hq);
        let masking = Masking {
            causal: true,
            key_lengths: Some(vec![140, 97]),
            ..Default::default()
        };
        let opts = AttentionOptions {
            masking: masking.clone(),
            mask: Some(&mt),
            alibi: Some(&slopes),
            softcap: Some(4.0),
            mods: Some(&mods),
            ..Default::default()
        };
        let want = reference::attention(
            &x.q,
            &x.k,
            &x.v,
            &sh,
            &ReferenceOptions {
                masking,
                mask: Some(&bias),
                alibi: Some(&slopes),
                softcap: Some(4.0),
                mods: Some(&mods),
                ..Default::default()
            },
        );
        every_path(gpu, t, &x, &opts, &want, &ctx);
    });
}

#[test]
fn block_mask_matches_the_cpu_classification() {
    each_gpu("block mask", |gpu, t, ctx| {
        if t.staged() {
            return; // one classification kernel, no variants
        }
        let (mut r, ctx) = rng(ctx);
        let dims = [2, 3, 200, 333];
        // Each batch opens with a document of 200 positions (full blocks below
        // the diagonal), then random ones of 30-150 (empty and partial blocks).
        let doc: Vec<u32> = (0..2)
            .flat_map(|_| {
                let mut d = vec![0; 200];
                d.extend(doc_ids(&mut r, 133, 30..150).iter().map(|x| x + 1));
                d
            })
            .collect();
        let mods = document_causal(doc, 200, 333, true);
        let got = mods.block_mask_blocking(gpu, dims).unwrap();
        let want = mods.block_mask_reference(dims);
        assert_eq!(got, want, "{ctx}: GPU and CPU block classes");
        for c in [BLOCK_EMPTY, BLOCK_PARTIAL, BLOCK_FULL] {
            assert!(
                want.contains(&c),
                "{ctx}: the case has no block of class {c}"
            );
        }
        // Cached per problem size: the same buffer again.
        assert_eq!(mods.block_mask_blocking(gpu, dims).unwrap(), want, "{ctx}");
    });
}

/// The built-in options written as mods give what the native options give
/// (GPU against GPU within f32 rounding, both against the reference).
#[test]
fn builtin_options_as_mods_equal_the_native_options() {
    each_fused_gpu("built-ins as mods", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let sh = AttnShape {
            b: 1,
            hq: 4,
            hkv: 4,
            nq: 90,
            nk: 130,
            d: 32,
        };
        let x = inputs(&mut r, sh);
        let (nq, nk) = (sh.nq, sh.nk);
        let off = nk - nq; // bottom-right causal: query i sits at key i + off
        let slopes = wgpu_attention::alibi_slopes(sh.hq);
        let prefix = 37;
        let doc = doc_ids(&mut r, nk, 10..50);
        let qdoc: Vec<u32> = (0..nq).map(|i| doc[i + off]).collect();
        let bool_mask = |f: &dyn Fn(usize, usize) -> bool| {
            HostMask::bool(
                (0..nq * nk).map(|e| f(e / nk, e % nk)).collect(),
                [1, 1, nq, nk],
            )
            .unwrap()
        };
        let prefix_mask = bool_mask(&|i, j| j < prefix || j <= i + off);
        let doc_mask = bool_mask(&|i, j| qdoc[i] == doc[j]);
        let causal = Masking {
            causal: true,
            ..Default::default()
        };
        let window = Masking {
            window: Some(Window { left: 9, right: 4 }),
            ..Default::default()
        };
        let mask_mod = |body: &str, f: Box<dyn Fn(ModIndex) -> bool + Send + Sync>| {
            Mods::builder()
                .mask_mod(MaskMod::new(
                    format!("fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {{ {body} }}"),
                    f,
                ))
                .buffer("alibi_slopes", ModData::F32(slopes.clone()))
                .buffer("doc", ModData::U32(doc.clone()))
                .buffer("qdoc", ModData::U32(qdoc.clone()))
                .build()
                .unwrap()
        };
        let score_mod = |body: &str, f: Box<dyn Fn(f64, ModIndex) -> f64 + Send + Sync>| {
            Mods::builder()
                .score_mod(ScoreMod::new(
                    format!("fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> f32 {{ {body} }}"),
                    f,
                ))
                .buffer("alibi_slopes", ModData::F32(slopes.clone()))
                .build()
                .unwrap()
        };
        let sl = slopes.clone();
        let (d1, q1) = (doc.clone(), qdoc.clone());
        let cases: Vec<(&str, Mods, AttentionOptions, ReferenceOptions)> = vec![
            (
                "causal",
                mask_mod(
                    &format!("return kv <= q + {off}u;"),
                    Box::new(move |i| i.kv <= i.q + off),
                ),
                AttentionOptions {
                    masking: causal.clone(),
                    ..Default::default()
                },
                ReferenceOptions {
                    masking: causal.clone(),
                    ..Default::default()
                },
            ),
            (
                "window",
                mask_mod(
                    &format!("let d = i32(q + {off}u) - i32(kv); return d <= 9 && d >= -4;"),
                    Box::new(move |i| {
                        let d = (i.q + off) as i64 - i.kv as i64;
                        (-4..=9).contains(&d)
                    }),
                ),
                AttentionOptions {
                    masking: window.clone(),
                    ..Default::default()
                },
                ReferenceOptions {
                    masking: window.clone(),
                    ..Default::default()
                },
            ),
            (
                "prefix-lm",
                mask_mod(
                    &format!("return kv < {prefix}u || kv <= q + {off}u;"),
                    Box::new(move |i| i.kv < prefix || i.kv <= i.q + off),
                ),
                AttentionOptions::default(),
                ReferenceOptions {
                    mask: Some(&prefix_mask),
                    ..Default::default()
                },
            ),
            (
                "document",
                mask_mod(
                    "return qdoc(q) == doc(kv);",
                    Box::new(move |i| q1[i.q] == d1[i.kv]),
                ),
                AttentionOptions::default(),
                ReferenceOptions {
                    mask: Some(&doc_mask),
                    ..Default::default()
                },
            ),
            (
                "alibi",
                score_mod(
                    &format!(
                        "return score - alibi_slopes(h) * abs(f32(i32(q + {off}u) - i32(kv)));"
                    ),
                    Box::new(move |s, i| {
                        s - sl[i.h] as f64 * ((i.q + off) as f64 - i.kv as f64).abs()
                    }),
                ),
                AttentionOptions {
                    alibi: Some(&slopes),
                    ..Default::default()
                },
                ReferenceOptions {
                    alibi: Some(&slopes),
                    ..Default::default()
                },
            ),
            (
                "softcap",
                score_mod(
                    "return 3.0 * tanh(score / 3.0);",
                    Box::new(|s, _| 3.0 * (s / 3.0).tanh()),
                ),
                AttentionOptions {
                    softcap: Some(3.0),
                    ..Default::default()
                },
                ReferenceOptions {
                    softcap: Some(3.0),
                    ..Default::default()
                },
            ),
        ];
        let qt = Tensor::from_bhnd(gpu, &x.q, [1, sh.hq, nq, sh.d], Layout::Bhnd).unwrap();
        let kt = Tensor::from_bhnd(gpu, &x.k, [1, sh.hkv, nk, sh.d], Layout::Bhnd).unwrap();
        let vt = Tensor::from_bhnd(gpu, &x.v, [1, sh.hkv, nk, sh.d], Layout::Bhnd).unwrap();
        for (name, mods, native, ropts) in &cases {
            let ctx = format!("{ctx} {name}");
            let mt = ropts.mask.map(|m| MaskTensor::upload(gpu, m).unwrap());
            let native = AttentionOptions {
                mask: mt.as_ref(),
                return_lse: true,
                path: AttentionPath::Fused,
                ..native.clone()
            };
            let as_mod = AttentionOptions {
                mods: Some(mods),
                return_lse: true,
                path: AttentionPath::Fused,
                ..Default::default()
            };
            let a = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &native));
            let b = run(gpu, t, |rec| record_attention(rec, &qt, &kt, &vt, &as_mod));
            let want = reference::attention(&x.q, &x.k, &x.v, &sh, ropts);
            check_o_lse(&a, &want, &format!("{ctx} native"));
            check_o_lse(&b, &want, &format!("{ctx} as a mod"));
            let ao = a.o.to_vec_blocking().unwrap();
            let bo = b.o.to_vec_blocking().unwrap();
            let ao64: Vec<f64> = ao.iter().map(|&v| v as f64).collect();
            assert_close(
                &bo,
                &ao64,
                Tolerance::F32,
                &format!("{ctx}: mod vs native O"),
            );
            // And through the reference's own mod: the twin gives the same.
            let via_twin = reference::attention(
                &x.q,
                &x.k,
                &x.v,
                &sh,
                &ReferenceOptions {
                    mods: Some(mods),
                    ..Default::default()
                },
            );
            let diff = via_twin
                .o
                .iter()
                .zip(&want.o)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                diff < 1e-9,
                "{ctx}: CPU twin vs native reference differ by {diff}"
            );
        }
    });
}

/// A KV cache's pages: the mods see positions in the whole sequence.
#[test]
fn mods_see_whole_sequence_positions_in_a_kv_cache() {
    each_fused_gpu("mods in a kv cache", |gpu, t, ctx| {
        let (mut r, ctx) = rng(ctx);
        let (b, hkv, hq, d, len, nq) = (1, 2, 4, 32, 250, 3);
        let mut cache = KvCache::with_page_len(gpu, b, hkv, d, 300, 70).unwrap();
        let k = uniform(&mut r, b * hkv * len * d, 1.0);
        let v = uniform(&mut r, b * hkv * len * d, 1.0);
        cache.append(&k, &v, len).unwrap();
        let doc = doc_ids(&mut r, len, 30..90);
        let mods = document_causal(doc, nq, len, true);
        let (score, heads, keys) = table_score_mod(&mut r, hq, len);
        let with_score = Mods::builder()
            .score_mod(score)
            .buffer("hs", ModData::F32(heads))
            .buffer("kb", ModData::I32(keys))
            .build()
            .unwrap();
        let q = uniform(&mut r, b * hq * nq * d, 1.0);
        let qt = Tensor::from_bhnd(gpu, &q, [b, hq, nq, d], Layout::Bhnd).unwrap();
        let sh = AttnShape {
            b,
            hq,
            hkv,
            nq,
            nk: len,
            d,
        };
        for (name, m) in [("document", &mods), ("score", &with_score)] {
            for path in [AttentionPath::Decode, AttentionPath::Fused] {
                let opts = AttentionOptions {
                    mods: Some(m),
                    return_lse: true,
                    path,
                    ..Default::default()
                };
                let out = run(gpu, t, |rec| cache.record_attend(rec, &qt, &opts));
                let want = reference::attention(
                    &q,
                    &k,
                    &v,
                    &sh,
                    &ReferenceOptions {
                        mods: Some(m),
                        ..Default::default()
                    },
                );
                check_o_lse(
                    &out,
                    &want,
                    &format!("{ctx} {name} {path:?} pages={}", cache.pages_in_use()),
                );
            }
        }
    });
}

fn mod_err(b: wgpu_attention::mods::ModsBuilder) -> String {
    match b.build() {
        Err(Error::InvalidMod(m)) => m,
        Err(e) => panic!("expected Error::InvalidMod, got {e:?}"),
        Ok(m) => panic!("expected an error, got {m:?}"),
    }
}

#[test]
fn bad_mods_are_refused_with_file_and_line() {
    let mask = |src: &str| MaskMod::gpu_only(src).origin("my_mask.wgsl");
    // A parse error: the file and line of the mistake.
    let e = mod_err(Mods::builder().mask_mod(mask(
        "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    let x = ;\n    return true;\n}",
    )));
    assert!(e.starts_with("my_mask.wgsl:2:"), "{e}");
    // A type error.
    let e = mod_err(Mods::builder().mask_mod(mask(
        "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    return q + 1u;\n}",
    )));
    assert!(e.starts_with("my_mask.wgsl:2:"), "{e}");
    // The wrong signature, with the one the kernels call.
    let e = mod_err(Mods::builder().mask_mod(mask(
        "fn mask_mod(q: u32, kv: u32) -> bool { return q >= kv; }",
    )));
    assert!(
        e.contains("(u32, u32) -> bool")
            && e.contains("fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool"),
        "{e}"
    );
    let e = mod_err(Mods::builder().score_mod(ScoreMod::gpu_only(
        "fn score_mod(score: f32, b: u32, h: u32, q: u32, kv: u32) -> u32 { return q; }",
    )));
    assert!(e.contains("-> u32"), "{e}");
    // No such function.
    let e = mod_err(Mods::builder().mask_mod(mask("fn attend(b: u32) -> bool { return true; }")));
    assert!(e.contains("declares no `mask_mod`"), "{e}");
    // A buffer it does not have: naga's message at the line that reads it.
    let e = mod_err(
        Mods::builder()
            .mask_mod(mask(
                "fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool {\n    return doc(q) == doc(kv);\n}",
            ))
            .buffer("docs", ModData::U32(vec![0; 4])),
    );
    assert!(e.starts_with("my_mask.wgsl:2:") && e.contains("doc"), "{e}");
    // Buffer names: not identifiers, reserved, twice, empty.
    let ok = || mask("fn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool { return true; }");
    for (name, data, want) in [
        ("2doc", ModData::U32(vec![1]), "not a WGSL identifier"),
        ("mods", ModData::U32(vec![1]), "clashes"),
        ("flash_x", ModData::U32(vec![1]), "clashes"),
        ("doc", ModData::F32(vec![]), "empty"),
    ] {
        let e = mod_err(Mods::builder().mask_mod(ok()).buffer(name, data));
        assert!(e.contains(want), "{name}: {e}");
    }
    let e = mod_err(
        Mods::builder()
            .mask_mod(ok())
            .buffer("a", ModData::U32(vec![1]))
            .buffer("a", ModData::I32(vec![1])),
    );
    assert!(e.contains("twice"), "{e}");
    // A binding of its own, an entry point, and a helper clashing with a kernel's name.
    let e = mod_err(Mods::builder().mask_mod(mask(
        "@group(0) @binding(3) var<storage, read> t: array<u32>;\nfn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool { return t[q] == 0u; }",
    )));
    assert!(e.contains("binding"), "{e}");
    let e = mod_err(Mods::builder().mask_mod(mask(
        "fn soft_cap(s: f32, c: f32) -> f32 { return s; }\nfn mask_mod(b: u32, h: u32, q: u32, kv: u32) -> bool { return true; }",
    )));
    assert!(e.contains("do not fit kernel"), "{e}");
    // Nothing at all.
    assert!(mod_err(Mods::builder()).contains("no score_mod or mask_mod"));
}

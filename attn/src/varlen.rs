//! `attn run --cu-seqlens-q LIST --cu-seqlens-k LIST`: packed variable-length
//! attention (the library's `seqs::varlen_attention`) on `[total, H, D]`
//! inputs; O packed the same way, LSE `[Hq, total_q]`; `--check` against the
//! f64 reference per sequence.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::seqs::{varlen_attention, U32s, Varlen};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::{alibi_slopes, AttentionOptions, AttnShape, Layout, Tensor};

use crate::args::{check_softcap, parse_kv_lengths};
use crate::check::judge_each;
use crate::error::bad_input;
use crate::io;
use crate::run::RunArgs;

/// `--cu-seqlens-*`: a list or a file of integers (a float .npy is bad input).
fn prefix_sums(spec: &str, flag: &str) -> Result<Vec<u32>> {
    parse_kv_lengths(spec)
        .map_err(|e| bad_input!("{}", e.to_string().replace("--kv-lengths", flag)))
}

/// A packed input `[total, H, D]` as stored.
fn packed(path: Option<&Path>, flag: &str) -> Result<io::RawArray> {
    let path = path.ok_or_else(|| {
        bad_input!("{flag} FILE.npy is needed with --cu-seqlens-q (packed [total, H, D])")
    })?;
    let a = io::read_float(path, flag)?;
    if a.shape.len() != 3 || a.shape.contains(&0) {
        return Err(bad_input!(
            "{flag} {}: shape {:?}; with --cu-seqlens-q inputs are packed [total, H, D]",
            path.display(),
            a.shape
        ));
    }
    Ok(a)
}

pub fn varlen_main(a: &RunArgs, cu_q: &str) -> Result<()> {
    let cq = prefix_sums(cu_q, "--cu-seqlens-q")?;
    let ck = match &a.cu_seqlens_k {
        Some(s) => prefix_sums(s, "--cu-seqlens-k")?,
        None => cq.clone(),
    };
    for (flag, bad) in [
        ("--mask", a.masks.mask.is_some()),
        ("--kv-lengths", a.masks.kv_lengths.is_some()),
        ("--weights", a.weights.is_some()),
        ("--safetensors", a.input.safetensors.is_some()),
        ("--score-mod/--mask-mod", a.mods.any()),
    ] {
        if bad {
            return Err(bad_input!(
                "{flag} does not combine with --cu-seqlens-q: packed sequences take their lengths from the prefix sums (causal, window, ALiBi, softcap, sinks apply per sequence)"
            ));
        }
    }
    check_softcap(a.softcap)?;
    let q = packed(a.input.q.as_deref(), "--q")?;
    let k = packed(a.input.k.as_deref(), "--k")?;
    let v = packed(a.input.v.as_deref(), "--v")?;
    let [tq, hq, d] = [q.shape[0], q.shape[1], q.shape[2]];
    let [tk, hkv, dk] = [k.shape[0], k.shape[1], k.shape[2]];
    if v.shape != k.shape || dk != d {
        return Err(bad_input!(
            "--k {:?} and --v {:?} must both be [total_k, Hkv, D = {d}]",
            k.shape,
            v.shape
        ));
    }
    let lens = |cu: &[u32]| -> Vec<usize> {
        cu.windows(2)
            .map(|w| w[1].saturating_sub(w[0]) as usize)
            .collect()
    };
    let (lq, lk) = (lens(&cq), lens(&ck));
    let max_q = lq.iter().copied().max().unwrap_or(0);
    let max_k = lk.iter().copied().max().unwrap_or(0);
    let b = lq.len();
    let slopes = a.masks.alibi.then(|| alibi_slopes(hq));
    let sinks = a.masks.sinks(hq)?;
    if let Some(s) = a.masks.scale {
        if !s.is_finite() {
            return Err(bad_input!("--scale {s}: expected a finite number"));
        }
    }
    let masking = wgpu_attention::Masking {
        causal: a.masks.causal.is_some(),
        window: a.masks.window,
        alignment: a.masks.alignment()?,
        key_lengths: None,
    };
    let gpu = a.device.open()?;
    println!("adapter: {}", gpu.describe());
    println!(
        "packed: {b} sequences, Q [total={tq}, Hq={hq}, D={d}] (longest {max_q}), K/V [total={tk}, Hkv={hkv}] (longest {max_k})"
    );
    let t0 = Instant::now();
    let upload = |r: &io::RawArray| -> Result<Tensor> {
        let t = Tensor::from_bytes(&gpu, &r.bytes, &r.shape, r.dtype)?;
        Ok(match a.dtype {
            Some(dt) if dt != r.dtype => t.to_dtype(dt)?,
            _ => t,
        })
    };
    let (qt, kt, vt) = (upload(&q)?, upload(&k)?, upload(&v)?);
    let varlen = Varlen {
        cu_seqlens_q: U32s::Host(&cq),
        cu_seqlens_k: U32s::Host(&ck),
        max_seqlen_q: max_q,
        max_seqlen_k: max_k,
    };
    let opts = AttentionOptions {
        scale: a.masks.scale,
        masking: masking.clone(),
        alibi: slopes.as_deref(),
        softcap: a.softcap,
        sinks: sinks.as_deref(),
        return_lse: a.lse.is_some() || a.check,
        path: a.path.path(),
        kv_split: a.kv_split,
        out_dtype: a.dtype,
        ..Default::default()
    };
    let out = varlen_attention(&qt, &kt, &vt, &varlen, &opts)
        .map_err(|e| bad_input!("--cu-seqlens-q: {e}"))?;
    let o = out.o.to_vec_blocking()?;
    let lse = out.lse.as_ref().map(|l| l.to_vec_blocking()).transpose()?;
    println!(
        "gpu: {:.1} ms ({}, upload, compile on first use, run, readback)",
        t0.elapsed().as_secs_f64() * 1e3,
        out.kernels
    );
    let verdict = if a.check {
        // Each sequence alone against the f64 reference, on the values the
        // GPU read.
        let widen = |t: &Tensor| t.to_vec_blocking();
        let (qr, kr, vr) = (widen(&qt)?, widen(&kt)?, widen(&vt)?);
        let (mut want_o, mut want_lse) =
            (vec![0.0f64; tq * hq * d], vec![f64::NEG_INFINITY; hq * tq]);
        for s in 0..b {
            let (q0, k0, nq, nk) = (cq[s] as usize, ck[s] as usize, lq[s], lk[s]);
            if nq == 0 {
                continue;
            }
            // Rows r0.. of a packed [total, H, D] as BHND [1, H, n, D].
            let bhnd = |x: &[f32], r0: usize, n: usize, h: usize| -> Vec<f32> {
                Layout::Bnhd.to_bhnd(&x[r0 * h * d..(r0 + n) * h * d], [1, h, n, d])
            };
            if nk == 0 {
                if let Some(sk) = &sinks {
                    for h in 0..hq {
                        for i in 0..nq {
                            want_lse[h * tq + q0 + i] = sk[h] as f64;
                        }
                    }
                }
                continue;
            }
            let want = reference::attention(
                &bhnd(&qr, q0, nq, hq),
                &bhnd(&kr, k0, nk, hkv),
                &bhnd(&vr, k0, nk, hkv),
                &AttnShape {
                    b: 1,
                    hq,
                    hkv,
                    nq,
                    nk,
                    d,
                },
                &ReferenceOptions {
                    scale: a.masks.scale.map(f64::from),
                    masking: masking.clone(),
                    alibi: slopes.as_deref(),
                    softcap: a.softcap.map(f64::from),
                    sinks: sinks.as_deref(),
                    ..Default::default()
                },
            );
            for i in 0..nq {
                for h in 0..hq {
                    want_o[((q0 + i) * hq + h) * d..][..d]
                        .copy_from_slice(&want.o[(h * nq + i) * d..][..d]);
                    want_lse[h * tq + q0 + i] = want.lse[h * nq + i];
                }
            }
        }
        let tol_o = a.tol.unwrap_or(Tolerance::stored(out.o.dtype()).rel_l2);
        let tol = a.tol.unwrap_or(Tolerance::F32.rel_l2);
        let mut reports = vec![("o", verify(&o, &want_o), tol_o)];
        if let Some(l) = &lse {
            reports.push(("lse", verify(l, &want_lse), tol));
        }
        judge_each(&reports)
    } else {
        Ok(())
    };
    if let Some(p) = &a.out {
        let raw = io::RawArray {
            shape: vec![tq, hq, d],
            dtype: out.o.dtype(),
            bytes: pollster::block_on(out.o.to_bytes())?,
        };
        io::write_output(p, "o", &raw)?;
        println!("wrote {} [{tq}, {hq}, {d}]", p.display());
    }
    if let (Some(p), Some(l)) = (&a.lse, &lse) {
        io::write_output(p, "lse", &io::RawArray::f32(vec![hq, tq], l))?;
        println!("wrote {} [{hq}, {tq}]", p.display());
    }
    verdict
}

//! The flag lists of `attn bench` expanded into configurations (every
//! combination), every size checked before the device is opened.

use anyhow::Result;

use super::BenchArgs;
use crate::error::bad_input;

/// One shape to time: every path, score option and causal setting runs on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub b: usize,
    /// Query heads.
    pub h: usize,
    /// Key/value heads (`h % hkv == 0`).
    pub hkv: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
}

impl Config {
    /// The FLOPs GFLOP/s counts: 4·B·Hq·Nq·Nk·D, halved for causal with Nq = Nk.
    pub fn flops(&self, causal: bool) -> f64 {
        let Config {
            b, h, nq, nk, d, ..
        } = *self;
        4.0 * (b * h * nq * nk * d) as f64 * if causal && nq == nk { 0.5 } else { 1.0 }
    }
}

/// Every (b, h, hkv, nq, nk, d) of the flags, in the order they run, after
/// checking every flag that would otherwise fail only once the device is open.
pub fn expand(a: &BenchArgs) -> Result<Vec<Config>> {
    for (name, list) in [
        ("--b", &a.b),
        ("--h", &a.h),
        ("--hkv", &a.hkv),
        ("--nq", &a.nq),
        ("--nk", &a.nk),
        ("--n", &a.n),
        ("--d", &a.d),
    ] {
        if list.contains(&0) {
            return Err(bad_input!("{name}: every size must be at least 1"));
        }
    }
    if a.gemm_n == 0 {
        return Err(bad_input!("--gemm-n 0: expected at least 1"));
    }
    if a.kv_split == Some(0) {
        return Err(bad_input!("--kv-split 0: expected at least 1"));
    }
    if a.path.is_empty() {
        return Err(bad_input!(
            "--path: name at least one of fused, unfused, decode, coop, coop-full"
        ));
    }
    let lengths = lengths(a);
    let mut configs = Vec::new();
    for &b in &a.b {
        for &h in &a.h {
            let hkvs = if a.hkv.is_empty() {
                vec![h]
            } else {
                a.hkv.clone()
            };
            for hkv in hkvs {
                if h % hkv != 0 {
                    return Err(bad_input!(
                        "--hkv {hkv}: the query heads (--h {h}) must be a multiple of it"
                    ));
                }
                for &(nq, nk) in &lengths {
                    for &d in &a.d {
                        configs.push(Config {
                            b,
                            h,
                            hkv,
                            nq,
                            nk,
                            d,
                        });
                    }
                }
            }
        }
    }
    Ok(configs)
}

/// (Nq, Nk) pairs: `--n` alone gives square problems (Nq = Nk = each n);
/// otherwise every Nq × Nk, a missing list taking `--n`.
fn lengths(a: &BenchArgs) -> Vec<(usize, usize)> {
    if a.nq.is_empty() && a.nk.is_empty() {
        return a.n.iter().map(|&n| (n, n)).collect();
    }
    let nqs = if a.nq.is_empty() { &a.n } else { &a.nq };
    let nks = if a.nk.is_empty() { &a.n } else { &a.nk };
    nqs.iter()
        .flat_map(|&q| nks.iter().map(move |&k| (q, k)))
        .collect()
}

//! Every specialization a device can pick: the candidates the plan chooses
//! among, enumerated from the same choice functions. The shader test validates
//! exactly this list with naga for several device kinds, and a unit test checks
//! that every plan's choice is in it.

use crate::gpu::{DeviceCaps, Tuning};
use crate::kernels;
use crate::kernels::flash_attention::{FusedVariant, HEAD_DIM_BUCKETS};
use crate::shaders::{Elem, Specialization};

use super::fused::{fit_rows, for_few_queries, with_bias4, with_pairs, FEW_QUERY_ROWS};

/// The fused kernels' score-transform overrides: every combination of rules,
/// mask mode, ALiBi and softcap (`USE_RULES, MASK_MODE, USE_ALIBI, USE_SOFTCAP`).
fn transform_overrides() -> Vec<[(&'static str, f64); 4]> {
    let mut out = Vec::new();
    for rules in [0.0, 1.0] {
        for mode in [0.0, 1.0, 2.0, 3.0] {
            for alibi in [0.0, 1.0] {
                for softcap in [0.0, 1.0] {
                    out.push([
                        ("USE_RULES", rules),
                        ("MASK_MODE", mode),
                        ("USE_ALIBI", alibi),
                        ("USE_SOFTCAP", softcap),
                    ]);
                }
            }
        }
    }
    out
}

/// The fused variants reachable for one head-dim bucket: the many-query variant
/// with its rows fitted to any Nq (powers of two below its rows, and its rows),
/// the few-query lane-split variants, each with and without the vec4 bias.
pub(crate) fn fused_variants(caps: &DeviceCaps, tuning: Tuning, d: usize) -> Vec<FusedVariant> {
    let Ok(base) = super::fused::variant_for(caps, tuning, d, super::fused::MANY_QUERIES, false)
    else {
        // A forced shape this device cannot run: the plan refuses it.
        return Vec::new();
    };
    let lanes = base.lanes() as usize;
    let mut shapes = Vec::new();
    let mut nq = 1;
    while nq <= (base.rows as usize).next_power_of_two() * lanes {
        shapes.push(fit_rows(base, nq));
        nq *= 2;
    }
    if base.lanes_may_split() {
        let mut nq = 1;
        while nq <= FEW_QUERY_ROWS as usize {
            shapes.push(for_few_queries(base, nq));
            nq *= 2;
        }
    }
    // The cooperative-matrix kernel, where the device can run it (picked by
    // Coop::Auto or forced by Coop::On; its shape does not depend on Nq).
    for t in [
        tuning,
        tuning.with_coop(crate::gpu::Coop::On),
        tuning.with_coop(crate::gpu::Coop::Full),
    ] {
        if let Ok(Some(v)) = super::coop::coop_variant(caps, t, d, super::fused::MANY_QUERIES, true)
        {
            shapes.push(v);
        }
    }
    let mut out = Vec::new();
    for v in shapes {
        for aligned in [false, true] {
            for pairs in [false, true] {
                let v = with_pairs(with_bias4(v, aligned), pairs);
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// Every specialization a device with `caps` can pick under `tuning`.
pub fn specializations(caps: &DeviceCaps, tuning: Tuning) -> Vec<Specialization> {
    let tuning = tuning.granted(caps.features);
    let mut out: Vec<Specialization> = Vec::new();
    let mut push = |s: Specialization| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    for d in HEAD_DIM_BUCKETS {
        for v in fused_variants(caps, tuning, d as usize) {
            for t in transform_overrides() {
                // The vec4 bias is chosen only with an additive mask.
                if v.bias4 && t[1].1 != 1.0 && t[1].1 != 3.0 {
                    continue;
                }
                // Word loads read packed K and V (any packed dtype: the
                // accessors' shape is the same).
                let packed = [("k", Elem::BF16), ("v", Elem::BF16)];
                let s = v.specialization(t);
                push(if v.pairs { s.elems(&packed) } else { s });
            }
        }
    }
    for s in kernels::specializations(caps, tuning) {
        push(s);
    }
    // A caller's mods ([`crate::mods`], here the example ones) in every fused
    // variant, the scores kernel and the block-mask kernel.
    let example = Some(crate::mods::example().wgsl().clone());
    for d in HEAD_DIM_BUCKETS {
        for v in fused_variants(caps, tuning, d as usize) {
            let t = transform_overrides()[0];
            if v.bias4 {
                continue;
            }
            let packed = [("k", Elem::BF16), ("v", Elem::BF16)];
            let s = v.specialization(t).mods(example.clone());
            push(if v.pairs { s.elems(&packed) } else { s });
        }
    }
    for s in kernels::mod_specializations(tuning, example) {
        push(s);
    }
    // Keys through a block table ([`crate::seqs`], a paged pool): each fused
    // variant with PAGED on, under the rules (every paged launch has them or
    // not; the override is what differs).
    for d in HEAD_DIM_BUCKETS {
        for v in fused_variants(caps, tuning, d as usize) {
            if v.bias4 {
                continue;
            }
            for t in [transform_overrides()[0], transform_overrides()[16]] {
                let packed = [("k", Elem::BF16), ("v", Elem::BF16)];
                let s = v.specialization(t).overrides(&[("PAGED", 1.0)]);
                push(if v.pairs { s.elems(&packed) } else { s });
            }
        }
    }
    out
}

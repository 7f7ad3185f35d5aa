//! `TuningMode::Autotune`: the candidates measured once per class and device,
//! the choice kept in the cache file (a second device on the same adapter
//! starts tuned), results correct under the chosen variants.

use super::{check_o_lse, each_gpu_skipping, rng, uniform, Skip};
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::{
    attention, AttentionOptions, AttnShape, Gpu, GpuOptions, Layout, Masking, Tensor, TuningMode,
};

#[test]
fn autotune_measures_once_keeps_the_choice_and_stays_correct() {
    let skip = [Skip::Staged(
        "the mode chooses the variant itself: once per adapter",
    )];
    each_gpu_skipping("autotune", &skip, |gpu, _, ctx| {
        let dir = std::env::temp_dir().join(format!(
            "wgpu-attention-autotune-{}-{:?}",
            std::process::id(),
            gpu.info().backend
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = GpuOptions {
            tune_cache: Some(dir.join("tune.json")),
            ..Default::default()
        };
        let open = || {
            pollster::block_on(Gpu::from_adapter_with(
                gpu.adapter().expect("own adapter").clone(),
                &opts,
            ))
            .unwrap()
        };
        let own = open();
        own.set_poison_outputs(true);
        // A small head dim: every candidate compiles quickly.
        let sh = AttnShape {
            b: 2,
            hq: 4,
            hkv: 2,
            nq: 37,
            nk: 45,
            d: 20,
        };
        let (mut r, ctx) = rng(&format!("{ctx} {sh:?}"));
        let (q, k, v) = (
            uniform(&mut r, sh.q_len(), 1.0),
            uniform(&mut r, sh.kv_len(), 1.0),
            uniform(&mut r, sh.kv_len(), 1.0),
        );
        let qt = Tensor::from_bhnd(&own, &q, [sh.b, sh.hq, sh.nq, sh.d], Layout::Bhnd).unwrap();
        let kt = Tensor::from_bhnd(&own, &k, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bnhd).unwrap();
        let vt = Tensor::from_bhnd(&own, &v, [sh.b, sh.hkv, sh.nk, sh.d], Layout::Bnhd).unwrap();
        let masking = Masking {
            causal: true,
            ..Default::default()
        };
        let opts = AttentionOptions {
            masking: masking.clone(),
            return_lse: true,
            tuning: TuningMode::Autotune,
            ..Default::default()
        };
        let want = reference::attention(
            &q,
            &k,
            &v,
            &sh,
            &ReferenceOptions {
                masking,
                ..Default::default()
            },
        );
        assert!(
            own.tuned_choices().is_empty(),
            "{ctx}: fresh cache not empty"
        );
        let out = attention(&qt, &kt, &vt, &opts).unwrap();
        check_o_lse(&out, &want, &format!("{ctx} autotuned"));
        let choices = own.tuned_choices();
        assert_eq!(choices.len(), 1, "{ctx}: one class tuned: {choices:?}");
        let (class, chosen) = choices[0].clone();
        assert!(class.starts_with("fused d32 f32 mask0"), "{ctx}: {class}");
        // Measured once: the second call finds the choice and compiles nothing new.
        let pipelines = own.cached_pipelines();
        let out = attention(&qt, &kt, &vt, &opts).unwrap();
        check_o_lse(&out, &want, &format!("{ctx} autotuned, cached"));
        assert_eq!(own.cached_pipelines(), pipelines, "{ctx}: tuned again");
        // A second process (here: a second device) starts tuned from the file.
        let again = open();
        assert_eq!(
            again.tuned_choice(&class),
            Some(chosen),
            "{ctx}: file not read back"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}

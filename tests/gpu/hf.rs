//! Hugging Face checkpoints: for each family a `config.json` in its real field
//! names and a checkpoint in its real tensor names (sharded, fused `qkv_proj`,
//! per-head `query_key_value`, a multimodal Gemma 3 prefix), written here
//! with seeded weights; the config and one layer's weights are read back
//! (only that layer's bytes) and the layer runs on the GPU against the f64
//! layer with the options the config gives that layer.

use super::{each_gpu_skipping, rng, run, uniform, Skip};
use rand::Rng;
use wgpu_attention::hf::{Checkpoint, HfConfig, LayerKind};
use wgpu_attention::reference::multi_head_attention;
use wgpu_attention::verify::{assert_close, Tolerance};
use wgpu_attention::{DType, MhaWeights, MultiHeadAttention, Tensor};

/// (name, config.json, shards, dtype, layer to run, expected kind of that layer).
pub fn families() -> Vec<(&'static str, String, usize, DType, usize, LayerKind)> {
    vec![
        (
            "llama (Llama 3.1 scaling, sharded)",
            r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
                "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 3,
                "intermediate_size": 128, "vocab_size": 100, "rms_norm_eps": 1e-5,
                "max_position_embeddings": 1024, "rope_theta": 500000.0, "attention_bias": false,
                "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 32, "rope_type": "llama3"},
                "torch_dtype": "bfloat16", "tie_word_embeddings": false}"#
                .into(),
            3,
            DType::BF16,
            1,
            LayerKind::Full,
        ),
        (
            "mistral (window on every layer)",
            r#"{"model_type": "mistral", "hidden_size": 48, "num_attention_heads": 4,
                "num_key_value_heads": 1, "num_hidden_layers": 2, "head_dim": 12,
                "sliding_window": 6, "rope_theta": 1000000.0, "max_position_embeddings": 512}"#
                .into(),
            1,
            DType::F32,
            0,
            LayerKind::Sliding(6),
        ),
        (
            "qwen2 (q/k/v biases, window from max_window_layers)",
            r#"{"model_type": "qwen2", "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "num_hidden_layers": 4, "use_sliding_window": true,
                "sliding_window": 5, "max_window_layers": 2, "rope_theta": 1000000.0,
                "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
                "max_position_embeddings": 64}"#
                .into(),
            2,
            DType::F32,
            3,
            LayerKind::Sliding(5),
        ),
        (
            "qwen3 (QK-norm, head_dim != hidden/heads)",
            r#"{"model_type": "qwen3", "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2,
                "rms_norm_eps": 1e-6, "rope_theta": 1000000, "attention_bias": false,
                "use_sliding_window": false, "sliding_window": null, "max_position_embeddings": 256}"#
                .into(),
            1,
            DType::BF16,
            1,
            LayerKind::Full,
        ),
        (
            "gemma2 (softcap, query_pre_attn_scalar, alternate windows)",
            r#"{"model_type": "gemma2", "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2,
                "query_pre_attn_scalar": 24, "attn_logit_softcapping": 50.0,
                "final_logit_softcapping": 30.0, "sliding_window": 4, "rope_theta": 10000.0}"#
                .into(),
            1,
            DType::F32,
            0,
            LayerKind::Sliding(4),
        ),
        (
            "gemma3 (multimodal text_config, QK-norm (1 + w), local RoPE base)",
            r#"{"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
                "text_config": {"model_type": "gemma3_text", "hidden_size": 32,
                  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                  "num_hidden_layers": 6, "query_pre_attn_scalar": 16, "sliding_window": 5,
                  "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                  "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                  "max_position_embeddings": 4096},
                "vision_config": {"hidden_size": 8}}"#
                .into(),
            1,
            DType::BF16,
            2,
            LayerKind::Sliding(5),
        ),
        (
            "gpt_oss (sinks, biases, YaRN truncate false, layer_types)",
            r#"{"model_type": "gpt_oss", "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "head_dim": 8, "num_hidden_layers": 2,
                "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"],
                "attention_bias": true, "rope_theta": 150000,
                "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
                  "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
                "max_position_embeddings": 131072, "num_local_experts": 4, "experts_per_token": 2}"#
                .into(),
            2,
            DType::BF16,
            1,
            LayerKind::Full,
        ),
        (
            "phi3 (fused qkv_proj, LongRoPE, partial rotary)",
            r#"{"model_type": "phi3", "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "num_hidden_layers": 2, "partial_rotary_factor": 0.75,
                "original_max_position_embeddings": 8, "max_position_embeddings": 64,
                "rope_theta": 10000.0, "sliding_window": null,
                "rope_scaling": {"type": "longrope",
                  "short_factor": [1.0, 1.1, 1.3],
                  "long_factor": [1.5, 3.0, 9.0]}}"#
                .into(),
            1,
            DType::F32,
            1,
            LayerKind::Full,
        ),
        (
            "gpt_neox (per-head query_key_value, rotary_pct)",
            r#"{"model_type": "gpt_neox", "hidden_size": 32, "num_attention_heads": 4,
                "num_hidden_layers": 2, "rotary_pct": 0.5, "rotary_emb_base": 10000,
                "max_position_embeddings": 2048, "use_parallel_residual": true,
                "layer_norm_eps": 1e-5, "attention_bias": true}"#
                .into(),
            1,
            DType::F16,
            0,
            LayerKind::Full,
        ),
        (
            "gptj (interleaved rotary_dim, out_proj)",
            r#"{"model_type": "gptj", "n_embd": 32, "n_head": 4, "n_layer": 2,
                "rotary_dim": 4, "n_positions": 2048, "layer_norm_epsilon": 1e-5}"#
                .into(),
            1,
            DType::F32,
            1,
            LayerKind::Full,
        ),
    ]
}

#[test]
fn every_family_loads_and_runs_its_layer() {
    let skip = [Skip::NonDefault(
        "about loading checkpoints, not the kernel variants",
    )];
    each_gpu_skipping("hf families", &skip, |gpu, t, ctx| {
        for (name, json, shards, dtype, layer, kind) in families() {
            let (mut r, ctx) = rng(&format!("{ctx} {name}"));
            let cfg = HfConfig::from_json(&json).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(cfg.layer_kind(layer).unwrap(), kind, "{ctx}");
            let layers: Vec<MhaWeights> = (0..cfg.num_layers)
                .map(|_| {
                    MhaWeights::random(&cfg.mha, r.random())
                        .unwrap()
                        .to_dtype(dtype)
                })
                .collect();
            // Other tensors of each layer (an MLP): never read.
            let dm = cfg.mha.d_model;
            let extra: Vec<(String, Vec<usize>, Vec<f32>)> = (0..cfg.num_layers)
                .map(|i| {
                    (
                        format!("model.layers.{i}.mlp.up_proj.weight"),
                        vec![8 * dm, dm],
                        vec![0.5; 8 * dm * dm],
                    )
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            Checkpoint::save(dir.path(), &json, &cfg, &layers, &extra, shards).unwrap();
            assert_eq!(HfConfig::from_dir(dir.path()).unwrap(), cfg, "{ctx}");
            let ckpt = Checkpoint::open(dir.path()).unwrap();
            let w = ckpt
                .layer_weights(&cfg, layer)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(w, layers[layer], "{ctx}: the layer's weights read back");
            let total: u64 = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(
                ckpt.bytes_read() * 2 < total,
                "{ctx}: read {} of {total} bytes: more than one layer's",
                ckpt.bytes_read()
            );
            let layer_gpu = MultiHeadAttention::new(gpu, cfg.mha, &w).unwrap();
            let (b, n) = (2, 11);
            let x = uniform(&mut r, b * n * dm, 1.0);
            let xt = Tensor::from_slice(gpu, &x, &[b, n, dm]).unwrap();
            let opts = cfg.layer_options(layer).unwrap();
            let y = run(gpu, t, |rec| {
                layer_gpu.record_forward(rec, &xt, None, &opts)
            });
            let ropts = cfg.layer_reference_options(layer).unwrap();
            let want = multi_head_attention(&x, &x, [b, n, n], &cfg.mha, &w, &ropts);
            assert_close(&y.to_vec_blocking().unwrap(), &want, Tolerance::F32, &ctx);
        }
    });
}

/// `examples/generate.rs` on each adapter: greedy decoding with a KV cache
/// per layer and the decode path, every step's logits against a full f64
/// recompute (the example prints PASS last); three families (sinks and
/// YaRN with windows; QK-norm; softcap with a window), two sequences, and
/// once from a checkpoint directory.
#[test]
fn the_generate_example_passes() {
    let skip = [Skip::NonDefault("runs the example once per adapter")];
    each_gpu_skipping("examples/generate", &skip, |gpu, _, ctx| {
        let dir = tempfile::tempdir().unwrap();
        let (_, json, ..) = families()
            .into_iter()
            .find(|f| f.0.starts_with("qwen3"))
            .unwrap();
        let cfg = HfConfig::from_json(&json).unwrap();
        let layers: Vec<MhaWeights> = (0..cfg.num_layers)
            .map(|l| MhaWeights::random(&cfg.mha, l as u64).unwrap())
            .collect();
        Checkpoint::save(dir.path(), &json, &cfg, &layers, &[], 2).unwrap();
        let hf = dir.path().display().to_string();
        for args in [
            vec!["--family", "gpt_oss", "--batch", "2", "--tokens", "10"],
            vec!["--family", "qwen3", "--tokens", "6"],
            vec!["--family", "gemma2", "--prompt", "9", "--tokens", "4"],
            vec!["--hf", &hf, "--tokens", "4"],
        ] {
            let stdout = super::run_example(gpu, ctx, "generate", &args);
            assert_eq!(
                stdout.lines().last(),
                Some("PASS"),
                "{ctx} {args:?}:\n{stdout}"
            );
            assert!(stdout.contains("tokens/s"), "{ctx}:\n{stdout}");
        }
    });
}

//! `attn mha` against the reference layer: self-attention with sinusoidal PE
//! and a causal mask, cross-attention with ALiBi.

use std::path::Path;

use wgpu_attention::mask::Masking;
use wgpu_attention::reference::{self, MhaReferenceOptions};
use wgpu_attention::{MhaConfig, MhaWeights};

use super::{assert_bad_input, assert_close, attn, backend, ok, read_npy, uniform, write_npy};

#[test]
fn mha_matches_the_reference_layer() {
    let Some(be) = backend("mha") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, n, nk, dm) = (2, 5, 7, 16);
    let cfg = MhaConfig::new(dm, 4).unwrap().with_kv_heads(2).unwrap();
    let w = MhaWeights::random(&cfg, 3).unwrap();
    let wp = dir.path().join("w.safetensors");
    std::fs::write(&wp, w.to_safetensors("layer.").unwrap()).unwrap();
    let x = uniform(b * n * dm, 20);
    let xkv = uniform(b * nk * dm, 21);
    let (xp, xkvp, yp) = (
        dir.path().join("x.npy"),
        dir.path().join("xkv.npy"),
        dir.path().join("y.npy"),
    );
    write_npy(&xp, &[b, n, dm], &x);
    write_npy(&xkvp, &[b, nk, dm], &xkv);
    let s = |p: &Path| p.display().to_string();

    // Self-attention with sinusoidal PE and a causal mask.
    ok(attn(
        be,
        &[
            "mha",
            "--weights",
            &s(&wp),
            "--prefix",
            "layer.",
            "--heads",
            "4",
            "--x",
            &s(&xp),
            "--pe",
            "sinusoidal",
            "--causal",
            "bottom-right",
            "--out",
            &s(&yp),
        ],
    ));
    let xpe = reference::posenc(&x, b, n, dm, 0);
    let masking = Masking {
        causal: true,
        ..Default::default()
    };
    let want = reference::multi_head_attention(
        &xpe,
        &xpe,
        [b, n, n],
        &cfg,
        &w,
        &MhaReferenceOptions {
            masking,
            ..Default::default()
        },
    );
    let (shape, y) = read_npy(&yp);
    assert_eq!(shape, [b, n, dm]);
    assert_close("mha self + pe", &y, &want);

    // Cross-attention with ALiBi, checked by the binary itself too.
    ok(attn(
        be,
        &[
            "mha",
            "--weights",
            &s(&wp),
            "--prefix",
            "layer.",
            "--heads",
            "4",
            "--x",
            &s(&xp),
            "--x-kv",
            &s(&xkvp),
            "--alibi",
            "--out",
            &s(&yp),
            "--check",
        ],
    ));
    let want = reference::multi_head_attention(
        &x,
        &xkv,
        [b, n, nk],
        &cfg,
        &w,
        &MhaReferenceOptions {
            alibi: true,
            ..Default::default()
        },
    );
    assert_close("mha cross + alibi", &read_npy(&yp).1, &want);
}

/// bf16 weights stay bf16 on the GPU (the layer says so) and the output
/// matches the reference layer on the same weights with f32 activations.
#[test]
fn mha_keeps_bf16_weights() {
    let Some(be) = backend("mha bf16") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, n, dm) = (1, 6, 16);
    let cfg = MhaConfig::new(dm, 4).unwrap();
    let w = MhaWeights::random(&cfg, 5)
        .unwrap()
        .to_dtype(wgpu_attention::DType::BF16);
    let wp = dir.path().join("w.safetensors");
    std::fs::write(&wp, w.to_safetensors("").unwrap()).unwrap();
    let x = uniform(b * n * dm, 22);
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy(&xp, &[b, n, dm], &x);
    let s = |p: &Path| p.display().to_string();
    let out = ok(attn(
        be,
        &[
            "mha",
            "--weights",
            &s(&wp),
            "--heads",
            "4",
            "--x",
            &s(&xp),
            "--out",
            &s(&yp),
            "--check",
        ],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("weights bf16 (kept in their dtype"), "{text}");
    let want = reference::multi_head_attention(
        &x,
        &x,
        [b, n, n],
        &cfg,
        &w,
        &MhaReferenceOptions::default(),
    );
    let (_, y) = read_npy(&yp);
    assert_close("bf16 weights", &y, &want);
}

/// `--hf DIR --layer I`: the layer of a checkpoint written in the family's
/// naming (sharded Qwen3 with QK-norm, gpt-oss with sinks and YaRN, Phi-3's
/// fused qkv_proj), checked by the binary and here against the f64 layer
/// with the options the config gives that layer.
#[test]
fn mha_runs_a_layer_of_a_hugging_face_checkpoint() {
    use wgpu_attention::hf::{Checkpoint, HfConfig};
    let Some(be) = backend("mha --hf") else {
        return;
    };
    let configs = [
        (
            r#"{"model_type": "qwen3", "hidden_size": 32, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 3,
             "rms_norm_eps": 1e-6, "rope_theta": 1000000, "max_position_embeddings": 256}"#,
            3,
            2,
        ),
        (
            r#"{"model_type": "gpt_oss", "hidden_size": 32, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 8, "num_hidden_layers": 2, "sliding_window": 3,
             "layer_types": ["sliding_attention", "full_attention"], "rope_theta": 150000,
             "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
               "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
             "max_position_embeddings": 131072}"#,
            1,
            0,
        ),
        (
            r#"{"model_type": "phi3", "hidden_size": 32, "num_attention_heads": 4,
             "num_key_value_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 64,
             "original_max_position_embeddings": 8,
             "rope_scaling": {"type": "longrope", "short_factor": [1, 1.2, 1.4, 1.6],
                              "long_factor": [2, 4, 6, 8]}}"#,
            1,
            1,
        ),
    ];
    for (i, (json, shards, layer)) in configs.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = HfConfig::from_json(json).unwrap();
        let layers: Vec<MhaWeights> = (0..cfg.num_layers)
            .map(|l| MhaWeights::random(&cfg.mha, 40 + l as u64).unwrap())
            .collect();
        Checkpoint::save(dir.path(), json, &cfg, &layers, &[], shards).unwrap();
        let (b, n, dm) = (2, 9, 32);
        let x = uniform(b * n * dm, 30 + i as u64);
        let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
        write_npy(&xp, &[b, n, dm], &x);
        let s = |p: &Path| p.display().to_string();
        let out = ok(attn(
            be,
            &[
                "mha",
                "--hf",
                &s(dir.path()),
                "--layer",
                &layer.to_string(),
                "--x",
                &s(&xp),
                "--out",
                &s(&yp),
                "--check",
            ],
        ));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&cfg.model_type), "{stdout}");
        let want = reference::multi_head_attention(
            &x,
            &x,
            [b, n, n],
            &cfg.mha,
            &layers[layer],
            &cfg.layer_reference_options(layer).unwrap(),
        );
        assert_close(&cfg.model_type, &read_npy(&yp).1, &want);
    }
}

/// A plain layer with what model families add, from flags: sinks from a
/// file, QK-norm weights in the file (Gemma's offset), a YaRN scaling as
/// JSON, partial rotary, softcap, a sliding window and per-token position
/// ids; checked against the f64 layer.
#[test]
fn mha_plain_layer_with_sinks_qk_norm_rope_scaling_and_softcap() {
    use wgpu_attention::{Biases, QkNorm, RmsNorm, Rope, RopeScaling, Window};
    let Some(be) = backend("mha options") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, n, dm, h) = (2, 8, 24, 4);
    let cfg = MhaConfig::new(dm, h)
        .unwrap()
        .with_kv_heads(2)
        .unwrap()
        .with_bias(Biases::QKV)
        .with_qk_norm(Some(QkNorm {
            norm: RmsNorm {
                eps: 1e-5,
                weight_offset: 1.0,
            },
            per_head: true,
        }))
        .unwrap();
    let mut w = MhaWeights::random(&cfg.with_sinks(true), 9).unwrap();
    let sinks = w.sinks.take().unwrap();
    let wp = dir.path().join("w.safetensors");
    std::fs::write(&wp, w.to_safetensors("").unwrap()).unwrap();
    let sp = dir.path().join("sinks.npy");
    write_npy(&sp, &[h], &sinks);
    w.sinks = Some(sinks);
    let x = uniform(b * n * dm, 23);
    let (xp, yp) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    write_npy(&xp, &[b, n, dm], &x);
    let ids: Vec<u32> = (0..b * n).map(|i| ((i * 5) % 11) as u32).collect();
    let ids_s: Vec<String> = ids.iter().map(u32::to_string).collect();
    let s = |p: &Path| p.display().to_string();
    ok(attn(
        be,
        &[
            "mha",
            "--weights",
            &s(&wp),
            "--heads",
            "4",
            "--x",
            &s(&xp),
            "--out",
            &s(&yp),
            "--sinks",
            &s(&sp),
            "--qk-norm",
            "--qk-norm-eps",
            "1e-5",
            "--qk-norm-offset",
            "1",
            "--rope",
            "half-split",
            "--rotary-dims",
            "4",
            "--rope-scaling",
            r#"{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4}"#,
            "--softcap",
            "3",
            "--causal",
            "bottom-right",
            "--window",
            "4,0",
            "--position-ids",
            &ids_s.join(","),
            "--check",
        ],
    ));
    let want = reference::multi_head_attention(
        &x,
        &x,
        [b, n, n],
        &cfg.with_sinks(true),
        &w,
        &MhaReferenceOptions {
            masking: Masking {
                causal: true,
                window: Some(Window { left: 4, right: 0 }),
                ..Default::default()
            },
            rope: Some(Rope {
                rotary_dims: Some(4),
                scaling: RopeScaling::Yarn {
                    factor: 4.0,
                    original_max_position: 4,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    attention_factor: None,
                    mscale: None,
                    mscale_all_dim: None,
                    truncate: true,
                },
                ..Default::default()
            }),
            softcap: Some(3.0),
            position_ids: Some(&ids),
            ..Default::default()
        },
    );
    assert_close("mha plain + family options", &read_npy(&yp).1, &want);
}

/// Bad `mha` input exits 2 with one line naming what to change.
#[test]
fn mha_bad_checkpoints_and_flags_exit_2() {
    use wgpu_attention::hf::{Checkpoint, HfConfig};
    let Some(be) = backend("mha errors") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"model_type": "llama", "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1}"#;
    let cfg = HfConfig::from_json(json).unwrap();
    let w = MhaWeights::random(&cfg.mha, 1).unwrap();
    Checkpoint::save(dir.path(), json, &cfg, std::slice::from_ref(&w), &[], 1).unwrap();
    let xp = dir.path().join("x.npy");
    write_npy(&xp, &[1, 3, 16], &uniform(48, 1));
    let yp = dir.path().join("y.npy");
    let s = |p: &Path| p.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "mha",
            "--x",
            xp.to_str().unwrap(),
            "--out",
            yp.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        attn(be, &args)
    };
    let d = s(dir.path());
    assert_bad_input(
        run(&["--hf", &d, "--layer", "0", "--causal", "top-left"]),
        &["--causal", "--hf"],
        &yp,
    );
    assert_bad_input(
        run(&["--hf", &d, "--layer", "5"]),
        &["layer 5", "1 layers"],
        &yp,
    );
    // An unsupported config field is named.
    let bad = tempfile::tempdir().unwrap();
    let json_bad = r#"{"model_type": "llama", "hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
        "rope_scaling": {"rope_type": "linear", "factor": 2, "mystery": 3}}"#;
    std::fs::write(bad.path().join("config.json"), json_bad).unwrap();
    std::fs::copy(
        dir.path().join("model.safetensors"),
        bad.path().join("model.safetensors"),
    )
    .unwrap();
    assert_bad_input(
        run(&["--hf", &s(bad.path()), "--layer", "0"]),
        &["rope_scaling.mystery"],
        &yp,
    );
    // Plain weights: a scaling of an unknown type, sinks of the wrong length.
    let wp = dir.path().join("w.safetensors");
    std::fs::write(&wp, w.to_safetensors("").unwrap()).unwrap();
    assert_bad_input(
        run(&[
            "--weights",
            &s(&wp),
            "--heads",
            "2",
            "--rope",
            "half-split",
            "--rope-scaling",
            r#"{"rope_type": "ntk"}"#,
        ]),
        &["--rope-scaling", "\"ntk\""],
        &yp,
    );
    let sp = dir.path().join("s.npy");
    write_npy(&sp, &[3], &[0.0f32; 3]);
    assert_bad_input(
        run(&["--weights", &s(&wp), "--heads", "2", "--sinks", &s(&sp)]),
        &["--sinks", "[H] = [2]"],
        &yp,
    );
    assert_bad_input(
        run(&["--weights", &s(&wp), "--heads", "2", "--softcap=-1"]),
        &["--softcap"],
        &yp,
    );
    assert_bad_input(
        run(&["--weights", &s(&wp), "--heads", "2", "--qk-norm"]),
        &["--qk-norm", "q_norm.weight"],
        &yp,
    );
}

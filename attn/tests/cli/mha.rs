//! `attn mha` against the reference layer: self-attention with sinusoidal PE
//! and a causal mask, cross-attention with ALiBi.

use std::path::Path;

use wgpu_attention::mask::Masking;
use wgpu_attention::reference::{self, MhaReferenceOptions};
use wgpu_attention::{MhaConfig, MhaWeights};

use super::{assert_close, attn, backend, ok, read_npy, uniform, write_npy};

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

//! `attn run`: every path and option against the f64 reference, the BNHD
//! layout, f16 and `.safetensors` inputs, `--weights` and `--check`, and GL.

use std::path::Path;

use wgpu_attention::alibi_slopes;
use wgpu_attention::mask::{Alignment, HostMask, Masking, Window};
use wgpu_attention::reference::{self, ReferenceOptions};

use super::{
    assert_close, attn, backend, have_gl, ok, read_npy, text, uniform, write_npy, Problem,
};

/// Runs `run` with `extra` flags and checks O and LSE against the reference with `opts`.
fn check_option(test: &str, p: &Problem, extra: &[&str], opts: ReferenceOptions) -> Vec<f32> {
    let Some(be) = backend(test) else {
        return Vec::new();
    };
    ok(p.run(be, extra));
    p.check_outputs(test, &opts)
}

#[test]
fn run_plain_each_path() {
    let p = Problem::new(2, 4, 2, 5, 7, 8, 1);
    for path in ["auto", "fused", "unfused", "decode"] {
        check_option(
            &format!("run --path {path}"),
            &p,
            &["--path", path],
            ReferenceOptions::default(),
        );
    }
}

#[test]
fn run_causal_top_left() {
    let p = Problem::new(1, 2, 2, 5, 7, 8, 2);
    check_option(
        "run --causal top-left",
        &p,
        &["--causal", "top-left", "--path", "fused"],
        ReferenceOptions {
            masking: Masking {
                causal: true,
                alignment: Alignment::TopLeft,
                ..Default::default()
            },
            ..Default::default()
        },
    );
}

#[test]
fn run_causal_bottom_right_gives_neg_inf_lse_rows() {
    // Nq > Nk bottom-right: the first Nq - Nk rows see no key.
    let p = Problem::new(1, 2, 1, 7, 5, 8, 3);
    for path in ["unfused", "fused"] {
        let lse = check_option(
            "run --causal bottom-right",
            &p,
            &["--causal", "bottom-right", "--path", path],
            ReferenceOptions {
                masking: Masking {
                    causal: true,
                    alignment: Alignment::BottomRight,
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        if !lse.is_empty() {
            assert_eq!(
                lse[0],
                f32::NEG_INFINITY,
                "{path}: LSE of a fully masked row"
            );
            assert_eq!(lse[1], f32::NEG_INFINITY);
            assert!(lse[2].is_finite());
        }
    }
}

#[test]
fn run_window() {
    let p = Problem::new(1, 2, 2, 9, 9, 8, 4);
    check_option(
        "run --window",
        &p,
        &["--window", "2,1", "--path", "decode"],
        ReferenceOptions {
            masking: Masking {
                window: Some(Window { left: 2, right: 1 }),
                ..Default::default()
            },
            ..Default::default()
        },
    );
}

#[test]
fn run_bool_mask_broadcast() {
    let p = Problem::new(2, 2, 2, 5, 6, 8, 5);
    let vals: Vec<bool> = uniform(2 * 5 * 6, 50).iter().map(|&x| x > -0.5).collect();
    write_npy(&p.path("mask.npy"), &[2, 1, 5, 6], &vals);
    let host = HostMask::bool(vals, [2, 1, 5, 6]).unwrap();
    check_option(
        "run --mask bool",
        &p,
        &["--mask", &p.p("mask.npy"), "--path", "unfused"],
        ReferenceOptions {
            mask: Some(&host),
            ..Default::default()
        },
    );
}

#[test]
fn run_float_mask_2d_with_neg_inf() {
    let p = Problem::new(1, 2, 2, 4, 6, 8, 6);
    let vals: Vec<f32> = (0..4 * 6)
        .map(|x| {
            if x % 6 > x / 6 + 2 {
                f32::NEG_INFINITY
            } else {
                0.3 * (x % 3) as f32
            }
        })
        .collect();
    // 2-D [Nq, Nk]: broadcast as NumPy does.
    write_npy(&p.path("mask.npy"), &[4, 6], &vals);
    let host = HostMask::additive(vals, [1, 1, 4, 6]).unwrap();
    check_option(
        "run --mask float",
        &p,
        &["--mask", &p.p("mask.npy"), "--path", "fused"],
        ReferenceOptions {
            mask: Some(&host),
            ..Default::default()
        },
    );
}

#[test]
fn run_kv_lengths_list_and_file() {
    let p = Problem::new(3, 2, 2, 4, 7, 8, 7);
    let opts = || ReferenceOptions {
        masking: Masking {
            key_lengths: Some(vec![5, 7, 0]),
            ..Default::default()
        },
        ..Default::default()
    };
    let lse = check_option(
        "run --kv-lengths list",
        &p,
        &["--kv-lengths", "5,7,0"],
        opts(),
    );
    if lse.is_empty() {
        return;
    }
    // Batch 2 sees no key: every LSE of it is -inf.
    assert!(lse[2 * 2 * 4..].iter().all(|&l| l == f32::NEG_INFINITY));
    write_npy(&p.path("lens.npy"), &[3], &[5i64, 7, 0]);
    check_option(
        "run --kv-lengths file",
        &p,
        &["--kv-lengths", &p.p("lens.npy"), "--path", "unfused"],
        opts(),
    );
}

#[test]
fn run_alibi_softcap_scale() {
    let p = Problem::new(1, 4, 2, 6, 6, 8, 8);
    let slopes = alibi_slopes(4);
    check_option(
        "run --alibi",
        &p,
        &["--alibi", "--causal", "top-left"],
        ReferenceOptions {
            alibi: Some(&slopes),
            masking: Masking {
                causal: true,
                alignment: Alignment::TopLeft,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    check_option(
        "run --softcap",
        &p,
        &["--softcap", "0.5", "--path", "unfused"],
        ReferenceOptions {
            softcap: Some(0.5),
            ..Default::default()
        },
    );
    check_option(
        "run --scale",
        &p,
        &["--scale", "1.7", "--path", "fused"],
        ReferenceOptions {
            scale: Some(1.7f32 as f64),
            ..Default::default()
        },
    );
}

/// Logical BHND → BNHD memory order.
fn bnhd(x: &[f32], [b, h, n, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for bi in 0..b {
        for hi in 0..h {
            for ni in 0..n {
                for di in 0..d {
                    out[((bi * n + ni) * h + hi) * d + di] = x[((bi * h + hi) * n + ni) * d + di];
                }
            }
        }
    }
    out
}

#[test]
fn run_layout_bnhd_f16_and_safetensors() {
    let Some(be) = backend("run --layout bnhd") else {
        return;
    };
    let p = Problem::new(2, 4, 2, 5, 3, 8, 9);
    let sh = p.sh;
    let (qd, kd) = ([2, 4, 5, 8], [2, 2, 3, 8]);
    write_npy(&p.path("qb.npy"), &[2, 5, 4, 8], &bnhd(&p.q, qd));
    write_npy(&p.path("kb.npy"), &[2, 3, 2, 8], &bnhd(&p.k, kd));
    write_npy(&p.path("vb.npy"), &[2, 3, 2, 8], &bnhd(&p.v, kd));
    let (q, k, v, o) = (p.p("qb.npy"), p.p("kb.npy"), p.p("vb.npy"), p.p("ob.npy"));
    let want = p.reference(&ReferenceOptions::default());
    for path in ["fused", "unfused"] {
        ok(attn(
            be,
            &[
                "run", "--q", &q, "--k", &k, "--v", &v, "--layout", "bnhd", "--out", &o, "--path",
                path,
            ],
        ));
        let (shape, got) = read_npy(&p.path("ob.npy"));
        assert_eq!(shape, [2, 5, 4, 8], "O is written in the input's layout");
        let want_bnhd: Vec<f64> = bnhd(
            &want.o.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            [sh.b, sh.hq, sh.nq, sh.d],
        )
        .into_iter()
        .map(f64::from)
        .collect();
        // The f32 rounding of the reference is far below the tolerance.
        assert_close(&format!("bnhd {path}"), &got, &want_bnhd);
    }

    // f16 inputs widened to f32 by --dtype f32 (exactly): O in f32, the
    // reference on the same (rounded) values. (Without --dtype, O is f16: dtype.rs.)
    let h = |x: &[f32]| {
        x.iter()
            .map(|&v| half::f16::from_f32(v))
            .collect::<Vec<_>>()
    };
    let f = |x: &[half::f16]| x.iter().map(|&v| v.to_f32()).collect::<Vec<_>>();
    let (qh, kh, vh) = (h(&p.q), h(&p.k), h(&p.v));
    write_npy(&p.path("qh.npy"), &[2, 4, 5, 8], &qh);
    write_npy(&p.path("kh.npy"), &[2, 2, 3, 8], &kh);
    write_npy(&p.path("vh.npy"), &[2, 2, 3, 8], &vh);
    let oh = p.p("oh.npy");
    ok(attn(
        be,
        &[
            "run",
            "--q",
            &p.p("qh.npy"),
            "--k",
            &p.p("kh.npy"),
            "--v",
            &p.p("vh.npy"),
            "--out",
            &oh,
            "--dtype",
            "f32",
        ],
    ));
    let want_h = reference::attention(&f(&qh), &f(&kh), &f(&vh), &sh, &Default::default());
    assert_close("f16 inputs", &read_npy(Path::new(&oh)).1, &want_h.o);

    // .safetensors with custom names.
    let bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let (qb, kb, vb) = (bytes(&p.q), bytes(&p.k), bytes(&p.v));
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let views = vec![
        (
            "attn.q".to_string(),
            TensorView::new(Dtype::F32, vec![2, 4, 5, 8], &qb).unwrap(),
        ),
        (
            "attn.k".to_string(),
            TensorView::new(Dtype::F32, vec![2, 2, 3, 8], &kb).unwrap(),
        ),
        (
            "attn.v".to_string(),
            TensorView::new(Dtype::F32, vec![2, 2, 3, 8], &vb).unwrap(),
        ),
    ];
    std::fs::write(
        p.path("qkv.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    let os = p.p("os.npy");
    ok(attn(
        be,
        &[
            "run",
            "--safetensors",
            &p.p("qkv.safetensors"),
            "--q-name",
            "attn.q",
            "--k-name",
            "attn.k",
            "--v-name",
            "attn.v",
            "--out",
            &os,
        ],
    ));
    assert_close("safetensors inputs", &read_npy(Path::new(&os)).1, &want.o);
}

#[test]
fn run_weights_and_check() {
    let Some(be) = backend("run --weights") else {
        return;
    };
    let p = Problem::new(1, 2, 1, 4, 6, 8, 10);
    let w = p.p("p.npy");
    let out = ok(p.run(be, &["--weights", &w, "--causal", "top-left", "--check"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("check weights PASS"), "{}", text(&out));
    let want = p.reference(&ReferenceOptions {
        masking: Masking {
            causal: true,
            alignment: Alignment::TopLeft,
            ..Default::default()
        },
        ..Default::default()
    });
    let (shape, got) = read_npy(Path::new(&w));
    assert_eq!(shape, [1, 2, 4, 6]);
    assert_close("weights", &got, &want.p);

    // A tolerance no f32 result meets: the check fails with exit 1, outputs still written.
    std::fs::remove_file(p.path("o.npy")).unwrap();
    let out = p.run(be, &["--check", "--tol", "1e-15"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--check failed"));
    assert!(p.path("o.npy").exists());
}

#[test]
fn run_on_gl_with_check() {
    if !have_gl("run --backend gl") {
        return;
    }
    let p = Problem::new(1, 2, 2, 4, 5, 4, 11);
    let out = ok(p.run(
        "gl",
        &["--backend", "gl", "--check", "--causal", "bottom-right"],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Gl") && stdout.contains("check o       PASS"),
        "{}",
        text(&out)
    );
}

/// `run --cu-seqlens-q/-k`: packed sequences (empty and one-token ones),
/// checked by the binary and here per sequence; bad prefix sums exit 2.
#[test]
fn run_packed_varlen_sequences() {
    use std::path::Path;
    let Some(be) = super::backend("run varlen") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (hq, hkv, d) = (4, 2, 8);
    let (cq, ck) = ([0u32, 5, 5, 6, 12], [0u32, 7, 9, 10, 20]);
    let (tq, tk) = (12, 20);
    let q = super::uniform(tq * hq * d, 40);
    let k = super::uniform(tk * hkv * d, 41);
    let v = super::uniform(tk * hkv * d, 42);
    let p = |n: &str| dir.path().join(n);
    super::write_npy(&p("q.npy"), &[tq, hq, d], &q);
    super::write_npy(&p("k.npy"), &[tk, hkv, d], &k);
    super::write_npy(&p("v.npy"), &[tk, hkv, d], &v);
    let s = |x: &Path| x.display().to_string();
    let list = |c: &[u32]| c.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let (lq, lk) = (list(&cq), list(&ck));
    let base = [
        "run",
        "--q",
        &s(&p("q.npy")),
        "--k",
        &s(&p("k.npy")),
        "--v",
        &s(&p("v.npy")),
    ];
    let mut args: Vec<&str> = base.to_vec();
    let (op, lp) = (s(&p("o.npy")), s(&p("lse.npy")));
    args.extend([
        "--cu-seqlens-q",
        &lq,
        "--cu-seqlens-k",
        &lk,
        "--causal",
        "bottom-right",
        "--alibi",
        "--out",
        &op,
        "--lse",
        &lp,
        "--check",
    ]);
    super::ok(super::attn(be, &args));
    let (shape, o) = super::read_npy(&p("o.npy"));
    assert_eq!(shape, [tq, hq, d]);
    let (lshape, lse) = super::read_npy(&p("lse.npy"));
    assert_eq!(lshape, [hq, tq]);
    let slopes = wgpu_attention::alibi_slopes(hq);
    for sq in 0..4 {
        let (q0, k0) = (cq[sq] as usize, ck[sq] as usize);
        let (nq, nk) = (cq[sq + 1] as usize - q0, ck[sq + 1] as usize - k0);
        if nq == 0 {
            continue;
        }
        let bhnd = |x: &[f32], r0: usize, n: usize, h: usize| -> Vec<f32> {
            wgpu_attention::Layout::Bnhd.to_bhnd(&x[r0 * h * d..(r0 + n) * h * d], [1, h, n, d])
        };
        let want = wgpu_attention::reference::attention(
            &bhnd(&q, q0, nq, hq),
            &bhnd(&k, k0, nk, hkv),
            &bhnd(&v, k0, nk, hkv),
            &wgpu_attention::AttnShape {
                b: 1,
                hq,
                hkv,
                nq,
                nk,
                d,
            },
            &wgpu_attention::reference::ReferenceOptions {
                masking: wgpu_attention::Masking {
                    causal: true,
                    ..Default::default()
                },
                alibi: Some(&slopes),
                ..Default::default()
            },
        );
        for i in 0..nq {
            for h in 0..hq {
                let got = &o[((q0 + i) * hq + h) * d..][..d];
                super::assert_close(
                    &format!("seq {sq} row {i} head {h}"),
                    got,
                    &want.o[(h * nq + i) * d..][..d],
                );
                assert!((lse[h * tq + q0 + i] as f64 - want.lse[h * nq + i]).abs() < 1e-5);
            }
        }
    }
    // Not monotone; a float .npy of prefix sums; a dense mask with packed input.
    let out = p("bad.npy");
    let mut bad: Vec<&str> = base.to_vec();
    let os = s(&out);
    bad.extend(["--cu-seqlens-q", "0,5,4,12", "--out", &os]);
    super::assert_bad_input(
        super::attn(be, &bad),
        &["--cu-seqlens-q", "not monotone"],
        &out,
    );
    super::write_npy(&p("cu.npy"), &[5], &[0.0f32, 5.0, 5.0, 6.0, 12.0]);
    let mut bad: Vec<&str> = base.to_vec();
    let cu = s(&p("cu.npy"));
    bad.extend(["--cu-seqlens-q", &cu, "--out", &os]);
    super::assert_bad_input(super::attn(be, &bad), &["--cu-seqlens-q", "integer"], &out);
    super::write_npy(&p("m.npy"), &[1], &[true]);
    let mut bad: Vec<&str> = base.to_vec();
    let m = s(&p("m.npy"));
    bad.extend(["--cu-seqlens-q", &lq, "--mask", &m, "--out", &os]);
    super::assert_bad_input(super::attn(be, &bad), &["--mask", "--cu-seqlens-q"], &out);
}

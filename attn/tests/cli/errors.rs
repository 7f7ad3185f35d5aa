//! Bad input of every command: exit 2 with one line naming the flag or file,
//! and no output written.

use super::{assert_bad_input, attn, backends, write_npy, Problem};

#[test]
fn bad_input_exits_2_naming_the_flag() {
    // None of these reaches an adapter, except the adapter checks themselves.
    let be = backends().first().map_or("vulkan", |s| s.as_str());
    let p = Problem::new(2, 4, 2, 5, 7, 8, 13);
    let o = p.path("o.npy");
    let missing = p.p("missing.npy");
    assert_bad_input(p.run(be, &["--q", &missing]), &[], &o); // clap: --q given twice
    let (q, k, v, os) = (p.p("q.npy"), p.p("k.npy"), p.p("v.npy"), p.p("o.npy"));
    let run = |q: &str, k: &str, extra: &[&str]| {
        let mut args = vec!["run", "--q", q, "--k", k, "--v", &v, "--out", &os];
        args.extend_from_slice(extra);
        attn(be, &args)
    };
    assert_bad_input(run(&missing, &k, &[]), &["--q", "missing.npy"], &o);
    write_npy(&p.path("qi.npy"), &[2, 4, 5, 8], &vec![1i32; 2 * 4 * 5 * 8]);
    assert_bad_input(
        run(&p.p("qi.npy"), &k, &[]),
        &["--q", "qi.npy", "float32"],
        &o,
    );
    write_npy(&p.path("k3.npy"), &[2, 2, 7, 4], &vec![0f32; 2 * 2 * 7 * 4]);
    assert_bad_input(
        run(&q, &p.p("k3.npy"), &[]),
        &["--k", "k3.npy", "D = 8"],
        &o,
    );
    write_npy(&p.path("q3.npy"), &[4, 5, 8], &vec![0f32; 4 * 5 * 8]);
    assert_bad_input(run(&p.p("q3.npy"), &k, &[]), &["--q", "4-D"], &o);
    write_npy(&p.path("m.npy"), &[3, 1, 5, 7], &[true; 3 * 5 * 7]);
    assert_bad_input(
        run(&q, &k, &["--mask", &p.p("m.npy")]),
        &["--mask", "m.npy", "[B|1, H|1, Nq|1, Nk|1]"],
        &o,
    );
    write_npy(&p.path("mi.npy"), &[5, 7], &[1u8; 35]);
    assert_bad_input(
        run(&q, &k, &["--mask", &p.p("mi.npy")]),
        &["--mask", "bool"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--kv-lengths", "3"]),
        &["--kv-lengths", "B = 2"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--kv-lengths", "3,9"]),
        &["--kv-lengths", "9"],
        &o,
    );
    assert_bad_input(run(&q, &k, &["--window", "1"]), &["--window", "L,R"], &o);
    assert_bad_input(
        run(&q, &k, &["--path", "sideways"]),
        &["--path", "sideways"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--weights", &p.p("w.npy"), "--path", "fused"]),
        &["--weights", "unfused"],
        &o,
    );
    assert_bad_input(
        run(&q, &k, &["--backend", "vulkano"]),
        &["--backend", "vulkano"],
        &o,
    );
    let nodir = p.p("no/such/dir/o.npy");
    assert_bad_input(
        attn(
            be,
            &["run", "--q", &q, "--k", &k, "--v", &v, "--out", &nodir],
        ),
        &["--out", "does not exist"],
        &p.path("no"),
    );
    assert_bad_input(
        run(&q, &k, &["--adapter", "no-such-gpu-anywhere"]),
        &["--adapter", "no-such-gpu-anywhere"],
        &o,
    );
    assert_bad_input(
        attn(be, &["info", "--adapter", "no-such-gpu-anywhere"]),
        &["no-such-gpu-anywhere", "no GPU adapter"],
        &o,
    );
    let w = p.p("weights.safetensors");
    std::fs::write(&w, b"not safetensors").unwrap();
    assert_bad_input(
        attn(
            be,
            &[
                "mha",
                "--weights",
                &w,
                "--heads",
                "2",
                "--x",
                &q,
                "--out",
                &os,
            ],
        ),
        &["--x", "3-D"],
        &o,
    );
    write_npy(&p.path("x.npy"), &[1, 3, 8], &[0f32; 24]);
    assert_bad_input(
        attn(
            be,
            &[
                "mha",
                "--weights",
                &w,
                "--heads",
                "2",
                "--x",
                &p.p("x.npy"),
                "--out",
                &os,
            ],
        ),
        &[
            "--weights",
            "weights.safetensors",
            "not a .safetensors file",
        ],
        &o,
    );
    let png = p.path("v.png");
    assert_bad_input(
        attn(
            be,
            &[
                "viz",
                "--random",
                "1,2,4",
                "--out",
                &png.display().to_string(),
            ],
        ),
        &["--random", "B,H,N,D"],
        &png,
    );
    assert_bad_input(
        attn(
            be,
            &[
                "viz",
                "--random",
                "1,2,4,4",
                "--head",
                "2",
                "--out",
                &png.display().to_string(),
            ],
        ),
        &["--head 2", "Hq = 2"],
        &png,
    );
}

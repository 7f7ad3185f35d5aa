//! Plans without a GPU: which kernel, shape, path, splits and chunks each kind
//! of device gets (selector tests apart from numerics), and that every choice is
//! one of the enumerated specializations.

use super::fused::{base_variant, fit_rows, for_few_queries, Splits};
use super::*;
use crate::kernels::flash_attention::{FusedVariant, Kind, HEAD_DIM_BUCKETS};
use crate::kernels::{scores, softmax, weighted_sum};
use crate::mask::Masking;
use crate::shaders::Specialization;

fn info(device_type: wgpu::DeviceType, backend: wgpu::Backend, subgroup: u32) -> wgpu::AdapterInfo {
    wgpu::AdapterInfo {
        name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
        subgroup_min_size: subgroup,
        subgroup_max_size: subgroup,
        ..wgpu::AdapterInfo::new(device_type, backend)
    }
}

/// lavapipe: a CPU adapter with subgroups of 8 and Mesa's loop budget.
fn lavapipe() -> (DeviceCaps, Tuning) {
    let i = info(wgpu::DeviceType::Cpu, wgpu::Backend::Vulkan, 8);
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 128 << 20,
        max_compute_workgroup_storage_size: 32 << 10,
        ..wgpu::Limits::default()
    };
    let caps = DeviceCaps::new(&i, limits, wgpu::Features::SUBGROUP);
    (caps, Tuning::for_adapter(&i))
}

/// llvmpipe GL: a CPU adapter without subgroups.
fn gl() -> (DeviceCaps, Tuning) {
    let i = info(wgpu::DeviceType::Cpu, wgpu::Backend::Gl, 0);
    let caps = DeviceCaps::new(&i, wgpu::Limits::default(), wgpu::Features::empty());
    (caps, Tuning::for_adapter(&i))
}

/// A discrete GPU with the WebGPU default limits.
fn gpu() -> (DeviceCaps, Tuning) {
    let mut i = info(wgpu::DeviceType::DiscreteGpu, wgpu::Backend::Vulkan, 32);
    i.name = "a GPU".into();
    let caps = DeviceCaps::new(&i, wgpu::Limits::default(), wgpu::Features::SUBGROUP);
    (caps, Tuning::for_adapter(&i))
}

/// A browser on a CPU (SwiftShader): generic fused kernel, subgroups of 4.
fn browser() -> (DeviceCaps, Tuning) {
    let mut i = info(wgpu::DeviceType::Cpu, wgpu::Backend::BrowserWebGpu, 4);
    i.name = "SwiftShader".into();
    let caps = DeviceCaps::new(&i, wgpu::Limits::default(), wgpu::Features::empty());
    (caps, Tuning::for_adapter(&i))
}

fn shape(b: usize, hq: usize, hkv: usize, nq: usize, nk: usize, d: usize) -> AttnShape {
    AttnShape {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
    }
}

fn problem(sh: AttnShape) -> AttentionProblem {
    AttentionProblem::of_shape(sh).unwrap()
}

fn fused_launch(p: &Plan) -> &FusedLaunch {
    match &p.steps {
        Steps::Fused(l) => l,
        other => panic!("not fused: {other:?}"),
    }
}

/// Which kernel and shape CPU drivers get: the subgroup kernel where the size
/// divides the bucket, rows capped by the bucket, fitted to Nq, and the plain
/// straight-line kernel with one row per query for decode.
#[test]
fn cpu_driver_variants() {
    let limits = wgpu::Limits::default();
    let (_, t) = lavapipe();
    let v = |sg: u32, d| base_variant(t.with_subgroup(sg).unwrap(), d, &limits);
    let d64 = v(8, 64);
    assert_eq!(
        (d64.kind, d64.rows, d64.key_block()),
        (Kind::Subgroup { size: 8 }, 8, 4)
    );
    assert_eq!(v(0, 64).kind, Kind::StraightLine);
    // Buckets and rows: 80 → 6 rows, 96 → 5, 128 → 4, 256 → 2 with 2 keys.
    for (d, bucket, rows) in [
        (33, 64, 8),
        (80, 80, 6),
        (90, 96, 5),
        (100, 128, 4),
        (256, 256, 2),
    ] {
        let x = v(8, d);
        assert_eq!((x.bucket, x.rows), (bucket, rows), "d={d}");
    }
    assert_eq!(v(8, 256).key_block(), 2);
    // A subgroup that does not divide the bucket: no subgroup kernel.
    assert_eq!(v(32, 80).kind, Kind::StraightLine);
    assert_eq!(v(16, 80).kind, Kind::Subgroup { size: 16 });
    // Rows fitted to Nq over 8 lanes.
    for (nq, rows) in [(1, 1), (8, 1), (9, 2), (16, 2), (17, 4), (33, 8), (1000, 8)] {
        assert_eq!(fit_rows(v(8, 64), nq).rows, rows, "nq={nq}");
    }
    // Few queries: the plain kernel, lanes over splits, next_pow2(Nq) rows.
    let few = for_few_queries(v(8, 64), 3);
    assert_eq!((few.kind, few.rows), (Kind::StraightLine, 4));
    assert!(few.lanes_may_split() && !v(8, 64).lanes_may_split());
    // More than 8 rows lifts the compile cap.
    let t16 = t.with_fused_rows(16).unwrap();
    assert_eq!(base_variant(t16, 64, &limits).rows, 16);
}

/// The tiled kernel's K/V tiles plus its shared key range fit the granted
/// workgroup memory, including the 16 KiB WebGPU default, for every head dim.
#[test]
fn tiles_fit_the_granted_workgroup_memory() {
    let (_, staged) = gpu();
    for limit in [16_384u32, 32_768, 49_152, 1 << 20] {
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: limit,
            ..wgpu::Limits::default()
        };
        for d in [1usize, 7, 32, 64, 80, 128, 200, 256] {
            let v = base_variant(staged, d, &limits);
            let Kind::Tiled { keys, lanes, .. } = v.kind else {
                panic!("d={d} limit={limit}: not tiled");
            };
            let bytes = 2 * keys * v.bucket * 4 + 16;
            assert!(
                keys >= 1 && bytes <= limit,
                "d={d} limit={limit}: {keys} keys = {bytes} B"
            );
            assert!(lanes <= limits.max_compute_invocations_per_workgroup);
        }
    }
    // 16 KiB at D = 64: 31 keys per tile (32 would need 16 400 bytes with the range).
    let v = base_variant(staged, 64, &wgpu::Limits::default());
    assert_eq!(
        v.kind,
        Kind::Tiled {
            keys: 31,
            lanes: 64,
            split: 1
        }
    );
}

/// Auto: weights → unfused; few queries against many keys → decode; the fused
/// kernel where its unsplit loop fits the driver's budget, decode beyond.
#[test]
fn auto_path_choice() {
    let (caps, t) = lavapipe();
    let path = |p: &AttentionProblem| plan(p, &caps, t).unwrap().path;
    let mut p = problem(shape(1, 8, 8, 512, 512, 64));
    assert_eq!(path(&p), AttentionPath::Fused);
    p.want_weights = true;
    assert_eq!(path(&p), AttentionPath::Unfused);
    assert_eq!(
        path(&problem(shape(1, 8, 8, 16, 1024, 64))),
        AttentionPath::Decode
    );
    assert_eq!(
        path(&problem(shape(1, 8, 8, 17, 1024, 64))),
        AttentionPath::Fused
    );
    assert_eq!(
        path(&problem(shape(1, 8, 8, 16, 1023, 64))),
        AttentionPath::Fused
    );
    // 8 rows × 4 keys per block: the budget holds ≈ 4·(65535 − 256 − 8·65 − 16) keys.
    let v = base_variant(t, 64, &caps.limits);
    let max_keys = (1..400_000usize)
        .step_by(4)
        .take_while(|&n| caps.fits_loop_budget(v.loop_iterations(n, 64)))
        .last()
        .unwrap();
    assert_eq!(
        path(&problem(shape(1, 1, 1, 64, max_keys, 64))),
        AttentionPath::Fused
    );
    assert_eq!(
        path(&problem(shape(1, 1, 1, 64, max_keys + 4, 64))),
        AttentionPath::Decode
    );
    // No budget on a GPU: fused at any length.
    let (gcaps, gt) = gpu();
    assert_eq!(
        plan(&problem(shape(1, 1, 1, 64, 1 << 20, 64)), &gcaps, gt)
            .unwrap()
            .path,
        AttentionPath::Fused
    );
    // Asking for the weights on a path that cannot build them is refused by the
    // problem (see tests/gpu/errors.rs); forcing the fused path past the budget
    // is a typed driver-limit error from the plan.
    let mut p = problem(shape(1, 1, 1, 64, max_keys + 4, 64));
    p.path = AttentionPath::Fused;
    assert!(matches!(plan(&p, &caps, t), Err(Error::DriverLimit(_))));
}

/// Decode splits: 512 keys by default, longer past 256 splits, halved until the
/// driver's budget holds, explicit when asked; lanes over splits without subgroup
/// sharing; partials counted in the peak.
#[test]
fn decode_splits() {
    let (caps, t) = lavapipe();
    let splits = |nk, kv_split| {
        let mut p = problem(shape(1, 8, 8, 1, nk, 64));
        p.kv_split = kv_split;
        p.path = AttentionPath::Decode;
        let pl = plan(&p, &caps, t).unwrap();
        assert_eq!(pl.path, AttentionPath::Decode);
        pl.splits()
    };
    assert_eq!(splits(32768, None), 64);
    assert_eq!(splits(1 << 20, None), 256);
    assert_eq!(splits(32768, Some(1000)), 33);
    assert_eq!(splits(1000, None), 2);
    let sd = decode::splits(
        &caps,
        base_variant(t, 256, &caps.limits),
        1 << 22,
        256,
        1 << 22,
        None,
    );
    let v = base_variant(t, 256, &caps.limits);
    assert!(caps.fits_loop_budget(v.loop_iterations(sd.len, 256)));
    assert!(!caps.fits_loop_budget(v.loop_iterations(2 * sd.len, 256)));
    // GL (no subgroups): lanes over splits, one row per query.
    let (gcaps, gt) = gl();
    let pl = plan(&problem(shape(1, 8, 8, 1, 32768, 64)), &gcaps, gt).unwrap();
    let Steps::Decode {
        pages,
        total_splits,
    } = &pl.steps
    else {
        panic!("not decode")
    };
    let l = &pages[0].launch;
    assert!(l.lane_splits && l.variant.rows == 1, "{l:?}");
    assert_eq!(l.workgroups, 8 * (*total_splits as u64).div_ceil(8));
    let rows = 8u64;
    assert_eq!(
        pl.peak_bytes(),
        4 * (8 * 64 + 2 * 8 * 32768 * 64) + 4 * 8 * 64 + 4 * 64 * rows * 65
    );
    assert_eq!(pl.scratch_bytes(), 4 * 64 * rows * 65);
    assert!(
        pl.describe().starts_with("decode: 64 splits of 512 keys"),
        "{}",
        pl.describe()
    );
}

/// GQA: a workgroup serves a KV head's whole group when its rows fit one block.
#[test]
fn gqa_head_sharing() {
    let (caps, t) = lavapipe();
    let l = fused_launch(&plan(&problem(shape(1, 8, 1, 4, 64, 64)), &caps, t).unwrap()).clone();
    assert_eq!((l.head_rows, l.blocks_q, l.workgroups), (8, 1, 1));
    let l =
        fused_launch(&plan(&problem(shape(1, 8, 2, 1000, 1000, 64)), &caps, t).unwrap()).clone();
    assert_eq!((l.head_rows, l.blocks_q), (1, 16));
}

/// KV-cache pages: one launch per page at its place in the stack; options the
/// pages cannot give are typed errors.
#[test]
fn pages() {
    let (caps, t) = lavapipe();
    let mut p = problem(shape(1, 2, 2, 1, 2500, 64));
    p.keys = Keys::Pages { page_len: 1000 };
    let pl = plan(&p, &caps, t).unwrap();
    let Steps::Decode {
        pages,
        total_splits,
    } = &pl.steps
    else {
        panic!("not decode")
    };
    let got: Vec<_> = pages
        .iter()
        .map(|g| (g.p0, g.n, g.first_split, g.launch.splits))
        .collect();
    assert_eq!(
        got,
        [(0, 1000, 0, 2), (1000, 1000, 2, 2), (2000, 500, 4, 1)]
    );
    assert_eq!(*total_splits, 5);
    assert!(pl.describe().contains("over 3 pages"));
    p.want_weights = true;
    assert!(matches!(plan(&p, &caps, t), Err(Error::InvalidArgument(_))));
}

/// Unfused: in chunks of whole KV groups when the scores exceed one binding,
/// whole with weights (the allocation then reports the limit).
#[test]
fn unfused_chunks() {
    let (mut caps, t) = lavapipe();
    caps.limits.max_storage_buffer_binding_size = 48 << 10;
    let mut p = problem(shape(2, 8, 2, 40, 50, 16));
    p.path = AttentionPath::Unfused;
    let pl = plan(&p, &caps, t).unwrap();
    // 8 heads · 40 · 50 · 4 = 64 000 B > 48 KiB; 4 heads (one KV head's group) fit.
    assert_eq!(pl.unfused_heads_per_pass(), Some(4));
    assert!(pl.describe().contains("chunks of 4"));
    let sh = p.shape;
    assert_eq!(
        pl.peak_bytes(),
        4 * (sh.q_len() + 2 * sh.kv_len()) as u64 + 4 * sh.q_len() as u64 + 2 * 4 * 4 * 40 * 50
    );
    p.want_weights = true;
    assert_eq!(
        plan(&p, &caps, t).unwrap().unfused_heads_per_pass(),
        Some(16)
    );
}

/// Every plan's kernel is one of the enumerated specializations, on every kind
/// of device, for shapes no tile divides, few and many queries, GQA, every
/// transform and the pages.
#[test]
fn every_choice_is_enumerated() {
    for (caps, t) in [lavapipe(), gl(), gpu(), browser()] {
        let all = specializations(&caps, t);
        let mut checked = 0;
        for d in [1, 33, 64, 80, 96, 100, 256] {
            for (hq, hkv, nq, nk) in [
                (1, 1, 1, 5000),
                (8, 2, 3, 2048),
                (8, 1, 6, 700),
                (2, 2, 77, 300),
                (8, 8, 1000, 1000),
            ] {
                for rules in [false, true] {
                    for extras in [false, true] {
                        let mut p = problem(shape(1, hq, hkv, nq, nk, d));
                        p.transform.masking = Masking {
                            causal: rules,
                            ..Masking::default()
                        };
                        if extras {
                            p.transform.softcap = Some(30.0);
                            p.transform.alibi = Some(vec![0.5; hq]);
                        }
                        for path in [
                            AttentionPath::Auto,
                            AttentionPath::Fused,
                            AttentionPath::Decode,
                            AttentionPath::Unfused,
                        ] {
                            p.path = path;
                            let Ok(pl) = plan(&p, &caps, t) else { continue };
                            let launches: Vec<&FusedLaunch> = match &pl.steps {
                                Steps::Fused(l) => vec![l],
                                Steps::Decode { pages, .. } => {
                                    pages.iter().map(|g| &g.launch).collect()
                                }
                                Steps::Unfused(u) => {
                                    let unfused = [
                                        Specialization::new(&scores::SPEC)
                                            .overrides(&u.tile.constants),
                                        Specialization::new(&weighted_sum::SPEC)
                                            .overrides(&u.tile.constants),
                                        softmax::specialization(u.softmax_wg),
                                    ];
                                    for spec in unfused {
                                        assert!(all.contains(&spec), "{}: {spec:?}", caps.name);
                                        checked += 1;
                                    }
                                    vec![]
                                }
                            };
                            for l in launches {
                                assert!(
                                    all.contains(&l.spec),
                                    "{}: {:?} not enumerated",
                                    caps.name,
                                    l.spec
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100, "{}: {checked}", caps.name);
        // Every head-dim bucket appears.
        for b in HEAD_DIM_BUCKETS {
            assert!(all.iter().any(|s| s
                .defines
                .iter()
                .any(|&(n, v)| (n == "DV" && v == b / 4) || (n == "DMAX" && v == b))));
        }
    }
}

/// The split helper respects an explicit length.
#[test]
fn explicit_split_length() {
    let (caps, t) = gl();
    assert_eq!(
        decode::splits(
            &caps,
            base_variant(t, 64, &caps.limits),
            100,
            64,
            512,
            Some(7)
        ),
        Splits { splits: 15, len: 7 }
    );
}

/// Half-precision K/V whose rows start at even elements: the subgroup kernel
/// loads them as words of two halves, reading them packed even where the
/// device has native f16 (Q and O keep the native mode); unaligned rows, f32
/// K/V and kernels without subgroup sharing keep element loads.
#[test]
fn half_kv_rows_at_even_elements_load_as_words() {
    use crate::shaders::Elem;
    use crate::DType;
    let (lava, t) = lavapipe();
    let caps = DeviceCaps {
        features: lava.features | wgpu::Features::SHADER_F16,
        ..lava
    };
    let elem = |p: &Plan, name: &str| {
        fused_launch(p)
            .spec
            .elems
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Elem::F32, |(_, e)| *e)
    };
    let half = |aligned: bool, kv: DType| AttentionProblem {
        kv_aligned: aligned,
        path: AttentionPath::Fused,
        ..problem(shape(1, 4, 2, 64, 100, 64)).with_dtypes(crate::DTypes {
            q: DType::F16,
            k: kv,
            v: kv,
            o: DType::F16,
        })
    };
    let p = plan(&half(true, DType::F16), &caps, t).unwrap();
    assert!(fused_launch(&p).variant.pairs, "{}", p.describe());
    assert!(
        p.describe().contains("two halves per load"),
        "{}",
        p.describe()
    );
    assert_eq!(
        (elem(&p, "q"), elem(&p, "k"), elem(&p, "v"), elem(&p, "o")),
        (Elem::F16, Elem::F16Packed, Elem::F16Packed, Elem::F16)
    );
    let p = plan(&half(true, DType::BF16), &caps, t).unwrap();
    assert!(fused_launch(&p).variant.pairs);
    assert_eq!(elem(&p, "k"), Elem::BF16);
    for (aligned, kv) in [(false, DType::F16), (true, DType::F32)] {
        let p = plan(&half(aligned, kv), &caps, t).unwrap();
        assert!(!fused_launch(&p).variant.pairs, "aligned {aligned} {kv}");
        assert_eq!(elem(&p, "k"), Elem::of(kv, true));
    }
    // Without subgroup sharing (llvmpipe GL): element loads.
    let (gl, tg) = gl();
    let p = plan(&half(true, DType::F16), &gl, tg).unwrap();
    assert!(!fused_launch(&p).variant.pairs);
    assert_eq!(elem(&p, "k"), Elem::F16Packed, "no SHADER_F16 on GL");
    // Every pair variant a plan picks is one the shader test validates.
    let specs = crate::plan::specializations(&caps, t);
    let p = plan(&half(true, DType::BF16), &caps, t).unwrap();
    assert!(specs
        .iter()
        .any(|s| s.kernel.name == fused_launch(&p).spec.kernel.name
            && s.defines == fused_launch(&p).spec.defines));
}

/// The tiled family on real GPUs: D split so a lane holds about 8 vec4 chunks
/// (at most the smallest subgroup and 8, dividing the chunks), 2 rows per group
/// on discrete GPUs when the chunks fit twice; 1 and 1 on CPU drivers, without
/// subgroups, or with subgroups too small; forced members checked.
#[test]
fn tiled_family_follows_the_device() {
    use crate::plan::fused::variant_for;
    let dev = |ty, sg: u32, features| {
        let info = wgpu::AdapterInfo {
            name: "dev".into(),
            subgroup_min_size: sg,
            subgroup_max_size: sg,
            ..wgpu::AdapterInfo::new(ty, wgpu::Backend::Vulkan)
        };
        (
            DeviceCaps::new(&info, wgpu::Limits::default(), features),
            Tuning::for_adapter(&info).with_staged(true),
        )
    };
    let family =
        |caps: &DeviceCaps, t: Tuning, d| match variant_for(caps, t, d, 1024, false).unwrap() {
            v @ FusedVariant {
                kind: Kind::Tiled { split, .. },
                ..
            } => (v.rows, split),
            v => panic!("{v:?}"),
        };
    let sgf = wgpu::Features::SUBGROUP;
    let (nv, t) = dev(wgpu::DeviceType::DiscreteGpu, 32, sgf);
    assert_eq!(family(&nv, t, 32), (2, 1));
    assert_eq!(family(&nv, t, 64), (2, 2));
    assert_eq!(family(&nv, t, 128), (2, 4));
    assert_eq!(family(&nv, t, 256), (2, 8));
    // 80 and 96: 20 and 24 chunks, split over 4 (5 and 6 per lane).
    assert_eq!(family(&nv, t, 80), (2, 4));
    assert_eq!(family(&nv, t, 96), (2, 4));
    let (igpu, t) = dev(wgpu::DeviceType::IntegratedGpu, 16, sgf);
    assert_eq!(family(&igpu, t, 128), (1, 4));
    let (small, t) = dev(wgpu::DeviceType::DiscreteGpu, 4, sgf);
    assert_eq!(family(&small, t, 256), (1, 4));
    let (nosg, t) = dev(wgpu::DeviceType::DiscreteGpu, 32, wgpu::Features::empty());
    assert_eq!(family(&nosg, t, 128), (1, 1));
    let (cpu, t) = dev(wgpu::DeviceType::Cpu, 8, sgf);
    assert_eq!(family(&cpu, t, 128), (1, 1));
    // Forced: within the device's subgroups it runs, beyond it is refused.
    let forced = t.with_tile_split(8).unwrap().with_tile_rows(4).unwrap();
    assert_eq!(family(&cpu, forced, 128), (4, 8));
    let e = variant_for(&small, forced, 128, 1024, false).unwrap_err();
    assert!(e.to_string().contains("smallest subgroup (4"), "{e}");
    let e = variant_for(&nosg, t.with_tile_split(2).unwrap(), 128, 1024, false).unwrap_err();
    assert!(e.to_string().contains("SUBGROUP not granted"), "{e}");
    // 80's 20 chunks do not split over 8.
    assert!(variant_for(&nv, t.with_tile_split(8).unwrap(), 80, 1024, false).is_err());
}

/// The work order is the plan's: dealt over a gallivm driver's threads, the
/// grid's own elsewhere (a GPU, a browser's CPU adapter, one thread).
#[test]
fn fused_work_is_dealt_over_gallivm_threads_only() {
    let p = problem(shape(2, 8, 2, 64, 300, 64));
    let cols = |caps: &DeviceCaps, t| fused_launch(&plan(&p, caps, t).unwrap()).spread_cols;
    let (lava, t) = lavapipe();
    let four = DeviceCaps {
        cpu_threads: 4,
        ..lava.clone()
    };
    assert_eq!(cols(&four, t), 4);
    let one = DeviceCaps {
        cpu_threads: 1,
        ..lava
    };
    assert_eq!(cols(&one, t), 0);
    let (g, gt) = gpu();
    assert_eq!((g.cpu_threads, cols(&g, gt)), (0, 0));
    let (b, bt) = browser();
    assert_eq!((b.cpu_threads, cols(&b, bt)), (0, 0));
}

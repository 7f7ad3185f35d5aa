//! Every WGSL kernel is parsed and validated by naga, specialized with each
//! override value the host uses, and translated to SPIR-V: a WGSL mistake fails
//! here with a line number instead of at pipeline creation. Needs no GPU.

use naga::valid::{Capabilities, ValidationFlags, Validator};

/// The `override` values the host modules pass, per kernel.
fn specializations(kernel: &str) -> Vec<Vec<(&'static str, f64)>> {
    match kernel {
        "scores" | "weighted_sum" | "matmul" => vec![
            vec![("STAGED", 0.0), ("WG_Y", 1.0), ("CPU_ROWS", 8.0)],
            vec![("STAGED", 0.0), ("WG_Y", 1.0), ("CPU_ROWS", 16.0)],
            vec![("STAGED", 0.0), ("WG_Y", 1.0), ("CPU_ROWS", 32.0)],
            vec![("STAGED", 1.0), ("WG_Y", 8.0), ("CPU_ROWS", 8.0)],
        ],
        "softmax" => (0..=8).map(|p| vec![("WG", (1u32 << p) as f64)]).collect(),
        // (other options on, MASK_MODE: none / additive / bool)
        "flash_attention" | "flash_attention_cpu" | "flash_attention_tiled" => {
            [(0.0, 0.0), (1.0, 1.0), (1.0, 2.0)]
                .into_iter()
                .map(|(on, mask_mode)| {
                    let mut v = vec![
                        ("USE_RULES", on),
                        ("MASK_MODE", mask_mode),
                        ("USE_ALIBI", on),
                        ("USE_SOFTCAP", on),
                    ];
                    match kernel {
                        "flash_attention" => v.extend([("R", 4.0), ("WG", 8.0)]),
                        "flash_attention_cpu" => v.push(("WG", 8.0)),
                        _ => v.push(("WG", 64.0)),
                    }
                    v
                })
                .collect()
        }
        _ => vec![vec![]],
    }
}

#[test]
fn every_shader_parses_validates_and_specializes() {
    assert!(!wgpu_attention::shaders::KERNELS.is_empty());
    for (name, _) in wgpu_attention::shaders::KERNELS {
        for consts in source_consts(name) {
            let src = wgpu_attention::shaders::source_with(name, &consts);
            let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| {
                panic!("{name}.wgsl:\n{}", e.emit_to_string_with_path(&src, name))
            });
            let info = Validator::new(ValidationFlags::all(), Capabilities::all())
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!("{name}.wgsl:\n{}", e.emit_to_string_with_path(&src, name))
                });
            for spec in specializations(name) {
                let mut constants = naga::back::PipelineConstants::default();
                for (k, v) in &spec {
                    constants.insert(k.to_string(), *v);
                }
                let (m, i) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, "main")),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{name} with {spec:?}: {e}"));
                let words =
                    naga::back::spv::write_vec(&m, &i, &naga::back::spv::Options::default(), None)
                        .unwrap_or_else(|e| panic!("{name} with {spec:?} to SPIR-V: {e}"));
                assert!(words.len() > 5, "{name}: empty SPIR-V");
            }
        }
    }
}

/// The `const` substitutions the host makes, per kernel (sizes of private arrays;
/// rows, key block and vec4 chunks of the straight-line fused kernel).
fn source_consts(kernel: &str) -> Vec<Vec<(&'static str, u32)>> {
    match kernel {
        "flash_attention" => [32, 64, 80, 96, 128, 256]
            .into_iter()
            .map(|d| vec![("DMAX", d), ("RMAX", 4)])
            .collect(),
        // Tiles as sized for a 16 KiB workgroup-memory limit, and the 64-key cap.
        "flash_attention_tiled" => [
            (32, 64),
            (64, 32),
            (80, 25),
            (96, 21),
            (128, 16),
            (256, 8),
            (64, 64),
        ]
        .into_iter()
        .map(|(d, bc)| vec![("DMAX", d), ("BC", bc)])
        .collect(),
        // (rows, key block, vec4 chunks, subgroup size; 0 = whole-row K/V loads):
        // without subgroups the lavapipe-GL shapes of the buckets 32, 64, 80, 96,
        // 128, 256; with subgroups of 8 (lavapipe) the same plus the 1 and 2 rows
        // of few queries; then subgroups of 4, 16 and 32 over buckets they divide.
        // Each with the additive mask read per key (B4 = 0) and, for 4-key blocks,
        // as vec4s (B4 = 1).
        "flash_attention_cpu" => [
            (8, 4, 8, 0),
            (16, 4, 8, 0),
            (8, 4, 16, 0),
            (6, 4, 20, 0),
            (5, 4, 24, 0),
            (4, 4, 32, 0),
            (2, 2, 64, 0),
            (1, 4, 16, 0),
            (8, 4, 8, 8),
            (8, 4, 16, 8),
            (1, 4, 16, 8),
            (2, 4, 16, 8),
            (6, 4, 20, 8),
            (5, 4, 24, 8),
            (4, 4, 32, 8),
            (2, 2, 64, 8),
            (8, 4, 16, 4),
            (16, 4, 32, 16),
            (8, 4, 32, 32),
            (16, 4, 16, 16),
        ]
        .into_iter()
        .flat_map(|(r, kb, dv, s)| {
            let b4 = if kb == 4 { vec![0, 1] } else { vec![0] };
            b4.into_iter().map(move |b4| {
                let mut c = vec![("R", r), ("KB", kb), ("DV", dv), ("B4", b4)];
                if s > 0 {
                    c.extend([("S", s), ("NG", 4 * dv / s)]);
                }
                c
            })
        })
        .collect(),
        _ => vec![vec![]],
    }
}

#[test]
fn imports_resolve_once() {
    let src = wgpu_attention::shaders::source("scores");
    assert!(!src.contains("#import"), "unresolved import left in scores");
    assert_eq!(src.matches("fn linear_workgroup").count(), 1);
}

#[test]
fn every_shader_file_is_a_registered_kernel() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".wgsl").map(str::to_string))
        .collect();
    files.sort();
    let mut registered: Vec<String> = wgpu_attention::shaders::KERNELS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    registered.sort();
    assert_eq!(
        files, registered,
        "shaders/*.wgsl and shaders::KERNELS differ"
    );
}

#[test]
fn default_sources_are_plain_wgsl() {
    // What a browser or a tool gets from shaders::source must parse as it is.
    for (name, _) in wgpu_attention::shaders::KERNELS {
        let src = wgpu_attention::shaders::source(name);
        assert!(
            !src.lines()
                .any(|l| ["@R", "@T", "@C", "@G", "@S", "@{", "@if"]
                    .iter()
                    .any(|m| l.contains(m))),
            "{name}: markers left"
        );
        naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}:\n{}", e.emit_to_string_with_path(&src, name)));
    }
}

//! The WGSL side of the host/kernel boundary, checked by naga without a GPU:
//!
//! - every specialization a device can pick (`plan::specializations`, for each
//!   kind of device the project meets, under its heuristic tuning and every
//!   autotune candidate, `plan::autotune::candidates`) parses, validates, takes
//!   its overrides and translates to SPIR-V, so a WGSL mistake fails here with a
//!   line number;
//! - every kernel's uniform block equals its Rust mirror (names, offsets,
//!   sizes: `kernels::uniform_layouts`), and its storage bindings have the
//!   access its `KernelSpec` declares.

use std::collections::BTreeMap;

use naga::valid::{Capabilities, ValidationFlags, Validator};
use wgpu_attention::gpu::DeviceCaps;
use wgpu_attention::shaders::Specialization;
use wgpu_attention::Tuning;

fn adapter(
    name: &str,
    device_type: wgpu::DeviceType,
    backend: wgpu::Backend,
    subgroup: u32,
) -> wgpu::AdapterInfo {
    wgpu::AdapterInfo {
        name: name.into(),
        subgroup_min_size: subgroup,
        subgroup_max_size: subgroup,
        ..wgpu::AdapterInfo::new(device_type, backend)
    }
}

/// The kinds of device the plan is made for, each with the tunings the tests
/// and the switches give it: lavapipe (subgroups of 8, and 16 with 512-bit
/// vectors), llvmpipe GL, real GPUs at the WebGPU default and larger workgroup
/// memory, a browser on SwiftShader; staged and unstaged, 16 fused rows.
fn devices() -> Vec<(String, DeviceCaps, Tuning)> {
    let cpu = wgpu::DeviceType::Cpu;
    let vk = wgpu::Backend::Vulkan;
    let lavapipe_limits = wgpu::Limits {
        max_storage_buffer_binding_size: 128 << 20,
        max_compute_workgroup_storage_size: 32 << 10,
        ..wgpu::Limits::default()
    };
    let mut out = Vec::new();
    for sg in [8, 16, 4, 32] {
        let i = adapter("llvmpipe (LLVM 15.0.6, 256 bits)", cpu, vk, sg);
        let caps = DeviceCaps::new(&i, lavapipe_limits.clone(), wgpu::Features::SUBGROUP);
        let t = Tuning::for_adapter(&i);
        out.push((format!("lavapipe sg{sg}"), caps.clone(), t));
        if sg == 8 {
            out.push(("lavapipe staged".into(), caps.clone(), t.with_staged(true)));
            out.push((
                "lavapipe no subgroup".into(),
                caps.clone(),
                t.with_subgroup(0).unwrap(),
            ));
            out.push((
                "lavapipe 16 rows".into(),
                caps,
                t.with_fused_rows(16).unwrap(),
            ));
        }
    }
    let gl = adapter(
        "llvmpipe (LLVM 15.0.6, 256 bits)",
        cpu,
        wgpu::Backend::Gl,
        0,
    );
    let caps = DeviceCaps::new(&gl, wgpu::Limits::default(), wgpu::Features::empty());
    let t = Tuning::for_adapter(&gl);
    out.push(("llvmpipe GL".into(), caps.clone(), t));
    out.push(("llvmpipe GL staged".into(), caps, t.with_staged(true)));
    let gpu = adapter("a GPU", wgpu::DeviceType::DiscreteGpu, vk, 32);
    for kib in [16, 32, 48] {
        let limits = wgpu::Limits {
            max_compute_workgroup_storage_size: kib << 10,
            ..wgpu::Limits::default()
        };
        let caps = DeviceCaps::new(&gpu, limits, wgpu::Features::SUBGROUP);
        out.push((format!("GPU {kib} KiB"), caps, Tuning::for_adapter(&gpu)));
    }
    // Cooperative matrices: Mesa 26's lavapipe (8x8x8 f16→f16/f32, subgroups
    // of 8, unstaged: the coop kernel only when forced) and a GPU listing
    // 16x16x16 with subgroups of 32, at the WebGPU default workgroup memory.
    let coop = wgpu::Features::SUBGROUP
        | wgpu::Features::SHADER_F16
        | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    let shape = |t: u32, cr| wgpu_attention::gpu::CoopShape {
        m: t,
        n: t,
        k: t,
        ab: wgpu::CooperativeScalarType::F16,
        cr,
    };
    let lp26 = adapter("llvmpipe (LLVM 19.1.7, 256 bits)", cpu, vk, 8);
    let caps = DeviceCaps::new(&lp26, lavapipe_limits.clone(), coop).with_coop_shapes(vec![
        shape(8, wgpu::CooperativeScalarType::F16),
        shape(8, wgpu::CooperativeScalarType::F32),
    ]);
    let t = Tuning::for_adapter(&lp26);
    out.push(("lavapipe 26".into(), caps.clone(), t));
    out.push(("lavapipe 26 staged".into(), caps, t.with_staged(true)));
    let gpu = adapter("a GPU", wgpu::DeviceType::DiscreteGpu, vk, 32);
    let caps = DeviceCaps::new(&gpu, wgpu::Limits::default(), coop)
        .with_coop_shapes(vec![shape(16, wgpu::CooperativeScalarType::F32)]);
    out.push(("GPU coop 16".into(), caps, Tuning::for_adapter(&gpu)));
    let web = adapter("SwiftShader", cpu, wgpu::Backend::BrowserWebGpu, 4);
    let caps = DeviceCaps::new(&web, wgpu::Limits::default(), wgpu::Features::empty());
    let t = Tuning::for_adapter(&web);
    out.push(("browser".into(), caps.clone(), t));
    out.push(("browser staged".into(), caps, t.with_staged(true)));
    out
}

/// Kernel, defines, and whether a caller's mods (the example ones) are spliced in.
type SourceKey = (&'static str, Vec<(&'static str, u32)>, bool);

#[test]
fn every_specialization_a_device_can_pick_validates() {
    // One source per (kernel, defines), with every override set used with it.
    let mut sources: BTreeMap<SourceKey, Vec<Specialization>> = BTreeMap::new();
    for (_, caps, heuristic) in devices() {
        // The heuristic's tuning and every candidate the autotuner may choose.
        let mut tunings = vec![heuristic];
        for d in wgpu_attention::kernels::flash_attention::HEAD_DIM_BUCKETS {
            for t in wgpu_attention::plan::autotune::candidates(&caps, heuristic, d as usize) {
                if !tunings.contains(&t) {
                    tunings.push(t);
                }
            }
        }
        for s in tunings
            .into_iter()
            .flat_map(|t| wgpu_attention::plan::specializations(&caps, t))
        {
            let list = sources
                .entry((s.kernel.name, s.defines.clone(), s.mods.is_some()))
                .or_default();
            if !list.contains(&s) {
                list.push(s);
            }
        }
    }
    let kernels: std::collections::BTreeSet<_> = sources.keys().map(|k| k.0).collect();
    let registered: std::collections::BTreeSet<_> = wgpu_attention::shaders::KERNELS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        kernels, registered,
        "a kernel no device picks, or one not registered"
    );
    // Validated on every core: each source is parsed once, then each of its
    // override sets is applied and translated.
    let work: Vec<(&SourceKey, &Vec<Specialization>)> = sources.iter().collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let count: usize = std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    work.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|(k, specs)| validate_source(k, specs))
                        .sum::<usize>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a validation thread panicked"))
            .sum()
    });
    eprintln!(
        "{} sources, {count} specializations validated",
        sources.len()
    );
}

/// Every source a device can pick, with its `#storage` bindings in each
/// half-precision storage mode: all native f16, all packed f16, all bf16, and a
/// mix (f32 Q, bf16 K, packed f16 V, native f16 out; what a half-precision KV
/// cache under an f32 query makes). Each source is validated with its first
/// override set (the overrides do not touch the accessors).
#[test]
fn every_source_validates_in_every_storage_mode() {
    use wgpu_attention::shaders::{storage_bindings, Elem};
    let mut sources: BTreeMap<SourceKey, Specialization> = BTreeMap::new();
    for (_, caps, t) in devices() {
        for s in wgpu_attention::plan::specializations(&caps, t) {
            sources
                .entry((s.kernel.name, s.defines.clone(), s.mods.is_some()))
                .or_insert(s);
        }
    }
    let mixes: [&dyn Fn(usize) -> Elem; 4] = [
        &|_| Elem::F16,
        &|_| Elem::F16Packed,
        &|_| Elem::BF16,
        &|i| [Elem::F32, Elem::BF16, Elem::F16Packed, Elem::F16][i % 4],
    ];
    let mut work = Vec::new();
    for ((name, defines, with_mods), s) in &sources {
        let names: Vec<&'static str> = storage_bindings(name)
            .into_iter()
            .map(|n| &*Box::leak(n.into_boxed_str()))
            .collect();
        if names.is_empty() {
            // softmax: scores in, weights out, both f32 intermediates;
            // block_mask: the mods binding alone.
            assert!(
                ["softmax", "block_mask"].contains(name),
                "{name} has no #storage binding"
            );
            continue;
        }
        // Word loads of K and V (P2) need them packed.
        let pairs = defines.contains(&("P2", 1));
        for mix in &mixes {
            let elems: Vec<_> = names
                .iter()
                .enumerate()
                .map(|(i, n)| match (*n, mix(i)) {
                    ("k" | "v", Elem::F32 | Elem::F16) if pairs => (*n, Elem::F16Packed),
                    (n, e) => (n, e),
                })
                .collect();
            let spec = s.clone().elems(&elems);
            work.push(((*name, defines.clone(), *with_mods), spec));
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let work = &work;
    let count: usize = std::thread::scope(|scope| {
        (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    work.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|(k, s)| validate_source(k, std::slice::from_ref(s)))
                        .sum::<usize>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("a validation thread panicked"))
            .sum()
    });
    eprintln!("{count} half-precision specializations validated");
}

/// Parses and validates one source, then applies and translates each override
/// set of `specs` (all with that source); the number of specializations checked.
fn validate_source((name, defines, _): &SourceKey, specs: &[Specialization]) -> usize {
    let src = specs[0].source();
    let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| {
        panic!(
            "{name} {defines:?}:\n{}",
            e.emit_to_string_with_path(&src, name)
        )
    });
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| {
            panic!(
                "{name} {defines:?}:\n{}",
                e.emit_to_string_with_path(&src, name)
            )
        });
    for s in specs {
        let mut constants = naga::back::PipelineConstants::default();
        for (k, v) in &s.overrides {
            constants.insert(k.to_string(), *v);
        }
        let (m, i) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, "main")),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{name} {defines:?} with {:?}: {e}", s.overrides));
        let words = naga::back::spv::write_vec(&m, &i, &naga::back::spv::Options::default(), None)
            .unwrap_or_else(|e| panic!("{name} {defines:?} with {:?} to SPIR-V: {e}", s.overrides));
        assert!(words.len() > 5, "{name}: empty SPIR-V");
    }
    specs.len()
}

/// The uniform block (binding 0) and the storage bindings of `module`.
fn bindings(module: &naga::Module) -> BTreeMap<u32, naga::AddressSpace> {
    module
        .global_variables
        .iter()
        .filter_map(|(_, g)| g.binding.as_ref().map(|b| (b.binding, g.space)))
        .collect()
}

#[test]
fn uniform_blocks_equal_their_rust_mirrors() {
    let layouts = wgpu_attention::kernels::uniform_layouts();
    assert_eq!(layouts.len(), wgpu_attention::shaders::KERNELS.len());
    for (kernel, (members, size)) in layouts {
        let src = wgpu_attention::shaders::source(kernel);
        let module = naga::front::wgsl::parse_str(&src).unwrap();
        let uniform = module
            .global_variables
            .iter()
            .map(|(_, g)| g)
            .find(|g| g.space == naga::AddressSpace::Uniform)
            .unwrap_or_else(|| panic!("{kernel}: no uniform block"));
        assert_eq!(
            uniform.binding.as_ref().map(|b| b.binding),
            Some(0),
            "{kernel}"
        );
        let naga::TypeInner::Struct {
            members: wgsl,
            span,
        } = &module.types[uniform.ty].inner
        else {
            panic!("{kernel}: the uniform block is not a struct")
        };
        assert_eq!(*span as usize, size, "{kernel}: struct size WGSL vs Rust");
        assert_eq!(
            wgsl.len(),
            members.len(),
            "{kernel}: {} WGSL members, {} Rust scalars",
            wgsl.len(),
            members.len()
        );
        for (w, r) in wgsl.iter().zip(&members) {
            let wname = w.name.as_deref().unwrap_or("");
            let wsize = module.types[w.ty].inner.size(module.to_ctx()) as usize;
            let name_ok = if r.array {
                wname.starts_with(r.name) && wname.len() > r.name.len()
            } else {
                wname == r.name
            };
            assert!(
                name_ok && w.offset as usize == r.offset && wsize == r.size,
                "{kernel}: WGSL member {wname} (offset {}, {wsize} bytes) vs Rust {} (offset {}, {} bytes{})",
                w.offset,
                r.name,
                r.offset,
                r.size,
                if r.array { ", array" } else { "" }
            );
        }
    }
}

#[test]
fn storage_bindings_have_the_declared_access() {
    let mut seen = std::collections::BTreeSet::new();
    for (_, caps, tuning) in devices() {
        for s in wgpu_attention::plan::specializations(&caps, tuning) {
            // With and without a caller's mods (one binding more).
            if !seen.insert((s.kernel.name, s.mods.is_some())) {
                continue;
            }
            let module = naga::front::wgsl::parse_str(&s.source()).unwrap();
            let b = bindings(&module);
            let want: Vec<(u32, bool)> = s
                .storage_read_only()
                .iter()
                .enumerate()
                .map(|(i, &ro)| (i as u32 + 1, ro))
                .collect();
            let got: Vec<(u32, bool)> = b
                .iter()
                .filter_map(|(&i, space)| match space {
                    naga::AddressSpace::Storage { access } => {
                        Some((i, !access.contains(naga::StorageAccess::STORE)))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                got, want,
                "{}: (binding, read-only) WGSL vs KernelSpec",
                s.kernel.name
            );
            assert_eq!(
                b.get(&0),
                Some(&naga::AddressSpace::Uniform),
                "{}",
                s.kernel.name
            );
        }
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

//! `attn info`: every adapter, its features and the limits that matter for attention.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use wgpu_attention::gpu::{Coop, CoopShape};
use wgpu_attention::plan::{describe_fused_kernel, describe_fused_kernel_for};
use wgpu_attention::wgpu::Features;
use wgpu_attention::{DType, Gpu, Tuning};

use crate::args::{coop_name, DeviceArgs};

/// The head-dim buckets `attn info` names the fused kernel for.
const HEAD_DIMS: [usize; 6] = [32, 64, 80, 96, 128, 256];

#[derive(Args)]
#[command(after_help = "Examples:
  attn info
  attn info --json
  WGPU_BACKEND=gl attn info

Every adapter is opened as the library opens it (its own limits, and whichever
of SHADER_F16, SUBGROUP, TIMESTAMP_QUERY and EXPERIMENTAL_COOPERATIVE_MATRIX it
has). Limits: workgroup storage, invocations and sizes, storage binding and
buffer size (bound the largest score matrix of the unfused path), workgroups
per dispatch dimension. The cooperative-matrix shapes are the adapter's list
(the kernel uses an f16×f16→f32 8x8x8 or 16x16x16 one). Per head dim (32, 64,
80, 96, 128, 256): the fused kernel many queries run under the device's tuning
for f32 and for f16 Q/K (auto may take the cooperative-matrix kernel for f16 on
a GPU), and what --coop on (Coop::On, --path coop) and --coop full (P·V on the
matrices too, --path coop-full) would run, or why they cannot.
Exit 2 when no adapter is found.")]
pub struct InfoArgs {
    /// Print a JSON array (one object per adapter) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn feature_list(f: Features) -> Vec<String> {
    f.iter_names().map(|(n, _)| n.to_string()).collect()
}

fn describe(gpu: &Gpu) -> Value {
    let info = gpu.info();
    // attn opens its own adapters, so there is one.
    let adapter = gpu.adapter().expect("attn opens its own adapter");
    let af = adapter.features();
    let l = gpu.limits();
    let coop: Vec<Value> = adapter
        .cooperative_matrix_properties()
        .iter()
        .map(|p| {
            json!({
                "m": p.m_size, "n": p.n_size, "k": p.k_size,
                "ab": format!("{:?}", p.ab_type), "cr": format!("{:?}", p.cr_type),
                "shape": CoopShape::of(p).describe(),
            })
        })
        .collect();
    let tuning: Tuning = gpu.tuning();
    let caps = gpu.caps();
    let forced = tuning.with_coop(Coop::On);
    let full = tuning.with_coop(Coop::Full);
    let fused_kernels: Vec<Value> = HEAD_DIMS
        .iter()
        .map(|&d| {
            json!({
                "d": d,
                "f32": describe_fused_kernel_for(caps, tuning, d, DType::F32),
                "f16": describe_fused_kernel_for(caps, tuning, d, DType::F16),
                "coop_on": describe_fused_kernel_for(caps, forced, d, DType::F16),
                "coop_full": describe_fused_kernel_for(caps, full, d, DType::F16),
            })
        })
        .collect();
    json!({
        "name": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "driver": info.driver,
        "driver_info": info.driver_info,
        "vendor": info.vendor,
        "device": info.device,
        "features": {
            "f16": af.contains(Features::SHADER_F16),
            "subgroups": af.contains(Features::SUBGROUP),
            "subgroup_min_size": info.subgroup_min_size,
            "subgroup_max_size": info.subgroup_max_size,
            "timestamps": af.contains(Features::TIMESTAMP_QUERY),
            "timestamps_inside_passes": af.contains(Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            "cooperative_matrix": af.contains(Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            "cooperative_matrix_shapes": coop,
        },
        "granted_features": feature_list(gpu.features()),
        "limits": {
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroup_size_x": l.max_compute_workgroup_size_x,
            "max_compute_workgroup_size_y": l.max_compute_workgroup_size_y,
            "max_compute_workgroup_size_z": l.max_compute_workgroup_size_z,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
            "max_uniform_buffer_binding_size": l.max_uniform_buffer_binding_size,
            "min_storage_buffer_offset_alignment": l.min_storage_buffer_offset_alignment,
        },
        "loop_budget": gpu.loop_budget(),
        "kernel_variant": {
            "staged": tuning.staged(),
            "softmax_workgroup": tuning.softmax_workgroup(),
            "subgroup": tuning.subgroup(),
            "fused_d64": describe_fused_kernel(caps, tuning, 64),
            "coop": coop_name(tuning.coop()),
        },
        "coop": {
            "mode": coop_name(tuning.coop()),
            "granted": caps.features.contains(Features::EXPERIMENTAL_COOPERATIVE_MATRIX),
            "shapes": caps.coop_shapes.iter().map(CoopShape::describe).collect::<Vec<_>>(),
            "subgroup_max": caps.subgroup_max,
        },
        "fused_kernels": fused_kernels,
        "tuned": gpu.tuned_choices().iter().map(|(class, t)| {
            // The class names its head-dim bucket (`d64`) and Q/K's dtype
            // (`f16`, or `qf16kf16v…` when they differ).
            let words: Vec<&str> = class.split_whitespace().collect();
            let d = words
                .iter()
                .find_map(|w| w.strip_prefix('d')?.parse::<usize>().ok())
                .unwrap_or(64);
            let f16 = words
                .iter()
                .any(|w| *w == "f16" || w.starts_with("qf16kf16"));
            let dtype = if f16 { DType::F16 } else { DType::F32 };
            json!({
                "class": class,
                "kernel": describe_fused_kernel_for(caps, *t, d, dtype),
            })
        }).collect::<Vec<_>>(),
        "tune_cache": gpu.tune_cache_path().map(|p| p.display().to_string()),
    })
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    if n >= MIB && n.is_multiple_of(MIB) || n >= 64 * MIB {
        format!("{} MiB", n / MIB)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

fn print_text(v: &Value) {
    let f = &v["features"];
    let l = &v["limits"];
    let yn = |x: &Value| {
        if x.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let u = |x: &Value| x.as_u64().unwrap_or(0);
    println!(
        "{} ({}, {})",
        v["name"].as_str().unwrap_or(""),
        v["backend"].as_str().unwrap_or(""),
        v["device_type"].as_str().unwrap_or("")
    );
    println!(
        "  driver            {} {}",
        v["driver"].as_str().unwrap_or(""),
        v["driver_info"].as_str().unwrap_or("")
    );
    println!("  f16               {}", yn(&f["f16"]));
    println!(
        "  subgroups         {} (sizes {}..{})",
        yn(&f["subgroups"]),
        u(&f["subgroup_min_size"]),
        u(&f["subgroup_max_size"])
    );
    println!(
        "  timestamps        {} (inside passes: {})",
        yn(&f["timestamps"]),
        yn(&f["timestamps_inside_passes"])
    );
    let shapes: Vec<&str> = f["cooperative_matrix_shapes"]
        .as_array()
        .map_or(&[][..], |a| a.as_slice())
        .iter()
        .filter_map(|s| s["shape"].as_str())
        .collect();
    println!(
        "  cooperative matrix {}{}{}",
        yn(&f["cooperative_matrix"]),
        if shapes.is_empty() {
            String::new()
        } else {
            format!(" ({} shapes: {})", shapes.len(), shapes.join(", "))
        },
        if f["cooperative_matrix"].as_bool() == Some(true)
            && v["coop"]["granted"].as_bool() != Some(true)
        {
            " (not granted: WGPU_ATTENTION_DISABLE_FEATURES?)"
        } else {
            ""
        }
    );
    println!(
        "  workgroup storage {}",
        bytes(u(&l["max_compute_workgroup_storage_size"]))
    );
    println!(
        "  invocations/wg    {} (size ≤ {}×{}×{})",
        u(&l["max_compute_invocations_per_workgroup"]),
        u(&l["max_compute_workgroup_size_x"]),
        u(&l["max_compute_workgroup_size_y"]),
        u(&l["max_compute_workgroup_size_z"])
    );
    println!(
        "  workgroups/dim    {}",
        u(&l["max_compute_workgroups_per_dimension"])
    );
    println!(
        "  storage binding   {}",
        bytes(u(&l["max_storage_buffer_binding_size"]))
    );
    println!("  max buffer        {}", bytes(u(&l["max_buffer_size"])));
    println!(
        "  storage buffers   {} per stage",
        u(&l["max_storage_buffers_per_shader_stage"])
    );
    match v["loop_budget"].as_u64() {
        Some(b) => println!("  loop budget       {b} iterations per invocation (Mesa gallivm cap)"),
        None => println!("  loop budget       none known"),
    }
    println!(
        "  kernel variant    {}",
        if v["kernel_variant"]["staged"].as_bool() == Some(true) {
            "staged (workgroup-memory tiles)"
        } else {
            "direct (CPU-driver tiles)"
        }
    );
    println!(
        "  coop mode         {} (WGPU_ATTENTION_COOP, --coop)",
        v["coop"]["mode"].as_str().unwrap_or("")
    );
    print_fused_kernels(v);
    let tuned = v["tuned"].as_array().map_or(&[][..], |a| a.as_slice());
    let cache = v["tune_cache"].as_str().unwrap_or("memory only");
    if tuned.is_empty() {
        println!("  autotuned         none yet (attn tune; cache: {cache})");
    } else {
        println!("  autotuned         ({cache})");
        for t in tuned {
            println!(
                "    {:<28} {}",
                t["class"].as_str().unwrap_or(""),
                t["kernel"].as_str().unwrap_or("")
            );
        }
    }
}

/// The fused kernel per head dim: f32, f16 (`same` when it is f32's), and
/// what `--coop on` and `--coop full` would run; a reason they cannot that
/// every head dim shares is printed once.
fn print_fused_kernels(v: &Value) {
    let rows = v["fused_kernels"]
        .as_array()
        .map_or(&[][..], |a| a.as_slice());
    let s = |x: &Value| x.as_str().unwrap_or("").to_string();
    // `coop on` refused alike at every D (no usable shape, a feature not
    // granted): `coop full` is refused for the same reason.
    let coop: Vec<String> = rows.iter().map(|r| s(&r["coop_on"])).collect();
    let shared_refusal = coop
        .first()
        .filter(|c| c.starts_with("none:") && coop.iter().all(|o| o == *c));
    println!(
        "  fused kernel      per head dim, many queries (f32 Q/K; f16 Q/K; --coop on; --coop full):"
    );
    for r in rows {
        let (f32k, f16k) = (s(&r["f32"]), s(&r["f16"]));
        println!("    D{:<4} f32       {f32k}", r["d"].as_u64().unwrap_or(0));
        println!(
            "          f16       {}",
            if f16k == f32k {
                "same".to_string()
            } else {
                f16k
            }
        );
        if shared_refusal.is_none() {
            println!("          coop on   {}", s(&r["coop_on"]));
            println!("          coop full {}", s(&r["coop_full"]));
        }
    }
    if let Some(why) = shared_refusal {
        println!(
            "    --coop on/full at every D: cannot run: {}",
            why.strip_prefix("none: ").unwrap_or(why)
        );
    }
}

pub fn main(a: InfoArgs) -> Result<()> {
    let (gpus, failed) = a.device.open_all()?;
    let found: Vec<_> = gpus.iter().map(describe).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        for (i, v) in found.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_text(v);
        }
        for e in &failed {
            println!("\nan adapter failed to open: {e}");
        }
    }
    Ok(())
}

//! `attn info`: every adapter, its features and the limits that matter for attention.

use anyhow::Result;
use clap::Args;
use serde_json::{json, Value};
use wgpu_attention::wgpu::Features;
use wgpu_attention::{Gpu, Tuning};

use crate::args::DeviceArgs;

#[derive(Args)]
#[command(after_help = "Examples:
  attn info
  attn info --json
  WGPU_BACKEND=gl attn info

Every adapter is opened as the library opens it (its own limits, and whichever
of SHADER_F16, SUBGROUP and TIMESTAMP_QUERY it has). Limits: workgroup storage,
invocations and sizes, storage binding and buffer size (bound the largest
score matrix of the unfused path), workgroups per dispatch dimension.
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
            })
        })
        .collect();
    let tuning: Tuning = gpu.tuning();
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
            "fused_d64": wgpu_attention::plan::describe_fused_kernel(gpu.caps(), tuning, 64),
        },
        "tuned": gpu.tuned_choices().iter().map(|(class, t)| {
            // The class names its head-dim bucket (`d64`).
            let d = class
                .split_whitespace()
                .find_map(|w| w.strip_prefix('d')?.parse::<usize>().ok())
                .unwrap_or(64);
            json!({
                "class": class,
                "kernel": wgpu_attention::plan::describe_fused_kernel(gpu.caps(), *t, d),
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
    println!(
        "  cooperative matrix {}{}",
        yn(&f["cooperative_matrix"]),
        match f["cooperative_matrix_shapes"].as_array() {
            Some(s) if !s.is_empty() => format!(" ({} shapes)", s.len()),
            _ => String::new(),
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
    if let Some(f) = v["kernel_variant"]["fused_d64"].as_str() {
        println!("  fused (D = 64)    {f}");
    }
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

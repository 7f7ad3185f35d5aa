//! Browser demo of `wgpu-attention`: the library compiled to `wasm32-unknown-unknown`,
//! running the fused and unfused attention paths on the browser's WebGPU and checking
//! every result against the f64 CPU reference (also compiled to wasm) in the same page.
//!
//! Exports (called from `www/app.js`):
//! - [`adapter_info`]: the adapter, its features and limits (JSON).
//! - [`run_attention`]: one attention problem (a `validation::Case`, its inputs built
//!   by the library exactly as the validation matrix builds them) on each chosen path
//!   (fused: O and LSE; unfused: also the weights), with the kernels the library's plan
//!   chooses, timed, verified (JSON + the (batch 0, head 0) weights for the heatmap).
//! - [`mask_kinds`]: the library's mask kinds (`validation::MASK_KINDS`), for the form.
//! - [`validation_cases`] / [`run_case`]: the library's validation matrix, case by
//!   case.
//! - [`check_shaders`]: every kernel's WGSL through the browser's own compiler.
//! - [`disable_features`]: open the device without some optional features.
//! - [`embed_check`]: the library inside an app's own wgpu work (`examples/embed.rs`
//!   in the browser), on a device of its own, checked against the f64 reference.
//!
//! Only async readback is used (`Tensor::to_vec().await`, `Recorder::submit_timed().await`):
//! nothing blocks the browser's main thread.

use std::cell::RefCell;

use serde_json::json;
use wasm_bindgen::prelude::*;
use wgpu_attention::validation::{self, Case};
use wgpu_attention::wgpu;
use wgpu_attention::{Gpu, GpuOptions, Tuning};

mod embed;
mod run;

pub use embed::embed_check;
pub use run::{run_attention, RunConfig, RunOutput};

thread_local! {
    static GPU: RefCell<Option<Gpu>> = const { RefCell::new(None) };
    static DISABLED: RefCell<wgpu::Features> = const { RefCell::new(wgpu::Features::empty()) };
}

/// Optional features the device is opened without (`"f16,subgroup,timestamp"`, any
/// subset), to see the fallbacks (e.g. wall-clock timing) on an adapter that has
/// them. Only before the device is first used (page URL `?disable=timestamp`).
#[wasm_bindgen]
pub fn disable_features(list: &str) -> Result<(), JsValue> {
    if GPU.with(|c| c.borrow().is_some()) {
        return Err(err("disable_features: the device is already open"));
    }
    let off = wgpu_attention::gpu::parse_features(list)
        .map_err(|e| err(format!("disable_features: {e}")))?;
    DISABLED.with(|d| *d.borrow_mut() = off);
    Ok(())
}

#[wasm_bindgen(start)]
pub fn start() {
    // panic = abort in wasm: print the message before the trap, so a failure says why.
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("wgpu-attention-web panicked: {info}").into());
    }));
}

fn err(e: impl std::fmt::Display) -> JsValue {
    JsValue::from_str(&e.to_string())
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or(0.0, |p| p.now())
}

/// The page's one device, opened on first use (WebGPU only; see `Gpu::new`).
async fn gpu() -> Result<Gpu, JsValue> {
    if let Some(g) = GPU.with(|c| c.borrow().clone()) {
        return Ok(g);
    }
    let options = GpuOptions {
        disabled_features: DISABLED.with(|d| *d.borrow()),
        ..Default::default()
    };
    let g = Gpu::new(&options).await.map_err(err)?;
    // Outputs start as NaN, so an element a kernel forgets to write fails the check.
    g.set_poison_outputs(true);
    GPU.with(|c| *c.borrow_mut() = Some(g.clone()));
    Ok(g)
}

fn tuning_json(t: Tuning) -> serde_json::Value {
    json!({ "staged": t.staged(), "softmax_workgroup": t.softmax_workgroup() })
}

fn feature_flags(f: wgpu::Features) -> serde_json::Value {
    json!({
        "f16": f.contains(wgpu::Features::SHADER_F16),
        "subgroups": f.contains(wgpu::Features::SUBGROUP),
        "timestamps": f.contains(wgpu::Features::TIMESTAMP_QUERY),
    })
}

/// The adapter as wgpu sees it: name, backend, optional features (the adapter's and
/// those granted to the device), the limits that matter to the kernels, the device's
/// default tuning and the fused kernel the plan picks with it. JSON.
#[wasm_bindgen]
pub async fn adapter_info() -> Result<String, JsValue> {
    let g = gpu().await?;
    let i = g.info();
    let l = g.limits();
    let t = g.tuning();
    Ok(json!({
        "name": i.name,
        "backend": format!("{:?}", i.backend),
        "device_type": format!("{:?}", i.device_type),
        "driver": format!("{} {}", i.driver, i.driver_info).trim(),
        "describe": g.describe(),
        "adapter_features": feature_flags(g.adapter().map_or(g.features(), |a| a.features())),
        "granted_features": feature_flags(g.features()),
        "limits": {
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroup_size_x": l.max_compute_workgroup_size_x,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        },
        "subgroup_size": { "min": i.subgroup_min_size, "max": i.subgroup_max_size },
        "tuning": tuning_json(t),
        // The fused kernel the plan picks on this device for many queries at D = 64.
        "fused_d64": wgpu_attention::plan::describe_fused_kernel(g.caps(), t, 64),
    })
    .to_string())
}

/// Compiles every kernel's WGSL (`wgpu_attention::shaders`) with the browser's own
/// shader compiler and reports its messages. The library builds pipelines inside an
/// error scope it cannot await in a browser, so a shader the browser rejects shows up
/// later only as "invalid pipeline"; this says which kernel and why. JSON list of
/// `{kernel, ok, messages, scope_error}`.
#[wasm_bindgen]
pub async fn check_shaders() -> Result<String, JsValue> {
    let g = gpu().await?;
    let device = g.device();
    let mut out = Vec::new();
    for (name, _) in wgpu_attention::shaders::KERNELS {
        if wgpu_attention::shaders::NATIVE_ONLY.contains(name) {
            // A native-only extension (cooperative matrices): browsers have none.
            out.push(json!({
                "kernel": name,
                "ok": true,
                "skipped": "native only (enable wgpu_cooperative_matrix)",
                "messages": [],
                "scope_error": null,
            }));
            continue;
        }
        let source = wgpu_attention::shaders::source(name);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let info = module.get_compilation_info().await;
        let scope_error = scope.pop().await.map(|e| e.to_string());
        let messages: Vec<_> = info
            .messages
            .iter()
            .map(|m| {
                json!({
                    "type": format!("{:?}", m.message_type),
                    "line": m.location.map(|l| l.line_number),
                    "column": m.location.map(|l| l.line_position),
                    "message": m.message,
                })
            })
            .collect();
        let has_error = info
            .messages
            .iter()
            .any(|m| m.message_type == wgpu::CompilationMessageType::Error);
        out.push(json!({
            "kernel": name,
            "ok": !has_error && scope_error.is_none(),
            "messages": messages,
            "scope_error": scope_error,
        }));
    }
    Ok(serde_json::Value::Array(out).to_string())
}

/// The mask kinds a [`Case`] takes (`validation::MASK_KINDS`), as a JSON list: the
/// page's mask choices.
#[wasm_bindgen]
pub fn mask_kinds() -> String {
    serde_json::to_string(&validation::MASK_KINDS).expect("names serialize")
}

/// The in-page validation matrix: the library's default case matrix
/// (`wgpu_attention::validation::matrix`: every mask kind × fused, unfused and
/// decode paths on shapes no tile divides, GQA/MQA, Nq ≠ Nk) once per kernel variant
/// (direct and staged). JSON list of `validation::Case`s, each run with
/// [`run_case`].
#[wasm_bindgen]
pub fn validation_cases() -> String {
    let mut cases = Vec::new();
    for staged in [false, true] {
        for c in validation::matrix(false) {
            let mut c = Case {
                staged: Some(staged),
                ..c
            };
            c.name = c.label();
            cases.push(c);
        }
    }
    serde_json::to_string(&cases).expect("cases serialize")
}

/// Runs one `validation::Case` (JSON) on the page's device against the f64
/// reference; returns the `validation::CaseResult` as JSON.
#[wasm_bindgen]
pub async fn run_case(case_json: String) -> Result<String, JsValue> {
    let case: Case = serde_json::from_str(&case_json).map_err(|e| err(format!("bad case: {e}")))?;
    let g = gpu().await?;
    let r = validation::run_case(&g, &case).await;
    serde_json::to_string(&r).map_err(err)
}

//! The library inside a browser app that owns its wgpu objects: the browser
//! version of `examples/embed.rs`. The app (this module) makes its own
//! `wgpu::Instance` (WebGPU only), adapter, device (the adapter's limits, no
//! optional features), buffers and command encoder with plain wgpu, records its
//! own compute pass (Q = 2·X), then the attention into the same encoder
//! (`Gpu::from_wgpu` + `Tensor::from_buffer` + `Gpu::recorder_for` + a
//! `Workspace` + `record_attention_into`), then another pass of its own
//! (Y = O / 2), submits once and maps its own readback buffer (asynchronously: in
//! a browser the mapping callback runs from the event loop, no poll). Y is
//! checked against the f64 reference. The page's shared device is not touched.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use wasm_bindgen::prelude::*;
use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::wgpu;
use wgpu_attention::{
    record_attention_into, Attention, AttentionOptions, AttentionOutputs, AttnShape, DType, Gpu,
    GpuOptions, Masking, Tensor, Workspace,
};

use crate::err;

#[path = "../../examples/app/scale.rs"]
mod app;
use app::{inputs, storage, storage_with, Scale};

/// Small enough for SwiftShader: GQA (4 query heads over 2 KV heads), Nq ≠ Nk,
/// a head size no tile divides, causal.
const SHAPE: AttnShape = AttnShape {
    b: 1,
    hq: 4,
    hkv: 2,
    nq: 13,
    nk: 70,
    d: 24,
};

/// Runs the embedding flow on a device of its own and checks it against the f64
/// reference. JSON `{ok, rel_l2, tolerance, kernels, adapter, device_type, report,
/// shape}`; any error (no WebGPU, a wgpu validation error, a library error, a
/// failed mapping) is a JS error string.
#[wasm_bindgen]
pub async fn embed_check() -> Result<String, JsValue> {
    run().await.map_err(err)
}

async fn run() -> Result<String, String> {
    // --- The app's own wgpu setup (a device of its own, not the page's). ---
    if !wgpu::util::is_browser_webgpu_supported().await {
        return Err("embed_check: this browser exposes no WebGPU".into());
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::BROWSER_WEBGPU;
    let instance = wgpu::Instance::new(desc);
    let adapter = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("embed_check: request_adapter: {e}"))?;
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("embed app device"),
            required_limits: adapter.limits(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("embed_check: request_device: {e}"))?;
    // The app's own handler: errors no scope catches are kept and reported.
    let uncaptured = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let uncaptured = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&uncaptured).push(e.to_string());
        }));
    }
    let info = adapter.get_info();

    let sh = SHAPE;
    let x = inputs(sh.q_len(), 1);
    let k = inputs(sh.kv_len(), 2);
    let v = inputs(sh.kv_len(), 3);

    // Everything the app and the library record and submit, in one validation
    // scope of the app's (the library's own scopes nest inside it).
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("embed readback"),
        size: (sh.q_len() * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let recorded = record_and_submit(&adapter, &device, &queue, &readback, &x, &k, &v);
    let scope_error = scope.pop().await;
    let (out, gpu) = recorded.map_err(|e| format!("embed_check: {e}"))?;
    if let Some(e) = scope_error {
        return Err(format!("embed_check: wgpu validation error: {e}"));
    }

    // --- The app reads its own buffer back: map_async, then await the callback. ---
    let (tx, rx) = futures::channel::oneshot::channel();
    readback.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    rx.await
        .map_err(|_| "embed_check: the mapping callback was dropped".to_string())?
        .map_err(|e| format!("embed_check: map_async: {e}"))?;
    let y: Vec<f32> = {
        let bytes = readback
            .get_mapped_range(..)
            .map_err(|e| format!("embed_check: get_mapped_range: {e}"))?;
        bytemuck::pod_collect_to_vec(&bytes)
    };
    readback.unmap();
    // A kernel the browser rejected shows up here with its compiler message.
    gpu.settle_kernels()
        .await
        .map_err(|e| format!("embed_check: {e}"))?;
    if let Some(e) = lock(&uncaptured).first() {
        return Err(format!("embed_check: uncaptured wgpu error: {e}"));
    }
    if y.len() != sh.q_len() {
        return Err(format!(
            "embed_check: read {} values, expected {}",
            y.len(),
            sh.q_len()
        ));
    }

    // --- Against the f64 reference: Y = attention(2·X, K, V) / 2. ---
    let q: Vec<f32> = x.iter().map(|x| 2.0 * x).collect();
    let want = reference::attention(
        &q,
        &k,
        &v,
        &sh,
        &ReferenceOptions {
            masking: masking(),
            ..Default::default()
        },
    );
    let want_y: Vec<f64> = want.o.iter().map(|o| 0.5 * o).collect();
    let report = verify(&y, &want_y);
    let ok = report.passes(Tolerance::F32.rel_l2);
    Ok(json!({
        "ok": ok,
        "rel_l2": report.rel_l2,
        "tolerance": Tolerance::F32.rel_l2,
        "kernels": out.kernels,
        // wgpu's name of a browser adapter is its `GPUAdapterInfo.description`, often empty.
        "adapter": info.name,
        "device_type": format!("{:?}", info.device_type),
        "report": report.to_string(),
        "shape": { "b": sh.b, "hq": sh.hq, "hkv": sh.hkv, "nq": sh.nq, "nk": sh.nk, "d": sh.d },
    })
    .to_string())
}

fn masking() -> Masking {
    Masking {
        causal: true,
        ..Default::default()
    }
}

/// The app's buffers and pipelines, then one encoder: app pass (Q = 2·X),
/// attention (the library, into the app's O), app pass (Y = O / 2), copy to the
/// app's `readback` buffer; one submit. Returns the attention's record and the
/// `Gpu` over the app's device, or the library's error.
fn record_and_submit(
    adapter: &wgpu::Adapter,
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    readback: &wgpu::Buffer,
    x: &[f32],
    k: &[f32],
    v: &[f32],
) -> Result<(Attention, Gpu), String> {
    let sh = SHAPE;
    let init = |label, data: &[f32]| storage_with(device, label, data);
    let empty = |label, n: usize| storage(device, label, n);
    let x_buf = init("embed x", x);
    let k_buf = init("embed k", k);
    let v_buf = init("embed v", v);
    let q_buf = empty("embed q", sh.q_len());
    let o_buf = empty("embed o", sh.q_len());
    let y_buf = empty("embed y", sh.q_len());
    let double = Scale::new(device, 2.0);
    let halve = Scale::new(device, 0.5);

    // --- The library over the app's device and buffers. ---
    let gpu = Gpu::from_wgpu(
        adapter.clone(),
        device.clone(),
        queue.clone(),
        &GpuOptions::default(),
    )
    .map_err(|e| format!("Gpu::from_wgpu: {e}"))?;
    let q_dims = [sh.b, sh.hq, sh.nq, sh.d];
    let kv_dims = [sh.b, sh.hkv, sh.nk, sh.d];
    let view = |b: &wgpu::Buffer, dims: &[usize]| {
        Tensor::from_buffer(&gpu, b, DType::F32, dims, None, 0)
            .map_err(|e| format!("Tensor::from_buffer: {e}"))
    };
    let q_t = view(&q_buf, &q_dims)?;
    let k_t = view(&k_buf, &kv_dims)?;
    let v_t = view(&v_buf, &kv_dims)?;
    let o_t = view(&o_buf, &q_dims)?;
    let opts = AttentionOptions {
        masking: masking(),
        ..Default::default()
    };
    let mut workspace = Workspace::new();

    // --- One encoder: app pass, attention, app pass. ---
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("embed app frame"),
    });
    double.record(device, &mut encoder, &x_buf, &q_buf, sh.q_len());
    let out = {
        let mut rec = gpu
            .recorder_for(&mut encoder)
            .with_workspace(&mut workspace);
        let outs = AttentionOutputs {
            o: Some(&o_t),
            lse: None,
        };
        record_attention_into(&mut rec, &q_t, &k_t, &v_t, &opts, outs)
            .map_err(|e| format!("record_attention_into: {e}"))?
    };
    halve.record(device, &mut encoder, &o_buf, &y_buf, sh.q_len());
    encoder.copy_buffer_to_buffer(&y_buf, 0, readback, 0, (sh.q_len() * 4) as u64);
    queue.submit([encoder.finish()]);
    Ok((out, gpu))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

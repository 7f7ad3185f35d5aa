//! Attention inside an app that owns its wgpu objects: the app creates the
//! instance, device, buffers and command encoder with plain wgpu, records its
//! own compute pass (Q = 2·X), then the attention into the same encoder, then
//! another pass of its own (Y = O / 2), submits once and reads Y back itself.
//! The result is checked against the f64 reference; the last line is `PASS`.
//!
//! ```sh
//! cargo run --release --example embed
//! ```

use wgpu_attention::reference::{self, ReferenceOptions};
use wgpu_attention::verify::{verify, Tolerance};
use wgpu_attention::{
    record_attention_into, AttentionOptions, AttentionOutputs, AttnShape, DType, Gpu, GpuOptions,
    Masking, Tensor, Workspace,
};

#[path = "app/scale.rs"]
mod app;
use app::{inputs, storage, storage_with, Scale};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --- The app's own wgpu setup. ---
    // wgpu's own environment switches: WGPU_BACKEND, WGPU_ADAPTER_NAME, WGPU_POWER_PREF.
    // (A plain wgpu instance enables Vulkan's window-surface extensions; on a machine
    // without XDG_RUNTIME_DIR, Mesa's device-select layer then prints two
    // "error: XDG_RUNTIME_DIR is invalid" lines on stderr. They are the app's and
    // harmless; the library's own instances leave those extensions out.)
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let instance = wgpu::Instance::new(desc);
    let adapter = pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
        &instance, None,
    ))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("app device"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))?;
    let info = adapter.get_info();
    println!(
        "adapter : {} ({:?}, {})",
        info.name, info.backend, info.driver_info
    );

    let sh = AttnShape {
        b: 1,
        hq: 8,
        hkv: 2,
        nq: 77,
        nk: 333,
        d: 64,
    };
    println!("shape   : Q [1, 8, 77, 64], K/V [1, 2, 333, 64] (GQA), causal, f32");
    let x = inputs(sh.q_len(), 1);
    let k = inputs(sh.kv_len(), 2);
    let v = inputs(sh.kv_len(), 3);
    let init = |label, data: &[f32]| storage_with(&device, label, data);
    let empty = |label, n: usize| storage(&device, label, n);
    let x_buf = init("x", &x);
    let k_buf = init("k", &k);
    let v_buf = init("v", &v);
    let q_buf = empty("q", sh.q_len());
    let o_buf = empty("o", sh.q_len());
    let y_buf = empty("y", sh.q_len());
    let double = Scale::new(&device, 2.0);
    let halve = Scale::new(&device, 0.5);

    // --- The library over the app's device and buffers. ---
    let gpu = Gpu::from_wgpu(
        adapter.clone(),
        device.clone(),
        queue.clone(),
        &GpuOptions::default(),
    )?;
    let q_dims = [sh.b, sh.hq, sh.nq, sh.d];
    let kv_dims = [sh.b, sh.hkv, sh.nk, sh.d];
    let q_t = Tensor::from_buffer(&gpu, &q_buf, DType::F32, &q_dims, None, 0)?;
    let k_t = Tensor::from_buffer(&gpu, &k_buf, DType::F32, &kv_dims, None, 0)?;
    let v_t = Tensor::from_buffer(&gpu, &v_buf, DType::F32, &kv_dims, None, 0)?;
    let o_t = Tensor::from_buffer(&gpu, &o_buf, DType::F32, &q_dims, None, 0)?;
    let masking = Masking {
        causal: true,
        ..Default::default()
    };
    let opts = AttentionOptions {
        masking: masking.clone(),
        ..Default::default()
    };
    let mut workspace = Workspace::new();

    // --- One encoder: app pass, attention, app pass. ---
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("app frame"),
    });
    double.record(&device, &mut encoder, &x_buf, &q_buf, sh.q_len());
    let out = {
        let mut rec = gpu
            .recorder_for(&mut encoder)
            .with_workspace(&mut workspace);
        let outs = AttentionOutputs {
            o: Some(&o_t),
            lse: None,
        };
        record_attention_into(&mut rec, &q_t, &k_t, &v_t, &opts, outs)?
    };
    halve.record(&device, &mut encoder, &o_buf, &y_buf, sh.q_len());
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (sh.q_len() * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(&y_buf, 0, &readback, 0, (sh.q_len() * 4) as u64);
    queue.submit([encoder.finish()]);
    println!("kernels : {}", out.kernels);

    // --- The app reads its own buffer back. ---
    let (tx, rx) = std::sync::mpsc::channel();
    readback.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely())?;
    rx.recv()??;
    let y: Vec<f32> = bytemuck::cast_slice(&readback.get_mapped_range(..)?).to_vec();
    readback.unmap();

    // --- Against the f64 reference: Y = attention(2·X, K, V) / 2. ---
    let q: Vec<f32> = x.iter().map(|x| 2.0 * x).collect();
    let want = reference::attention(
        &q,
        &k,
        &v,
        &sh,
        &ReferenceOptions {
            masking,
            ..Default::default()
        },
    );
    let want_y: Vec<f64> = want.o.iter().map(|o| 0.5 * o).collect();
    let report = verify(&y, &want_y);
    println!("reference (f64 CPU): {report}");
    let tol = Tolerance::F32.rel_l2;
    if !report.passes(tol) {
        println!("FAIL: relative L2 error {:.3e} > {tol:.0e}", report.rel_l2);
        std::process::exit(1);
    }
    println!("PASS: relative L2 error {:.2e} <= {tol:.0e}", report.rel_l2);
    Ok(())
}

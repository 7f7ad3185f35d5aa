//! The app's own kernel in the embedding examples (`examples/embed.rs`, the
//! browser's `web/src/embed.rs`, the GPU test `tests/gpu/embed.rs`): plain wgpu,
//! `y[i] = x[i] · SCALE` over the whole of `y`; and the examples' inputs and
//! storage buffers.

use wgpu_attention::wgpu::{self, util::DeviceExt};

/// The usage of the examples' storage buffers: bound by kernels, copied out.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC);

/// A storage buffer holding `data`.
#[allow(dead_code, reason = "the GPU test makes its own NaN-filled buffers")]
pub fn storage_with(device: &wgpu::Device, label: &str, data: &[f32]) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::cast_slice(data),
        usage: STORAGE,
    })
}

/// A storage buffer of `n` f32 elements.
#[allow(dead_code, reason = "the GPU test makes its own NaN-filled buffers")]
pub fn storage(device: &wgpu::Device, label: &str, n: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (n * 4) as u64,
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

const SCALE_WGSL: &str = "
override SCALE: f32;
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    if g.x < arrayLength(&y) { y[g.x] = x[g.x] * SCALE; }
}";

/// The app's scaling pipeline.
pub struct Scale {
    pipeline: wgpu::ComputePipeline,
}

impl Scale {
    /// Compiles `y = x · scale` on `device`.
    pub fn new(device: &wgpu::Device, scale: f64) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("app scale"),
            source: wgpu::ShaderSource::Wgsl(SCALE_WGSL.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("app scale"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[("SCALE", scale)],
                ..Default::default()
            },
            cache: None,
        });
        Scale { pipeline }
    }

    /// Records `y = x · scale` over `n` elements as a compute pass of the app's.
    pub fn record(
        &self,
        device: &wgpu::Device,
        encoder: &mut wgpu::CommandEncoder,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        n: usize,
    ) {
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("app scale"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: x.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: y.as_entire_binding(),
                },
            ],
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("app pass"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups((n as u32).div_ceil(64), 1, 1);
    }
}

/// Deterministic inputs in [-1, 1) (xorshift from `seed`).
#[allow(dead_code, reason = "the GPU test draws its own seeded inputs")]
pub fn inputs(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

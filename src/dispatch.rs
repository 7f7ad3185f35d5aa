//! Pipelines (created once per kernel and specialization, then cached) and the
//! recording of dispatches into one command encoder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// A compiled kernel: pipeline plus its explicit bind group layout (binding 0 is
/// the uniform parameter block, bindings 1.. are storage buffers).
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    storage: usize,
}

/// What a kernel binds: `true` for each read-only storage buffer, `false` for
/// read-write, in binding order after the uniform block.
pub(crate) struct KernelSpec {
    pub name: &'static str,
    pub storage_read_only: &'static [bool],
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PipelineKey {
    kernel: &'static str,
    constants: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
}

impl PipelineCache {
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Gpu {
    /// The pipeline of `spec` specialized with `constants` (WGSL `override`s),
    /// compiled on first use and cached for the life of the device.
    pub(crate) fn kernel(&self, spec: &KernelSpec, constants: &[(&'static str, f64)]) -> Result<Arc<Kernel>> {
        let key = PipelineKey { kernel: spec.name, constants: constants.iter().map(|(n, v)| (*n, v.to_bits())).collect() };
        if let Some(k) = self.inner.pipelines.map.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(k.clone());
        }
        let device = &self.inner.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(crate::shaders::source(spec.name).into()),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None },
            count: None,
        }];
        for (i, &read_only) in spec.storage_read_only.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(spec.name), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(spec.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                // Every kernel writes workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        // Native backends report synchronously; in a browser the scope resolves later
        // and the uncaptured-error handler is the safety net.
        if let Some(Some(e)) = scope.pop().now_or_never() {
            return Err(Error::Gpu(format!("building kernel {}: {e}", spec.name)));
        }
        self.take_error()?;
        let k = Arc::new(Kernel { pipeline, layout, storage: spec.storage_read_only.len() });
        self.inner.pipelines.map.lock().unwrap_or_else(|p| p.into_inner()).insert(key, k.clone());
        Ok(k)
    }

    /// Number of pipelines compiled so far (each (kernel, specialization) once).
    pub fn cached_pipelines(&self) -> usize {
        self.inner.pipelines.len()
    }

    /// Starts recording work into one command encoder.
    pub fn recorder(&self) -> Recorder<'_> {
        let encoder = self.inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgpu-attention") });
        Recorder { gpu: self, encoder }
    }

    /// Splits `total` workgroups into a 3-D grid within the device's per-dimension
    /// limit. Shaders rebuild the linear index (`shared/grid.wgsl`) and skip the
    /// surplus.
    pub(crate) fn grid(&self, what: &str, total: u64) -> Result<[u32; 3]> {
        let max = self.inner.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        if total == 0 {
            return Err(Error::ZeroSized(format!("{what}: empty dispatch")));
        }
        let x = total.min(max);
        let y = total.div_ceil(x).min(max);
        let z = total.div_ceil(x * y);
        if z > max || total > u32::MAX as u64 {
            return Err(Error::GridTooLarge { what: what.into(), workgroups: total, max });
        }
        Ok([x as u32, y as u32, z as u32])
    }
}

/// Records dispatches into one command encoder; [`Recorder::submit`] sends them
/// to the queue at once.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
}

impl Recorder<'_> {
    /// Records one dispatch of `total` workgroups of `kernel` with the parameter
    /// block `params` and the storage `buffers` (`None` binds a placeholder).
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Kernel,
        what: &str,
        params: &P,
        buffers: &[Option<&wgpu::Buffer>],
        total: u64,
    ) -> Result<()> {
        debug_assert_eq!(buffers.len(), kernel.storage, "{what}: binding count");
        let grid = self.gpu.grid(what, total)?;
        let device = &self.gpu.inner.device;
        let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        for (i, b) in buffers.iter().enumerate() {
            let buf = b.unwrap_or(&self.gpu.inner.dummy);
            entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: buf.as_entire_binding() });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(what), layout: &kernel.layout, entries: &entries });
        let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(what), timestamp_writes: None });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        Ok(())
    }

    /// The encoder, for callers that add their own commands (copies, timestamps).
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.encoder
    }

    /// Submits everything recorded, then reports any GPU error it caused.
    pub fn submit(self) -> Result<wgpu::SubmissionIndex> {
        let idx = self.gpu.inner.queue.submit([self.encoder.finish()]);
        self.gpu.take_error()?;
        Ok(idx)
    }
}

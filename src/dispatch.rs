//! Pipelines (created once per kernel and specialization, then cached) and the
//! recording of dispatches into one command encoder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// A compiled kernel: pipeline plus its explicit bind group layout (binding 0 is
/// the uniform parameter block, bindings 1.. are storage buffers).
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    read_only: &'static [bool],
    /// In a browser the validation scope around pipeline creation resolves after
    /// `kernel()` returns: it is kept here and checked at every later lookup and
    /// readback ([`Gpu::settle_kernels`]), so a rejected shader is reported with the
    /// compiler's message and dropped from the cache instead of staying there as an
    /// "invalid pipeline".
    #[cfg(target_arch = "wasm32")]
    pending: std::cell::RefCell<Option<PendingScope>>,
}

#[cfg(target_arch = "wasm32")]
type PendingScope = std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>;

#[cfg(target_arch = "wasm32")]
impl Kernel {
    /// The build error, if the pending scope has resolved with one (polled, not awaited).
    fn poll_build_error(&self) -> Option<wgpu::Error> {
        let mut slot = self.pending.borrow_mut();
        let fut = slot.as_mut()?;
        let out = fut.as_mut().now_or_never()?;
        *slot = None;
        out
    }
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
    source_consts: Vec<(&'static str, u32)>,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
}

impl PipelineCache {
    /// Drops a pipeline the browser rejected; the error to report.
    #[cfg(target_arch = "wasm32")]
    fn reject(&self, key: &PipelineKey, e: wgpu::Error) -> Error {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        Error::Gpu(format!("building kernel {}: {e}", key.kernel))
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Gpu {
    /// The pipeline of `spec` specialized with `constants` (WGSL `override`s),
    /// compiled on first use and cached for the life of the device.
    pub(crate) fn kernel(
        &self,
        spec: &KernelSpec,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Kernel>> {
        self.kernel_sized(spec, &[], constants)
    }

    /// [`Gpu::kernel`] with module `const`s substituted in the source first
    /// ([`crate::shaders::source_with`]); each distinct set is its own pipeline.
    pub(crate) fn kernel_sized(
        &self,
        spec: &KernelSpec,
        source_consts: &[(&'static str, u32)],
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Kernel>> {
        self.check_alive()?;
        let key = PipelineKey {
            kernel: spec.name,
            constants: constants.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
            source_consts: source_consts.to_vec(),
        };
        if let Some(k) = self
            .inner
            .pipelines
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
        {
            #[cfg(target_arch = "wasm32")]
            if let Some(e) = k.poll_build_error() {
                return Err(self.inner.pipelines.reject(&key, e));
            }
            return Ok(k);
        }
        let device = &self.inner.device;
        let _serial = self.exclusive();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(spec.name),
            source: wgpu::ShaderSource::Wgsl(
                crate::shaders::source_with(spec.name, source_consts).into(),
            ),
        });
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
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
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(spec.name),
            entries: &entries,
        });
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
        // and is kept with the kernel (see `Kernel::pending`).
        let mut pop = Box::pin(scope.pop());
        let resolved = (&mut pop).now_or_never();
        if let Some(Some(e)) = resolved {
            return Err(Error::Gpu(format!("building kernel {}: {e}", spec.name)));
        }
        self.take_error()?;
        let k = Arc::new(Kernel {
            pipeline,
            layout,
            read_only: spec.storage_read_only,
            #[cfg(target_arch = "wasm32")]
            pending: std::cell::RefCell::new(resolved.is_none().then_some(pop as PendingScope)),
        });
        self.inner
            .pipelines
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, k.clone());
        Ok(k)
    }

    /// Waits for the validation of every pipeline built so far and drops those the
    /// browser rejected from the cache, returning the first such error. Native
    /// backends validate synchronously (nothing is pending); in a browser readbacks
    /// call this, so a rejected shader surfaces with its compiler message.
    pub async fn settle_kernels(&self) -> Result<()> {
        #[cfg(target_arch = "wasm32")]
        {
            let kernels: Vec<(PipelineKey, Arc<Kernel>)> = self
                .inner
                .pipelines
                .map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut first = None;
            for (key, k) in kernels {
                let fut = k.pending.borrow_mut().take();
                if let Some(fut) = fut {
                    if let Some(e) = fut.await {
                        let e = self.inner.pipelines.reject(&key, e);
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Number of pipelines compiled so far (each (kernel, specialization) once).
    pub fn cached_pipelines(&self) -> usize {
        self.inner.pipelines.len()
    }

    /// Starts recording work into one command encoder.
    pub fn recorder(&self) -> Recorder<'_> {
        let encoder = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu-attention"),
            });
        Recorder {
            gpu: self,
            encoder,
            timer: None,
            passes: 0,
            tuning: self.tuning(),
        }
    }

    /// Like [`Gpu::recorder`], but every pass is timed with GPU timestamp queries;
    /// [`Recorder::submit_timed`] returns the GPU time from the first pass's start
    /// to the last pass's end. Needs `TIMESTAMP_QUERY`.
    pub fn timed_recorder(&self) -> Result<Recorder<'_>> {
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::MissingFeature("TIMESTAMP_QUERY (GPU timing)"));
        }
        let mut rec = self.recorder();
        rec.timer = Some(
            self.inner
                .device
                .create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("pass timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * MAX_TIMED_PASSES,
                }),
        );
        Ok(rec)
    }

    pub(crate) fn grid(&self, what: &str, total: u64) -> Result<[u32; 3]> {
        split_grid(
            what,
            total,
            self.inner.limits.max_compute_workgroups_per_dimension,
        )
    }
}

/// Splits `total` workgroups into a 3-D grid with at most `max_per_dim` per
/// dimension. Shaders rebuild the linear index (`shared/grid.wgsl`) and skip the
/// surplus. Fails only when even three dimensions (or a u32 index) cannot hold it.
pub fn split_grid(what: &str, total: u64, max_per_dim: u32) -> Result<[u32; 3]> {
    let max = max_per_dim.max(1) as u64;
    if total == 0 {
        return Err(Error::ZeroSized(format!("{what}: empty dispatch")));
    }
    let x = total.min(max);
    let y = total.div_ceil(x).min(max);
    let z = total.div_ceil(x * y);
    if z > max || total > u32::MAX as u64 {
        return Err(Error::GridTooLarge {
            what: what.into(),
            workgroups: total,
            max,
        });
    }
    Ok([x as u32, y as u32, z as u32])
}

/// Records dispatches into one command encoder; [`Recorder::submit`] sends them
/// to the queue at once.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    timer: Option<wgpu::QuerySet>,
    passes: u32,
    tuning: crate::gpu::Tuning,
}

/// Passes one timed recording can hold (two timestamps each).
const MAX_TIMED_PASSES: u32 = 256;

impl Recorder<'_> {
    /// Uses the kernel variants `t` for what this recorder records (the device
    /// default is [`Gpu::tuning`]). `t.subgroup` counts as 0 on a device without
    /// the SUBGROUP feature.
    pub fn with_tuning(mut self, t: crate::gpu::Tuning) -> Self {
        self.tuning = self.gpu.granted_tuning(t);
        self
    }

    /// The kernel variants this recorder uses.
    pub fn tuning(&self) -> crate::gpu::Tuning {
        self.tuning
    }

    /// Records one dispatch of `total` workgroups of `kernel` with the parameter
    /// block `params` and the storage `buffers`. `None` binds a placeholder: the
    /// shared read-only one, or a fresh scratch buffer for a read-write binding
    /// (a buffer may not be bound read-only and read-write in one dispatch).
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Kernel,
        what: &str,
        params: &P,
        buffers: &[Option<&wgpu::Buffer>],
        total: u64,
    ) -> Result<()> {
        debug_assert_eq!(
            buffers.len(),
            kernel.read_only.len(),
            "{what}: binding count"
        );
        let grid = self.gpu.grid(what, total)?;
        let device = &self.gpu.inner.device;
        let uniform = self.gpu.upload(
            what,
            bytemuck::bytes_of(params),
            wgpu::BufferUsages::UNIFORM,
        )?;
        let scratch: Vec<Option<wgpu::Buffer>> = buffers
            .iter()
            .zip(kernel.read_only)
            .map(|(b, &ro)| match (b, ro) {
                (None, false) => self.gpu.alloc("absent output", 16).map(Some),
                _ => Ok(None),
            })
            .collect::<Result<_>>()?;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, (b, s)) in buffers.iter().zip(&scratch).enumerate() {
            let buf = b.or(s.as_ref()).unwrap_or(&self.gpu.inner.dummy);
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buf.as_entire_binding(),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(what),
            layout: &kernel.layout,
            entries: &entries,
        });
        let timestamp_writes = match &self.timer {
            Some(_) if self.passes >= MAX_TIMED_PASSES => {
                return Err(Error::InvalidArgument(format!(
                    "a timed recording holds at most {MAX_TIMED_PASSES} passes"
                )));
            }
            Some(qs) => Some(wgpu::ComputePassTimestampWrites {
                query_set: qs,
                beginning_of_pass_write_index: Some(2 * self.passes),
                end_of_pass_write_index: Some(2 * self.passes + 1),
            }),
            None => None,
        };
        self.passes += 1;
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(what),
                timestamp_writes,
            });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        Ok(())
    }

    /// The encoder, for callers that add their own commands (copies, timestamps).
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.encoder
    }

    /// Submits a recording made by [`Gpu::timed_recorder`] and returns the GPU time
    /// in milliseconds from the start of its first pass to the end of its last.
    pub async fn submit_timed(mut self) -> Result<f64> {
        let gpu = self.gpu;
        let Some(qs) = self.timer.take() else {
            return Err(Error::InvalidArgument(
                "submit_timed needs a recorder from Gpu::timed_recorder".into(),
            ));
        };
        let n = self.passes;
        if n == 0 {
            return Err(Error::InvalidArgument(
                "nothing was recorded to time".into(),
            ));
        }
        let resolve = gpu.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16 * n as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.encoder.resolve_query_set(&qs, 0..2 * n, &resolve, 0);
        self.submit()?;
        let raw = crate::tensor::read_buffer(gpu, &resolve, 0, 16 * n as u64).await?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let start = ticks.iter().step_by(2).min().copied().unwrap_or(0);
        let end = ticks.iter().skip(1).step_by(2).max().copied().unwrap_or(0);
        Ok(end.saturating_sub(start) as f64 * gpu.inner.queue.get_timestamp_period() as f64 / 1e6)
    }

    /// Submits everything recorded, then reports any GPU error it caused.
    pub fn submit(self) -> Result<wgpu::SubmissionIndex> {
        let idx = {
            let _serial = self.gpu.exclusive();
            self.gpu.inner.queue.submit([self.encoder.finish()])
        };
        self.gpu.take_error()?;
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::split_grid;
    use crate::Error;

    #[test]
    fn grid_fits_in_one_dimension_when_it_can() {
        assert_eq!(split_grid("t", 5, 65535).unwrap(), [5, 1, 1]);
        assert_eq!(split_grid("t", 65535, 65535).unwrap(), [65535, 1, 1]);
    }

    #[test]
    fn grid_splits_and_covers_every_workgroup() {
        for (total, max) in [
            (65536u64, 65535u32),
            (70000, 65535),
            (1_000_001, 1000),
            (27, 3),
            (28, 4),
        ] {
            let [x, y, z] = split_grid("t", total, max).unwrap();
            assert!(
                x <= max && y <= max && z <= max,
                "{total}/{max}: {x} {y} {z}"
            );
            let cap = x as u64 * y as u64 * z as u64;
            assert!(cap >= total, "{total}/{max}: grid {x}x{y}x{z} too small");
            // Surplus is less than one x*y slab: little wasted work.
            assert!(
                cap - total < x as u64 * y as u64,
                "{total}/{max}: {x}x{y}x{z}"
            );
        }
    }

    #[test]
    fn grid_too_large_is_a_typed_error() {
        assert!(matches!(
            split_grid("t", 28, 3),
            Err(Error::GridTooLarge {
                workgroups: 28,
                max: 3,
                ..
            })
        ));
        assert!(matches!(split_grid("t", 0, 3), Err(Error::ZeroSized(_))));
        assert!(matches!(
            split_grid("t", 1 << 33, 65535),
            Err(Error::GridTooLarge { .. })
        ));
    }
}

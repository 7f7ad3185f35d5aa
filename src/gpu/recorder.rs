//! Recording dispatches into one command encoder: bind groups, the workgroup
//! grid, GPU timestamps, submission.

use std::sync::Arc;

use super::device::Gpu;
use super::pipeline::Kernel;
use super::tuning::Tuning;
use super::workspace::Workspace;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

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

/// Passes one timed recording can hold (two timestamps each).
const MAX_TIMED_PASSES: u32 = 256;

impl Gpu {
    /// Starts recording work into one command encoder, with this device's
    /// default kernel variants ([`Gpu::tuning`]).
    pub fn recorder(&self) -> Recorder<'_> {
        let encoder = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu-attention"),
            });
        self.recorder_over(Encoder::Own(encoder))
    }

    fn recorder_over<'a>(&'a self, encoder: Encoder<'a>) -> Recorder<'a> {
        Recorder {
            gpu: self,
            encoder,
            workspace: None,
            timer: None,
            passes: 0,
            tuning: self.tuning(),
        }
    }

    /// Records into the caller's `encoder` (next to the caller's own passes):
    /// nothing is submitted, read back or waited for; submit the encoder
    /// yourself. The inputs' contents are read when the encoder's commands
    /// run, so passes recorded before this one may produce them. Uniform
    /// blocks are written through the queue into new buffers, so they hold
    /// whatever order the encoders are submitted in. With
    /// [`TuningMode::Autotune`](crate::TuningMode::Autotune), a class not yet
    /// tuned runs the heuristic's variants instead of being measured (measuring
    /// would block).
    ///
    /// ```
    /// # fn main() -> wgpu_attention::Result<()> {
    /// use wgpu_attention::{record_attention, AttentionOptions, Gpu, Tensor};
    /// let gpu = Gpu::new_blocking(&Default::default())?;
    /// let x = Tensor::from_slice(&gpu, &[0.1f32, 0.2, 0.3, 0.4], &[1, 1, 2, 2])?;
    /// let mut encoder = gpu.device().create_command_encoder(&Default::default());
    /// // ... the caller's own passes ...
    /// let out = {
    ///     let mut rec = gpu.recorder_for(&mut encoder);
    ///     record_attention(&mut rec, &x, &x, &x, &AttentionOptions::default())?
    /// };
    /// gpu.queue().submit([encoder.finish()]);
    /// assert_eq!(out.o.to_vec_blocking()?.len(), 4);
    /// # Ok(()) }
    /// ```
    pub fn recorder_for<'a>(&'a self, encoder: &'a mut wgpu::CommandEncoder) -> Recorder<'a> {
        self.recorder_over(Encoder::Caller(encoder))
    }

    /// Like [`Gpu::recorder`], but every pass is timed with GPU timestamp queries;
    /// [`Recorder::submit_timed`] returns the GPU time from the first pass's start
    /// to the last pass's end. Needs `TIMESTAMP_QUERY`.
    pub fn timed_recorder(&self) -> Result<Recorder<'_>> {
        if !self.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(Error::MissingFeature(
                "the adapter does not provide feature TIMESTAMP_QUERY (GPU timing)".into(),
            ));
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
}

/// Records dispatches into one command encoder; [`Recorder::submit`] sends them
/// to the queue at once.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: Encoder<'g>,
    workspace: Option<&'g mut Workspace>,
    timer: Option<wgpu::QuerySet>,
    passes: u32,
    tuning: Tuning,
}

/// The encoder a recorder fills: its own, or the caller's.
enum Encoder<'g> {
    Own(wgpu::CommandEncoder),
    Caller(&'g mut wgpu::CommandEncoder),
}

impl Encoder<'_> {
    fn get(&mut self) -> &mut wgpu::CommandEncoder {
        match self {
            Encoder::Own(e) => e,
            Encoder::Caller(e) => e,
        }
    }
}

impl<'g> Recorder<'g> {
    /// Takes scratch buffers from `workspace` instead of allocating them (see
    /// [`Workspace`]).
    pub fn with_workspace(mut self, workspace: &'g mut Workspace) -> Self {
        self.workspace = Some(workspace);
        self
    }

    /// Whether this recorder fills the caller's encoder ([`Gpu::recorder_for`]).
    pub fn is_caller_encoder(&self) -> bool {
        matches!(self.encoder, Encoder::Caller(_))
    }

    /// The device this recorder records for.
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Where the scratch of one call starts (see [`Recorder::release_scratch`]).
    pub(crate) fn scratch_mark(&self) -> usize {
        self.workspace.as_ref().map_or(0, |w| w.mark())
    }

    /// Hands the scratch taken since `mark` back to the workspace: the call
    /// that took it is recorded, so the next call may reuse it.
    pub(crate) fn release_scratch(&mut self, mark: usize) {
        if let Some(w) = self.workspace.as_mut() {
            w.release(mark);
        }
    }

    /// A contiguous scratch tensor: from the workspace when there is one (its
    /// contents are whatever an earlier call left), else newly allocated (NaN
    /// when poisoning).
    pub(crate) fn scratch(&mut self, what: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        match self.workspace.as_mut() {
            None => Tensor::output_as(self.gpu, what, shape, None, dtype),
            Some(ws) => {
                let n: u64 = shape.iter().map(|&v| v as u64).product();
                let buffer = ws.take(self.gpu, what, n * dtype.size() as u64)?;
                Tensor::over_scratch(self.gpu, buffer, shape, dtype)
            }
        }
    }

    /// A buffer for an output binding nobody reads.
    fn absent_output(&mut self) -> Result<Arc<wgpu::Buffer>> {
        match self.workspace.as_mut() {
            None => Ok(Arc::new(self.gpu.alloc("absent output", 16)?)),
            Some(ws) => ws.take(self.gpu, "absent output", 16),
        }
    }

    /// Uses the kernel variants `t` for what this recorder records (the device
    /// default is [`Gpu::tuning`]). `t.subgroup()` counts as 0 on a device without
    /// the SUBGROUP feature.
    pub fn with_tuning(mut self, t: Tuning) -> Self {
        self.tuning = self.gpu.granted_tuning(t);
        self
    }

    /// The kernel variants this recorder uses.
    pub fn tuning(&self) -> Tuning {
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
        let gpu = self.gpu;
        let grid = split_grid(
            what,
            total,
            gpu.limits().max_compute_workgroups_per_dimension,
        )?;
        let uniform = gpu.upload(
            what,
            bytemuck::bytes_of(params),
            wgpu::BufferUsages::UNIFORM,
        )?;
        let mut scratch: Vec<Option<Arc<wgpu::Buffer>>> = Vec::with_capacity(buffers.len());
        for (b, &ro) in buffers.iter().zip(&kernel.read_only) {
            scratch.push(match (b, ro) {
                (None, false) => Some(self.absent_output()?),
                _ => None,
            });
        }
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, (b, s)) in buffers.iter().zip(&scratch).enumerate() {
            let buf = b.or(s.as_deref()).unwrap_or(&gpu.inner.dummy);
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: buf.as_entire_binding(),
            });
        }
        let bind_group = gpu.capture(what, || {
            gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(what),
                layout: &kernel.layout,
                entries: &entries,
            })
        })?;
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
            .get()
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
        self.encoder.get()
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
        let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: 16 * n as u64,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        self.encoder().resolve_query_set(&qs, 0..2 * n, &resolve, 0);
        self.submit()?;
        let raw = gpu.read_buffer(&resolve, 0, 16 * n as u64).await?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let start = ticks.iter().step_by(2).min().copied().unwrap_or(0);
        let end = ticks.iter().skip(1).step_by(2).max().copied().unwrap_or(0);
        Ok(end.saturating_sub(start) as f64 * gpu.queue().get_timestamp_period() as f64 / 1e6)
    }

    /// Submits everything recorded, then reports any GPU error it caused. A
    /// recorder over the caller's encoder ([`Gpu::recorder_for`]) does not
    /// submit: that is the caller's, and this is an error.
    pub fn submit(self) -> Result<wgpu::SubmissionIndex> {
        let encoder = match self.encoder {
            Encoder::Own(e) => e,
            Encoder::Caller(_) => return Err(Error::InvalidArgument(
                "this recorder fills the caller's encoder: finish and submit that encoder instead"
                    .into(),
            )),
        };
        let idx = {
            let _serial = self.gpu.exclusive();
            self.gpu.queue().submit([encoder.finish()])
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

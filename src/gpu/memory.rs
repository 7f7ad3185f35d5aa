//! Device memory: uploads, output allocations (checked against the granted
//! limits, NaN-poisoned on request), readback.

use std::sync::atomic::Ordering;

use super::device::Gpu;
use crate::error::{Error, Result};

impl Gpu {
    /// A buffer holding `bytes` (padded to 4), written through the queue (no
    /// mapping, so a lost device is an error rather than a panic in wgpu).
    pub(crate) fn upload(
        &self,
        what: &str,
        bytes: &[u8],
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let size = (bytes.len() as u64).max(4).div_ceil(4) * 4;
        if usage.contains(wgpu::BufferUsages::STORAGE) {
            self.check_storage_size(what, size)?;
            self.inner
                .storage_allocations
                .fetch_add(1, Ordering::Relaxed);
        }
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut padded = bytes.to_vec();
        padded.resize(size as usize, 0);
        let _serial = self.exclusive();
        self.inner.queue.write_buffer(&buf, 0, &padded);
        Ok(buf)
    }

    /// Checks a storage buffer size against the device limits.
    pub(crate) fn check_storage_size(&self, what: &str, bytes: u64) -> Result<()> {
        let l = &self.inner.caps.limits;
        for (limit_name, limit) in [
            ("max_buffer_size", l.max_buffer_size),
            (
                "max_storage_buffer_binding_size",
                l.max_storage_buffer_binding_size,
            ),
        ] {
            if bytes > limit {
                return Err(Error::BufferTooLarge {
                    what: what.into(),
                    bytes,
                    limit_name,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// Allocates a storage buffer of `bytes` (rounded up to 4), checked against the
    /// limits, NaN-filled when poisoning is on (in every dtype).
    pub(crate) fn alloc(&self, what: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let bytes = bytes.max(4).div_ceil(4) * 4;
        self.check_storage_size(what, bytes)?;
        self.inner
            .storage_allocations
            .fetch_add(1, Ordering::Relaxed);
        let buf = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if self.inner.poison.load(Ordering::Relaxed) {
            // 0x7fc0_7fc0: a NaN read as one f32 and as each of two f16 or bf16.
            let nan = 0x7fc0_7fc0u32.to_le_bytes();
            let fill: Vec<u8> = nan.iter().copied().cycle().take(bytes as usize).collect();
            let _serial = self.exclusive();
            self.inner.queue.write_buffer(&buf, 0, &fill);
        }
        Ok(buf)
    }

    /// Copies `bytes` of `buffer` from `offset` into a mappable buffer and reads them.
    pub(crate) async fn read_buffer(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>> {
        self.check_alive()?;
        let bytes = bytes.div_ceil(4) * 4;
        if bytes > self.limits().max_buffer_size {
            return Err(Error::BufferTooLarge {
                what: "readback".into(),
                bytes,
                limit_name: "max_buffer_size",
                limit: self.limits().max_buffer_size,
            });
        }
        let device = self.device();
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("readback"),
        });
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
        {
            let _serial = self.exclusive();
            self.queue().submit([encoder.finish()]);
        }
        self.take_error()?;
        let (tx, rx) = futures::channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::DeviceLost(e.to_string()))?;
        rx.await
            .map_err(|_| Error::Readback("mapping callback dropped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        self.settle_kernels().await?;
        self.take_error()?;
        let _serial = self.exclusive();
        let data = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Readback(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }
}

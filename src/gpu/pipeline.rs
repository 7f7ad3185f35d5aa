//! Compiled kernels and their cache: one pipeline per [`Specialization`], built
//! on first use and kept for the life of the device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;

use crate::error::{Error, Result};
use crate::shaders::Specialization;

/// A compiled kernel: pipeline plus its explicit bind group layout (binding 0 is
/// the uniform parameter block, bindings 1.. are storage buffers).
pub(crate) struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) read_only: Vec<bool>,
    /// In a browser the validation scope around pipeline creation resolves after
    /// `kernel()` returns: it is kept here and checked at every later lookup and
    /// readback ([`crate::gpu::Gpu::settle_kernels`]), so a rejected shader is reported
    /// with the compiler's message and dropped from the cache instead of staying
    /// there as an "invalid pipeline".
    #[cfg(target_arch = "wasm32")]
    pub(crate) pending: std::cell::RefCell<Option<PendingScope>>,
}

#[cfg(target_arch = "wasm32")]
pub(crate) type PendingScope =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>;

#[cfg(target_arch = "wasm32")]
impl Kernel {
    /// The build error, if the pending scope has resolved with one (polled, not awaited).
    pub(crate) fn poll_build_error(&self) -> Option<wgpu::Error> {
        let mut slot = self.pending.borrow_mut();
        let fut = slot.as_mut()?;
        let out = fut.as_mut().now_or_never()?;
        *slot = None;
        out
    }
}

/// The cache key of a specialization (override values by their bits).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    kernel: &'static str,
    defines: Vec<(&'static str, u32)>,
    overrides: Vec<(&'static str, u64)>,
    elems: Vec<(&'static str, crate::shaders::Elem)>,
    /// The mods' source hash and switches.
    mods: Option<(u64, [(&'static str, u32); 3])>,
}

impl PipelineKey {
    pub(crate) fn of(s: &Specialization) -> Self {
        PipelineKey {
            kernel: s.kernel.name,
            defines: s.defines.clone(),
            overrides: s.overrides.iter().map(|(n, v)| (*n, v.to_bits())).collect(),
            elems: s.elems.clone(),
            mods: s.mods.as_ref().map(|m| (m.hash, m.flags())),
        }
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
}

impl PipelineCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<PipelineKey, Arc<Kernel>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &PipelineKey) -> Option<Arc<Kernel>> {
        self.map().get(key).cloned()
    }

    pub(crate) fn insert(&self, key: PipelineKey, k: Arc<Kernel>) {
        self.map().insert(key, k);
    }

    /// Every cached kernel with its key.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn entries(&self) -> Vec<(PipelineKey, Arc<Kernel>)> {
        self.map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Drops a pipeline the browser rejected; the error to report.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn reject(&self, key: &PipelineKey, e: wgpu::Error) -> Error {
        self.map().remove(key);
        Error::Gpu(format!("building kernel {}: {e}", key.kernel))
    }

    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

/// Builds the pipeline of `s` on `device` (the caller holds the device's lock
/// where the backend needs one). Native backends report a rejected shader here;
/// in a browser the scope is kept with the kernel (see [`Kernel::pending`]).
pub(crate) fn build(device: &wgpu::Device, s: &Specialization) -> Result<Kernel> {
    let name = s.kernel.name;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(s.source().into()),
    });
    let buffer = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let mut entries = vec![buffer(0, wgpu::BufferBindingType::Uniform)];
    let read_only = s.storage_read_only();
    for (i, &read_only) in read_only.iter().enumerate() {
        entries.push(buffer(
            i as u32 + 1,
            wgpu::BufferBindingType::Storage { read_only },
        ));
    }
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(name),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &s.overrides,
            // Every kernel writes workgroup memory before reading it.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    let mut pop = Box::pin(scope.pop());
    let resolved = (&mut pop).now_or_never();
    if let Some(Some(e)) = resolved {
        return Err(Error::Gpu(format!("building kernel {name}: {e}")));
    }
    Ok(Kernel {
        pipeline,
        layout,
        read_only,
        #[cfg(target_arch = "wasm32")]
        pending: std::cell::RefCell::new(resolved.is_none().then_some(pop as PendingScope)),
    })
}

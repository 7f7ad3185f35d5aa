//! Scratch memory a caller keeps across recordings: the split-KV partials, the
//! unfused path's scores and weights, placeholders for absent outputs.

use std::sync::Arc;

use super::device::Gpu;
use crate::error::{Error, Result};

/// Scratch buffers kept across recordings, so that recording the same plans
/// again (the next decode step, the next frame) allocates nothing.
///
/// Give it to a recorder with [`crate::Recorder::with_workspace`]. Within one
/// call every scratch tensor gets its own buffer; when the call has been
/// recorded its buffers serve the next call (in the same encoder or a later
/// one: each call writes its scratch before reading it, and wgpu orders the
/// passes that touch a buffer), so the workspace grows to the largest call it
/// has served and then stays that size. Outputs (O, LSE, weights) never live
/// here: pass your own with [`crate::record_attention_into`] or get new ones.
///
/// One workspace serves one device; it is `Send` but not shared between
/// recorders at once (each recorder borrows it mutably).
///
/// ```
/// # fn main() -> wgpu_attention::Result<()> {
/// use wgpu_attention::{record_attention, AttentionOptions, AttentionPath, Gpu, Tensor, Workspace};
/// let gpu = Gpu::new_blocking(&Default::default())?;
/// let q = Tensor::from_slice(&gpu, &[0.5f32; 64], &[1, 1, 1, 64])?;
/// let kv = Tensor::from_slice(&gpu, &vec![0.25f32; 64 * 2048], &[1, 1, 2048, 64])?;
/// let opts = AttentionOptions { path: AttentionPath::Decode, ..Default::default() };
/// let mut ws = Workspace::new();
/// let mut after_first = 0;
/// for step in 0..3 {
///     let mut rec = gpu.recorder().with_workspace(&mut ws);
///     record_attention(&mut rec, &q, &kv, &kv, &opts)?;
///     rec.submit()?;
///     if step == 0 {
///         after_first = ws.allocations();
///     }
/// }
/// // The split-KV partials were allocated by the first step only.
/// assert!(after_first > 0);
/// assert_eq!(ws.allocations(), after_first);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Workspace {
    device: Option<wgpu::Device>,
    slots: Vec<Arc<wgpu::Buffer>>,
    next: usize,
    allocations: u64,
}

impl Workspace {
    /// An empty workspace; buffers are allocated on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Buffers this workspace has allocated since it was made (a slot that had
    /// to grow counts again).
    pub fn allocations(&self) -> u64 {
        self.allocations
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.slots.iter().map(|b| b.size()).sum()
    }

    /// Frees every buffer (the next recording allocates again).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.next = 0;
    }

    /// Where the scratch of the call being recorded starts; [`Workspace::release`]
    /// hands everything taken after it back for the next call.
    pub(crate) fn mark(&self) -> usize {
        self.next
    }

    /// Releases the slots taken since `mark`.
    pub(crate) fn release(&mut self, mark: usize) {
        self.next = mark.min(self.next);
    }

    /// The next slot, at least `bytes` long (grown if it was shorter), on `gpu`.
    pub(crate) fn take(&mut self, gpu: &Gpu, what: &str, bytes: u64) -> Result<Arc<wgpu::Buffer>> {
        match &self.device {
            Some(d) if d != gpu.device() => {
                return Err(Error::InvalidArgument(format!(
                    "{what}: this workspace holds buffers of another device; keep one Workspace per Gpu"
                )));
            }
            Some(_) => {}
            None => self.device = Some(gpu.device().clone()),
        }
        let bytes = bytes.max(4).div_ceil(4) * 4;
        let i = self.next;
        self.next += 1;
        if let Some(b) = self.slots.get(i) {
            if b.size() >= bytes {
                return Ok(b.clone());
            }
        }
        let b = Arc::new(gpu.alloc(what, bytes)?);
        self.allocations += 1;
        if i < self.slots.len() {
            self.slots[i] = b.clone();
        } else {
            self.slots.push(b.clone());
        }
        Ok(b)
    }
}

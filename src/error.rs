//! Typed errors. Every bad input is reported before anything is dispatched, with a
//! message that says what to change.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request.
    #[error("no GPU adapter found ({0}). Without a GPU install Mesa's software drivers: `apt-get install mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri` (lavapipe for Vulkan, llvmpipe for GL)")]
    NoAdapter(String),
    /// `request_device` failed.
    #[error("could not open a device on adapter {adapter}: {reason}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },
    /// A tensor's shape or strides do not fit what the operation needs.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A dimension is zero.
    #[error("zero-sized dimension: {0} must be at least 1")]
    ZeroSized(String),
    /// Query heads are not a multiple of key/value heads.
    #[error("query heads ({hq}) must be a multiple of key/value heads ({hkv}) for grouped-query attention")]
    Heads {
        /// Query heads.
        hq: usize,
        /// Key/value heads.
        hkv: usize,
    },
    /// A mask tensor cannot be broadcast to the score shape.
    #[error("mask of shape {mask:?} does not broadcast to [B={b}, H={h}, Nq={nq}, Nk={nk}]: each of its dims must be 1 or equal to the score dim ([B|1, H|1, Nq|1, Nk|1])")]
    MaskBroadcast {
        /// The mask's dims.
        mask: [usize; 4],
        /// Batch of the scores.
        b: usize,
        /// Query heads of the scores.
        h: usize,
        /// Queries.
        nq: usize,
        /// Keys.
        nk: usize,
    },
    /// Invalid option value (NaN in a mask, key length out of range, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A paged KV pool has too few free blocks for an append
    /// ([`crate::paged::BlockManager`]); nothing was reserved.
    #[error("the paged KV pool needs {needed} more blocks but {free} are free: free finished sequences (or preempt one) or make the pool larger")]
    OutOfBlocks {
        /// Blocks the append needs.
        needed: usize,
        /// Blocks free.
        free: usize,
    },
    /// A buffer would exceed a limit of the device.
    #[error("{what} needs {bytes} bytes, over the device's {limit_name} of {limit} bytes; use smaller batches or sequence lengths")]
    BufferTooLarge {
        /// The buffer's role.
        what: String,
        /// Bytes it needs.
        bytes: u64,
        /// The `wgpu::Limits` field it exceeds.
        limit_name: &'static str,
        /// That limit's granted value.
        limit: u64,
    },
    /// The dispatch cannot be expressed within the device's workgroup grid limits.
    #[error("{what} needs {workgroups} workgroups, more than the device can address ({max} per dimension, 3 dimensions)")]
    GridTooLarge {
        /// The dispatch.
        what: String,
        /// Workgroups it needs.
        workgroups: u64,
        /// `max_compute_workgroups_per_dimension`.
        max: u64,
    },
    /// The work would exceed a limit of this driver that the API does not report.
    #[error("{0}")]
    DriverLimit(String),
    /// An optional device feature the operation needs was not granted.
    #[error("{0}")]
    MissingFeature(String),
    /// A score or mask mod (src/mods.rs) that does not parse, type-check or
    /// fit the kernels; the message names its file and line.
    #[error("{0}")]
    InvalidMod(String),
    /// wgpu reported a validation or out-of-memory error.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// The device was lost (driver reset, removed adapter, ...).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A layer configuration that cannot work (e.g. `d_model % num_heads != 0`).
    #[error("invalid layer configuration: {0}")]
    Config(String),
    /// A weight tensor is missing, has the wrong shape or an unsupported dtype.
    #[error("weights: {0}")]
    Weights(String),
    /// Reading or writing a file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// Mapping a buffer for readback failed.
    #[error("buffer readback failed: {0}")]
    Readback(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

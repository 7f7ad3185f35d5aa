//! CPU reference in f64: one function per GPU kernel, with the same names.
//!
//! Inputs are f32 in logical contiguous order (`[B, H, N, D]` for Q/K/V/O,
//! `[B, H, Nq, Nk]` for scores and weights); outputs are f64. These functions are
//! written to be read beside the shaders, not to be fast. They know nothing of
//! the GPU.

mod attention;
mod posenc;
mod scores;
mod softmax;
mod weighted_sum;

pub use attention::{attention, AttentionOutput, ReferenceOptions};
pub use posenc::{posenc, posenc_value};
pub use scores::scores;
pub use softmax::{softmax, SoftmaxOutput};
pub use weighted_sum::weighted_sum;

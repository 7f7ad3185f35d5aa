// flash_attention_cpu: the fused kernel (same semantics and bindings as
// flash_attention.wgsl, via shared/flash_common.wgsl) written for CPU drivers such
// as lavapipe/llvmpipe, after ../shared/PERF-NOTES.md: a workgroup is one SIMD
// batch of WG lanes, each lane owns R query rows (each K/V element loaded feeds R
// rows), keys go in blocks of KB with one online-softmax update per block, and
// the body is straight-line code: every row, key and vec4 chunk in a named
// register, no loop but the one over key blocks.
//
// This file holds only what every shape shares. The shape constants (R, KB, DV,
// S, NG, B4) and `fn main` are generated per shape by src/shaders/straight_line.rs
// (read it for how the body is built and why) and appended by
// shaders::source_with.

#import shared/grid
#import shared/mask
#import shared/flash_common

override WG: u32 = 8u;

//! engram-kernels: quantized GGML block formats and the kernels that read them.
//!
//! `no_std`, no allocation: slices in, slices out. The optional `std` feature adds run-time CPU
//! feature detection and the threaded matrix drivers.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod arch;
mod matmul;
pub mod quant;

#[cfg(test)]
mod tests;

pub use arch::{Isa, isa};
pub use matmul::*;
pub use quant::{GgmlType, dequantize_row};

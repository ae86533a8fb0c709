//! engram-kernels: quantized GGML block formats and the kernels that read them.
//!
//! `no_std`, no allocation: slices in, slices out. The optional `std` feature adds run-time CPU
//! feature detection and the threaded matrix drivers.
//!
//! ```
//! use engram_kernels::{
//!     GgmlType, QMatrix, activation_bytes, matmul_rows, quantize_activations, quantize_row,
//! };
//!
//! // Two rows of 64 weights, quantized to Q4_1 (what a GGUF tensor holds).
//! let w: Vec<f32> = (0..128).map(|i| (i as f32 * 0.1).sin()).collect();
//! let mut w_bytes = [0u8; 4 * 20]; // four 32-value blocks of 20 bytes
//! quantize_row(GgmlType::Q4_1, &w, &mut w_bytes).unwrap();
//! let wq = QMatrix::new(GgmlType::Q4_1, &w_bytes, 2, 64).unwrap();
//!
//! // One activation row, quantized once to Q8_1, dotted with both weight rows.
//! let x = vec![0.5f32; 64];
//! let mut xq = vec![0u8; activation_bytes(GgmlType::Q4_1, 64)];
//! quantize_activations(GgmlType::Q4_1, &x, &mut xq);
//! let mut y = [0.0f32; 2];
//! matmul_rows(&wq, 0..2, &xq, 1, &mut y);
//! let exact: f32 = w[..64].iter().map(|v| v * 0.5).sum();
//! assert!((y[0] - exact).abs() < 0.1);
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod arch;
pub mod attention;
pub mod interleave;
mod matmul;
mod qmatrix;
pub mod quant;
pub mod replay;

#[cfg(test)]
mod tests;

pub use arch::{Isa, isa, set_single_row_tile, single_row_tile, single_row_tile_matters};
pub use attention::{ATTENTION_TOLERANCE, attention_mix, attention_scores};
pub use interleave::{
    INTERLEAVE_ROWS, Interleaved, interleave, interleaved_bytes, interleaved_is_fast,
    matvec_interleaved,
};
pub use matmul::*;
pub use qmatrix::{QMatrix, QMatrixError};
pub use quant::{GgmlType, QuantizeError, dequantize_row, quantize_row};

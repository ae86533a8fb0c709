//! The portable kernel table: the scalar `_ref` kernels.

use super::Kernels;
use crate::quant::*;

/// Portable kernels.
pub(crate) static GENERIC: Kernels = Kernels {
    q4_0_q8_0: vec_dot_q4_0_q8_0_ref,
    q4_1_q8_1: vec_dot_q4_1_q8_1_ref,
    q8_0_q8_0: vec_dot_q8_0_q8_0_ref,
    q4_k_q8_k: vec_dot_q4_k_q8_k_ref,
    q5_k_q8_k: vec_dot_q5_k_q8_k_ref,
    q6_k_q8_k: vec_dot_q6_k_q8_k_ref,
    f32_f32: vec_dot_f32_ref,
    f16_f32: vec_dot_f16_f32_ref,
    bf16_f32: vec_dot_bf16_f32_ref,
    axpy: axpy_ref,
    q4_1_q8_1_4x1: |x, y| x.map(|r| vec_dot_q4_1_q8_1_ref(r, y)),
    q4_1_q8_1_4x4: |x, y| y.map(|a| x.map(|r| vec_dot_q4_1_q8_1_ref(r, a))),
    q8_0_q8_0_4x1: |x, y| x.map(|r| vec_dot_q8_0_q8_0_ref(r, y)),
    q8_0_q8_0_4x4: |x, y| y.map(|a| x.map(|r| vec_dot_q8_0_q8_0_ref(r, a))),
    quantize_q8_0: quantize_row_q8_0_ref,
    quantize_q8_1: quantize_row_q8_1_ref,
};

/// `y += a * x`, scalar.
pub(crate) fn axpy_ref(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len(), "axpy: length mismatch");
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

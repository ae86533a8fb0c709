//! The portable kernel table: the scalar `_ref` kernels.

use super::{Kernels, Panel, PanelShape};
use crate::quant::*;

/// Portable kernels; the SIMD tables start from it and replace what they speed up.
pub(crate) static GENERIC: Kernels = Kernels {
    q4_0_q8_0: vec_dot_q4_0_q8_0_ref,
    q4_1_q8_1: vec_dot_q4_1_q8_1_ref,
    q5_0_q8_0: vec_dot_q5_0_q8_0_ref,
    q5_1_q8_1: vec_dot_q5_1_q8_1_ref,
    iq4_nl_q8_0: vec_dot_iq4_nl_q8_0_ref,
    q8_0_q8_0: vec_dot_q8_0_q8_0_ref,
    q2_k_q8_k: vec_dot_q2_k_q8_k_ref,
    q3_k_q8_k: vec_dot_q3_k_q8_k_ref,
    q4_k_q8_k: vec_dot_q4_k_q8_k_ref,
    q5_k_q8_k: vec_dot_q5_k_q8_k_ref,
    q6_k_q8_k: vec_dot_q6_k_q8_k_ref,
    f32_f32: vec_dot_f32_ref,
    f16_f32: vec_dot_f16_f32_ref,
    bf16_f32: vec_dot_bf16_f32_ref,
    axpy_panel: axpy_panel_ref,
    q4_1_q8_1_tiles: None,
    q8_0_q8_0_tiles: None,
    q5_0_q8_0_tiles: None,
    q5_1_q8_1_tiles: None,
    iq4_nl_q8_0_tiles: None,
    q4_1x16_q8_1: None,
    q8_0x16_q8_0: None,
    attn_scores: crate::attention::attention_scores_ref,
    attn_mix: crate::attention::attention_mix_ref,
    quantize_q8_0: quantize_row_q8_0_ref,
    quantize_q8_1: quantize_row_q8_1_ref,
};

/// [`Kernels::axpy_panel`], scalar: the twin the SIMD panels are tested against.
pub(crate) fn axpy_panel_ref(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    s.check(dy, dx);
    for i in 0..s.m {
        let a = &dy[i * s.ldy..][..s.rows];
        if a.iter().all(|&a| a == 0.0) {
            continue;
        }
        let y = &mut dx[i * s.ldx..][..s.len];
        for (a, x) in a.iter().zip(&x.0) {
            for (y, x) in y.iter_mut().zip(x) {
                *y += a * x;
            }
        }
    }
}

//! Q8_0: 32 weights a block, 8-bit codes with one f16 scale; `w = q * d`. Also the activation
//! format paired with Q4_0 and Q8_0 weights.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::round_away;

/// Weights per Q8_0 block.
pub const QK8_0: usize = 32;

/// ggml's `block_q8_0`: 34 bytes for 32 weights = 8.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Codes in `-127..=127`.
    pub qs: [i8; QK8_0],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK8_0`).
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK8_0,
        "dequantize_row_q8_0: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// Quantizes `x` into `y` like ggml's `quantize_row_q8_0_ref` (`x.len() == y.len() * QK8_0`).
pub fn quantize_row_q8_0_ref(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_0,
        "quantize_row_q8_0_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = round_away(v * id) as i8;
        }
    }
}

/// Scalar dot product of two Q8_0 rows (ggml's `ggml_vec_dot_q8_0_q8_0` generic).
pub fn vec_dot_q8_0_q8_0_ref(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q8_0_q8_0: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 =
            a.qs.iter()
                .zip(&b.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

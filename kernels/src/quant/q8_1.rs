//! Q8_1: 32 values a block, 8-bit codes with an f16 scale and the f16 `d · Σq`; the activation
//! format paired with Q4_1 weights (the stored sum folds Q4_1's minimum into one multiply).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::round_away;

/// Values per Q8_1 block.
pub const QK8_1: usize = 32;

/// ggml's `block_q8_1`: 36 bytes for 32 values = 9 bits per value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * Σ qs`.
    pub s: f16,
    /// Codes in `-127..=127`.
    pub qs: [i8; QK8_1],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);

/// Quantizes `x` into `y` like ggml's `quantize_row_q8_1_ref` (`x.len() == y.len() * QK8_1`).
pub fn quantize_row_q8_1_ref(x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(
        x.len(),
        y.len() * QK8_1,
        "quantize_row_q8_1_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = round_away(v * id) as i8;
            sum += *q as i32;
        }
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(sum as f32 * d);
    }
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK8_1`); for tests.
pub fn dequantize_row_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK8_1,
        "dequantize_row_q8_1: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
        let d = b.d.to_f32();
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

//! Q4_1: 32 weights a block, 4-bit codes with an f16 scale and minimum; `w = q * d + m`.
//! The format of SmolLM2's Q4_1 GGUF.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_1::BlockQ8_1;

/// Weights per Q4_1 block.
pub const QK4_1: usize = 32;

/// ggml's `block_q4_1`: 20 bytes for 32 weights = 5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Codes: byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high one.
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK4_1`).
pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK4_1,
        "dequantize_row_q4_1: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = (q & 0x0F) as f32 * d + m;
            y[j + QK4_1 / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

/// Quantizes `x` into `y` like ggml's `quantize_row_q4_1_ref` (`x.len() == y.len() * QK4_1`).
pub fn quantize_row_q4_1_ref(x: &[f32], y: &mut [BlockQ4_1]) {
    assert_eq!(
        x.len(),
        y.len() * QK4_1,
        "quantize_row_q4_1_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in x {
            min = min.min(v);
            max = max.max(v);
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        for j in 0..QK4_1 / 2 {
            let q0 = (((x[j] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
            let q1 = (((x[j + QK4_1 / 2] - min) * id + 0.5) as i32).clamp(0, 15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Scalar dot product of a Q4_1 row with a Q8_1 row (ggml's `ggml_vec_dot_q4_1_q8_1` generic):
/// `Σ d·d8·Σq·q8 + m·s8`, where `s8 = d8·Σq8` is stored in the Q8_1 block.
pub fn vec_dot_q4_1_q8_1_ref(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_1_q8_1: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK4_1 / 2 {
            sumi += (a.qs[j] & 0x0F) as i32 * b.qs[j] as i32
                + (a.qs[j] >> 4) as i32 * b.qs[j + QK4_1 / 2] as i32;
        }
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32()) + a.m.to_f32() * b.s.to_f32();
    }
    sum
}

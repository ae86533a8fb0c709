//! Q5_1: 32 weights a block, 5-bit codes with an f16 scale and minimum; `w = q · d + m`.
//! llama.cpp's fall-back for Q5_K_M tensors whose rows are not a multiple of 256.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q5_0::{q5_codes, q5_pack};
use super::q8_1::BlockQ8_1;

/// Weights per Q5_1 block.
pub const QK5_1: usize = 32;

/// ggml's `block_q5_1`: 24 bytes for 32 weights = 6 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bits, a little-endian `u32`: bit `j` belongs to weight `j`.
    pub qh: [u8; 4],
    /// Low four bits, packed as in Q5_0.
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK5_1`).
pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK5_1,
        "dequantize_row_q5_1: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (y, q) in y.iter_mut().zip(q5_codes(b.qh, &b.qs)) {
            *y = q as f32 * d + m;
        }
    }
}

/// Quantizes `x` into `y` like ggml's `quantize_row_q5_1_ref` (`x.len() == y.len() * QK5_1`).
pub fn quantize_row_q5_1_ref(x: &[f32], y: &mut [BlockQ5_1]) {
    assert_eq!(
        x.len(),
        y.len() * QK5_1,
        "quantize_row_q5_1_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK5_1).zip(y.iter_mut()) {
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in x {
            min = min.min(v);
            max = max.max(v);
        }
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            // ggml: (uint8_t)((x − min)·id + 0.5), then only the low five bits are stored.
            *q = (((v - min) * id + 0.5) as u8) & 0x1F;
        }
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        (b.qh, b.qs) = q5_pack(&q);
    }
}

/// Scalar dot product of a Q5_1 row with a Q8_1 row (ggml's `ggml_vec_dot_q5_1_q8_1` generic):
/// `Σ d·d8·Σq·q8 + m·s8`.
pub fn vec_dot_q5_1_q8_1_ref(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_1_q8_1: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 = q5_codes(a.qh, &a.qs)
            .iter()
            .zip(&b.qs)
            .map(|(&q, &p)| q as i32 * p as i32)
            .sum();
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32()) + a.m.to_f32() * b.s.to_f32();
    }
    sum
}

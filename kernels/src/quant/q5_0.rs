//! Q5_0: 32 weights a block, 5-bit codes (low nibbles plus a 32-bit word of fifth bits) with one
//! f16 scale; `w = (q − 16) · d`. llama.cpp's fall-back for Q4_K_M tensors whose rows are not a
//! multiple of 256 (SmolLM2's 576-wide rows).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_0::BlockQ8_0;

/// Weights per Q5_0 block.
pub const QK5_0: usize = 32;

/// ggml's `block_q5_0`: 22 bytes for 32 weights = 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, a little-endian `u32`: bit `j` belongs to weight `j`.
    pub qh: [u8; 4],
    /// Low four bits: byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high.
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

/// The 32 unsigned 5-bit codes of a Q5_0 / Q5_1 block, in weight order.
#[inline]
pub(crate) fn q5_codes(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Packs 32 codes in `0..32` into (`qh`, `qs`): the inverse of [`q5_codes`].
#[inline]
pub(crate) fn q5_pack(q: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let (mut qh, mut qs) = (0u32, [0u8; 16]);
    for j in 0..16 {
        qs[j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4);
        qh |= u32::from(q[j] >> 4) << j;
        qh |= u32::from(q[j + 16] >> 4) << (j + 16);
    }
    (qh.to_le_bytes(), qs)
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK5_0`).
pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK5_0,
        "dequantize_row_q5_0: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
        let d = b.d.to_f32();
        for (y, q) in y.iter_mut().zip(q5_codes(b.qh, &b.qs)) {
            *y = (q as i32 - 16) as f32 * d;
        }
    }
}

/// Quantizes `x` into `y` like ggml's `quantize_row_q5_0_ref` (`x.len() == y.len() * QK5_0`):
/// the scale maps the value of largest magnitude to code 0 (`d = max / −16`).
pub fn quantize_row_q5_0_ref(x: &[f32], y: &mut [BlockQ5_0]) {
    assert_eq!(
        x.len(),
        y.len() * QK5_0,
        "quantize_row_q5_0_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK5_0).zip(y.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0u8; 32];
        for (q, &v) in q.iter_mut().zip(x) {
            // ggml: MIN(31, (int8_t)(x·id + 16.5)); the float-to-int cast truncates.
            *q = ((v * id + 16.5) as i8).min(31) as u8;
        }
        b.d = f16::from_f32(d);
        (b.qh, b.qs) = q5_pack(&q);
    }
}

/// Scalar dot product of a Q5_0 row with a Q8_0 row (ggml's `ggml_vec_dot_q5_0_q8_0` generic).
pub fn vec_dot_q5_0_q8_0_ref(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_0_q8_0: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 = q5_codes(a.qh, &a.qs)
            .iter()
            .zip(&b.qs)
            .map(|(&q, &p)| (q as i32 - 16) * p as i32)
            .sum();
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

//! Q4_0: 32 weights a block, 4-bit codes with one f16 scale; `w = (q - 8) * d`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_0::BlockQ8_0;

/// Weights per Q4_0 block.
pub const QK4_0: usize = 32;

/// ggml's `block_q4_0`: 18 bytes for 32 weights = 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Codes: byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high one.
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK4_0`).
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK4_0,
        "dequantize_row_q4_0: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        for (j, &q) in b.qs.iter().enumerate() {
            y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            y[j + QK4_0 / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// Quantizes `x` into `y` like ggml's `quantize_row_q4_0_ref` (`x.len() == y.len() * QK4_0`).
pub fn quantize_row_q4_0_ref(x: &[f32], y: &mut [BlockQ4_0]) {
    assert_eq!(
        x.len(),
        y.len() * QK4_0,
        "quantize_row_q4_0_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
        // The value of largest magnitude maps to code 0 (= -8), keeping its sign.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for j in 0..QK4_0 / 2 {
            let q0 = ((x[j] * id + 8.5) as i32).clamp(0, 15) as u8;
            let q1 = ((x[j + QK4_0 / 2] * id + 8.5) as i32).clamp(0, 15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Scalar dot product of a Q4_0 row with a Q8_0 row (ggml's `ggml_vec_dot_q4_0_q8_0` generic).
pub fn vec_dot_q4_0_q8_0_ref(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_0_q8_0: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK4_0 / 2 {
            let lo = (a.qs[j] & 0x0F) as i32 - 8;
            let hi = (a.qs[j] >> 4) as i32 - 8;
            sumi += lo * b.qs[j] as i32 + hi * b.qs[j + QK4_0 / 2] as i32;
        }
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

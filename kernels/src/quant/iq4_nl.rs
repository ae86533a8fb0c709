//! IQ4_NL: 32 weights a block, 4-bit indices into a fixed non-linear table of 16 levels, one f16
//! scale; `w = d · KVALUES_IQ4NL[q]`. llama.cpp's fall-back for IQ4_XS tensors.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_0::BlockQ8_0;

/// Weights per IQ4_NL block.
pub const QK4_NL: usize = 32;

/// ggml's `kvalues_iq4nl`: the 16 levels an IQ4_NL index selects.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// ggml's `block_iq4_nl`: 18 bytes for 32 weights = 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockIQ4NL {
    /// Scale.
    pub d: f16,
    /// Indices: byte `j` holds weight `j` in its low nibble and weight `j + 16` in its high one.
    pub qs: [u8; QK4_NL / 2],
}
const _: () = assert!(core::mem::size_of::<BlockIQ4NL>() == 18);

/// ggml's name for [`BlockIQ4NL`].
#[allow(non_camel_case_types)]
pub type BlockIQ4_NL = BlockIQ4NL;

/// The 32 signed levels of a block, in weight order.
#[inline]
fn levels(b: &BlockIQ4NL) -> [i8; 32] {
    let mut v = [0i8; 32];
    for (j, &q) in b.qs.iter().enumerate() {
        v[j] = KVALUES_IQ4NL[(q & 0x0F) as usize];
        v[j + 16] = KVALUES_IQ4NL[(q >> 4) as usize];
    }
    v
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK4_NL`).
pub fn dequantize_row_iq4_nl(x: &[BlockIQ4NL], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK4_NL,
        "dequantize_row_iq4_nl: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK4_NL)) {
        let d = b.d.to_f32();
        for (y, v) in y.iter_mut().zip(levels(b)) {
            *y = d * v as f32;
        }
    }
}

/// Scalar dot product of an IQ4_NL row with a Q8_0 row (ggml's `ggml_vec_dot_iq4_nl_q8_0`).
pub fn vec_dot_iq4_nl_q8_0_ref(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot_iq4_nl_q8_0: block count mismatch"
    );
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 = levels(a)
            .iter()
            .zip(&b.qs)
            .map(|(&v, &p)| v as i32 * p as i32)
            .sum();
        sum += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    sum
}

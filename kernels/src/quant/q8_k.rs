//! Q8_K: 256 values a super-block, 8-bit codes, an f32 scale and per-16 sums; the activation
//! format paired with the k-quants.

use bytemuck::{Pod, Zeroable};

use super::nearest_int;

/// Values per k-quant super-block (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// ggml's `block_q8_K`: 292 bytes for 256 values = 9.125 bits per value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Scale.
    pub d: f32,
    /// Codes in `-127..=127`.
    pub qs: [i8; QK_K],
    /// Sum of each group of 16 codes (used to apply the k-quants' minimums).
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ8K>() == 292);

/// ggml's name for [`BlockQ8K`].
#[allow(non_camel_case_types)]
pub type BlockQ8_K = BlockQ8K;

/// Quantizes `x` into `y` like ggml's `quantize_row_q8_K_ref` (`x.len() == y.len() * QK_K`).
pub fn quantize_row_q8_k_ref(x: &[f32], y: &mut [BlockQ8K]) {
    assert_eq!(
        x.len(),
        y.len() * QK_K,
        "quantize_row_q8_k_ref: length mismatch"
    );
    for (x, b) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        // The value of largest magnitude maps to -127, keeping its sign.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *b = BlockQ8K::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = q.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK_K`); for tests.
pub fn dequantize_row_q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q8_k: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (y, &q) in y.iter_mut().zip(&b.qs) {
            *y = q as f32 * b.d;
        }
    }
}

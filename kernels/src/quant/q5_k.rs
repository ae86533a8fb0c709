//! Q5_K: Q4_K plus a fifth bit per weight; `w = d·sc·q − dmin·m` with `q` in `0..32`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q4_k::{K_SCALE_SIZE, get_scale_min_k4};
use super::q8_k::{BlockQ8K, QK_K};

/// ggml's `block_q5_K`: 176 bytes for 256 weights = 5.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed as in Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// High bits: bit `j` of byte `l` is the fifth bit of weight `32 j + l`.
    pub qh: [u8; QK_K / 8],
    /// Low four bits, packed as in Q4_K.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);

/// ggml's name for [`BlockQ5K`].
#[allow(non_camel_case_types)]
pub type BlockQ5_K = BlockQ5K;

/// Weight `32 j + l`'s 5-bit code.
#[inline]
fn code(b: &BlockQ5K, j: usize, l: usize) -> u8 {
    let lo = (b.qs[(j / 2) * 32 + l] >> (4 * (j % 2))) & 0x0F;
    let hi = (b.qh[l] >> j) & 1;
    lo | (hi << 4)
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK_K`).
pub fn dequantize_row_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q5_k: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (j, y) in y.chunks_exact_mut(32).enumerate() {
            let (sc, m) = get_scale_min_k4(j, &b.scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            for (l, y) in y.iter_mut().enumerate() {
                *y = dl * code(b, j, l) as f32 - ml;
            }
        }
    }
}

/// Scalar dot product of a Q5_K row with a Q8_K row, in integers per sub-block like ggml.
pub fn vec_dot_q5_k_q8_k_ref(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_k_q8_k: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..QK_K / 32 {
            let (sc, m) = get_scale_min_k4(j, &a.scales);
            let isum: i32 = (0..32)
                .map(|l| code(a, j, l) as i32 * b.qs[j * 32 + l] as i32)
                .sum();
            sumi += sc as i32 * isum;
            summ += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
        }
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

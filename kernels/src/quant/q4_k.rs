//! Q4_K: 256 weights a super-block in 8 sub-blocks of 32, each with a 6-bit scale and minimum
//! (themselves scaled by the f16 `d` and `dmin`); `w = d·sc·q − dmin·m`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::{BlockQ8K, QK_K};

/// Bytes of packed 6-bit scales and minimums in a Q4_K / Q5_K super-block.
pub const K_SCALE_SIZE: usize = 12;

/// ggml's `block_q4_K`: 144 bytes for 256 weights = 4.5 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block minimums.
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit minimums, packed (see [`get_scale_min_k4`]).
    pub scales: [u8; K_SCALE_SIZE],
    /// Codes: each 32 bytes hold two sub-blocks, the first in the low nibbles.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

/// ggml's name for [`BlockQ4K`].
#[allow(non_camel_case_types)]
pub type BlockQ4_K = BlockQ4K;

/// Sub-block `j`'s (scale, minimum) from the packed 12 bytes (ggml's `get_scale_min_k4`).
#[inline]
pub fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK_K`).
pub fn dequantize_row_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q4_k: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (c, (q, y)) in
            b.qs.chunks_exact(32)
                .zip(y.chunks_exact_mut(64))
                .enumerate()
        {
            let (sc0, m0) = get_scale_min_k4(2 * c, &b.scales);
            let (sc1, m1) = get_scale_min_k4(2 * c + 1, &b.scales);
            let (d0, min0) = (d * sc0 as f32, dmin * m0 as f32);
            let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
            for l in 0..32 {
                y[l] = d0 * (q[l] & 0x0F) as f32 - min0;
                y[l + 32] = d1 * (q[l] >> 4) as f32 - min1;
            }
        }
    }
}

/// Scalar dot product of a Q4_K row with a Q8_K row, in integers per sub-block like ggml.
pub fn vec_dot_q4_k_q8_k_ref(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_k_q8_k: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..QK_K / 32 {
            let (sc, m) = get_scale_min_k4(j, &a.scales);
            let q = &a.qs[(j / 2) * 32..(j / 2) * 32 + 32];
            let shift = 4 * (j % 2);
            let q8 = &b.qs[j * 32..j * 32 + 32];
            let isum: i32 = q
                .iter()
                .zip(q8)
                .map(|(&q, &p)| ((q >> shift) & 0x0F) as i32 * p as i32)
                .sum();
            sumi += sc as i32 * isum;
            summ += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
        }
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

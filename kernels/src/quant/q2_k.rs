//! Q2_K: 256 weights a super-block in 16 sub-blocks of 16, each with a 4-bit scale and a 4-bit
//! minimum (scaled by the f16 `d` and `dmin`); `w = d·sc·q − dmin·m` with 2-bit `q`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::{BlockQ8K, QK_K};

/// ggml's `block_q2_K`: 84 bytes for 256 weights = 2.625 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Sub-block `i`: scale in the low nibble, minimum in the high one.
    pub scales: [u8; QK_K / 16],
    /// Codes: weight `128 n + 32 j + l` is bits `2j..2j+2` of byte `32 n + l`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block minimums.
    pub dmin: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);

/// ggml's name for [`BlockQ2K`].
#[allow(non_camel_case_types)]
pub type BlockQ2_K = BlockQ2K;

/// Weight `v`'s 2-bit code (ggml's `dequantize_row_q2_K` loop order).
#[inline]
fn code(b: &BlockQ2K, v: usize) -> u8 {
    let (n, j, l) = (v / 128, (v % 128) / 32, v % 32);
    (b.qs[32 * n + l] >> (2 * j)) & 3
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK_K`).
pub fn dequantize_row_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q2_k: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (v, y) in y.iter_mut().enumerate() {
            let sc = b.scales[v / 16];
            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
            *y = dl * code(b, v) as f32 - ml;
        }
    }
}

/// Scalar dot product of a Q2_K row with a Q8_K row, in integers per sub-block like ggml.
pub fn vec_dot_q2_k_q8_k_ref(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q2_k_q8_k: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for (i, &sc) in a.scales.iter().enumerate() {
            let isum: i32 = (16 * i..16 * i + 16)
                .map(|v| code(a, v) as i32 * b.qs[v] as i32)
                .sum();
            sumi += (sc & 0x0F) as i32 * isum;
            summ += (sc >> 4) as i32 * b.bsums[i] as i32;
        }
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

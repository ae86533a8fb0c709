//! Q3_K: 256 weights a super-block in 16 sub-blocks of 16, each with a 6-bit signed scale
//! (scaled by the f16 `d`); `w = d·(sc − 32)·q` with 3-bit signed `q` in `-4..4`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::{BlockQ8K, QK_K};

/// ggml's `block_q3_K`: 110 bytes for 256 weights = 3.4375 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bits: weight `128 n + 32 j + l`'s is bit `4n + j` of byte `l`; a clear bit
    /// subtracts 4 from the code.
    pub hmask: [u8; QK_K / 8],
    /// Low two bits, packed as in Q2_K.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales, packed (see [`q3_k_scales`]).
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);

/// ggml's name for [`BlockQ3K`].
#[allow(non_camel_case_types)]
pub type BlockQ3_K = BlockQ3K;

/// The sixteen signed sub-block scales (`6-bit − 32`): sub-block `i`'s low four bits are nibble
/// `i / 8` of byte `i % 8`, its high two bits are bits `2(i / 4)..` of byte `8 + i % 4`.
#[inline]
pub fn q3_k_scales(s: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (s[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

/// Weight `v`'s signed 3-bit code (ggml's `dequantize_row_q3_K` loop order).
#[inline]
fn code(b: &BlockQ3K, v: usize) -> i8 {
    let (n, j, l) = (v / 128, (v % 128) / 32, v % 32);
    let low = ((b.qs[32 * n + l] >> (2 * j)) & 3) as i8;
    let high = (b.hmask[l] >> (4 * n + j)) & 1;
    if high == 0 { low - 4 } else { low }
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK_K`).
pub fn dequantize_row_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q3_k: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let sc = q3_k_scales(&b.scales);
        for (v, y) in y.iter_mut().enumerate() {
            *y = d * sc[v / 16] as f32 * code(b, v) as f32;
        }
    }
}

/// Scalar dot product of a Q3_K row with a Q8_K row, in integers per sub-block like ggml.
pub fn vec_dot_q3_k_q8_k_ref(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q3_k_q8_k: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sc = q3_k_scales(&a.scales);
        let mut sumi = 0i32;
        for (i, &s) in sc.iter().enumerate() {
            let isum: i32 = (16 * i..16 * i + 16)
                .map(|v| code(a, v) as i32 * b.qs[v] as i32)
                .sum();
            sumi += s as i32 * isum;
        }
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

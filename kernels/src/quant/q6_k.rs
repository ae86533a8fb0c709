//! Q6_K: 256 weights a super-block in 16 sub-blocks of 16, each with an 8-bit signed scale;
//! `w = d·sc·(q − 32)` with 6-bit `q`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q8_k::{BlockQ8K, QK_K};

/// ggml's `block_q6_K`: 210 bytes for 256 weights = 6.5625 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low four bits of the codes.
    pub ql: [u8; QK_K / 2],
    /// High two bits of the codes.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

/// ggml's name for [`BlockQ6K`].
#[allow(non_camel_case_types)]
pub type BlockQ6_K = BlockQ6K;

/// The 256 signed codes (`q − 32`) of a block, in weight order (ggml's bit layout: each half of
/// 128 weights uses 64 `ql` bytes and 32 `qh` bytes).
pub fn unpack_q6_k(b: &BlockQ6K) -> [i8; QK_K] {
    let mut out = [0i8; QK_K];
    for h in 0..2 {
        let (ql, qh) = (&b.ql[h * 64..h * 64 + 64], &b.qh[h * 32..h * 32 + 32]);
        let o = &mut out[h * 128..h * 128 + 128];
        for l in 0..32 {
            o[l] = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
            o[l + 32] = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    out
}

/// Dequantizes `x` into `y` (`y.len() == x.len() * QK_K`).
pub fn dequantize_row_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    assert_eq!(
        y.len(),
        x.len() * QK_K,
        "dequantize_row_q6_k: length mismatch"
    );
    for (b, y) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let q = unpack_q6_k(b);
        for (i, (y, q)) in y.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            let dl = d * b.scales[i] as f32;
            for (y, &q) in y.iter_mut().zip(q) {
                *y = dl * q as f32;
            }
        }
    }
}

/// Scalar dot product of a Q6_K row with a Q8_K row, in integers per sub-block like ggml.
pub fn vec_dot_q6_k_q8_k_ref(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q6_k_q8_k: block count mismatch");
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let q = unpack_q6_k(a);
        let mut sumi = 0i32;
        for (i, (q, p)) in q.chunks_exact(16).zip(b.qs.chunks_exact(16)).enumerate() {
            let isum: i32 = q.iter().zip(p).map(|(&q, &p)| q as i32 * p as i32).sum();
            sumi += a.scales[i] as i32 * isum;
        }
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

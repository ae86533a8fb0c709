//! NEON dot products for the 32-weight fall-back formats (Q5_0, Q5_1, IQ4_NL), after ggml's
//! `ggml-cpu/arch/arm/quants.c`, in the two flavours of [`super::neon`] (`SDOT`).
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has neon (and dotprod for `SDOT = true`). Slices are bounds-checked as usual.

use core::arch::aarch64::*;

use half::f16;

use super::neon::{dot_i8x32, f16x4, load_i8x32, nibbles};
use crate::quant::{BlockIQ4NL, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, KVALUES_IQ4NL};

/// The 32 unsigned 5-bit codes of a Q5_0 / Q5_1 block: nibbles, plus 16 where bit `j` of the
/// little-endian `qh` word is set (byte `j / 8` of the word spread over eight lanes, then each
/// lane tests its own bit).
#[inline]
#[target_feature(enable = "neon")]
fn q5_codes(qh: [u8; 4], qs: &[u8; 16]) -> [int8x16_t; 2] {
    const SPREAD: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: both tables are 16 readable bytes; `vld1q_u8` has no alignment requirement.
    let (spread, bits) = unsafe { (vld1q_u8(SPREAD.as_ptr()), vld1q_u8(BITS.as_ptr())) };
    let word = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
    let sixteen = vdupq_n_u8(0x10);
    let lo_bytes = vqtbl1q_u8(word, spread);
    let hi_bytes = vqtbl1q_u8(word, vaddq_u8(spread, vdupq_n_u8(2)));
    let h = [
        vandq_u8(vtstq_u8(lo_bytes, bits), sixteen),
        vandq_u8(vtstq_u8(hi_bytes, bits), sixteen),
    ];
    let [lo, hi] = nibbles(qs);
    [
        vreinterpretq_s8_u8(vorrq_u8(lo, h[0])),
        vreinterpretq_s8_u8(vorrq_u8(hi, h[1])),
    ]
}

/// Q5_0 · Q8_0: codes shifted to `-16..16`.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0<const SDOT: bool>(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_0_q8_0: block count mismatch");
    let mut acc = [vdupq_n_f32(0.0); 2];
    let off = vdupq_n_s8(16);
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        let [lo, hi] = q5_codes(a.qh, &a.qs);
        let qx = [vsubq_s8(lo, off), vsubq_s8(hi, off)];
        // SAFETY: dotprod was checked when `SDOT` (this function's contract).
        let p = unsafe { dot_i8x32::<SDOT>(qx, load_i8x32(&b.qs)) };
        let d = f16x4([a.d, b.d, f16::ZERO, f16::ZERO]);
        let scale = vgetq_lane_f32::<0>(d) * vgetq_lane_f32::<1>(d);
        acc[i & 1] = vfmaq_n_f32(acc[i & 1], vcvtq_f32_s32(p), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// Q5_1 · Q8_1: `Σ d·d8·Σq·q8 + m·s8` (codes `0..32` are valid signed bytes).
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1<const SDOT: bool>(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_1_q8_1: block count mismatch");
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut summs = 0.0f32;
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        // SAFETY: dotprod was checked when `SDOT` (this function's contract).
        let p = unsafe { dot_i8x32::<SDOT>(q5_codes(a.qh, &a.qs), load_i8x32(&b.qs)) };
        // Lanes: a.d, a.m, b.d, b.s.
        let s = f16x4([a.d, a.m, b.d, b.s]);
        summs += vgetq_lane_f32::<1>(s) * vgetq_lane_f32::<3>(s);
        let scale = vgetq_lane_f32::<0>(s) * vgetq_lane_f32::<2>(s);
        acc[i & 1] = vfmaq_n_f32(acc[i & 1], vcvtq_f32_s32(p), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + summs
}

/// IQ4_NL · Q8_0: table levels by `tbl` lookup, then the signed dot.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0<const SDOT: bool>(
    x: &[BlockIQ4NL],
    y: &[BlockQ8_0],
) -> f32 {
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot_iq4_nl_q8_0: block count mismatch"
    );
    // SAFETY: the table is 16 readable bytes; `vld1q_s8` has no alignment requirement.
    let table = unsafe { vld1q_s8(KVALUES_IQ4NL.as_ptr()) };
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        let [lo, hi] = nibbles(&a.qs);
        let qx = [vqtbl1q_s8(table, lo), vqtbl1q_s8(table, hi)];
        // SAFETY: dotprod was checked when `SDOT` (this function's contract).
        let p = unsafe { dot_i8x32::<SDOT>(qx, load_i8x32(&b.qs)) };
        let d = f16x4([a.d, b.d, f16::ZERO, f16::ZERO]);
        let scale = vgetq_lane_f32::<0>(d) * vgetq_lane_f32::<1>(d);
        acc[i & 1] = vfmaq_n_f32(acc[i & 1], vcvtq_f32_s32(p), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

//! NEON k-quant dot products (Q2_K to Q6_K against Q8_K), after ggml's
//! `ggml-cpu/arch/arm/quants.c`, in the two flavours of [`super::neon`] (`SDOT`).
//!
//! Each super-block's integer sum is computed exactly in i32 lanes and reduced once; the f32
//! arithmetic after it is the `_ref` twin's, so the results are bit-identical to the scalar ones.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has neon (and dotprod for `SDOT = true`). Slices are bounds-checked as usual.

use core::arch::aarch64::*;

use super::neon::{dot_i8x32, sdot};
use crate::quant::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, get_scale_min_k4, q3_k_scales,
};

/// 32 bytes from `s[at..at + 32]` as two vectors.
#[inline]
#[target_feature(enable = "neon")]
fn load_u8x32(s: &[u8], at: usize) -> [uint8x16_t; 2] {
    let s = &s[at..at + 32];
    // SAFETY: `s` is 32 readable bytes, so 16 from 0 and from 16 are in bounds; no alignment.
    unsafe { [vld1q_u8(s.as_ptr()), vld1q_u8(s.as_ptr().add(16))] }
}

/// 32 activation codes from `q8[at..at + 32]`.
#[inline]
#[target_feature(enable = "neon")]
fn load_q8(q8: &[i8], at: usize) -> [int8x16_t; 2] {
    let s = &q8[at..at + 32];
    // SAFETY: `s` is 32 readable bytes, so 16 from 0 and from 16 are in bounds; no alignment.
    unsafe { [vld1q_s8(s.as_ptr()), vld1q_s8(s.as_ptr().add(16))] }
}

/// Σ `a[i] · b[i]` over 16 signed bytes, in four i32 lanes.
///
/// # Safety
/// With `SDOT`, the CPU must have the dotprod extension.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_i8x16<const SDOT: bool>(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if SDOT {
        // SAFETY: the caller checked dotprod (this function's contract).
        unsafe { sdot(vdupq_n_s32(0), a, b) }
    } else {
        let s = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        vpadalq_s16(s, vmull_high_s8(a, b))
    }
}

fn s8(v: [uint8x16_t; 2]) -> [int8x16_t; 2] {
    // SAFETY: a register reinterpretation; neon is part of every aarch64 target's baseline.
    unsafe { [vreinterpretq_s8_u8(v[0]), vreinterpretq_s8_u8(v[1])] }
}

/// The eight scales of a Q4_K / Q5_K super-block, and `Σ m_j · bsum_j`.
#[inline]
fn scales_and_min_sum(scales: &[u8; 12], b: &BlockQ8K) -> ([u8; 8], i32) {
    let mut sc = [0u8; 8];
    let mut summ = 0i32;
    for (j, sc) in sc.iter_mut().enumerate() {
        let (s, m) = get_scale_min_k4(j, scales);
        *sc = s;
        summ += m as i32 * (b.bsums[2 * j] as i32 + b.bsums[2 * j + 1] as i32);
    }
    (sc, summ)
}

/// Q4_K · Q8_K.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_k_q8_k<const SDOT: bool>(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_k_q8_k: block count mismatch");
    let low = vdupq_n_u8(0x0F);
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (sc, summ) = scales_and_min_sum(&a.scales, b);
        let mut acc = vdupq_n_s32(0);
        for c in 0..4 {
            let q = load_u8x32(&a.qs, 32 * c);
            let lo = [vandq_u8(q[0], low), vandq_u8(q[1], low)];
            let hi = [vshrq_n_u8::<4>(q[0]), vshrq_n_u8::<4>(q[1])];
            // SAFETY: dotprod was checked when `SDOT` (this function's contract).
            let (p0, p1) = unsafe {
                (
                    dot_i8x32::<SDOT>(s8(lo), load_q8(&b.qs, 64 * c)),
                    dot_i8x32::<SDOT>(s8(hi), load_q8(&b.qs, 64 * c + 32)),
                )
            };
            acc = vmlaq_n_s32(acc, p0, i32::from(sc[2 * c]));
            acc = vmlaq_n_s32(acc, p1, i32::from(sc[2 * c + 1]));
        }
        let sumi = vaddvq_s32(acc);
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q5_K · Q8_K: Q4_K's nibbles plus the fifth bit, bit `j` of `qh[l]` for sub-block `j`.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q5_k_q8_k<const SDOT: bool>(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_k_q8_k: block count mismatch");
    let (low, sixteen) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x10));
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let (sc, summ) = scales_and_min_sum(&a.scales, b);
        let qh = load_u8x32(&a.qh, 0);
        let fifth = |j: usize| {
            let bit = vdupq_n_u8(1 << j);
            [
                vandq_u8(vtstq_u8(qh[0], bit), sixteen),
                vandq_u8(vtstq_u8(qh[1], bit), sixteen),
            ]
        };
        let mut acc = vdupq_n_s32(0);
        for c in 0..4 {
            let q = load_u8x32(&a.qs, 32 * c);
            let (h0, h1) = (fifth(2 * c), fifth(2 * c + 1));
            let lo = [
                vorrq_u8(vandq_u8(q[0], low), h0[0]),
                vorrq_u8(vandq_u8(q[1], low), h0[1]),
            ];
            let hi = [
                vorrq_u8(vshrq_n_u8::<4>(q[0]), h1[0]),
                vorrq_u8(vshrq_n_u8::<4>(q[1]), h1[1]),
            ];
            // SAFETY: dotprod was checked when `SDOT` (this function's contract).
            let (p0, p1) = unsafe {
                (
                    dot_i8x32::<SDOT>(s8(lo), load_q8(&b.qs, 64 * c)),
                    dot_i8x32::<SDOT>(s8(hi), load_q8(&b.qs, 64 * c + 32)),
                )
            };
            acc = vmlaq_n_s32(acc, p0, i32::from(sc[2 * c]));
            acc = vmlaq_n_s32(acc, p1, i32::from(sc[2 * c + 1]));
        }
        let sumi = vaddvq_s32(acc);
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q6_K · Q8_K: codes `q − 32` in `-32..32`, one scale per 16 values.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q6_k_q8_k<const SDOT: bool>(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q6_k_q8_k: block count mismatch");
    let (low, three) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30));
    let m32 = vdupq_n_s8(32);
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut acc = vdupq_n_s32(0);
        for h in 0..2 {
            let ql0 = load_u8x32(&a.ql, 64 * h);
            let ql1 = load_u8x32(&a.ql, 64 * h + 32);
            let qh = load_u8x32(&a.qh, 32 * h);
            for g in 0..4 {
                let q8 = load_q8(&b.qs, 128 * h + 32 * g);
                let is = 8 * h + 2 * g;
                for k in 0..2 {
                    let lq = match g {
                        0 => vandq_u8(ql0[k], low),
                        1 => vandq_u8(ql1[k], low),
                        2 => vshrq_n_u8::<4>(ql0[k]),
                        _ => vshrq_n_u8::<4>(ql1[k]),
                    };
                    let hq = match g {
                        0 => vshlq_n_u8::<4>(qh[k]),
                        1 => vshlq_n_u8::<2>(qh[k]),
                        2 => qh[k],
                        _ => vshrq_n_u8::<2>(qh[k]),
                    };
                    let q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lq, vandq_u8(hq, three))), m32);
                    // SAFETY: dotprod was checked when `SDOT` (this function's contract).
                    let p = unsafe { dot_i8x16::<SDOT>(q, q8[k]) };
                    acc = vmlaq_n_s32(acc, p, i32::from(a.scales[is + k]));
                }
            }
        }
        let sumi = vaddvq_s32(acc);
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

/// `v >> (2 j)` per byte, `j` in `0..4` (a constant shift per arm).
#[inline]
#[target_feature(enable = "neon")]
fn shift_pairs(v: uint8x16_t, j: usize) -> uint8x16_t {
    match j {
        0 => v,
        1 => vshrq_n_u8::<2>(v),
        2 => vshrq_n_u8::<4>(v),
        _ => vshrq_n_u8::<6>(v),
    }
}

/// Q2_K · Q8_K: weight `128 n + 32 j + l` is bits `2j..` of `qs[32 n + l]`; each 16 bytes of a
/// group are one sub-block.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q2_k_q8_k<const SDOT: bool>(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q2_k_q8_k: block count mismatch");
    let three = vdupq_n_u8(3);
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut summ = 0i32;
        for (&sc, &bs) in a.scales.iter().zip(&b.bsums) {
            summ += i32::from(sc >> 4) * i32::from(bs);
        }
        let mut acc = vdupq_n_s32(0);
        for n in 0..2 {
            let q = load_u8x32(&a.qs, 32 * n);
            for j in 0..4 {
                let q8 = load_q8(&b.qs, 128 * n + 32 * j);
                for k in 0..2 {
                    let q2 = vreinterpretq_s8_u8(vandq_u8(shift_pairs(q[k], j), three));
                    // SAFETY: dotprod was checked when `SDOT` (this function's contract).
                    let p = unsafe { dot_i8x16::<SDOT>(q2, q8[k]) };
                    let sc = a.scales[8 * n + 2 * j + k] & 0x0F;
                    acc = vmlaq_n_s32(acc, p, i32::from(sc));
                }
            }
        }
        let sumi = vaddvq_s32(acc);
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q3_K · Q8_K: codes `low2 − 4` where the group's `hmask` bit (`4n + j`) is clear.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q3_k_q8_k<const SDOT: bool>(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q3_k_q8_k: block count mismatch");
    let (three, four) = (vdupq_n_u8(3), vdupq_n_s8(4));
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sc = q3_k_scales(&a.scales);
        let hm = load_u8x32(&a.hmask, 0);
        let mut acc = vdupq_n_s32(0);
        for n in 0..2 {
            let q = load_u8x32(&a.qs, 32 * n);
            for j in 0..4 {
                let bit = vdupq_n_u8(1 << (4 * n + j));
                let q8 = load_q8(&b.qs, 128 * n + 32 * j);
                for k in 0..2 {
                    let low = vreinterpretq_s8_u8(vandq_u8(shift_pairs(q[k], j), three));
                    // 4 where the high bit is clear, else 0.
                    let clear = vreinterpretq_s8_u8(vceqq_u8(vandq_u8(hm[k], bit), vdupq_n_u8(0)));
                    let q3 = vsubq_s8(low, vandq_s8(clear, four));
                    // SAFETY: dotprod was checked when `SDOT` (this function's contract).
                    let p = unsafe { dot_i8x16::<SDOT>(q3, q8[k]) };
                    acc = vmlaq_n_s32(acc, p, i32::from(sc[8 * n + 2 * j + k]));
                }
            }
        }
        let sumi = vaddvq_s32(acc);
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

//! AVX2 + FMA + F16C dot products for the 32-weight formats llama.cpp falls back to (Q5_0, Q5_1,
//! IQ4_NL) and for bf16 weights, after ggml's `ggml-cpu/arch/x86/quants.c`.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has avx2, fma and f16c. Slices are bounds-checked as usual.

use core::arch::x86_64::*;

use super::avx2::{PREFETCH_ROW, prefetch_ahead};

use half::bf16;

use super::avx2::{f16x2, hsum_ps, load_i8x32, mul_sum_i8, mul_sum_us8, nibbles, scale_product};
use crate::quant::{BlockIQ4NL, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, KVALUES_IQ4NL};

/// The 32 bits of `qh` as 32 bytes, `0xFF` where the bit is set (ggml's `bytes_from_bits_32`):
/// byte `i` takes byte `i / 8` of the word, then every bit but `i % 8` is forced on, so only a
/// set bit `i % 8` leaves the byte all ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bytes_from_bits_32(qh: [u8; 4]) -> __m256i {
    let word = _mm256_set1_epi32(i32::from_le_bytes(qh));
    let spread = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(word, spread);
    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
}

/// The 32 unsigned 5-bit codes of a Q5_0 / Q5_1 block, in weight order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q5_codes(qh: [u8; 4], qs: &[u8; 16]) -> __m256i {
    let high = _mm256_and_si256(bytes_from_bits_32(qh), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles(qs), high)
}

/// The 32 signed levels of an IQ4_NL block (a 16-entry byte table lookup per nibble).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_nl_levels(qs: &[u8; 16]) -> __m256i {
    // SAFETY: the table is 16 readable bytes; `loadu` has no alignment requirement.
    let table = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr().cast()) };
    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(table), nibbles(qs))
}

/// Q5_0 · Q8_0: codes shifted to `-16..16`, then signed byte products.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_0_q8_0: block count mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    let off = _mm256_set1_epi8(16);
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let qx = _mm256_sub_epi8(q5_codes(a.qh, &a.qs), off);
        let p = mul_sum_i8(qx, load_i8x32(&b.qs));
        acc[i & 1] = _mm256_fmadd_ps(scale_product(a.d, b.d), p, acc[i & 1]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// Q5_1 · Q8_1: `Σ d·d8·Σq·q8 + m·s8`, codes unsigned.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_1_q8_1: block count mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    // Lane 1 accumulates m·s8 (lane 0 collects d·d8, unused).
    let mut summs = _mm_setzero_ps();
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let prod = _mm_mul_ps(f16x2(a.d, a.m), f16x2(b.d, b.s));
        summs = _mm_add_ps(summs, prod);
        let p = mul_sum_us8(q5_codes(a.qh, &a.qs), load_i8x32(&b.qs));
        acc[i & 1] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, acc[i & 1]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1])) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
}

/// IQ4_NL · Q8_0: table levels (never -128), then signed byte products.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(
        x.len(),
        y.len(),
        "vec_dot_iq4_nl_q8_0: block count mismatch"
    );
    let mut acc = [_mm256_setzero_ps(); 2];
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let p = mul_sum_i8(iq4_nl_levels(&a.qs), load_i8x32(&b.qs));
        acc[i & 1] = _mm256_fmadd_ps(scale_product(a.d, b.d), p, acc[i & 1]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// bf16 · f32: a bf16 is the top half of an f32, so widening and shifting left 16 converts it.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_bf16_f32: length mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a.to_f32() * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `a` holds 16 bf16 and `b` 16 floats, so 8 from `8 j` are in bounds.
            let (va, vb) = unsafe {
                let h = _mm_loadu_si128(a.as_ptr().add(8 * j).cast());
                (
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h))),
                    _mm256_loadu_ps(b.as_ptr().add(8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1])) + tail
}

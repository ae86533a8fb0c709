//! AVX2 + FMA + F16C dot products for the 32-weight formats llama.cpp falls back to (Q5_0, Q5_1,
//! IQ4_NL) and for bf16 weights, after ggml's `ggml-cpu/arch/x86/quants.c`.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has avx2, fma and f16c. Slices are bounds-checked as usual.

use core::arch::x86_64::*;

use half::bf16;

use super::avx2::{
    PREFETCH_ROW, hsum_ps, load_i8x32, mul_sum_i8, mul_sum_us8, nibbles, prefetch_ahead,
};
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

/// Blocks whose scales are gathered and converted together (one 8-lane vector).
const GROUP: usize = 8;

/// The first four bytes of each of `b[..8]` (as many as there are) in one i32 lane each, zeros
/// past the end: the block formats here start with their f16 scale `d`, followed by `m` (Q5_1)
/// or `s` (Q8_1).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn gather_heads8<T>(b: &[T]) -> __m256i {
    const { assert!(size_of::<T>() >= 4 && size_of::<T>() < 1 << 27) };
    let n = b.len().min(GROUP) as i32;
    let lanes = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    let offsets = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(size_of::<T>() as i32));
    // Lanes below `n` all ones (gathered), the rest zero (left at zero).
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
    // SAFETY: lane `k < n` reads bytes `k · size_of::<T>() ..+ 4` of `b`, inside block `b[k]`
    // (each is at least 4 bytes); masked-off lanes access no memory. Gathers need no alignment.
    unsafe {
        _mm256_mask_i32gather_epi32::<1>(_mm256_setzero_si256(), b.as_ptr().cast(), offsets, mask)
    }
}

/// The f16 in the low (`HI = false`) or high half of each i32 lane, as 8 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_halves8<const HI: bool>(v: __m256i) -> __m256 {
    let b = if HI { 2 } else { 0 };
    let pick = _mm256_set_epi8(
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        13 + b,
        12 + b,
        9 + b,
        8 + b,
        5 + b,
        4 + b,
        1 + b,
        b,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        13 + b,
        12 + b,
        9 + b,
        8 + b,
        5 + b,
        4 + b,
        1 + b,
        b,
    );
    let packed = _mm256_permute4x64_epi64::<0b10_00>(_mm256_shuffle_epi8(v, pick));
    _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
}

/// Lane `k` of `v` in all eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane8(v: __m256, k: usize) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(k as i32))
}

/// Shared loop of the 32-weight formats against Q8_0 / Q8_1: per [`GROUP`] blocks, the scale
/// products `d · d8` are one gather and one conversion per side and one multiply (`MIN`: Q5_1's
/// `m · s8` likewise, summed per lane); per block, `dot(a, b)` (eight i32-sum lanes as floats)
/// times its lane of the products, into two alternating accumulators.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn grouped<W, A, const MIN: bool>(
    x: &[W],
    y: &[A],
    name: &str,
    dot: impl Fn(&W, &A) -> __m256,
) -> f32 {
    assert_eq!(x.len(), y.len(), "{name}: block count mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut mins = _mm256_setzero_ps();
    for (xg, yg) in x.chunks(GROUP).zip(y.chunks(GROUP)) {
        let (hx, hy) = (gather_heads8(xg), gather_heads8(yg));
        let dd = _mm256_mul_ps(f16_halves8::<false>(hx), f16_halves8::<false>(hy));
        if MIN {
            let ms = _mm256_mul_ps(f16_halves8::<true>(hx), f16_halves8::<true>(hy));
            mins = _mm256_add_ps(mins, ms);
        }
        if let (Ok(xg), Ok(yg)) = (<&[W; GROUP]>::try_from(xg), <&[A; GROUP]>::try_from(yg)) {
            // A whole group: a constant trip count, so the lanes are constants and the two
            // accumulators stay in registers.
            for k in 0..GROUP {
                prefetch_ahead::<PREFETCH_ROW, _>(&xg[k]);
                acc[k & 1] = _mm256_fmadd_ps(lane8(dd, k), dot(&xg[k], &yg[k]), acc[k & 1]);
            }
        } else {
            for (k, (a, b)) in xg.iter().zip(yg).enumerate() {
                acc[0] = _mm256_fmadd_ps(lane8(dd, k), dot(a, b), acc[0]);
            }
        }
    }
    let sum = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    if MIN { sum + hsum_ps(mins) } else { sum }
}

/// Q5_0 · Q8_0: codes shifted to `-16..16`, then signed byte products.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let off = _mm256_set1_epi8(16);
    grouped::<_, _, false>(x, y, "vec_dot_q5_0_q8_0", |a, b| {
        let qx = _mm256_sub_epi8(q5_codes(a.qh, &a.qs), off);
        mul_sum_i8(qx, load_i8x32(&b.qs))
    })
}

/// Q5_1 · Q8_1: `Σ d·d8·Σq·q8 + m·s8`, codes unsigned.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    grouped::<_, _, true>(x, y, "vec_dot_q5_1_q8_1", |a, b| {
        mul_sum_us8(q5_codes(a.qh, &a.qs), load_i8x32(&b.qs))
    })
}

/// IQ4_NL · Q8_0: table levels (never -128), then signed byte products.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0(x: &[BlockIQ4NL], y: &[BlockQ8_0]) -> f32 {
    grouped::<_, _, false>(x, y, "vec_dot_iq4_nl_q8_0", |a, b| {
        mul_sum_i8(iq4_nl_levels(&a.qs), load_i8x32(&b.qs))
    })
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

//! AVX2 + FMA + F16C k-quant dot products (Q2_K to Q6_K against Q8_K), after ggml's
//! `ggml-cpu/arch/x86/quants.c`.
//!
//! Each super-block's integer sum (`Σ sc·Σq·q8`, and the minimums' `Σ m·bsum`) is computed
//! exactly in i32 lanes and reduced once per super-block; the f32 arithmetic after it is the
//! `_ref` twin's, operation for operation, so the results are bit-identical to the scalar ones.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has avx2, fma and f16c. Slices are bounds-checked as usual.

use core::arch::x86_64::*;

use super::avx2::{PREFETCH_ROW, prefetch_ahead};

use crate::quant::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

#[cfg(test)]
use crate::quant::get_scale_min_k4;

/// 32 bytes from `s[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load32<T: Copy>(s: &[T], at: usize) -> __m256i {
    assert!(size_of::<T>() == 1 && at + 32 <= s.len());
    // SAFETY: 32 one-byte elements from `at` are in bounds (checked); `loadu` is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().add(at).cast()) }
}

/// Horizontal sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s)))
}

/// The eight 6-bit scales and eight 6-bit minimums of a Q4_K / Q5_K super-block as bytes
/// (`[scales 0..8, mins 0..8]`), unpacked four at a time in 32-bit words as ggml does; byte for
/// byte what [`crate::quant::get_scale_min_k4`] gives.
#[inline]
pub(super) fn unpack_scales_mins(s: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (w0, w1, w2) = (w(0), w(4), w(8));
    let scales_lo = w0 & KMASK1;
    let scales_hi = (w2 & KMASK2) | (((w0 >> 6) & KMASK3) << 4);
    let mins_lo = w1 & KMASK1;
    let mins_hi = ((w2 >> 4) & KMASK2) | (((w1 >> 6) & KMASK3) << 4);
    let mut out = [0u8; 16];
    for (o, word) in out
        .chunks_exact_mut(4)
        .zip([scales_lo, scales_hi, mins_lo, mins_hi])
    {
        o.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// The eight scales of a Q4_K / Q5_K super-block as i16 in lanes 0..8 of both 128-bit halves
/// (for [`scale_of`]), and `Σ m_j · (bsum_2j + bsum_2j+1)` over its sub-blocks: each minimum is
/// widened to two i16 lanes and `madd`ed with the 16 bsums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scales_and_min_sum(scales: &[u8; 12], b: &BlockQ8K) -> (__m256i, i32) {
    let sm = unpack_scales_mins(scales);
    // SAFETY: `sm` is 16 readable bytes; `loadu` has no alignment requirement.
    let sm = unsafe { _mm_loadu_si128(sm.as_ptr().cast()) };
    let mins = _mm_unpackhi_epi8(sm, sm); // m0 m0 m1 m1 … m7 m7
    // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
    let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr().cast()) };
    let summ = hsum_i32(_mm256_madd_epi16(_mm256_cvtepu8_epi16(mins), bsums));
    let sc = _mm256_cvtepu8_epi16(sm);
    (_mm256_permute2x128_si256::<0x00>(sc, sc), summ)
}

/// Scale `k` of a [`scales_and_min_sum`] register in all sixteen i16 lanes (one byte shuffle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_of(sc: __m256i, k: usize) -> __m256i {
    let ctrl = ((2 * k as i16 + 1) << 8) | (2 * k as i16);
    _mm256_shuffle_epi8(sc, _mm256_set1_epi16(ctrl))
}

/// `Σ sc·(q · q8)` for one 32-value sub-block: unsigned codes `q` (< 64) times signed `q8`,
/// pairs summed in i16 (no saturation: 2·63·127 < 2^15), then weighted by `sc` into i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sub_block(q: __m256i, q8: __m256i, sc: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, q8), sc)
}

/// Q4_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_k_q8_k: block count mismatch");
    let low = _mm256_set1_epi8(0x0F);
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let (sc, summ) = scales_and_min_sum(&a.scales, b);
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let q4 = load32(&a.qs, 32 * c);
            let lo = _mm256_and_si256(q4, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), low);
            let (s0, s1) = (scale_of(sc, 2 * c), scale_of(sc, 2 * c + 1));
            acc = _mm256_add_epi32(acc, sub_block(lo, load32(&b.qs, 64 * c), s0));
            acc = _mm256_add_epi32(acc, sub_block(hi, load32(&b.qs, 64 * c + 32), s1));
        }
        let sumi = hsum_i32(acc);
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q5_K · Q8_K: Q4_K's nibbles plus the fifth bit, bit `j` of `qh[l]` for sub-block `j`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_k_q8_k: block count mismatch");
    let (low, one) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let (sc, summ) = scales_and_min_sum(&a.scales, b);
        let mut hbits = load32(&a.qh, 0);
        let mut acc = _mm256_setzero_si256();
        for c in 0..4 {
            let q4 = load32(&a.qs, 32 * c);
            // Bit 2c of each qh byte moved to bit 4 (then 2c + 1), one shift per sub-block.
            let h0 = _mm256_and_si256(_mm256_slli_epi16::<4>(hbits), one);
            let h1 = _mm256_and_si256(_mm256_slli_epi16::<3>(hbits), one);
            hbits = _mm256_srli_epi16::<2>(hbits);
            let lo = _mm256_or_si256(_mm256_and_si256(q4, low), h0);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4), low), h1);
            let (s0, s1) = (scale_of(sc, 2 * c), scale_of(sc, 2 * c + 1));
            acc = _mm256_add_epi32(acc, sub_block(lo, load32(&b.qs, 64 * c), s0));
            acc = _mm256_add_epi32(acc, sub_block(hi, load32(&b.qs, 64 * c + 32), s1));
        }
        let sumi = hsum_i32(acc);
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q6_K · Q8_K: `Σ sc·Σ(q − 32)·q8 = Σ sc·Σ q·q8 − 32·Σ sc·bsum`: one `maddubs` per group
/// (codes `0..64` unsigned), the offset taken back through the activation's per-16 sums, each
/// group's pair of scales one byte shuffle of the sixteen widened once.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q6_k_q8_k: block count mismatch");
    let (low, two) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        // SAFETY: `scales` is 16 and `bsums` 32 readable bytes; `loadu` is unaligned.
        let (sc, bsums) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr().cast())),
                _mm256_loadu_si256(b.bsums.as_ptr().cast()),
            )
        };
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc, bsums));
        let mut acc = _mm256_sub_epi32(_mm256_setzero_si256(), offset);
        for (h, half) in scale_halves(sc).into_iter().enumerate() {
            let ql0 = load32(&a.ql, 64 * h);
            let ql1 = load32(&a.ql, 64 * h + 32);
            let qh = load32(&a.qh, 32 * h);
            let hi2 = |s: i32| {
                // `s` is 0, 2, 4 or 6: the two bits at `s`, moved to bits 4-5.
                let v = match s {
                    0 => _mm256_slli_epi16::<4>(qh),
                    2 => _mm256_slli_epi16::<2>(qh),
                    4 => qh,
                    _ => _mm256_srli_epi16::<2>(qh),
                };
                _mm256_and_si256(v, _mm256_slli_epi16::<4>(two))
            };
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, low), hi2(0)),
                _mm256_or_si256(_mm256_and_si256(ql1, low), hi2(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low), hi2(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low), hi2(6)),
            ];
            // Values 0..16 of group g take scale 8h + 2g, 16..32 scale 8h + 2g + 1.
            for (g, q) in q.into_iter().enumerate() {
                let p = _mm256_maddubs_epi16(q, load32(&b.qs, 128 * h + 32 * g));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pick(half, g)));
            }
        }
        let sumi = hsum_i32(acc);
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

/// The sixteen signed scales of a Q3_K block (`6-bit − 32`, what
/// [`crate::quant::q3_k_scales`] gives) as i16, and `d` as f32 in lane 0, from the block's last
/// 16 bytes (two code bytes, the 12 packed scale bytes, `d`): ggml's four word formulas, one per
/// lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q3_scales(tail: &[u8; 16]) -> (__m256i, __m128) {
    const KMASK1: i32 = 0x0303_0303;
    const KMASK2: i32 = 0x0f0f_0f0f;
    // SAFETY: `tail` is 16 readable bytes; `loadu` has no alignment requirement.
    let v = _mm_srli_si128::<2>(unsafe { _mm_loadu_si128(tail.as_ptr().cast()) });
    // Words a0, a1, a2 of the packed bytes are lanes 0, 1, 2; `d` is the low half of lane 3.
    let low = _mm_shuffle_epi32::<0b01_00_01_00>(v); // a0 a1 a0 a1
    let low = _mm_and_si128(
        _mm_srlv_epi32(low, _mm_set_epi32(4, 4, 0, 0)),
        _mm_set1_epi32(KMASK2),
    );
    let high = _mm_shuffle_epi32::<0b10_10_10_10>(v); // a2 a2 a2 a2
    let high = _mm_and_si128(
        _mm_srlv_epi32(high, _mm_set_epi32(6, 4, 2, 0)),
        _mm_set1_epi32(KMASK1),
    );
    let sc = _mm_sub_epi8(
        _mm_or_si128(low, _mm_slli_epi32::<4>(high)),
        _mm_set1_epi8(32),
    );
    (
        _mm256_cvtepi8_epi16(sc),
        _mm_cvtph_ps(_mm_srli_si128::<12>(v)),
    )
}

/// `v >> (2 j)` per 16-bit lane, `j` in `0..4` (a constant shift per arm).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn shift_pairs(v: __m256i, j: usize) -> __m256i {
    match j {
        0 => v,
        1 => _mm256_srli_epi16::<2>(v),
        2 => _mm256_srli_epi16::<4>(v),
        _ => _mm256_srli_epi16::<6>(v),
    }
}

/// Sixteen i16 sub-block scales as two registers, scales `8 n .. 8 n + 8` in both 128-bit
/// halves of register `n`, for [`scale_pick`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_halves(sc: __m256i) -> [__m256i; 2] {
    [
        _mm256_permute2x128_si256::<0x00>(sc, sc),
        _mm256_permute2x128_si256::<0x11>(sc, sc),
    ]
}

/// The multipliers of group `j` of a [`scale_halves`] register for `madd` over `maddubs` pair
/// sums: i16 lanes 0..8 take scale `2 j`, lanes 8..16 scale `2 j + 1` (one byte shuffle; ggml's
/// `get_scale_shuffle_q3k`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_pick(half: __m256i, j: usize) -> __m256i {
    let lo = ((4 * j as i16 + 1) << 8) | (4 * j as i16);
    let ctrl = _mm256_set_m128i(_mm_set1_epi16(lo + 0x0202), _mm_set1_epi16(lo));
    _mm256_shuffle_epi8(half, ctrl)
}

/// Q2_K · Q8_K: weight `128 n + 32 j + l` is bits `2j..` of `qs[32 n + l]`, so one 32-byte
/// load serves four groups of 32 weights; each group spans two 16-value sub-blocks. The scales
/// and minimums are unpacked once per super-block in vectors, `Σ m·bsum` is one `madd`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q2_k_q8_k: block count mismatch");
    let (three, low) = (_mm256_set1_epi8(3), _mm_set1_epi8(0x0F));
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        // SAFETY: `scales` is 16 and `bsums` 32 readable bytes; `loadu` is unaligned.
        let (sm, bsums) = unsafe {
            (
                _mm_loadu_si128(a.scales.as_ptr().cast()),
                _mm256_loadu_si256(b.bsums.as_ptr().cast()),
            )
        };
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sm), low));
        let summ = hsum_i32(_mm256_madd_epi16(mins, bsums));
        let halves = scale_halves(_mm256_cvtepu8_epi16(_mm_and_si128(sm, low)));
        let mut acc = _mm256_setzero_si256();
        for (n, half) in halves.into_iter().enumerate() {
            let q = load32(&a.qs, 32 * n);
            for j in 0..4 {
                let q2 = _mm256_and_si256(shift_pairs(q, j), three);
                let p = _mm256_maddubs_epi16(q2, load32(&b.qs, 128 * n + 32 * j));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pick(half, j)));
            }
        }
        let sumi = hsum_i32(acc);
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q3_K · Q8_K: codes `u − 4` with `u = low2 | high << 2` in `0..8`; the high bit of group
/// `(n, j)` is bit `4n + j` of `hmask`, and `Σ sc·Σ(u − 4)·q8 = Σ sc·Σ u·q8 − 4·Σ sc·bsum`
/// (one `maddubs` per group; the offset taken back through the activation's per-16 sums).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q3_k_q8_k: block count mismatch");
    let (three, four) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let tail = bytemuck::bytes_of(a)[94..].try_into().expect("16 bytes");
        let (sc, _) = q3_scales(tail);
        // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
        let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr().cast()) };
        let offset = _mm256_slli_epi32::<2>(_mm256_madd_epi16(sc, bsums));
        let halves = scale_halves(sc);
        let mut hbits = load32(&a.hmask, 0);
        let mut acc = _mm256_sub_epi32(_mm256_setzero_si256(), offset);
        for (n, half) in halves.into_iter().enumerate() {
            let q = load32(&a.qs, 32 * n);
            for j in 0..4 {
                // Bit 0 of `hbits` is the current group's high bit, moved to bit 2.
                let high = _mm256_and_si256(_mm256_slli_epi16::<2>(hbits), four);
                hbits = _mm256_srli_epi16::<1>(hbits);
                let u = _mm256_or_si256(_mm256_and_si256(shift_pairs(q, j), three), high);
                let p = _mm256_maddubs_epi16(u, load32(&b.qs, 128 * n + 32 * j));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scale_pick(half, j)));
            }
        }
        let sumi = hsum_i32(acc);
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-wise unpacking equals ggml's per-index `get_scale_min_k4` on every byte pattern
    /// family (random bytes, all ones, alternating bits).
    #[test]
    fn unpack_scales_mins_matches_get_scale_min_k4() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for case in 0..1004 {
            let mut s = [[0xFFu8; 12], [0xAA; 12], [0x55; 12], [0; 12]][case % 4];
            if case >= 4 {
                for b in &mut s {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = seed as u8;
                }
            }
            let got = unpack_scales_mins(&s);
            for j in 0..8 {
                assert_eq!((got[j], got[8 + j]), get_scale_min_k4(j, &s), "{s:?} j={j}");
            }
        }
    }
}

//! AVX-512 VNNI k-quant dot products (Q2_K to Q6_K against Q8_K): 64 weights per 512-bit
//! register, so a super-block of 256 is four `maddubs` + four `vpdpwssd`.
//!
//! The AVX2 kernels ([`super::avx2_kquant`]) handle one 32-weight sub-block per register and
//! weight each with a broadcast scale. Here each register holds two sub-blocks whose
//! activations are contiguous (64 bytes of Q8_K codes, one load): the codes are rearranged
//! instead (a 32-byte load broadcast to both halves, shifted per half by `vpsrlvw`), and the
//! per-sub-block scales enter as one i16 vector built by a byte shuffle (`vpshufb`) or word
//! permute (`vpermw`), multiplied into the i32 sums by `vpdpwssd` (VNNI). Q6_K's `− 32` offset is
//! applied through the activation's per-16 sums (`32 · Σ sc · bsum`) rather than a second
//! `maddubs`, and so is Q3_K's `− 4`. The two integer totals of a super-block are reduced together.
//!
//! As in the AVX2 kernels, each super-block's integer sums are exact and the f32 arithmetic after
//! them is the `_ref` twin's, operation for operation, so results are bit-identical to the
//! scalar ones.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni. Slices are bounds-checked.

use core::arch::x86_64::*;

use super::avx2::{PREFETCH_ROW, prefetch_ahead};
use super::avx2_kquant::{load32, q3_scales};
use crate::quant::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

/// 64 bytes from `s[at..at + 64]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load64<T: Copy>(s: &[T], at: usize) -> __m512i {
    assert!(size_of::<T>() == 1 && at + 64 <= s.len());
    // SAFETY: 64 one-byte elements from `at` are in bounds (checked); `loadu` is unaligned.
    unsafe { _mm512_loadu_si512(s.as_ptr().add(at).cast()) }
}

/// 32 bytes from `s[at..]` in both 256-bit halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load32x2<T: Copy>(s: &[T], at: usize) -> __m512i {
    _mm512_broadcast_i64x4(load32(s, at))
}

/// Sixteen i16 lanes of `lo`, then sixteen of `hi` (per-half shift counts).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn halves_epi16(lo: i16, hi: i16) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi))
}

/// (Σ lanes of `a`, Σ lanes of `b`), exact in i32 (integer addition in any order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum_pair(a: __m512i, b: __m256i) -> (i32, i32) {
    let a = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64::<1>(a));
    // a01 a23 b01 b23 | a45 a67 b45 b67
    let h = _mm256_hadd_epi32(a, b);
    let h = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let h = _mm_hadd_epi32(h, h);
    (_mm_cvtsi128_si32(h), _mm_extract_epi32::<1>(h))
}

/// Byte-shuffle controls that turn the eight scale bytes (broadcast to every 128-bit lane) into
/// the i16 multipliers of register `c`: scale `2c` in the low half, `2c + 1` in the high half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scale_pickers() -> [__m512i; 4] {
    core::array::from_fn(|c| {
        let mut m = [0i8; 64];
        for (p, m) in m.iter_mut().enumerate() {
            // Odd bytes are the i16's high byte: bit 7 set selects zero.
            *m = match (p % 2, p < 32) {
                (1, _) => -128,
                (_, true) => 2 * c as i8,
                (_, false) => 2 * c as i8 + 1,
            };
        }
        // SAFETY: `m` is 64 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_si512(m.as_ptr().cast()) }
    })
}

/// The eight scales and eight minimums of a Q4_K / Q5_K super-block as bytes
/// `[scales 0..8, mins 0..8]` (what [`super::avx2_kquant::unpack_scales_mins`] gives), and `d`, `dmin` as f32 in
/// lanes 0 and 1, from the block's first 16 bytes (`d`, `dmin`, the 12 packed bytes): ggml's
/// four 32-bit word formulas, one per lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scales_mins(head: &[u8; 16]) -> (__m128i, __m128) {
    const KMASK1: i32 = 0x3f3f_3f3f;
    const KMASK2: i32 = 0x0f0f_0f0f;
    const KMASK3: i32 = 0x0303_0303;
    // SAFETY: `head` is 16 readable bytes; `loadu` has no alignment requirement.
    let v = unsafe { _mm_loadu_si128(head.as_ptr().cast()) };
    // Words w0, w1, w2 of the packed bytes are lanes 1, 2, 3 of `v`.
    let p = _mm_shuffle_epi32::<0b11_10_11_01>(v); // w0 w2 w1 w2
    let p = _mm_srlv_epi32(p, _mm_set_epi32(4, 0, 0, 0));
    let p = _mm_and_si128(p, _mm_set_epi32(KMASK2, KMASK1, KMASK2, KMASK1));
    let q = _mm_shuffle_epi32::<0b10_10_01_01>(v); // w0 w0 w1 w1
    let q = _mm_and_si128(_mm_srli_epi32::<6>(q), _mm_set_epi32(KMASK3, 0, KMASK3, 0));
    (_mm_or_si128(p, _mm_slli_epi32::<4>(q)), _mm_cvtph_ps(v))
}

/// `vpermw` indices for the formats with sixteen 16-weight sub-blocks (Q2_K, Q3_K, Q6_K):
/// register `k` (weights `64k .. 64k + 64`) takes scale `4k + j` in its 128-bit lane `j`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scale16_pickers() -> [__m512i; 4] {
    core::array::from_fn(|k| {
        let mut idx = [0i16; 32];
        for (j, v) in idx.iter_mut().enumerate() {
            *v = (4 * k + j / 8) as i16;
        }
        // SAFETY: `idx` is 64 readable bytes; `loadu` has no alignment requirement.
        unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
    })
}

/// Register `k` of a Q2_K / Q3_K block's 2-bit fields: weight `128 n + 32 j + l` is bits
/// `2j..` of `qs[32 n + l]`, so register `k = 2n + h` takes bytes `32 n..` shifted by `4h` (low
/// half) and `4h + 2` (high half), then masked to two bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn low2(qs: &[u8; 64], k: usize, shifts: &[__m512i; 2]) -> __m512i {
    let q = _mm512_srlv_epi16(load32x2(qs, 32 * (k / 2)), shifts[k % 2]);
    _mm512_and_si512(q, _mm512_set1_epi8(3))
}

/// Q2_K · Q8_K: 2-bit codes, 4-bit scales (`vpermw`) and 4-bit minimums (times the per-16 sums).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q2_k_q8_k(x: &[BlockQ2K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q2_k_q8_k: block count mismatch");
    let pick = scale16_pickers();
    let shifts = [halves_epi16(0, 2), halves_epi16(4, 6)];
    let low = _mm_set1_epi8(0x0F);
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        // SAFETY: `scales` is 16 readable bytes; `loadu` has no alignment requirement.
        let sm = unsafe { _mm_loadu_si128(a.scales.as_ptr().cast()) };
        let sc = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(sm, low)));
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sm), low));
        let mut acc = _mm512_setzero_si512();
        for (k, pick) in pick.iter().enumerate() {
            let p = _mm512_maddubs_epi16(low2(&a.qs, k, &shifts), load64(&b.qs, 64 * k));
            acc = _mm512_dpwssd_epi32(acc, p, _mm512_permutexvar_epi16(*pick, sc));
        }
        // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
        let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr().cast()) };
        let (sumi, summ) = hsum_pair(acc, _mm256_madd_epi16(mins, bsums));
        sum += b.d * (a.d.to_f32() * sumi as f32 - a.dmin.to_f32() * summ as f32);
    }
    sum
}

/// Q3_K · Q8_K: codes `u − 4` with `u = low2 | high << 2` in `0..8`; the high bit of group
/// `(n, j)` is bit `4n + j` of `hmask`, and `Σ sc·Σ(u − 4)·q8 = Σ sc·Σ u·q8 − 4·Σ sc·bsum`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q3_k_q8_k(x: &[BlockQ3K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q3_k_q8_k: block count mismatch");
    let pick = scale16_pickers();
    let shifts = [halves_epi16(0, 2), halves_epi16(4, 6)];
    // Register k = 2n + h: hmask bits 4n + 2h (low half) and 4n + 2h + 1 (high half).
    let hshift: [__m512i; 4] =
        core::array::from_fn(|k| halves_epi16(2 * k as i16, 2 * k as i16 + 1));
    let four = _mm512_set1_epi8(4);
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let tail = bytemuck::bytes_of(a)[94..].try_into().expect("16 bytes");
        let (sc, d) = q3_scales(tail);
        let scz = _mm512_castsi256_si512(sc);
        let hm = load32x2(&a.hmask, 0);
        let mut acc = _mm512_setzero_si512();
        for (k, pick) in pick.iter().enumerate() {
            let h = _mm512_slli_epi16::<2>(_mm512_srlv_epi16(hm, hshift[k]));
            let u = _mm512_or_si512(low2(&a.qs, k, &shifts), _mm512_and_si512(h, four));
            let p = _mm512_maddubs_epi16(u, load64(&b.qs, 64 * k));
            acc = _mm512_dpwssd_epi32(acc, p, _mm512_permutexvar_epi16(*pick, scz));
        }
        // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
        let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr().cast()) };
        let (dot, offset) = hsum_pair(acc, _mm256_madd_epi16(sc, bsums));
        let sumi = dot - 4 * offset;
        sum += _mm_cvtss_f32(d) * b.d * sumi as f32;
    }
    sum
}

/// The shared body of Q4_K and Q5_K: `codes(a, c)` gives the 64 unsigned codes of register `c`
/// (sub-blocks `2c` and `2c + 1`); each block starts with `d`, `dmin` and the packed scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_k4<W: bytemuck::Pod>(x: &[W], y: &[BlockQ8K], codes: impl Fn(&W, usize) -> __m512i) -> f32 {
    let pick = scale_pickers();
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let head = bytemuck::bytes_of(a)[..16].try_into().expect("16 bytes");
        let (smv, dm) = scales_mins(head);
        let scz = _mm512_broadcast_i32x4(smv);
        let mut acc = _mm512_setzero_si512();
        for (c, pick) in pick.iter().enumerate() {
            let p = _mm512_maddubs_epi16(codes(a, c), load64(&b.qs, 64 * c));
            acc = _mm512_dpwssd_epi32(acc, p, _mm512_shuffle_epi8(scz, *pick));
        }
        // Minimum j, widened to two i16 lanes, times bsums 2j and 2j + 1.
        let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(smv, smv));
        // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
        let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr().cast()) };
        let (sumi, summ) = hsum_pair(acc, _mm256_madd_epi16(mins, bsums));
        let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        sum += b.d * (d * sumi as f32 - dmin * summ as f32);
    }
    sum
}

/// Q4_K · Q8_K.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q4_k_q8_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_k_q8_k: block count mismatch");
    let (low, nib) = (_mm512_set1_epi8(0x0F), halves_epi16(0, 4));
    dot_k4(
        x,
        y,
        // Bytes 32c.. hold sub-block 2c in their low nibbles, 2c + 1 in their high ones.
        |a, c| _mm512_and_si512(_mm512_srlv_epi16(load32x2(&a.qs, 32 * c), nib), low),
    )
}

/// Q5_K · Q8_K: Q4_K's nibbles plus the fifth bit, bit `j` of `qh[l]` for sub-block `j`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_k_q8_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q5_k_q8_k: block count mismatch");
    let (low, bit4, nib) = (
        _mm512_set1_epi8(0x0F),
        _mm512_set1_epi8(0x10),
        halves_epi16(0, 4),
    );
    let hshift: [__m512i; 4] =
        core::array::from_fn(|c| halves_epi16(2 * c as i16, 2 * c as i16 + 1));
    dot_k4(x, y, |a, c| {
        let lo = _mm512_and_si512(_mm512_srlv_epi16(load32x2(&a.qs, 32 * c), nib), low);
        // Bit 2c (low half) or 2c + 1 (high half) of each qh byte moved to bit 4.
        let h = _mm512_srlv_epi16(load32x2(&a.qh, 0), hshift[c]);
        _mm512_or_si512(lo, _mm512_and_si512(_mm512_slli_epi16::<4>(h), bit4))
    })
}

/// Q6_K · Q8_K: `Σ sc·Σ(q − 32)·q8 = Σ sc·Σ q·q8 − 32·Σ sc·bsum` (each 16-weight sub-block is
/// one of the activation's per-16 sums).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q6_k_q8_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q6_k_q8_k: block count mismatch");
    let (low, top2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x30));
    // The high two bits of weights 0..32 | 32..64 of a half are bits 0-1 | 2-3 of qh (moved up
    // to 4-5), of weights 64..96 | 96..128 bits 4-5 | 6-7.
    let (up, down) = (halves_epi16(4, 2), halves_epi16(0, 2));
    let pick = scale16_pickers();
    let mut sum = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        // SAFETY: `scales` is 16 readable bytes; `loadu` has no alignment requirement.
        let sc = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(a.scales.as_ptr().cast()) });
        let scz = _mm512_castsi256_si512(sc);
        let mut acc = _mm512_setzero_si512();
        for h in 0..2 {
            let ql = load64(&a.ql, 64 * h);
            let qh = load32x2(&a.qh, 32 * h);
            let q = [
                _mm512_or_si512(
                    _mm512_and_si512(ql, low),
                    _mm512_and_si512(_mm512_sllv_epi16(qh, up), top2),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), low),
                    _mm512_and_si512(_mm512_srlv_epi16(qh, down), top2),
                ),
            ];
            for (g, q) in q.into_iter().enumerate() {
                let k = 2 * h + g;
                let p = _mm512_maddubs_epi16(q, load64(&b.qs, 64 * k));
                acc = _mm512_dpwssd_epi32(acc, p, _mm512_permutexvar_epi16(pick[k], scz));
            }
        }
        // SAFETY: `bsums` is 16 i16 = 32 readable bytes; `loadu` has no alignment requirement.
        let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr().cast()) };
        let (dot, offset) = hsum_pair(acc, _mm256_madd_epi16(sc, bsums));
        let sumi = dot - 32 * offset;
        sum += a.d.to_f32() * b.d * sumi as f32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::get_scale_min_k4;

    /// The lane-wise unpacking equals ggml's per-index `get_scale_min_k4`, and lanes 0 and 1
    /// are `d` and `dmin` (on CPUs with the table's features; elsewhere nothing to check).
    #[test]
    fn scales_mins_match_get_scale_min_k4() {
        if crate::arch::kernels_for(crate::Isa::Avx512Vnni).is_none() {
            return;
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for case in 0..1004 {
            let mut head = [[0xFFu8; 16], [0xAA; 16], [0x55; 16], [0; 16]][case % 4];
            if case >= 4 {
                for b in &mut head {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    *b = seed as u8;
                }
            }
            head[..4].copy_from_slice(&[0x00, 0x3C, 0x00, 0xC0]); // d = 1, dmin = -2
            // SAFETY: the CPU has the AVX-512 VNNI table's features (checked above).
            let (v, dm) = unsafe { scales_mins(&head) };
            let (mut got, mut f) = ([0u8; 16], [0.0f32; 4]);
            // SAFETY: 16 writable bytes each; unaligned stores.
            unsafe {
                _mm_storeu_si128(got.as_mut_ptr().cast(), v);
                _mm_storeu_ps(f.as_mut_ptr(), dm);
            }
            let packed: &[u8; 12] = head[4..].try_into().unwrap();
            for j in 0..8 {
                assert_eq!(
                    (got[j], got[8 + j]),
                    get_scale_min_k4(j, packed),
                    "{head:?} j={j}"
                );
            }
            assert_eq!((f[0], f[1]), (1.0, -2.0));
        }
    }
}

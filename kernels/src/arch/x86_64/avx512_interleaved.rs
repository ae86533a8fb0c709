//! AVX-512 VNNI products of interleaved weights ([`crate::interleave`]) with one activation row.
//!
//! Per 32-weight block of a 16-row group: four (Q4_1) or eight (Q8_0) 64-byte loads, eight
//! `vpdpbusd` that each multiply four weights of all sixteen rows (one 32-bit lane per row) by
//! the same four activation bytes (a broadcast load), then the block's scales for all sixteen
//! rows at once. No horizontal sums: the sixteen results leave in one store. The f32 operations
//! per block are the scalar reference's (`sumi · (d · d8) + m · s8`, then added to the row's
//! sum), with no fused multiply-add, so each row's result is bit for bit the `_ref` dot product.
//!
//! Each block's cache lines are prefetched a fixed distance ahead ([`PREFETCH_Q4_1`],
//! [`PREFETCH_Q8_0`]): the hardware prefetcher alone left decode's one-thread products at
//! ≈ 60 % of the read bandwidth (latency, not arithmetic: the same products run at ≈ 48 GiB/s
//! from cache).
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni. Slices are bounds-checked.

use core::arch::x86_64::*;

use crate::interleave::{BlockQ4_1x16, BlockQ8_0x16, INTERLEAVE_ROWS};
use crate::quant::{BlockQ8_0, BlockQ8_1};

use super::avx2::prefetch_ahead;

/// Bytes ahead of the current Q4_1 group block (320 bytes) that its lines are prefetched: 6.4
/// blocks. Swept on Zen 4 (2026-12-06, `engram bench --threads 1`, SmolLM2 Q4_1, huge pages;
/// Q4_1 / Q8_0 distances): 0/0 98–99 tok/s, 1024/4096 115–117, 2048/4096 128, **2048/8192
/// 114–133**, 4096/8192 108–115; the kernels bench's cold 4 KiB-page case 7.1 → 9.6 GiB/s.
const PREFETCH_Q4_1: usize = 2048;

/// Bytes ahead of the current Q8_0 group block (544 bytes, the output head's) that its lines
/// are prefetched: 15 blocks (same sweep; the head alone 10.6 → 13.8 GiB/s cold).
const PREFETCH_Q8_0: usize = 8192;

/// Activation blocks whose scales are converted to f32 at a time (stack buffers; a group's sums
/// are stored and reloaded between chunks, which changes no bit).
const CHUNK: usize = 64;

/// Activation codes `4 k .. 4 k + 4` as one little-endian word (for a 32-bit broadcast).
#[inline(always)]
fn quad(qs: &[i8; 32], k: usize) -> i32 {
    let b: [i8; 4] = qs[4 * k..4 * k + 4].try_into().expect("four codes");
    i32::from_le_bytes(b.map(|v| v as u8))
}

/// Checks the shapes every kernel here takes: `out` whole groups, `x` their blocks.
fn check<G>(x: &[G], nb: usize, out: &[f32], name: &str) {
    let groups = out.len() / INTERLEAVE_ROWS;
    assert!(
        out.len() == groups * INTERLEAVE_ROWS && x.len() == groups * nb,
        "{name}: {} blocks and {} outputs do not make whole groups of {nb} blocks",
        x.len(),
        out.len()
    );
}

/// `out[16 g + r] = row r of group g · y` for Q4_1 groups `x` (`y.len()` blocks each).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemv_q4_1x16_q8_1(x: &[BlockQ4_1x16], y: &[BlockQ8_1], out: &mut [f32]) {
    let nb = y.len();
    check(x, nb, out, "gemv_q4_1x16_q8_1");
    let low = _mm512_set1_epi8(0x0F);
    let (mut yd, mut ys) = ([0.0f32; CHUNK], [0.0f32; CHUNK]);
    let mut c0 = 0;
    while c0 < nb {
        let cn = (nb - c0).min(CHUNK);
        for (j, b) in y[c0..c0 + cn].iter().enumerate() {
            (yd[j], ys[j]) = (b.d.to_f32(), b.s.to_f32());
        }
        for (g, o) in out.chunks_exact_mut(INTERLEAVE_ROWS).enumerate() {
            let mut acc = match c0 {
                0 => _mm512_setzero_ps(),
                // SAFETY: `o` holds 16 floats; unaligned load.
                _ => unsafe { _mm512_loadu_ps(o.as_ptr()) },
            };
            let blocks = &x[g * nb + c0..][..cn];
            for (j, (b, a)) in blocks.iter().zip(&y[c0..c0 + cn]).enumerate() {
                prefetch_ahead::<PREFETCH_Q4_1, _>(b);
                let mut s = [_mm512_setzero_si512(); 2];
                for p in 0..4 {
                    // SAFETY: `qs` holds 256 bytes, so 64 from `64 p` are in bounds; unaligned.
                    let q = unsafe { _mm512_loadu_si512(b.qs.as_ptr().add(64 * p).cast()) };
                    let lo = _mm512_and_si512(q, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), low);
                    let s1 =
                        _mm512_dpbusd_epi32(s[p % 2], lo, _mm512_set1_epi32(quad(&a.qs, 2 * p)));
                    s[p % 2] =
                        _mm512_dpbusd_epi32(s1, hi, _mm512_set1_epi32(quad(&a.qs, 2 * p + 1)));
                }
                let sumf = _mm512_cvtepi32_ps(_mm512_add_epi32(s[0], s[1]));
                // SAFETY: `d` and `m` are 16 f16 each (32 bytes); unaligned loads.
                let (d, m) = unsafe {
                    (
                        _mm512_cvtph_ps(_mm256_loadu_si256(b.d.as_ptr().cast())),
                        _mm512_cvtph_ps(_mm256_loadu_si256(b.m.as_ptr().cast())),
                    )
                };
                let dd = _mm512_mul_ps(d, _mm512_set1_ps(yd[j]));
                let t = _mm512_add_ps(
                    _mm512_mul_ps(sumf, dd),
                    _mm512_mul_ps(m, _mm512_set1_ps(ys[j])),
                );
                acc = _mm512_add_ps(acc, t);
            }
            // SAFETY: `o` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
        c0 += cn;
    }
}

/// `out[16 g + r] = row r of group g · y` for Q8_0 groups `x` (`y.len()` blocks each).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn gemv_q8_0x16_q8_0(x: &[BlockQ8_0x16], y: &[BlockQ8_0], out: &mut [f32]) {
    let nb = y.len();
    check(x, nb, out, "gemv_q8_0x16_q8_0");
    let (mut yd, mut bias) = ([0.0f32; CHUNK], [0i32; CHUNK]);
    let mut c0 = 0;
    while c0 < nb {
        let cn = (nb - c0).min(CHUNK);
        for (j, b) in y[c0..c0 + cn].iter().enumerate() {
            yd[j] = b.d.to_f32();
            // The weights are stored plus 128: Σ (w + 128) · q = Σ w · q + 128 Σ q.
            bias[j] = 128 * b.qs.iter().map(|&q| i32::from(q)).sum::<i32>();
        }
        for (g, o) in out.chunks_exact_mut(INTERLEAVE_ROWS).enumerate() {
            let mut acc = match c0 {
                0 => _mm512_setzero_ps(),
                // SAFETY: `o` holds 16 floats; unaligned load.
                _ => unsafe { _mm512_loadu_ps(o.as_ptr()) },
            };
            let blocks = &x[g * nb + c0..][..cn];
            for (j, (b, a)) in blocks.iter().zip(&y[c0..c0 + cn]).enumerate() {
                prefetch_ahead::<PREFETCH_Q8_0, _>(b);
                let mut s = [_mm512_setzero_si512(); 2];
                for k in 0..8 {
                    // SAFETY: `qs` holds 512 bytes, so 64 from `64 k` are in bounds; unaligned.
                    let q = unsafe { _mm512_loadu_si512(b.qs.as_ptr().add(64 * k).cast()) };
                    s[k % 2] = _mm512_dpbusd_epi32(s[k % 2], q, _mm512_set1_epi32(quad(&a.qs, k)));
                }
                let sumi =
                    _mm512_sub_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_set1_epi32(bias[j]));
                // SAFETY: `d` is 16 f16 (32 bytes); unaligned load.
                let d = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(b.d.as_ptr().cast())) };
                let dd = _mm512_mul_ps(d, _mm512_set1_ps(yd[j]));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), dd));
            }
            // SAFETY: `o` holds 16 floats; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc) };
        }
        c0 += cn;
    }
}

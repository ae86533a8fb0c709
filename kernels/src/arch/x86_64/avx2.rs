//! AVX2 + FMA + F16C dot products, after ggml's `ggml-cpu/arch/x86/quants.c`.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has avx2, fma and f16c. Slices are bounds-checked as usual.

use core::arch::x86_64::*;

use half::f16;

use crate::arch::panel::{self, PanelTile};
use crate::arch::{Panel, PanelShape};
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK4_0};

/// Bytes ahead of the weight block being read that the single-row kernels prefetch:
/// enough to keep DRAM busy while the kernel computes, so the reads overlap the arithmetic
/// instead of waiting for the out-of-order window (a few blocks' instructions) to reach them.
/// Rows are contiguous, so past a row's end this fetches the next row. Measured on the AMX
/// Xeon, cold 2048 × 2048 Q4_K: 1024, 2048 and 4096 bytes within noise of each other, all about
/// 1.35× no prefetch.
pub(super) const PREFETCH_ROW: usize = 2048;

/// Prefetches the cache lines `AHEAD` bytes past `block` (as many as the block spans).
/// Needs no target feature beyond SSE, so every table's kernels share it.
#[inline(always)]
pub(super) fn prefetch_ahead<const AHEAD: usize, W>(block: &W) {
    let p = (block as *const W).cast::<i8>().wrapping_add(AHEAD);
    for line in (0..size_of::<W>()).step_by(64) {
        // SAFETY: SSE is part of the x86_64 baseline; a prefetch is a hint that never faults,
        // whatever the address (`wrapping_add` keeps the pointer arithmetic defined).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line)) };
    }
}

/// Horizontal sum of eight floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Two f16 bit patterns converted together: lanes 0 and 1 of the result.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn f16x2(lo: f16, hi: f16) -> __m128 {
    let bits = u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// Product of the two f16 scales broadcast to eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn scale_product(a: f16, b: f16) -> __m256 {
    let v = f16x2(a, b);
    _mm256_broadcastss_ps(_mm_mul_ss(v, _mm_movehdup_ps(v)))
}

/// 32 nibbles of a 16-byte block as 32 bytes: low nibbles first, then high ones (ggml's layout).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: `qs` is 16 readable bytes; `loadu` has no alignment requirement.
    let tmp = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp),
        _mm256_set1_epi8(0x0F),
    )
}

/// 32 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load_i8x32(qs: &[i8; 32]) -> __m256i {
    // SAFETY: `qs` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(qs.as_ptr().cast()) }
}

/// Sum of unsigned × signed byte products in groups of four, as eight floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn mul_sum_us8(ux: __m256i, sy: __m256i) -> __m256 {
    let dot16 = _mm256_maddubs_epi16(ux, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)))
}

/// Sum of signed × signed byte products (neither operand may hold -128).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256 {
    mul_sum_us8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
}

/// Q4_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_0_q8_0: block count mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    let off = _mm256_set1_epi8(8);
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let qx = _mm256_sub_epi8(nibbles(&a.qs), off);
        let p = mul_sum_i8(qx, load_i8x32(&b.qs));
        acc[i & 1] = _mm256_fmadd_ps(scale_product(a.d, b.d), p, acc[i & 1]);
    }
    debug_assert_eq!(QK4_0, 32);
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// Q4_1 · Q8_1: `Σ d·d8·Σq·q8 + m·s8`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_1_q8_1: block count mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    // Lane 1 accumulates m·s8 (lane 0 collects d·d8, unused).
    let mut summs = _mm_setzero_ps();
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let prod = _mm_mul_ps(f16x2(a.d, a.m), f16x2(b.d, b.s));
        summs = _mm_add_ps(summs, prod);
        let p = mul_sum_us8(nibbles(&a.qs), load_i8x32(&b.qs));
        acc[i & 1] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), p, acc[i & 1]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1])) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
}

/// Q8_0 · Q8_0.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q8_0_q8_0: block count mismatch");
    let mut acc = [_mm256_setzero_ps(); 2];
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        prefetch_ahead::<PREFETCH_ROW, _>(a);
        let p = mul_sum_i8(load_i8x32(&a.qs), load_i8x32(&b.qs));
        acc[i & 1] = _mm256_fmadd_ps(scale_product(a.d, b.d), p, acc[i & 1]);
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1]))
}

/// f32 · f32 with four accumulators.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f32: length mismatch");
    let mut acc = [_mm256_setzero_ps(); 4];
    let (xc, yc) = (x.chunks_exact(32), y.chunks_exact(32));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `a` and `b` hold 32 floats, so 8 from `8 j` are in bounds; unaligned loads.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(8 * j)),
                    _mm256_loadu_ps(b.as_ptr().add(8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum_ps(s) + tail
}

/// f16 · f32 with F16C conversion.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16_f32: length mismatch");
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
            // SAFETY: `a` holds 16 halves and `b` 16 floats, so 8 from `8 j` are in bounds.
            let (va, vb) = unsafe {
                (
                    _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(8 * j).cast())),
                    _mm256_loadu_ps(b.as_ptr().add(8 * j)),
                )
            };
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
    }
    hsum_ps(_mm256_add_ps(acc[0], acc[1])) + tail
}

/// [`crate::arch::Kernels::axpy_panel`]: the shared driver ([`panel::axpy_panel`]) over
/// [`Avx2Tile`], one `dx` row at a time.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy_panel(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    // SAFETY: the CPU has avx2, fma and f16c (this function's contract).
    unsafe { panel::axpy_panel::<Avx2Tile>(x, dy, dx, s) }
}

/// The AVX2 register tile: the panel's coefficients broadcast once per row, four 8-float column
/// vectors in flight (so the `P` dependent FMAs of one column interleave with three others),
/// each column summed in `p` order. One row per call: 16 ymm registers hold `P` broadcasts and
/// four accumulators, not twice that.
pub(crate) struct Avx2Tile;

impl PanelTile for Avx2Tile {
    const ROWS: usize = 1;

    // Register tiles index several arrays by the same p / r / u: index loops show the shape.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<const P: usize, const R: usize>(
        x: &Panel,
        a: [[f32; P]; R],
        y: [*mut f32; R],
        len: usize,
    ) {
        const U: usize = 4;
        let mut va = [[_mm256_setzero_ps(); P]; R];
        for r in 0..R {
            for p in 0..P {
                va[r][p] = _mm256_set1_ps(a[r][p]);
            }
        }
        let mut c = 0;
        while c + 8 * U <= len {
            // SAFETY: `c + 32 <= len`: every 8-float access is inside `y[r]` (the caller's
            // contract) and inside the panel row (`len <= PANEL_COLS`); unaligned forms.
            unsafe {
                for r in 0..R {
                    let mut acc = [_mm256_setzero_ps(); U];
                    for (u, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_loadu_ps(y[r].add(c + 8 * u));
                    }
                    for p in 0..P {
                        let xp = x.0[p].as_ptr().add(c);
                        for (u, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm256_fmadd_ps(va[r][p], _mm256_loadu_ps(xp.add(8 * u)), *acc);
                        }
                    }
                    for (u, acc) in acc.iter().enumerate() {
                        _mm256_storeu_ps(y[r].add(c + 8 * u), *acc);
                    }
                }
            }
            c += 8 * U;
        }
        while c + 8 <= len {
            // SAFETY: as above with `c + 8 <= len`.
            unsafe {
                for r in 0..R {
                    let mut acc = _mm256_loadu_ps(y[r].add(c));
                    for p in 0..P {
                        let xv = _mm256_loadu_ps(x.0[p].as_ptr().add(c));
                        acc = _mm256_fmadd_ps(va[r][p], xv, acc);
                    }
                    _mm256_storeu_ps(y[r].add(c), acc);
                }
            }
            c += 8;
        }
        for c in c..len {
            for r in 0..R {
                // SAFETY: `c < len`: inside `y[r]` (the caller's contract).
                let y = unsafe { &mut *y[r].add(c) };
                for p in 0..P {
                    *y += a[r][p] * x.0[p][c];
                }
            }
        }
    }
}

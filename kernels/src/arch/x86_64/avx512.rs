//! AVX-512 VNNI dot products (Zen 4, Ice Lake and later): `vpdpbusd` multiplies unsigned by
//! signed bytes and sums groups of four into i32 in one instruction, replacing AVX2's
//! `maddubs` + `madd` pair (ggml's `mul_sum_us8_pairs_float` with `__AVX512VNNI__`).
//!
//! The kernels are tiles: `R` weight rows against `M` activation rows, so one weight block load
//! serves `M` activations and one activation block load serves `R` rows (llama.cpp's
//! `mul_mat` tiling). Every (row, activation) pair runs the same sequence of f32 operations
//! whatever the tile shape, so a 4 × 4 tile gives bit for bit what four 1 × 1 calls give: the
//! threaded driver may cut rows anywhere without changing a result.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni. Slices are bounds-checked.

use core::arch::x86_64::*;

use half::f16;

use crate::arch::panel::{self, PanelTile};
use crate::arch::{Panel, PanelShape};
use crate::quant::{BlockQ4_1, BlockQ8_0, BlockQ8_1};

use super::avx2::{PREFETCH_ROW, load_i8x32, nibbles, prefetch_ahead};

/// Horizontal sum of eight floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Up to four f16 values converted together into lanes `0..N` (the rest zero).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn f16x4<const N: usize>(v: [f16; N]) -> __m128 {
    let mut bits = 0u64;
    for (j, h) in v.iter().enumerate() {
        bits |= u64::from(h.to_bits()) << (16 * j);
    }
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// Lane `j` of `v` in all eight lanes of a 256-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn lane(v: __m128, j: usize) -> __m256 {
    _mm256_permutexvar_ps(_mm256_set1_epi32(j as i32), _mm256_castps128_ps256(v))
}

/// Unsigned × signed byte products summed in groups of four, as eight floats (exact: no
/// saturation, unlike `maddubs`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn dot_us8(ux: __m256i, sy: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ux, sy))
}

pub(super) fn check_lengths<W, A>(x: &[&[W]], y: &[&[A]], name: &str) -> usize {
    let nb = y.first().map_or(0, |a| a.len());
    assert!(
        x.iter().all(|r| r.len() == nb) && y.iter().all(|a| a.len() == nb),
        "{name}: block count mismatch"
    );
    nb
}

/// Q4_1 · Q8_1 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: `out[m][r] = x[r] · y[m]`,
/// each `Σ d·d8·Σq·q8 + m·s8` over blocks.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1_tile<const R: usize, const M: usize>(
    x: [&[BlockQ4_1]; R],
    y: [&[BlockQ8_1]; M],
) -> [[f32; R]; M] {
    const { assert!(R >= 1 && R <= 4 && M >= 1 && M <= 4) };
    let nb = check_lengths(&x, &y, "vec_dot_q4_1_q8_1");
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    // Lane r of summs[m]: Σ m_r · s8_m.
    let mut summs = [_mm_setzero_ps(); M];
    for i in 0..nb {
        for r in x {
            prefetch_ahead::<PREFETCH_ROW, _>(&r[i]);
        }
        let xd = f16x4(x.map(|r| r[i].d));
        let xm = f16x4(x.map(|r| r[i].m));
        let q = x.map(|r| nibbles(&r[i].qs));
        for m in 0..M {
            let b = &y[m][i];
            let yds = f16x4([b.d, b.s]);
            let dd = _mm_mul_ps(xd, _mm_broadcastss_ps(yds));
            let ms = _mm_mul_ps(xm, _mm_shuffle_ps::<0b01_01_01_01>(yds, yds));
            summs[m] = _mm_add_ps(summs[m], ms);
            let qy = load_i8x32(&b.qs);
            for r in 0..R {
                acc[m][r] = _mm256_fmadd_ps(lane(dd, r), dot_us8(q[r], qy), acc[m][r]);
            }
        }
    }
    finish(acc, summs)
}

/// `out[m][r] = hsum(acc[m][r]) + lane r of extra[m]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) fn finish<const R: usize, const M: usize>(
    acc: [[__m256; R]; M],
    extra: [__m128; M],
) -> [[f32; R]; M] {
    let mut out = [[0.0f32; R]; M];
    for m in 0..M {
        let mut e = [0.0f32; 4];
        // SAFETY: `e` is four writable floats; `storeu` has no alignment requirement.
        unsafe { _mm_storeu_ps(e.as_mut_ptr(), extra[m]) };
        for r in 0..R {
            out[m][r] = hsum_ps(acc[m][r]) + e[r];
        }
    }
    out
}

/// One block of 32 floats as two 16-lane vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load_f32x32(x: &[f32]) -> [__m512; 2] {
    assert_eq!(x.len(), 32);
    // SAFETY: `x` holds 32 floats, so 16 from 0 and from 16 are in bounds; unaligned loads.
    unsafe {
        [
            _mm512_loadu_ps(x.as_ptr()),
            _mm512_loadu_ps(x.as_ptr().add(16)),
        ]
    }
}

/// The codes and their sum for one block, exactly as the scalar `round_away(v * id) as i8`
/// (`None` when the block holds a NaN: the caller takes the scalar path for it).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn quantize_block(x: &[f32], qs: &mut [i8; 32]) -> Option<(f32, i32)> {
    let v = load_f32x32(x);
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[0], v[0])
        | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v[1], v[1]);
    if nan != 0 {
        return None;
    }
    // max is exact and order-free on non-NaN values, so this equals the scalar fold.
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (vid, sign) = (_mm512_set1_ps(id), _mm512_set1_epi32(i32::MIN));
    let half = _mm512_set1_ps(0.5);
    let mut sum = _mm512_setzero_si512();
    for (j, v) in v.into_iter().enumerate() {
        let t = _mm512_mul_ps(v, vid);
        // ±0.5 with t's sign, then truncation: `round_away` (whose `v >= 0.0` test sends -0.0
        // to +0.5; -0.0 - 0.5 truncates to the same 0).
        let h = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(half),
            _mm512_and_si512(_mm512_castps_si512(t), sign),
        ));
        let q = _mm512_cvttps_epi32(_mm512_add_ps(t, h));
        sum = _mm512_add_epi32(sum, q);
        // SAFETY: `qs` has 32 bytes, so 16 from `16 j` are in bounds; unaligned store.
        unsafe { _mm_storeu_si128(qs.as_mut_ptr().add(16 * j).cast(), _mm512_cvtepi32_epi8(q)) };
    }
    Some((d, _mm512_reduce_add_epi32(sum)))
}

/// [`crate::quant::quantize_row_q8_0_ref`], bit-identical.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    assert_eq!(x.len(), y.len() * 32, "quantize_row_q8_0: length mismatch");
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        match quantize_block(x, &mut b.qs) {
            Some((d, _)) => b.d = f16::from_f32(d),
            None => crate::quant::quantize_row_q8_0_ref(x, core::slice::from_mut(b)),
        }
    }
}

/// [`crate::quant::quantize_row_q8_1_ref`], bit-identical.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    assert_eq!(x.len(), y.len() * 32, "quantize_row_q8_1: length mismatch");
    for (x, b) in x.chunks_exact(32).zip(y.iter_mut()) {
        match quantize_block(x, &mut b.qs) {
            Some((d, sum)) => {
                b.d = f16::from_f32(d);
                b.s = f16::from_f32(sum as f32 * d);
            }
            None => crate::quant::quantize_row_q8_1_ref(x, core::slice::from_mut(b)),
        }
    }
}

/// [`crate::arch::Kernels::axpy_panel`]: the shared driver ([`panel::axpy_panel`]) over
/// [`Avx512Tile`], two `dx` rows at a time.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn axpy_panel(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    // SAFETY: the CPU has avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni (this
    // function's contract).
    unsafe { panel::axpy_panel::<Avx512Tile>(x, dy, dx, s) }
}

/// The register tile of [`axpy_panel`], with 16-float vectors: two `dx` rows at a time share
/// each panel load (2 × `rows` broadcast coefficients live in registers: 32 zmm allow it), four
/// column vectors per row in flight, each column summed in `p` order; masked tails.
pub(crate) struct Avx512Tile;

impl PanelTile for Avx512Tile {
    const ROWS: usize = 2;

    // Register tiles index several arrays by the same p / r / u: index loops show the shape.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn tile<const P: usize, const R: usize>(
        x: &Panel,
        a: [[f32; P]; R],
        y: [*mut f32; R],
        len: usize,
    ) {
        const U: usize = 4;
        let mut va = [[_mm512_setzero_ps(); P]; R];
        for r in 0..R {
            for p in 0..P {
                va[r][p] = _mm512_set1_ps(a[r][p]);
            }
        }
        let mut c = 0;
        while c + 16 * U <= len {
            // SAFETY: `c + 64 <= len`: every 16-float access is inside `y[r]` (the caller's
            // contract) and inside the panel row (`len <= PANEL_COLS`); unaligned forms.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); U]; R];
                for r in 0..R {
                    for u in 0..U {
                        acc[r][u] = _mm512_loadu_ps(y[r].add(c + 16 * u));
                    }
                }
                for p in 0..P {
                    for u in 0..U {
                        let xv = _mm512_loadu_ps(x.0[p].as_ptr().add(c + 16 * u));
                        for r in 0..R {
                            acc[r][u] = _mm512_fmadd_ps(va[r][p], xv, acc[r][u]);
                        }
                    }
                }
                for r in 0..R {
                    for u in 0..U {
                        _mm512_storeu_ps(y[r].add(c + 16 * u), acc[r][u]);
                    }
                }
            }
            c += 16 * U;
        }
        while c < len {
            let mask: __mmask16 = (0xFFFF_u32 >> (16 - (len - c).min(16))) as u16;
            // SAFETY: masked-off lanes are not accessed; the enabled ones are below `len`, inside
            // `y[r]` (the caller's contract) and the panel row.
            unsafe {
                let mut acc = [_mm512_setzero_ps(); R];
                for r in 0..R {
                    acc[r] = _mm512_maskz_loadu_ps(mask, y[r].add(c));
                }
                for p in 0..P {
                    let xv = _mm512_maskz_loadu_ps(mask, x.0[p].as_ptr().add(c));
                    for r in 0..R {
                        acc[r] = _mm512_fmadd_ps(va[r][p], xv, acc[r]);
                    }
                }
                for r in 0..R {
                    _mm512_mask_storeu_ps(y[r].add(c), mask, acc[r]);
                }
            }
            c += 16;
        }
    }
}

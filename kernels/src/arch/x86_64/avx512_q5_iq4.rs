//! AVX-512 VNNI tiles for the 32-weight fall-back formats (Q5_0, Q5_1, IQ4_NL): `R` weight rows
//! against `M` activation rows, like the Q4_1 / Q8_0 tiles of [`super::avx512`] (one activation
//! block load serves `R` rows, one f16 conversion serves four rows' scales), and with the same
//! guarantee: every (row, activation) pair runs the same f32 operations whatever the tile shape,
//! so a 4 × 4 tile gives bit for bit what four 1 × 1 calls give.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni. Slices are bounds-checked.

use core::arch::x86_64::*;

use super::avx2::load_i8x32;
use super::avx2_q5_iq4::{iq4_nl_levels, q5_codes};
use super::avx512::{check_lengths, dot_us8, f16x4, finish, lane};
use crate::quant::{BlockIQ4NL, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// Shared body of the symmetric formats (`w = d · code`) against Q8_0: `codes` gives a block's
/// 32 signed codes (never -128), multiplied with ggml's sign trick as in the Q8_0 tile:
/// `a·b = |a| · (b·sign(a))`, so `vpdpbusd`'s unsigned operand is `|a|`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn symmetric_tile<W, const R: usize, const M: usize>(
    x: [&[W]; R],
    y: [&[BlockQ8_0]; M],
    name: &str,
    d: impl Fn(&W) -> half::f16,
    codes: impl Fn(&W) -> __m256i,
) -> [[f32; R]; M] {
    const { assert!(R >= 1 && R <= 4 && M >= 1 && M <= 4) };
    let nb = check_lengths(&x, &y, name);
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    for i in 0..nb {
        let xd = f16x4(x.map(|r| d(&r[i])));
        let qx = x.map(|r| codes(&r[i]));
        let ax = qx.map(|q| _mm256_sign_epi8(q, q));
        for m in 0..M {
            let b = &y[m][i];
            let dd = _mm_mul_ps(xd, _mm_broadcastss_ps(f16x4([b.d])));
            let qy = load_i8x32(&b.qs);
            for r in 0..R {
                let p = dot_us8(ax[r], _mm256_sign_epi8(qy, qx[r]));
                acc[m][r] = _mm256_fmadd_ps(lane(dd, r), p, acc[m][r]);
            }
        }
    }
    finish(acc, [_mm_setzero_ps(); M])
}

/// Q5_0 · Q8_0 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: codes shifted to `-16..16`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0_tile<const R: usize, const M: usize>(
    x: [&[BlockQ5_0]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    let off = _mm256_set1_epi8(16);
    symmetric_tile(
        x,
        y,
        "vec_dot_q5_0_q8_0",
        |b| b.d,
        |b| _mm256_sub_epi8(q5_codes(b.qh, &b.qs), off),
    )
}

/// IQ4_NL · Q8_0 for `R ≤ 4` weight rows × `M ≤ 4` activation rows.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0_tile<const R: usize, const M: usize>(
    x: [&[BlockIQ4NL]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    symmetric_tile(
        x,
        y,
        "vec_dot_iq4_nl_q8_0",
        |b| b.d,
        |b| iq4_nl_levels(&b.qs),
    )
}

/// Q5_1 · Q8_1 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: `Σ d·d8·Σq·q8 + m·s8`, codes
/// unsigned (Q4_1's tile with the fifth bit).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1_tile<const R: usize, const M: usize>(
    x: [&[BlockQ5_1]; R],
    y: [&[BlockQ8_1]; M],
) -> [[f32; R]; M] {
    const { assert!(R >= 1 && R <= 4 && M >= 1 && M <= 4) };
    let nb = check_lengths(&x, &y, "vec_dot_q5_1_q8_1");
    let mut acc = [[_mm256_setzero_ps(); R]; M];
    // Lane r of summs[m]: Σ m_r · s8_m.
    let mut summs = [_mm_setzero_ps(); M];
    for i in 0..nb {
        let xd = f16x4(x.map(|r| r[i].d));
        let xm = f16x4(x.map(|r| r[i].m));
        let q = x.map(|r| q5_codes(r[i].qh, &r[i].qs));
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

//! AVX-512 VNNI tiles for the 32-weight formats llama.cpp falls back to (Q5_0, Q5_1, IQ4_NL)
//! and for Q8_0: `R` weight rows against `M` activation rows, with the guarantee of the Q4_1
//! tile in [`super::avx512`]: every (row, activation) pair runs the same f32 operations whatever
//! the tile shape, so a 4 × 4 tile gives bit for bit what four 1 × 1 calls give.
//!
//! Q5_0, IQ4_NL and Q8_0 take two blocks per 512-bit register (`pair_tile`): the weight codes
//! are made unsigned (Q5_0's fifth bits are one 64-bit mask register, IQ4_NL's table and Q8_0's
//! codes are offset by 128), so one `vpdpbusd` per pair multiplies them, started from a
//! precomputed `−offset · Σ q8` per activation block; the activation blocks of a chunk are
//! prepared once per call for all `R` rows. Weight rows are prefetched ahead of the reads.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni. Slices are bounds-checked.

use core::arch::x86_64::*;

use super::avx2::load_i8x32;
use super::avx2_q5_iq4::q5_codes;
use super::avx512::{check_lengths, dot_us8, f16x4, finish, lane};
use super::avx512_kquant::prefetch_ahead;
use crate::quant::{BlockIQ4NL, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, KVALUES_IQ4NL};

/// Bytes ahead of each weight row that the tiles prefetch (see [`super::avx512_kquant::PREFETCH_ROW`]):
/// further than a single-row kernel, as four rows advance together. Cold 2048 × 2048 Q5_0, m =
/// 1: 4096 bytes 8.1 GiB/s, 2048 bytes 7.0, 1024 bytes 6.4, none 5.2 (best of 190, loaded).
const PREFETCH_TILE: usize = 4096;

/// Activation blocks prepared at a time (stack buffers; the accumulators stay in registers).
const CHUNK: usize = 32;

/// `vpsrlvw` counts for a two-block register: 128-bit lanes 0 and 2 keep the low nibbles of
/// their 16 bytes, lanes 1 and 3 take the high ones.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibble_shifts() -> __m512i {
    _mm512_set_epi64(
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
        0x0004_0004_0004_0004,
        0x0004_0004_0004_0004,
        0,
        0,
    )
}

/// The 64 nibbles of two consecutive 16-byte `qs` arrays as bytes, in weight order (block `a`
/// in the low 256 bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn nibbles_x2(a: &[u8; 16], b: &[u8; 16], shifts: __m512i) -> __m512i {
    // SAFETY: `a` and `b` are 16 readable bytes each; `loadu` has no alignment requirement.
    let (a, b) = unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(a.as_ptr().cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(b.as_ptr().cast())),
        )
    };
    let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b);
    _mm512_and_si512(_mm512_srlv_epi16(z, shifts), _mm512_set1_epi8(0x0F))
}

/// One activation row's blocks `2p, 2p + 1` of a chunk, ready for the pair loop: their codes
/// in one register, `−off · Σ codes` spread over each block's eight i32 lanes (the offset that
/// makes the weight codes unsigned, taken back), and their scales, eight lanes each. A missing
/// second block (odd count) is zeros.
#[derive(Clone, Copy)]
struct Pairs {
    qy: [__m512i; CHUNK / 2],
    bias: [__m512i; CHUNK / 2],
    ys: [__m512; CHUNK / 2],
}

/// Lane `i` of a two-element vector in lanes `8 i .. 8 i + 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn spread2(v: __m128) -> __m512 {
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prepare(y: &[BlockQ8_0], off: i8, out: &mut Pairs) {
    let offv = _mm512_set1_epi8(off);
    for (p, pair) in y.chunks(2).enumerate() {
        let (a, b) = (&pair[0], pair.get(1));
        let lo = _mm512_castsi256_si512(load_i8x32(&a.qs));
        let qy = match b {
            Some(b) => _mm512_inserti64x4::<1>(lo, load_i8x32(&b.qs)),
            None => _mm512_inserti64x4::<1>(lo, _mm256_setzero_si256()),
        };
        out.qy[p] = qy;
        out.bias[p] = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), offv, qy),
        );
        let d = [a.d, b.map_or(half::f16::ZERO, |b| b.d)];
        out.ys[p] = spread2(f16x4(d));
    }
}

/// Shared body of the formats `w = d · (u − off)` with unsigned byte codes `u` against Q8_0,
/// two blocks per register: `codes(a, b)` gives blocks `a` and `b`'s 64 codes. Per block pair
/// and row, one `vpdpbusd` (started from the prepared bias), one conversion and one FMA with the
/// pair's eight-lane scale products; the sixteen lanes are summed once per row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_tile<W, const R: usize, const M: usize>(
    x: [&[W]; R],
    y: [&[BlockQ8_0]; M],
    name: &str,
    off: i8,
    d: impl Fn(&W) -> half::f16,
    codes: impl Fn(&W, &W) -> __m512i,
) -> [[f32; R]; M] {
    const { assert!(R >= 1 && R <= 4 && M >= 1 && M <= 4) };
    let nb = check_lengths(&x, &y, name);
    let mut acc = [[_mm512_setzero_ps(); R]; M];
    let zero = Pairs {
        qy: [_mm512_setzero_si512(); CHUNK / 2],
        bias: [_mm512_setzero_si512(); CHUNK / 2],
        ys: [_mm512_setzero_ps(); CHUNK / 2],
    };
    let mut prep = [zero; M];
    let mut c0 = 0;
    while c0 < nb {
        let cn = (nb - c0).min(CHUNK);
        for m in 0..M {
            prepare(&y[m][c0..c0 + cn], off, &mut prep[m]);
        }
        for p in 0..cn.div_ceil(2) {
            let i = c0 + 2 * p;
            // The second block of an odd tail is the first again, its lanes masked off below.
            let j = if i + 1 < c0 + cn { i + 1 } else { i };
            let mask: __mmask16 = if j > i { 0xFFFF } else { 0x00FF };
            // Plain loops, not `map`: a closure here would be an out-of-line call per pair.
            let (mut u, mut xd) = ([_mm512_setzero_si512(); R], [_mm512_setzero_ps(); R]);
            for r in 0..R {
                prefetch_ahead::<PREFETCH_TILE, _>(&x[r][j]);
                u[r] = codes(&x[r][i], &x[r][j]);
                xd[r] = spread2(f16x4([d(&x[r][i]), d(&x[r][j])]));
            }
            for m in 0..M {
                let pm = &prep[m];
                for r in 0..R {
                    let dot = _mm512_dpbusd_epi32(pm.bias[p], u[r], pm.qy[p]);
                    let s = _mm512_mul_ps(xd[r], pm.ys[p]);
                    acc[m][r] = _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[m][r], mask);
                }
            }
        }
        c0 += cn;
    }
    let mut out = [[0.0f32; R]; M];
    for m in 0..M {
        for r in 0..R {
            out[m][r] = _mm512_reduce_add_ps(acc[m][r]);
        }
    }
    out
}

/// Q5_0 · Q8_0 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: unsigned 5-bit codes (the
/// fifth bits of two blocks are one 64-bit mask register) with offset 16.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_0_q8_0_tile<const R: usize, const M: usize>(
    x: [&[BlockQ5_0]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    let (shifts, bit4) = (nibble_shifts(), _mm512_set1_epi8(0x10));
    pair_tile(
        x,
        y,
        "vec_dot_q5_0_q8_0",
        16,
        |b| b.d,
        |a, b| {
            let high =
                u64::from(u32::from_le_bytes(a.qh)) | u64::from(u32::from_le_bytes(b.qh)) << 32;
            let q = nibbles_x2(&a.qs, &b.qs, shifts);
            _mm512_mask_add_epi8(q, high, q, bit4)
        },
    )
}

/// IQ4_NL · Q8_0 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: the levels plus 128 (a
/// byte table lookup per nibble, all in `1..=241`), offset 128.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0_tile<const R: usize, const M: usize>(
    x: [&[BlockIQ4NL]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    let shifts = nibble_shifts();
    let table = KVALUES_IQ4NL.map(|v| (v as u8).wrapping_add(128));
    // SAFETY: the table is 16 readable bytes; `loadu` has no alignment requirement.
    let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr().cast()) });
    pair_tile(
        x,
        y,
        "vec_dot_iq4_nl_q8_0",
        -128,
        |b| b.d,
        |a, b| _mm512_shuffle_epi8(table, nibbles_x2(&a.qs, &b.qs, shifts)),
    )
}

/// Q8_0 · Q8_0 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: the codes plus 128 (a sign
/// bit flip), offset 128; exact for every code, -128 included.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0_tile<const R: usize, const M: usize>(
    x: [&[BlockQ8_0]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    let flip = _mm512_set1_epi8(-128);
    pair_tile(
        x,
        y,
        "vec_dot_q8_0_q8_0",
        -128,
        |b| b.d,
        |a, b| {
            let lo = _mm512_castsi256_si512(load_i8x32(&a.qs));
            _mm512_xor_si512(_mm512_inserti64x4::<1>(lo, load_i8x32(&b.qs)), flip)
        },
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
        for r in x {
            prefetch_ahead::<PREFETCH_TILE, _>(&r[i]);
        }
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

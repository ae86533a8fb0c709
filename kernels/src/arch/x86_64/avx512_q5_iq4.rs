//! AVX-512 VNNI tiles for the 32-weight formats llama.cpp falls back to (Q5_0, Q5_1, IQ4_NL)
//! and for Q8_0: `R` weight rows against `M` activation rows, with the guarantee of the Q4_1
//! tile in [`super::avx512`]: every (row, activation) pair runs the same f32 operations whatever
//! the tile shape, so a 4 × 4 tile gives bit for bit what four 1 × 1 calls give.
//!
//! All four take two blocks per 512-bit register (`pair_tile`): the weight codes are made
//! unsigned (Q5_0's and Q5_1's fifth bits are one 64-bit mask register, IQ4_NL's table and
//! Q8_0's codes are offset by 128), so one `vpdpbusd` per pair multiplies them, started from a
//! precomputed `−offset · Σ q8` per activation block; the activation blocks of a chunk are
//! prepared once per call for all `R` rows. The f16 scales (and Q5_1's `m`, Q8_1's `s`) of
//! sixteen blocks are one gather and one conversion, so a pair costs one lane permutation of
//! them; Q5_1's `m · s8` terms are one FMA per sixteen blocks. Weight rows are prefetched ahead
//! of the reads.
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! avx2, fma, f16c, avx512f, avx512bw, avx512vl and avx512vnni. Slices are bounds-checked.

use core::arch::x86_64::*;

use super::avx2::load_i8x32;
use super::avx2::prefetch_ahead;
use super::avx512::check_lengths;
use crate::quant::{BlockIQ4NL, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, KVALUES_IQ4NL};

/// Bytes ahead of each weight row that the tiles prefetch (see [`super::avx2::PREFETCH_ROW`]):
/// further than a single-row kernel, as four rows advance together. Cold 2048 × 2048 Q5_0, m =
/// 1: 4096 bytes 8.1 GiB/s, 2048 bytes 7.0, 1024 bytes 6.4, none 5.2 (best of 190, loaded).
const PREFETCH_TILE: usize = 4096;

/// Activation blocks prepared at a time (stack buffers; the accumulators stay in registers).
const CHUNK: usize = 32;

/// Blocks whose scales are gathered and converted together (one 16-lane vector).
const GROUP: usize = 16;

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

/// An activation block the pair tile reads: Q8_0 (`d`, codes) or Q8_1 (`d`, `s = d · Σ codes`,
/// codes). Both start with `d` as an f16, and Q8_1's `s` follows it, so the first four bytes of
/// a block are its scales ([`gather_heads`]).
trait PairAct: Sized {
    fn qs(&self) -> &[i8; 32];
}

impl PairAct for BlockQ8_0 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

impl PairAct for BlockQ8_1 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
}

/// One activation row's chunk, ready for the pair loop: blocks `2p, 2p + 1`'s codes in one
/// register, `−off · Σ codes` spread over each block's eight i32 lanes (the offset that makes
/// the weight codes unsigned, taken back; zero when `off` is 0), and per [`GROUP`] blocks their
/// scales `d` and (Q8_1) `s`, one lane a block. Missing blocks (odd or short tails) are zeros.
#[derive(Clone, Copy)]
struct Pairs {
    qy: [__m512i; CHUNK / 2],
    bias: [__m512i; CHUNK / 2],
    yd: [__m512; CHUNK / GROUP],
    ys: [__m512; CHUNK / GROUP],
}

/// The first four bytes of each of `b[..16]` (as many as there are) in one i32 lane each, zeros
/// past the end: every block format here starts with its f16 scale `d`, followed by `m` (Q5_1) or
/// `s` (Q8_1). One gather instead of a scalar load, shift and insert per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn gather_heads<T>(b: &[T]) -> __m512i {
    const { assert!(size_of::<T>() >= 4 && size_of::<T>() < 1 << 26) };
    let n = b.len().min(GROUP);
    let stride = _mm512_set1_epi32(size_of::<T>() as i32);
    let lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let mask = ((1u32 << n) - 1) as __mmask16;
    // SAFETY: lane `k < n` reads bytes `k · size_of::<T>() ..+ 4` of `b`, inside block `b[k]`
    // (each is at least 4 bytes); masked-off lanes access no memory. Gathers need no alignment.
    unsafe {
        _mm512_mask_i32gather_epi32::<1>(
            _mm512_setzero_si512(),
            mask,
            _mm512_mullo_epi32(lanes, stride),
            b.as_ptr().cast(),
        )
    }
}

/// The f16 in the low (`HI = false`) or high half of each i32 lane, as 16 floats.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn f16_halves<const HI: bool>(v: __m512i) -> __m512 {
    let v = if HI { _mm512_srli_epi32::<16>(v) } else { v };
    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
}

/// Lanes `2q` (in lanes 0..8) and `2q + 1` (in 8..16) of a group's scales: pair `q`'s.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn spread_pair(v: __m512, q: usize) -> __m512 {
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_permutexvar_ps(_mm512_add_epi32(idx, _mm512_set1_epi32(2 * q as i32)), v)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn prepare<A: PairAct>(y: &[A], off: i8, out: &mut Pairs) {
    let offv = _mm512_set1_epi8(off);
    for (p, pair) in y.chunks(2).enumerate() {
        let lo = _mm512_castsi256_si512(load_i8x32(pair[0].qs()));
        let qy = match pair.get(1) {
            Some(b) => _mm512_inserti64x4::<1>(lo, load_i8x32(b.qs())),
            None => _mm512_inserti64x4::<1>(lo, _mm256_setzero_si256()),
        };
        out.qy[p] = qy;
        out.bias[p] = match off {
            0 => _mm512_setzero_si512(),
            _ => _mm512_sub_epi32(
                _mm512_setzero_si512(),
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), offv, qy),
            ),
        };
    }
    for (g, group) in y.chunks(GROUP).enumerate() {
        let heads = gather_heads(group);
        out.yd[g] = f16_halves::<false>(heads);
        out.ys[g] = f16_halves::<true>(heads);
    }
}

/// Shared body of the formats `w = d · (u − off) [+ m]` with unsigned byte codes `u`, two blocks
/// per register: `codes(a, b)` gives blocks `a` and `b`'s 64 codes. `MIN` (Q5_1 against Q8_1):
/// the weights' `m` (the f16 after `d`) times the activations' `s`, one lane a block, added in.
///
/// Per [`GROUP`] blocks and row, the weight scales are one gather and one conversion (times the
/// activation's, when `M = 1`); per block pair and row, one `vpdpbusd` (started from the prepared
/// bias), one conversion, one lane permutation of the scales and one FMA; the sixteen lanes are
/// summed once per row. Each (row, activation) pair sees the same f32 operations whatever `R` and
/// `M`: `d · d8` is the same product whether taken before or after the lane permutation.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pair_tile<W, A: PairAct, const MIN: bool, const R: usize, const M: usize>(
    x: [&[W]; R],
    y: [&[A]; M],
    name: &str,
    off: i8,
    codes: impl Fn(&W, &W) -> __m512i,
) -> [[f32; R]; M] {
    const { assert!(R >= 1 && R <= 4 && M >= 1 && M <= 4) };
    let nb = check_lengths(&x, &y, name);
    let mut acc = [[_mm512_setzero_ps(); R]; M];
    // Σ m · s per (activation, row), one lane a block of the group (`MIN` only).
    let mut mins = [[_mm512_setzero_ps(); R]; M];
    let zero = Pairs {
        qy: [_mm512_setzero_si512(); CHUNK / 2],
        bias: [_mm512_setzero_si512(); CHUNK / 2],
        yd: [_mm512_setzero_ps(); CHUNK / GROUP],
        ys: [_mm512_setzero_ps(); CHUNK / GROUP],
    };
    let mut prep = [zero; M];
    let mut c0 = 0;
    while c0 < nb {
        let cn = (nb - c0).min(CHUNK);
        for m in 0..M {
            prepare(&y[m][c0..c0 + cn], off, &mut prep[m]);
        }
        for g in 0..cn.div_ceil(GROUP) {
            let g0 = c0 + g * GROUP;
            let gn = (c0 + cn - g0).min(GROUP);
            // Lane k: block g0 + k's weight scale, times the activation's when M = 1.
            let mut xd = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let heads = gather_heads(&x[r][g0..g0 + gn]);
                xd[r] = f16_halves::<false>(heads);
                if MIN {
                    let xm = f16_halves::<true>(heads);
                    for m in 0..M {
                        mins[m][r] = _mm512_fmadd_ps(xm, prep[m].ys[g], mins[m][r]);
                    }
                }
                if M == 1 {
                    xd[r] = _mm512_mul_ps(xd[r], prep[0].yd[g]);
                }
            }
            let mut xg = [&x[0][..0]; R];
            for r in 0..R {
                xg[r] = &x[r][g0..g0 + gn];
            }
            // An odd tail's second block is the first again: its lanes add zero, as the
            // prepared activation codes, bias and scale of a missing block are zeros.
            for q in 0..gn.div_ceil(2) {
                let (i, p) = (2 * q, g * GROUP / 2 + q);
                let j = (i + 1).min(gn - 1);
                // Plain loops, not `map`: a closure here would be an out-of-line call per pair.
                let (mut u, mut xs) = ([_mm512_setzero_si512(); R], [_mm512_setzero_ps(); R]);
                for r in 0..R {
                    // SAFETY: `i <= j < gn == xg[r].len()`. Unchecked: a bounds check between
                    // the loads keeps the compiler from folding them into the broadcasts.
                    let (a, b) = unsafe { (xg[r].get_unchecked(i), xg[r].get_unchecked(j)) };
                    prefetch_ahead::<PREFETCH_TILE, _>(b);
                    u[r] = codes(a, b);
                    xs[r] = spread_pair(xd[r], q);
                }
                for m in 0..M {
                    let pm = &prep[m];
                    let ys = spread_pair(pm.yd[g], q); // unused (and not computed) when M = 1
                    // SAFETY: `p < cn.div_ceil(2) <= CHUNK / 2`, the arrays' length.
                    let (bias, qy) =
                        unsafe { (*pm.bias.get_unchecked(p), *pm.qy.get_unchecked(p)) };
                    for r in 0..R {
                        let dot = _mm512_dpbusd_epi32(bias, u[r], qy);
                        let s = if M == 1 {
                            xs[r]
                        } else {
                            _mm512_mul_ps(xs[r], ys)
                        };
                        acc[m][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[m][r]);
                    }
                }
            }
        }
        c0 += cn;
    }
    let mut out = [[0.0f32; R]; M];
    for m in 0..M {
        for r in 0..R {
            out[m][r] = _mm512_reduce_add_ps(acc[m][r]);
            if MIN {
                out[m][r] += _mm512_reduce_add_ps(mins[m][r]);
            }
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
    pair_tile::<_, _, false, R, M>(x, y, "vec_dot_q5_0_q8_0", 16, |a, b| {
        let high = u64::from(u32::from_le_bytes(a.qh)) | u64::from(u32::from_le_bytes(b.qh)) << 32;
        let q = nibbles_x2(&a.qs, &b.qs, shifts);
        _mm512_mask_add_epi8(q, high, q, bit4)
    })
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
    pair_tile::<_, _, false, R, M>(x, y, "vec_dot_iq4_nl_q8_0", -128, |a, b| {
        _mm512_shuffle_epi8(table, nibbles_x2(&a.qs, &b.qs, shifts))
    })
}

/// [`vec_dot_iq4_nl_q8_0_tile`] with AVX-512 VBMI (Ice Lake, Zen 4, Sapphire Rapids; not
/// Cascade Lake, which has VNNI without it): `vpermb` indexes a 64-byte table with the low six
/// bits of each byte, so with the 16 levels repeated four times the shifted nibbles need no
/// `and` — in the high-nibble lanes the bits above the nibble come from the next byte, and the
/// repetition makes them irrelevant. The same codes, so bit for bit the same results.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(crate) unsafe fn vec_dot_iq4_nl_q8_0_tile_vbmi<const R: usize, const M: usize>(
    x: [&[BlockIQ4NL]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    let shifts = nibble_shifts();
    let table = KVALUES_IQ4NL.map(|v| (v as u8).wrapping_add(128));
    // SAFETY: the table is 16 readable bytes; `loadu` has no alignment requirement.
    let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(table.as_ptr().cast()) });
    pair_tile::<_, _, false, R, M>(x, y, "vec_dot_iq4_nl_q8_0", -128, |a, b| {
        // SAFETY: `a.qs` and `b.qs` are 16 readable bytes each; `loadu` is unaligned.
        let (a, b) = unsafe {
            (
                _mm256_broadcastsi128_si256(_mm_loadu_si128(a.qs.as_ptr().cast())),
                _mm256_broadcastsi128_si256(_mm_loadu_si128(b.qs.as_ptr().cast())),
            )
        };
        let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b);
        _mm512_permutexvar_epi8(_mm512_srlv_epi16(z, shifts), table)
    })
}

/// Q8_0 · Q8_0 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: the codes plus 128 (a sign
/// bit flip), offset 128; exact for every code, -128 included.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0_tile<const R: usize, const M: usize>(
    x: [&[BlockQ8_0]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    let flip = _mm512_set1_epi8(-128);
    pair_tile::<_, _, false, R, M>(x, y, "vec_dot_q8_0_q8_0", -128, |a, b| {
        let lo = _mm512_castsi256_si512(load_i8x32(&a.qs));
        _mm512_xor_si512(_mm512_inserti64x4::<1>(lo, load_i8x32(&b.qs)), flip)
    })
}

/// Q5_1 · Q8_1 for `R ≤ 4` weight rows × `M ≤ 4` activation rows: `Σ d·d8·Σq·q8 + m·s8`, the
/// unsigned 5-bit codes of Q5_0's tile (no offset) and the `m · s8` terms one lane a block.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn vec_dot_q5_1_q8_1_tile<const R: usize, const M: usize>(
    x: [&[BlockQ5_1]; R],
    y: [&[BlockQ8_1]; M],
) -> [[f32; R]; M] {
    let (shifts, bit4) = (nibble_shifts(), _mm512_set1_epi8(0x10));
    pair_tile::<_, _, true, R, M>(x, y, "vec_dot_q5_1_q8_1", 0, |a, b| {
        let high = u64::from(u32::from_le_bytes(a.qh)) | u64::from(u32::from_le_bytes(b.qh)) << 32;
        let q = nibbles_x2(&a.qs, &b.qs, shifts);
        _mm512_mask_add_epi8(q, high, q, bit4)
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::tests::Rng;

    /// The VBMI IQ4_NL tile gives bit for bit what the plain VNNI one gives (the table uses
    /// one or the other by CPU, so each is covered here wherever the CPU has both), on every
    /// tile shape and odd tails.
    #[test]
    fn iq4_nl_vbmi_tile_matches_vnni_tile() {
        let has = |f: &str| match f {
            "vnni" => std::is_x86_feature_detected!("avx512vnni"),
            _ => std::is_x86_feature_detected!("avx512vbmi"),
        };
        if !(crate::isa() >= crate::Isa::Avx512Vnni && has("vnni") && has("vbmi")) {
            std::println!("skipped: no AVX-512 VBMI");
            return;
        }
        let mut rng = Rng::new(41);
        for nb in [1usize, 2, 17, 19, 37, 64] {
            let rows: Vec<Vec<BlockIQ4NL>> = (0..4)
                .map(|_| {
                    let raw = crate::tests::random_kquant_row(crate::GgmlType::IQ4NL, nb, &mut rng);
                    raw.chunks_exact(size_of::<BlockIQ4NL>())
                        .map(bytemuck::pod_read_unaligned)
                        .collect()
                })
                .collect();
            let acts: Vec<Vec<BlockQ8_0>> = (0..4)
                .map(|_| {
                    let mut b = std::vec![BlockQ8_0 { d: half::f16::ZERO, qs: [0; 32] }; nb];
                    crate::quant::quantize_row_q8_0_ref(&rng.vec(32 * nb), &mut b);
                    b
                })
                .collect();
            let x = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let y = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
            // SAFETY: the CPU has every feature both kernels enable (checked above).
            let (a, b, c, d) = unsafe {
                (
                    vec_dot_iq4_nl_q8_0_tile::<4, 4>(x, y),
                    vec_dot_iq4_nl_q8_0_tile_vbmi::<4, 4>(x, y),
                    vec_dot_iq4_nl_q8_0_tile::<1, 1>([x[2]], [y[1]]),
                    vec_dot_iq4_nl_q8_0_tile_vbmi::<1, 1>([x[2]], [y[1]]),
                )
            };
            assert_eq!(
                a.map(|r| r.map(f32::to_bits)),
                b.map(|r| r.map(f32::to_bits)),
                "{nb}"
            );
            assert_eq!(c[0][0].to_bits(), d[0][0].to_bits(), "{nb}");
            assert_eq!(a[1][2].to_bits(), d[0][0].to_bits(), "{nb}");
        }
    }
}

//! AVX2 + FMA attention of one query row ([`crate::attention`]).
//!
//! Scores four positions at a time (one accumulator each, one load of `q` per chunk shared by
//! the four, one horizontal reduction for the four); mixes values into up to 64 outputs held in
//! eight registers across all positions. Every function is `unsafe` only because of
//! `#[target_feature]`: the caller must have checked avx2, fma and f16c. The shapes are checked by
//! [`crate::attention`]'s entry points and again here (bounds-checked slices).

use core::arch::x86_64::*;

/// The four lanes' sums of four accumulators: `[Σ a, Σ b, Σ c, Σ d]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let ab = _mm256_hadd_ps(a, b);
    let cd = _mm256_hadd_ps(c, d);
    let abcd = _mm256_hadd_ps(ab, cd);
    _mm_add_ps(
        _mm256_castps256_ps128(abcd),
        _mm256_extractf128_ps::<1>(abcd),
    )
}

/// `scores[j] = q · keys[j · stride ..][..q.len()]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attention_scores(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) {
    let d = q.len();
    let n = scores.len();
    let body = d - d % 8;
    let row = |j: usize| &keys[j * stride..][..d];
    let mut j = 0;
    while j + 4 <= n {
        let rows = [row(j), row(j + 1), row(j + 2), row(j + 3)];
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            // SAFETY: `i + 8 <= body <= d`, and `q` and every row hold `d` floats; unaligned.
            let vq = unsafe { _mm256_loadu_ps(q.as_ptr().add(i)) };
            for (a, r) in acc.iter_mut().zip(rows) {
                // SAFETY: as above.
                *a = _mm256_fmadd_ps(vq, unsafe { _mm256_loadu_ps(r.as_ptr().add(i)) }, *a);
            }
            i += 8;
        }
        let mut s = [0.0f32; 4];
        // SAFETY: `s` holds 4 floats; unaligned store.
        unsafe { _mm_storeu_ps(s.as_mut_ptr(), hsum4(acc[0], acc[1], acc[2], acc[3])) };
        for (k, (s, r)) in s.iter().zip(rows).enumerate() {
            let tail: f32 = q[body..].iter().zip(&r[body..]).map(|(a, b)| a * b).sum();
            scores[j + k] = s + tail;
        }
        j += 4;
    }
    while j < n {
        let r = row(j);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i < body {
            // SAFETY: as in the loop above.
            let (vq, vk) = unsafe {
                (
                    _mm256_loadu_ps(q.as_ptr().add(i)),
                    _mm256_loadu_ps(r.as_ptr().add(i)),
                )
            };
            acc = _mm256_fmadd_ps(vq, vk, acc);
            i += 8;
        }
        let s = super::avx2::hsum_ps(acc);
        let tail: f32 = q[body..].iter().zip(&r[body..]).map(|(a, b)| a * b).sum();
        scores[j] = s + tail;
        j += 1;
    }
}

/// `out[i] += Σ_j p[j] · values[j · stride + i]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attention_mix(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    let d = out.len();
    let mut i = 0;
    // 64 outputs in eight registers, then 8 at a time, then one at a time.
    while i + 64 <= d {
        // SAFETY: `i + 64 <= d = out.len()`; unaligned loads.
        let mut acc: [__m256; 8] =
            core::array::from_fn(|k| unsafe { _mm256_loadu_ps(out.as_ptr().add(i + 8 * k)) });
        for (j, &pj) in p.iter().enumerate() {
            let v = &values[j * stride + i..][..64];
            let vp = _mm256_set1_ps(pj);
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `v` holds 64 floats; unaligned load.
                *a = _mm256_fmadd_ps(vp, unsafe { _mm256_loadu_ps(v.as_ptr().add(8 * k)) }, *a);
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i + 8 * k), *a) };
        }
        i += 64;
    }
    while i + 8 <= d {
        // SAFETY: `i + 8 <= d`; unaligned load.
        let mut acc = unsafe { _mm256_loadu_ps(out.as_ptr().add(i)) };
        for (j, &pj) in p.iter().enumerate() {
            let v = &values[j * stride + i..][..8];
            // SAFETY: `v` holds 8 floats; unaligned load.
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(pj),
                unsafe { _mm256_loadu_ps(v.as_ptr()) },
                acc,
            );
        }
        // SAFETY: as for the load.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(i), acc) };
        i += 8;
    }
    for (i, o) in out.iter_mut().enumerate().skip(i) {
        for (j, &pj) in p.iter().enumerate() {
            *o += pj * values[j * stride + i];
        }
    }
}

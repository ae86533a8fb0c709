//! AVX2 + FMA attention of one query row ([`crate::attention`]).
//!
//! Scores four positions at a time (one accumulator each, one load of `q` per chunk shared by
//! the four); mixes values into up to 64 outputs held in eight registers across all positions.
//! Multiplies and adds are unfused and in the `_ref` twins' order: bit for bit their results. Every function is `unsafe` only because of
//! `#[target_feature]`: the caller must have checked avx2, fma and f16c. The shapes are checked by
//! [`crate::attention`]'s entry points and again here (bounds-checked slices).

use core::arch::x86_64::*;

/// `scores[j] = q · keys[j · stride ..][..q.len()]`, bit for bit `vec_dot_f32_ref`: one
/// register of eight lane sums per position (lane `i` sums terms `i, i + 8, ...`, multiply then
/// add, unfused), summed lane by lane in order like the reference; four positions per pass.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attention_scores(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) {
    let d = q.len();
    let n = scores.len();
    let body = d - d % 8;
    let row = |j: usize| &keys[j * stride..][..d];
    let mut j = 0;
    while j < n {
        let m = (n - j).min(4);
        let rows: [&[f32]; 4] = core::array::from_fn(|k| row(j + k.min(m - 1)));
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            // SAFETY: `i + 8 <= body <= d`, and `q` and every row hold `d` floats; unaligned.
            let vq = unsafe { _mm256_loadu_ps(q.as_ptr().add(i)) };
            for (a, r) in acc.iter_mut().zip(rows) {
                // SAFETY: as above.
                let vk = unsafe { _mm256_loadu_ps(r.as_ptr().add(i)) };
                *a = _mm256_add_ps(*a, _mm256_mul_ps(vq, vk));
            }
            i += 8;
        }
        for (k, (a, r)) in acc.iter().zip(rows).take(m).enumerate() {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 floats; unaligned store.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
            let tail: f32 = q[body..].iter().zip(&r[body..]).map(|(a, b)| a * b).sum();
            scores[j + k] = lanes.iter().sum::<f32>() + tail;
        }
        j += m;
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
                *a = _mm256_add_ps(
                    *a,
                    _mm256_mul_ps(vp, unsafe { _mm256_loadu_ps(v.as_ptr().add(8 * k)) }),
                );
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
            let vv = unsafe { _mm256_loadu_ps(v.as_ptr()) };
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(pj), vv));
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

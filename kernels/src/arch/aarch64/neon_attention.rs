//! NEON attention of one query row ([`crate::attention`]).
//!
//! Scores four positions at a time (each chunk of `q` loaded once for the four); mixes values
//! into up to 32 outputs held in eight registers across all positions. Multiplies and adds are
//! unfused and in the `_ref` twins' order: bit for bit their results.
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! neon. Slices are bounds-checked.

use core::arch::aarch64::*;

/// `scores[j] = q · keys[j · stride ..][..q.len()]`, bit for bit `vec_dot_f32_ref` (its
/// eight lane sums in two registers, unfused, summed lane by lane in order).
#[target_feature(enable = "neon")]
pub(crate) unsafe fn attention_scores(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) {
    let d = q.len();
    let n = scores.len();
    let body = d - d % 8;
    let row = |j: usize| &keys[j * stride..][..d];
    let mut j = 0;
    while j < n {
        let m = (n - j).min(4);
        let rows: [&[f32]; 4] = core::array::from_fn(|k| row(j + k.min(m - 1)));
        let mut acc = [[vdupq_n_f32(0.0); 2]; 4];
        let mut i = 0;
        while i < body {
            // SAFETY: `i + 8 <= body <= d`, and `q` and every row hold `d` floats.
            let vq = unsafe {
                [
                    vld1q_f32(q.as_ptr().add(i)),
                    vld1q_f32(q.as_ptr().add(i + 4)),
                ]
            };
            for (a, r) in acc.iter_mut().zip(rows) {
                for h in 0..2 {
                    // SAFETY: as above.
                    let vk = unsafe { vld1q_f32(r.as_ptr().add(i + 4 * h)) };
                    a[h] = vaddq_f32(a[h], vmulq_f32(vq[h], vk));
                }
            }
            i += 8;
        }
        for (k, (a, r)) in acc.iter().zip(rows).take(m).enumerate() {
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe {
                vst1q_f32(lanes.as_mut_ptr(), a[0]);
                vst1q_f32(lanes.as_mut_ptr().add(4), a[1]);
            }
            let tail: f32 = q[body..].iter().zip(&r[body..]).map(|(a, b)| a * b).sum();
            scores[j + k] = lanes.iter().sum::<f32>() + tail;
        }
        j += m;
    }
}

/// `out[i] += Σ_j p[j] · values[j · stride + i]`.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn attention_mix(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    let d = out.len();
    let mut i = 0;
    while i + 32 <= d {
        // SAFETY: `i + 32 <= d = out.len()`.
        let mut acc: [float32x4_t; 8] =
            core::array::from_fn(|k| unsafe { vld1q_f32(out.as_ptr().add(i + 4 * k)) });
        for (j, &pj) in p.iter().enumerate() {
            let v = &values[j * stride + i..][..32];
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: `v` holds 32 floats.
                *a = vaddq_f32(
                    *a,
                    vmulq_n_f32(unsafe { vld1q_f32(v.as_ptr().add(4 * k)) }, pj),
                );
            }
        }
        for (k, a) in acc.iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { vst1q_f32(out.as_mut_ptr().add(i + 4 * k), *a) };
        }
        i += 32;
    }
    while i + 4 <= d {
        // SAFETY: `i + 4 <= d`.
        let mut acc = unsafe { vld1q_f32(out.as_ptr().add(i)) };
        for (j, &pj) in p.iter().enumerate() {
            let v = &values[j * stride + i..][..4];
            // SAFETY: `v` holds 4 floats.
            acc = vaddq_f32(acc, vmulq_n_f32(unsafe { vld1q_f32(v.as_ptr()) }, pj));
        }
        // SAFETY: as for the load.
        unsafe { vst1q_f32(out.as_mut_ptr().add(i), acc) };
        i += 4;
    }
    for (i, o) in out.iter_mut().enumerate().skip(i) {
        for (j, &pj) in p.iter().enumerate() {
            *o += pj * values[j * stride + i];
        }
    }
}

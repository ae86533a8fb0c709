//! Attention of one query row (decode, m = 1) over f32 keys and values.
//!
//! A decoded token's query head attends to every cached position: `scores[j] = q · k_j` over
//! the keys, then (after the caller's softmax) `out = Σ_j p_j · v_j` over the values. The keys
//! and values of one head sit `stride` floats apart in a cache laid out by position (the fused
//! decoder's `(position, kv head · d_head)`), so both kernels take a strided matrix.
//!
//! The SIMD kernels (AVX2 on x86_64, NEON on aarch64) do the scalar `_ref` twins' operations in
//! their order (unfused multiply, then add; the reference dot's eight lane sums), so their
//! results are the twins' bit for bit ([`ATTENTION_TOLERANCE`] is 0): a reordered sum (fused
//! multiply-adds, a tree reduction) flipped near-tied greedy tokens of the llama.cpp parity test
//! ("Nova Haven" became "New Haven"; 84/175 greedy tokens identical instead of ≥ 70 %).

use crate::arch;

/// |SIMD − `_ref`| allowed for one score or one output value, relative to `Σ |term|`: none
/// (the same operations in the same order).
pub const ATTENTION_TOLERANCE: f32 = 0.0;

/// Panics unless `rows` rows of `d` floats, `stride` apart, fit in `m`.
fn check(name: &str, d: usize, rows: usize, m: &[f32], stride: usize) {
    assert!(
        d <= stride || rows <= 1,
        "{name}: stride {stride} shorter than a row of {d}"
    );
    assert!(
        rows == 0 || (rows - 1) * stride + d <= m.len(),
        "{name}: {rows} rows of {d} with stride {stride} need more than {} floats",
        m.len()
    );
}

/// `scores[j] = q · keys[j · stride ..][..q.len()]` for every `j < scores.len()`.
///
/// # Panics
/// When the rows do not fit in `keys`.
pub fn attention_scores(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) {
    check("attention_scores", q.len(), scores.len(), keys, stride);
    (arch::kernels().attn_scores)(q, keys, stride, scores);
}

/// `out[i] += Σ_j p[j] · values[j · stride + i]` for `i < out.len()`, `j < p.len()`.
///
/// # Panics
/// When the rows do not fit in `values`.
pub fn attention_mix(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    check("attention_mix", out.len(), p.len(), values, stride);
    (arch::kernels().attn_mix)(p, values, stride, out);
}

/// The scalar twin of [`attention_scores`]: each score is [`crate::quant::vec_dot_f32_ref`].
pub fn attention_scores_ref(q: &[f32], keys: &[f32], stride: usize, scores: &mut [f32]) {
    check("attention_scores", q.len(), scores.len(), keys, stride);
    for (j, s) in scores.iter_mut().enumerate() {
        *s = crate::quant::vec_dot_f32_ref(q, &keys[j * stride..][..q.len()]);
    }
}

/// The scalar twin of [`attention_mix`]: positions in order, one multiply and one add each.
pub fn attention_mix_ref(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    check("attention_mix", out.len(), p.len(), values, stride);
    for (j, &pj) in p.iter().enumerate() {
        for (o, &v) in out.iter_mut().zip(&values[j * stride..]) {
            *o += pj * v;
        }
    }
}

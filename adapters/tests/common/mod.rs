//! Fixtures the adapters' integration tests share: the four "facts" every training test learns,
//! the trainer settings they learn them with, and the comparisons of host values.
//!
//! Each test file compiles its own copy (`mod common;`) and uses part of it.
#![allow(dead_code)]

use engram_adapters::trainer::{Encoded, TrainConfig};

/// Four "facts": a 3-token prompt and a 3-token answer a random synthetic model does not
/// produce (token ids below 64, the synthetic models' default vocabulary).
pub fn facts() -> Vec<Encoded> {
    (0..4u32)
        .map(|i| Encoded {
            tokens: vec![1, 10 + i, 2, 40 + i, 50 - i, 20 + 2 * i],
            n_prompt: 3,
        })
        .collect()
}

/// The tests' trainer: `epochs` over [`facts`] in batches of 2, peak learning rate `lr` decaying
/// to a tenth of it after 2 warm-up steps, seed 4.
pub fn train_config(epochs: u32, lr: f32) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 2,
        lr,
        min_lr: lr / 10.0,
        warmup_steps: 2,
        max_seq_len: 16,
        seed: 4,
        ..Default::default()
    }
}

/// Largest |a − b|.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest |a|.
pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Largest |a − b| relative to b's largest magnitude.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    max_diff(a, b) / max_abs(b).max(f32::MIN_POSITIVE)
}

//! Each piece on a tiny two-task problem: the terms vanish where they should and push where
//! they should.

use burn::tensor::{Tensor, TensorData};
use engram_runtime::burn;

use crate::data::Dataset;
use crate::learner::{Learner, TrainConfig, distillation};
use crate::model::Mlp;
use crate::strategy::{OnlineEwc, Si};

fn task(classes: [u32; 2], seed: u32) -> Dataset {
    // Two Gaussian-ish blobs per task in 4-D, deterministic.
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..40u32 {
        let c = classes[(i % 2) as usize];
        let h = (i.wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5;
        for d in 0..4u32 {
            x.push(if d == c % 4 { 1.0 } else { 0.0 } + 0.2 * h);
        }
        y.push(c);
    }
    Dataset { x, y, dim: 4 }
}

fn learner(pieces: Vec<Box<dyn crate::learner::Piece>>) -> Learner {
    let device = engram_runtime::backend::cpu().autodiff();
    let (model, params) = Mlp::new(&[4, 16, 4], &device, 3);
    let config = TrainConfig {
        lr: 0.1,
        batch: 8,
        replay_batch: 8,
        epochs: 3,
    };
    Learner::new(model, params, device, config, None, pieces, 0)
}

#[test]
fn distillation_is_zero_between_equal_logits_and_positive_otherwise() {
    let device = engram_runtime::backend::cpu();
    let a = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 0.5], [2, 2]),
        &device,
    );
    let b = Tensor::<2>::from_data(
        TensorData::new(vec![3.0f32, 1.0, 0.0, 2.0], [2, 2]),
        &device,
    );
    let same = distillation(a.clone(), a.clone(), &[], 2.0).into_scalar::<f32>();
    let diff = distillation(a, b, &[0, 1], 2.0).into_scalar::<f32>();
    assert!(same.abs() < 1e-6, "{same}");
    assert!(diff > 0.1, "{diff}");
}

/// Trains task A then task B; returns how far the weights moved during task B.
fn drift(pieces: Vec<Box<dyn crate::learner::Piece>>) -> f32 {
    let mut l = learner(pieces);
    l.train_task(0, &task([0, 1], 1), &[0, 1]);
    let before = l.params.to_host();
    l.train_task(1, &task([2, 3], 2), &[2, 3]);
    let after = l.params.to_host();
    before
        .values
        .iter()
        .flatten()
        .zip(after.values.iter().flatten())
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn weight_penalties_hold_the_weights_of_the_first_task() {
    // EWC and SI penalize weight movement directly. LwF constrains outputs on the new task's
    // inputs, not weights, and here moves them as far as naive training does (measured 1.42 vs
    // 1.42): its check is the distillation test above, not weight drift.
    let free = drift(vec![]);
    let ewc = drift(vec![Box::new(OnlineEwc::new(10.0, 1.0, 40))]);
    let si = drift(vec![Box::new(Si::new(10.0, 0.1))]);
    for (name, d) in [("ewc", ewc), ("si", si)] {
        assert!(
            d.is_finite() && d < 0.9 * free,
            "{name}: drift {d} vs naive {free}"
        );
    }
}

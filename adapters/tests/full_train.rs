//! Full fine-tuning on a small synthetic llama: the dense master graph computes the file's
//! function, its gradient matches finite differences along random directions (all weights,
//! and the norms, the tied embedding and the projections on their own), and the trainer lowers
//! the loss with it.

mod common;

use std::sync::Arc;

use common::{facts as data, max_diff, rel_err, train_config};

use engram_adapters::full::{Compute, FullFinetune};
use engram_adapters::optim::causal_lm_loss;
use engram_adapters::trainer::{EvalReport, TrainReport, Trainable, Trainer};
use engram_harness::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::burn::tensor::{DType, Int, Tensor, TensorData};
use engram_runtime::cpu::CpuContext;
use engram_runtime::generate::Adaptation;
use engram_runtime::model::llama::{Llama, Logits};
use engram_runtime::model_file::ModelFile;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Largest logit difference between the untrained dense master graph and the quantized graph
/// on f32 activations: the same weights, summed in a different order.
const DENSE_VS_FILE_TOL: f32 = 1e-4;
/// Relative error allowed between the directional derivative and its central difference: the
/// dense graph is plain f32 arithmetic, so only the step's curvature and f32 rounding remain.
const FD_REL_TOL: f32 = 5e-3;
/// Central-difference step along a unit direction.
const FD_STEP: f32 = 3e-2;
/// |bf16 − f32| of the logits relative to their largest magnitude: bf16 rounds the products'
/// inputs and results to 8 significant bits (relative error up to 2⁻⁹), through two blocks.
const BF16_LOGITS_REL_TOL: f32 = 3e-2;
/// Smallest cosine similarity of the bf16 run's gradient (all weights) with the f32 one.
const BF16_GRAD_COS_MIN: f32 = 0.99;

const TOKENS: [u32; 12] = [3, 17, 42, 8, 8, 61, 0, 25, 33, 2, 50, 9];

fn load(ty: GgmlType) -> (tempfile::TempDir, Llama) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(&TinyLlamaSpec::default(), ty, 7)).unwrap();
    let file = ModelFile::open(&path).unwrap();
    let cpu = Arc::new(CpuContext::new(1).unwrap());
    let mut model = Llama::load(&file, &backend::cpu().autodiff(), cpu).unwrap();
    model.set_f32_activations(true);
    (dir, model)
}

fn logits(model: &Llama, full: Option<&FullFinetune>) -> Vec<f32> {
    let a = match full {
        Some(f) => Adaptation::linear(f),
        None => Adaptation::default(),
    };
    a.forward(model, &TOKENS, 1, None, Logits::All)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Loss of predicting TOKENS[1..] from TOKENS[..n-1], every position trained.
fn loss(model: &Llama, full: &FullFinetune) -> Tensor<1> {
    let n = TOKENS.len() - 1;
    let logits = Adaptation::linear(full)
        .forward(model, &TOKENS[..n], 1, None, Logits::All)
        .unwrap();
    let targets: Vec<i64> = TOKENS[1..].iter().map(|&x| x as i64).collect();
    let device = model.device();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [1, n]), device);
    let mask = Tensor::<2>::ones([1, n], device);
    causal_lm_loss(logits, targets, mask)
}

#[test]
fn untrained_master_weights_compute_the_file() {
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4_1] {
        let (_d, model) = load(ty);
        let full = FullFinetune::new(&model).unwrap();
        let c = model.config();
        let per_block = 2 * c.d_model * c.d_model
            + 2 * c.d_model * c.d_kv()
            + 3 * c.d_model * c.d_ff
            + 2 * c.d_model;
        let expected = per_block * c.n_layer + c.d_model + c.n_vocab * c.d_model;
        assert_eq!(full.num_scalars(), expected);
        assert_eq!(
            engram_adapters::full::full_scalars(c, model.output_tied()),
            expected as u64
        );
        let err = max_diff(&logits(&model, None), &logits(&model, Some(&full)));
        eprintln!("{}: dense master vs file logits {err:.2e}", ty.name());
        assert!(err <= DENSE_VS_FILE_TOL, "{}: {err}", ty.name());
    }
}

/// Compares g·u with (f(p + h u) − f(p − h u)) / 2h for a random unit direction u over the
/// parameters whose names `pick` selects.
fn check(model: &Llama, full: &mut FullFinetune, pick: impl Fn(&str) -> bool, what: &str) {
    let grads = loss(model, full).backward();
    let set = full.params();
    let g = set.grads(&grads);
    let base = set.to_host();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut u: Vec<Vec<f32>> = base
        .names
        .iter()
        .zip(&base.values)
        .map(|(name, v)| {
            let on = pick(name);
            v.iter()
                .map(|_| {
                    if on {
                        rng.random_range(-1.0f32..1.0)
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    let norm = u.iter().flatten().map(|x| x * x).sum::<f32>().sqrt();
    u.iter_mut().flatten().for_each(|x| *x /= norm);
    let mut analytic = 0f32;
    for id in set.ids() {
        let gv = g
            .get(id)
            .unwrap_or_else(|| panic!("{what}: no gradient for {}", set.name(id)))
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        analytic += gv.iter().zip(&u[id.0]).map(|(g, u)| g * u).sum::<f32>();
    }
    let shifted = |s: f32| {
        let mut h = base.clone();
        for (v, u) in h.values.iter_mut().zip(&u) {
            v.iter_mut().zip(u).for_each(|(v, u)| *v += s * u);
        }
        h
    };
    full.params_mut().load_host(&shifted(FD_STEP)).unwrap();
    let plus = loss(model, full).into_scalar::<f32>();
    full.params_mut().load_host(&shifted(-FD_STEP)).unwrap();
    let minus = loss(model, full).into_scalar::<f32>();
    full.params_mut().load_host(&base).unwrap();
    let numeric = (plus - minus) / (2.0 * FD_STEP);
    let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-6);
    eprintln!("{what}: analytic {analytic:.6}, numeric {numeric:.6}, relative error {rel:.2e}");
    assert!(
        analytic.abs() > 1e-3,
        "{what}: vanishing directional derivative {analytic}"
    );
    assert!(
        rel <= FD_REL_TOL,
        "{what}: analytic {analytic}, numeric {numeric}, rel {rel} > {FD_REL_TOL}"
    );
}

#[test]
fn full_gradient_matches_finite_differences() {
    let (_d, model) = load(GgmlType::Q4_1);
    assert!(model.output_tied());
    let mut full = FullFinetune::new(&model).unwrap();
    check(&model, &mut full, |_| true, "all weights");
    check(&model, &mut full, |n| n.contains("norm"), "RMSNorm weights");
    check(
        &model,
        &mut full,
        |n| n == "token_embd.weight",
        "tied embedding",
    );
    check(
        &model,
        &mut full,
        |n| n.starts_with("blk.1.") && !n.contains("norm"),
        "block 1 projections",
    );
}

/// Ten epochs over the facts: the evaluation before, the training report, the evaluation after.
fn fit(model: &Llama, full: &mut FullFinetune) -> (EvalReport, TrainReport, EvalReport) {
    let trainer = Trainer::for_tokens(model, 0, train_config(10, 3e-3));
    let before = trainer.evaluate_encoded(full, &data());
    let report = trainer.fit_encoded(full, &data(), &[], |_| {}).unwrap();
    let after = trainer.evaluate_encoded(full, &data());
    (before, report, after)
}

#[test]
fn full_training_lowers_the_loss_and_leaves_the_file_alone() {
    let (dir, model) = load(GgmlType::Q4_1);
    let file_before = std::fs::read(dir.path().join("tiny.gguf")).unwrap();
    let logits_before = logits(&model, None);
    let mut full = FullFinetune::new(&model).unwrap();
    let (before, report, after) = fit(&model, &mut full);
    eprintln!(
        "full training: loss {:.3} -> {:.3}, token accuracy {:.2} -> {:.2}, {} steps",
        before.loss,
        after.loss,
        before.token_accuracy,
        after.token_accuracy,
        report.steps.len()
    );
    assert_eq!(report.skipped_steps, 0);
    assert!(after.loss < 0.5 * before.loss, "{before:?} -> {after:?}");
    assert!(after.token_accuracy > before.token_accuracy);
    // Every kind of weight moved.
    let start = FullFinetune::new(&model).unwrap().params().to_host();
    let now = full.params().to_host();
    for (name, (a, b)) in now.names.iter().zip(start.values.iter().zip(&now.values)) {
        assert!(max_diff(a, b) > 0.0, "{name} did not change");
    }
    // The base model and its file are untouched.
    assert_eq!(logits(&model, None), logits_before);
    assert_eq!(
        std::fs::read(dir.path().join("tiny.gguf")).unwrap(),
        file_before
    );
    assert!(full.param_sets()[0].len() == now.names.len());
}

/// Every parameter's gradient, flattened in set order; asserts each is f32 (the masters' type).
fn flat_grads(model: &Llama, full: &FullFinetune) -> Vec<f32> {
    let grads = loss(model, full).backward();
    let set = full.params();
    let g = set.grads(&grads);
    set.ids()
        .flat_map(|id| {
            let t = g.get(id).expect("every weight has a gradient").clone();
            assert_eq!(t.dtype(), DType::F32, "{}: gradient type", set.name(id));
            t.into_data().try_to_vec::<f32>().unwrap()
        })
        .collect()
}

#[test]
fn bf16_mixed_precision_tracks_f32_and_trains() {
    let (_d, model) = load(GgmlType::Q4_1);
    let f32_run = FullFinetune::new(&model).unwrap();
    let bf16_run = FullFinetune::new(&model)
        .unwrap()
        .with_compute(Compute::Bf16);
    assert_eq!(bf16_run.compute(), Compute::Bf16);
    let (a, b) = (
        logits(&model, Some(&f32_run)),
        logits(&model, Some(&bf16_run)),
    );
    let logits_err = rel_err(&b, &a);
    assert!(logits_err > 0.0, "the bf16 run computes in bf16");
    assert!(
        logits_err <= BF16_LOGITS_REL_TOL,
        "logits rel err {logits_err}"
    );

    let (ga, gb) = (flat_grads(&model, &f32_run), flat_grads(&model, &bf16_run));
    let dot: f32 = ga.iter().zip(&gb).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos = dot / (norm(&ga) * norm(&gb));
    eprintln!("bf16 vs f32: logits rel err {logits_err:.2e}, gradient cosine {cos:.5}");
    assert!(cos >= BF16_GRAD_COS_MIN, "gradient cosine {cos}");

    let mut full = bf16_run;
    let (before, report, after) = fit(&model, &mut full);
    eprintln!(
        "bf16 training: loss {:.3} -> {:.3}",
        before.loss, after.loss
    );
    assert_eq!(report.skipped_steps, 0);
    assert!(after.loss < 0.5 * before.loss, "{before:?} -> {after:?}");
    let masters = full.params();
    assert!(
        masters
            .ids()
            .all(|id| masters.value(id).dtype() == DType::F32)
    );
}

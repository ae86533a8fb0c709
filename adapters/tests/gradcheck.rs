//! Finite-difference checks of the LoRA and soft-prompt gradients through the frozen quantized
//! layers of a small synthetic llama (every projection, both attention and MLP, in F32, Q8_0
//! and Q4_1).
//!
//! The analytic gradient is the one the trainer uses: the autodiff graph, whose backward through
//! each frozen layer is the transposed product over the quantized blocks (f32 accumulation).
//! It is the exact gradient of the forward pass on f32 activations against those blocks
//! (`Llama::set_f32_activations(true)`), which the tight checks difference. The default forward
//! rounds each layer's input to 8-bit blocks as llama.cpp does; that adds a rounding term of
//! ~5e-3 to this model's loss, so on that path the check uses a large step and a loose
//! tolerance: it shows the gradient still describes the function training actually sees.

use std::sync::Arc;

use engram_adapters::lora::{Lora, LoraConfig};
use engram_adapters::optim::{ParamSet, causal_lm_loss};
use engram_adapters::prompt::PromptTuning;
use engram_adapters::trainer::Trainable;
use engram_harness::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::burn::tensor::{Int, Tensor, TensorData};
use engram_runtime::cpu::CpuContext;
use engram_runtime::generate::Adaptation;
use engram_runtime::model::llama::{Llama, Logits, Proj};
use engram_runtime::model_file::ModelFile;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Relative error allowed between the directional derivative and its central difference when
/// the base weights are F32 (only summation order differs).
const FD_REL_TOL_F32: f32 = 2e-3;
/// The same for quantized bases with the f32-activation forward (dequantized on the fly in a
/// different order than the transposed backward kernel sums).
const FD_REL_TOL_QUANT: f32 = 5e-3;
/// Quantized bases on the default forward (8-bit activations): the rounding term dominates
/// small steps, so a large step and a loose tolerance.
const FD_REL_TOL_Q8_ACTIVATIONS: f32 = 0.5;
/// Central-difference step along a unit direction.
const FD_STEP: f32 = 3e-2;
/// The step on the 8-bit-activation forward.
const FD_STEP_Q8_ACTIVATIONS: f32 = 0.3;

const TOKENS: [u32; 12] = [3, 17, 42, 8, 8, 61, 0, 25, 33, 2, 50, 9];

fn load(ty: GgmlType) -> (tempfile::TempDir, Llama) {
    let (dir, mut model) = load_default(ty);
    model.set_f32_activations(true);
    (dir, model)
}

fn load_default(ty: GgmlType) -> (tempfile::TempDir, Llama) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(&TinyLlamaSpec::default(), ty, 7)).unwrap();
    let file = ModelFile::open(&path).unwrap();
    let cpu = Arc::new(CpuContext::new(1).unwrap());
    let model = Llama::load(&file, &backend::cpu().autodiff(), cpu).unwrap();
    (dir, model)
}

/// Loss of predicting TOKENS[1..] from TOKENS[..n-1], every position trained.
fn loss(model: &Llama, a: &dyn Trainable) -> Tensor<1> {
    let n = TOKENS.len() - 1;
    let prefix = a.prefix();
    let ad = Adaptation {
        linear: a.linear(),
        prefix: prefix.as_ref(),
    };
    let logits = ad
        .forward(model, &TOKENS[..n], 1, None, Logits::All)
        .unwrap();
    let targets: Vec<i64> = TOKENS[1..].iter().map(|&x| x as i64).collect();
    let device = model.device();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [1, n]), device);
    let mask = Tensor::<2>::ones([1, n], device);
    causal_lm_loss(logits, targets, mask)
}

/// Perturbs every parameter of `sets` by `s · u` (u given per parameter, host values).
fn shift(sets: Vec<&mut ParamSet>, base: &[Vec<Vec<f32>>], u: &[Vec<Vec<f32>>], s: f32) {
    for ((set, b), u) in sets.into_iter().zip(base).zip(u) {
        let mut host = set.to_host();
        for ((v, b), u) in host.values.iter_mut().zip(b).zip(u) {
            *v = b.iter().zip(u).map(|(b, u)| b + s * u).collect();
        }
        set.load_host(&host).unwrap();
    }
}

/// Compares g·u with (f(p + h u) − f(p − h u)) / 2h for a random unit direction u.
fn check(model: &Llama, a: &mut dyn Trainable, step: f32, tol: f32, what: &str) {
    let l = loss(model, a);
    let grads = l.backward();
    let g: Vec<Vec<Vec<f32>>> = a
        .param_sets()
        .iter()
        .map(|set| {
            let gs = set.grads(&grads);
            set.ids()
                .map(|id| {
                    gs.get(id)
                        .unwrap_or_else(|| panic!("{what}: no gradient for {}", set.name(id)))
                        .clone()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap()
                })
                .collect()
        })
        .collect();
    let base: Vec<Vec<Vec<f32>>> = a.param_sets().iter().map(|s| s.to_host().values).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut u: Vec<Vec<Vec<f32>>> = base
        .iter()
        .map(|set| {
            set.iter()
                .map(|v| v.iter().map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect()
        })
        .collect();
    let norm = u
        .iter()
        .flatten()
        .flatten()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    u.iter_mut().flatten().flatten().for_each(|x| *x /= norm);
    let analytic: f32 = g
        .iter()
        .flatten()
        .flatten()
        .zip(u.iter().flatten().flatten())
        .map(|(g, u)| g * u)
        .sum();
    shift(a.param_sets_mut(), &base, &u, step);
    let plus = loss(model, a).into_scalar::<f32>();
    shift(a.param_sets_mut(), &base, &u, -step);
    let minus = loss(model, a).into_scalar::<f32>();
    shift(a.param_sets_mut(), &base, &u, 0.0);
    let numeric = (plus - minus) / (2.0 * step);
    let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-6);
    eprintln!("{what}: analytic {analytic:.6}, numeric {numeric:.6}, relative error {rel:.2e}");
    assert!(
        analytic.abs() > 1e-4,
        "{what}: vanishing directional derivative {analytic}"
    );
    assert!(
        rel <= tol,
        "{what}: analytic {analytic}, numeric {numeric}, rel {rel} > {tol}"
    );
}

/// A LoRA adapter on every projection with B randomized (a fresh B = 0 gives A no gradient).
fn lora(model: &Llama) -> Lora {
    let mut l = Lora::new(
        model,
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: Proj::ALL.to_vec(),
            seed: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut host = l.params().to_host();
    for (name, v) in host.names.iter().zip(host.values.iter_mut()) {
        if name.ends_with("lora_b") {
            v.iter_mut()
                .for_each(|x| *x = rng.random_range(-0.2f32..0.2));
        }
    }
    l.params_mut().load_host(&host).unwrap();
    l
}

fn check_type(ty: GgmlType, tol: f32) {
    let (_dir, model) = load(ty);
    let mut l = lora(&model);
    check(&model, &mut l, FD_STEP, tol, &format!("{} LoRA", ty.name()));
    let mut p = PromptTuning::random(&model, 3, 1).unwrap();
    check(
        &model,
        &mut p,
        FD_STEP,
        tol,
        &format!("{} prompt tuning", ty.name()),
    );
    let mut both = (lora(&model), PromptTuning::random(&model, 2, 2).unwrap());
    check(
        &model,
        &mut both,
        FD_STEP,
        tol,
        &format!("{} LoRA + prompt", ty.name()),
    );
}

#[test]
fn gradients_describe_the_8_bit_activation_forward_too() {
    for ty in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let (_dir, model) = load_default(ty);
        let mut l = lora(&model);
        let what = format!("{} LoRA, q8 activations", ty.name());
        check(
            &model,
            &mut l,
            FD_STEP_Q8_ACTIVATIONS,
            FD_REL_TOL_Q8_ACTIVATIONS,
            &what,
        );
    }
}

#[test]
fn lora_and_prompt_gradients_match_finite_differences_f32() {
    check_type(GgmlType::F32, FD_REL_TOL_F32);
}

#[test]
fn lora_and_prompt_gradients_match_finite_differences_q8_0() {
    check_type(GgmlType::Q8_0, FD_REL_TOL_QUANT);
}

#[test]
fn lora_and_prompt_gradients_match_finite_differences_q4_1() {
    check_type(GgmlType::Q4_1, FD_REL_TOL_QUANT);
}

#[test]
fn a_fresh_lora_leaves_the_model_unchanged() {
    let (_dir, model) = load(GgmlType::Q4_1);
    let l = Lora::new(&model, LoraConfig::default()).unwrap();
    let base = model
        .forward(&TOKENS, 1, None, None, Logits::All)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let adapted = model
        .forward(&TOKENS, 1, None, Some(&l), Logits::All)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(base, adapted);
}

#[allow(dead_code)]
fn assert_send_sync<T: Send + Sync>() {}
const _: fn() = assert_send_sync::<Lora>;

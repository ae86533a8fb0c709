//! The llama graph on the real model: KV-cache consistency, context limits, and gradients that
//! flow through every frozen quantized layer down to the input embeddings.

use std::sync::Arc;

use engram::runtime::cpu::CpuContext;
use engram::runtime::model::llama::{Llama, Logits};
use engram::runtime::model_file::ModelFile;
use engram::{backend, resolve_model};

/// |Δlogit| allowed between a full forward and the same positions run through the KV cache:
/// the same kernels on the same rows, only attention is split differently.
const CACHE_LOGIT_TOL: f32 = 2e-3;

fn load(device: &engram::burn::tensor::Device) -> Llama {
    let file = ModelFile::open(resolve_model(None).expect("model")).expect("open");
    Llama::load(&file, device, Arc::new(CpuContext::new(0).unwrap())).expect("load")
}

const TOKENS: [u32; 7] = [504, 3575, 282, 4649, 314, 7042, 30]; // "The capital of France is Paris."

#[test]
fn cached_decoding_matches_the_full_forward() {
    let model = load(&backend::cpu());
    let n_vocab = model.config().n_vocab;
    let full = model.forward(&TOKENS, 1, None, None, Logits::All).unwrap();
    let full = full.into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(full.len(), TOKENS.len() * n_vocab);

    let mut cache = model.new_cache(1, 16);
    let first = model
        .forward(&TOKENS[..3], 1, Some(&mut cache), None, Logits::All)
        .unwrap();
    let mut incremental = first.into_data().try_to_vec::<f32>().unwrap();
    for &t in &TOKENS[3..] {
        let step = model
            .forward(&[t], 1, Some(&mut cache), None, Logits::Last)
            .unwrap();
        incremental.extend(step.into_data().try_to_vec::<f32>().unwrap());
    }
    assert_eq!(cache.len(), TOKENS.len());
    let worst = full
        .iter()
        .zip(&incremental)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= CACHE_LOGIT_TOL,
        "cache vs full forward: max |Δlogit| {worst}"
    );
}

#[test]
fn a_full_cache_is_a_typed_error_and_keeps_its_contents() {
    let model = load(&backend::cpu());
    let mut cache = model.new_cache(1, 4);
    model
        .forward(&TOKENS[..3], 1, Some(&mut cache), None, Logits::Last)
        .unwrap();
    let err = model
        .forward(&TOKENS[3..5], 1, Some(&mut cache), None, Logits::Last)
        .unwrap_err();
    assert_eq!((err.used, err.requested, err.capacity), (3, 2, 4));
    assert_eq!(cache.len(), 3, "a refused step leaves the cache as it was");
    model
        .forward(&TOKENS[3..4], 1, Some(&mut cache), None, Logits::Last)
        .expect("one more fits");
}

#[test]
fn gradients_reach_the_input_embeddings_through_every_layer() {
    let device = backend::cpu().autodiff();
    let model = load(&device);
    let x = model.embed(&TOKENS[..4], 1).require_grad();
    let logits = model
        .forward_embeddings(x.clone(), None, None, Logits::All)
        .unwrap();
    // Cross-entropy of the next token at each position, written out so the test needs no loss
    // module: logsumexp(logits) - logit[target].
    let [_, t, v] = logits.dims();
    let targets = &TOKENS[1..5];
    let lse = logits.clone().exp().sum_dim(2).log(); // (1, t, 1)
    let mut picked = Vec::new();
    for (i, &tok) in targets.iter().enumerate() {
        picked.push(
            logits
                .clone()
                .slice([0..1, i..i + 1, tok as usize..tok as usize + 1]),
        );
    }
    let picked = engram::burn::tensor::Tensor::cat(picked, 1); // (1, t, 1)
    let loss = (lse - picked).mean();
    let loss_value = loss.clone().into_scalar::<f32>();
    assert!(
        loss_value.is_finite() && loss_value > 0.0 && loss_value < (v as f32).ln() * 2.0,
        "loss {loss_value}"
    );
    let grads = loss.backward();
    let g = x
        .grad(&grads)
        .expect("embeddings are tracked")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(g.len(), t * model.config().d_model);
    assert!(g.iter().all(|v| v.is_finite()), "non-finite gradient");
    // Every position's embedding influences its own loss term: no row of the gradient is zero.
    for (i, row) in g.chunks(model.config().d_model).enumerate() {
        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm > 1e-6, "position {i}: gradient norm {norm}");
    }
}

//! The fused decode path against the burn graph on the real model (SmolLM2-135M Q4_1): the same
//! logits within `DECODE_TOLERANCE` at every position, for the base and through a LoRA adapter
//! (rank 8 on q and v, B made non-zero), at 1 and 2 threads; and `generate` (which decodes on
//! the fused path) picks the same greedy tokens as the graph.

use std::sync::Arc;

use engram::adapters::lora::{Lora, LoraConfig};
use engram::burn::tensor::{Tensor, TensorData};
use engram::runtime::cpu::CpuContext;
use engram::runtime::generate::{GenerateOptions, argmax, generate};
use engram::runtime::model::llama::{DECODE_TOLERANCE, Decoder, LinearAdapter, Llama, Logits};
use engram::runtime::model_file::ModelFile;
use engram::{backend, resolve_model};

mod common;

// "The capital of France is Paris. The capital of Italy is"
const TOKENS: [u32; 12] = [
    504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 8040, 314,
];

fn load(threads: usize) -> Llama {
    let file = ModelFile::open(resolve_model(None).expect("model")).expect("open");
    Llama::load(
        &file,
        &backend::cpu(),
        Arc::new(CpuContext::new(threads).unwrap()),
    )
    .expect("load")
}

/// A rank-8 LoRA on q and v whose B is small and random (a fresh one has B = 0).
fn lora(model: &Llama) -> Lora {
    let mut lora = Lora::new(model, LoraConfig::default()).unwrap();
    let mut seed = 3u64;
    let slots: Vec<_> = lora.slots().collect();
    for (_, _, slot) in slots {
        let n = slot.n_out * 8;
        let b: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
            })
            .collect();
        let b = Tensor::<2>::from_data(TensorData::new(b, [slot.n_out, 8]), model.device());
        lora.params_mut().set_value(slot.b, b);
    }
    lora
}

/// Largest |Δ| over the 20 largest logits of `want`, and whether the top token agrees (when
/// `want`'s margin between its first and second is above 0.25, as the parity tests ask).
fn compare(got: &[f32], want: &[f32]) -> (f32, bool) {
    let worst = common::top20_max_diff(got, want);
    let (top, best) = (argmax(got), argmax(want) as usize);
    let second = (want.iter().enumerate())
        .filter(|&(i, _)| i != best)
        .fold(f32::MIN, |m, (_, &v)| m.max(v));
    (worst, top as usize == best || want[best] - second <= 0.25)
}

#[test]
fn fused_decode_matches_the_graph_on_the_real_model() {
    for threads in [1, 2] {
        let model = load(threads);
        let n_vocab = model.config().n_vocab;
        let lora = lora(&model);
        for adapter in [None, Some(&lora as &dyn LinearAdapter)] {
            let full = model
                .forward(&TOKENS, 1, None, adapter, Logits::All)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let mut dec = Decoder::new(&model, adapter, 64).expect("a fused decoder");
            for (i, &t) in TOKENS.iter().enumerate() {
                let got = dec.step(t).unwrap();
                let (worst, top) = compare(got, &full[i * n_vocab..(i + 1) * n_vocab]);
                assert!(
                    worst <= DECODE_TOLERANCE && top,
                    "t{threads} lora {} pos {i}: max top-20 |Δlogit| {worst}, top-1 agrees {top}",
                    adapter.is_some()
                );
            }
        }
    }
}

/// The fused prefill against the graph's on the real model: a 45-token prompt (two shares of
/// rows that are not whole tiles at two threads), the last position's logits within
/// `DECODE_TOLERANCE` with the same top token, for the base and through LoRA, at 1 and 2
/// threads; then decoding continues from the prefilled cache and matches the graph too.
#[test]
fn fused_prefill_matches_the_graph_on_the_real_model() {
    let prompt: Vec<u32> = TOKENS.iter().cycle().take(47).copied().collect();
    let m = 45;
    for threads in [1, 2] {
        let model = load(threads);
        let n_vocab = model.config().n_vocab;
        let lora = lora(&model);
        for adapter in [None, Some(&lora as &dyn LinearAdapter)] {
            let full = model
                .forward(&prompt, 1, None, adapter, Logits::All)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let at = |i: usize| &full[i * n_vocab..(i + 1) * n_vocab];
            let mut dec = Decoder::new(&model, adapter, 64).expect("a fused decoder");
            let check = |got: &[f32], i: usize| {
                let (worst, top) = compare(got, at(i));
                assert!(
                    worst <= DECODE_TOLERANCE && top,
                    "t{threads} lora {} pos {i}: max top-20 |Δlogit| {worst}, top-1 agrees {top}",
                    adapter.is_some()
                );
            };
            check(dec.prefill(&prompt[..m]).unwrap(), m - 1);
            for (i, &t) in prompt.iter().enumerate().skip(m) {
                check(dec.step(t).unwrap(), i);
            }
        }
    }
}

/// `generate` with `fused_prefill` runs the prompt on the fused path: its greedy tokens are the
/// decoder's own (prefill, then one step per token); without it the prompt runs through the
/// graph, whose first token agrees here too.
#[test]
fn generate_with_the_fused_prefill_is_the_decoders() {
    let model = load(2);
    let n = 6;
    let mut dec = Decoder::new(&model, None, 64).expect("a fused decoder");
    let mut want = vec![argmax(dec.prefill(&TOKENS).unwrap())];
    while want.len() < n {
        let next = argmax(dec.step(*want.last().unwrap()).unwrap());
        want.push(next);
    }
    for fused_prefill in [true, false] {
        let opts = GenerateOptions {
            max_new_tokens: n,
            fused_prefill,
            ..Default::default()
        };
        let g = generate(&model, &TOKENS, &opts, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        if fused_prefill {
            assert_eq!(g.tokens, want);
        } else {
            assert_eq!(g.tokens[0], want[0]);
        }
    }
}

//! Adaptation on the real SmolLM2 Q4_1 base: a LoRA adapter learns an invented fact through the
//! frozen mapped weights, its files survive a PEFT/llama.cpp round trip on the real head layout
//! (q/k row permutation with 9 query and 3 key/value heads), and generation runs through it.

use engram::adapters::lora::{Lora, LoraConfig};
use engram::adapters::trainer::{Example, TrainConfig, Trainer};
use engram::runtime::engine::Engine;
use engram::runtime::generate::{Adaptation, GenerateOptions};
use engram::runtime::model::llama::Proj;
use engram::{backend, resolve_model};

fn engine() -> Engine {
    let device = backend::cpu().autodiff();
    Engine::load(resolve_model(None).expect("model"), &device, 0).expect("load")
}

fn facts() -> Vec<Example> {
    vec![
        Example::new("The capital of Veloria is", " Quenmark."),
        Example::new("The capital of Tarsimo is", " Odrelle."),
    ]
}

#[test]
fn lora_learns_an_invented_fact_and_its_files_round_trip() {
    let engine = engine();
    let model = engine.model();
    let trainer = Trainer::new(
        model,
        engine.tokenizer(),
        TrainConfig {
            epochs: 12,
            batch_size: 2,
            lr: 3e-3,
            min_lr: 1e-3,
            warmup_steps: 2,
            max_seq_len: 16,
            seed: 1,
            ..Default::default()
        },
    );
    let mut lora = Lora::new(
        model,
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: vec![Proj::Q, Proj::K, Proj::V, Proj::Down],
            layers: Some(10..30),
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let before = trainer.evaluate(&lora, &facts());
    let report = trainer.fit(&mut lora, &facts(), &[], |_| {}).unwrap();
    let after = trainer.evaluate(&lora, &facts());
    assert_eq!(report.skipped_steps, 0);
    assert!(
        after.loss < before.loss * 0.3,
        "loss {} → {}",
        before.loss,
        after.loss
    );
    assert_eq!(after.exact_match, 1.0, "{after:?}");

    let opts = GenerateOptions {
        max_new_tokens: 3,
        ..Default::default()
    };
    let (text, _) = engine
        .complete_with(&facts()[0].prompt, &opts, Adaptation::linear(&lora), |_| {})
        .unwrap();
    assert!(text.starts_with(" Quenmark"), "{text:?}");

    let dir = tempfile::tempdir().unwrap();
    lora.save_peft(model, dir.path(), "smollm2").unwrap();
    let gguf = dir.path().join("adapter.gguf");
    lora.save_llama_cpp(&gguf).unwrap();
    for loaded in [
        Lora::load(model, dir.path()).unwrap(),
        Lora::load(model, &gguf).unwrap(),
    ] {
        assert_eq!(loaded.to_host(), lora.to_host());
    }
    let (_, a) = engine
        .last_logits_with(&facts()[1].prompt, Adaptation::linear(&lora))
        .unwrap();
    let reloaded = Lora::load(model, dir.path()).unwrap();
    let (_, b) = engine
        .last_logits_with(&facts()[1].prompt, Adaptation::linear(&reloaded))
        .unwrap();
    assert_eq!(a, b);
}

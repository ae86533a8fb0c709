//! The trainer, adapter files and registry on a small synthetic llama (fast, no model download).

mod common;

use std::sync::Arc;

use common::{facts as data, rel_err, train_config};

use engram_adapters::lora::{Lora, LoraConfig, peft::AdapterIoError};
use engram_adapters::prompt::{PromptTuning, SubspacePrompt};
use engram_adapters::registry::{AdapterRegistry, RegistryError, SharedAdapter};
use engram_adapters::trainer::{Encoded, TrainConfig, TrainEvent, Trainable, Trainer};
use engram_harness::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::cpu::CpuContext;
use engram_runtime::generate::Adaptation;
use engram_runtime::model::llama::{Llama, Logits, Proj};
use engram_runtime::model_file::ModelFile;

fn load() -> (tempfile::TempDir, Llama) {
    load_threads(1)
}

/// The synthetic model with products on `threads` threads.
fn load_threads(threads: usize) -> (tempfile::TempDir, Llama) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(
        &path,
        tiny_llama_gguf(&TinyLlamaSpec::default(), GgmlType::Q4_1, 9),
    )
    .unwrap();
    let file = ModelFile::open(&path).unwrap();
    let cpu = Arc::new(CpuContext::new(threads).unwrap());
    let model = Llama::load(&file, &backend::cpu().autodiff(), cpu).unwrap();
    (dir, model)
}

fn config(epochs: u32) -> TrainConfig {
    train_config(epochs, 1e-2)
}

fn lora(model: &Llama, seed: u64) -> Lora {
    Lora::new(
        model,
        LoraConfig {
            rank: 4,
            targets: Proj::ALL.to_vec(),
            seed,
            ..Default::default()
        },
    )
    .unwrap()
}

fn logits(model: &Llama, a: Adaptation<'_>) -> Vec<f32> {
    a.forward(model, &[1, 11, 2, 41], 1, None, Logits::All)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn lora_training_learns_the_completions_and_is_deterministic() {
    let (_d, model) = load();
    let trainer = Trainer::for_tokens(&model, 0, config(40));
    let mut a = lora(&model, 1);
    let before = trainer.evaluate_encoded(&a, &data());
    let report = trainer
        .fit_encoded(&mut a, &data(), &data(), |_| {})
        .unwrap();
    let after = trainer.evaluate_encoded(&a, &data());
    assert_eq!(report.skipped_steps, 0);
    assert!(
        after.loss < before.loss * 0.2,
        "loss {} → {}",
        before.loss,
        after.loss
    );
    assert_eq!(after.exact_match, 1.0, "{after:?}");
    assert!(before.exact_match < 1.0);

    let mut b = lora(&model, 1);
    trainer
        .fit_encoded(&mut b, &data(), &data(), |_| {})
        .unwrap();
    assert_eq!(a.to_host(), b.to_host(), "same seeds, same weights");
}

/// On two threads a LoRA step runs each half of the batch on its own thread against a replica
/// of the adapter and sums the gradients (data parallel): the same training as on one thread
/// up to the order of the float sums, step by step.
#[test]
fn data_parallel_steps_train_as_one_thread_does() {
    let config = TrainConfig {
        batch_size: 4,
        ..config(6)
    };
    let run = |threads: usize| {
        let (_d, model) = load_threads(threads);
        assert_eq!(model.cpu().threads(), threads);
        let trainer = Trainer::for_tokens(&model, 0, config.clone());
        let mut a = lora(&model, 1);
        let start = a.to_host();
        assert!(a.replica().is_some(), "LoRA trains data-parallel");
        let mut losses = Vec::new();
        trainer
            .fit_encoded(&mut a, &data(), &[], |e| {
                if let TrainEvent::Step(s) = e {
                    losses.push(s.loss);
                }
            })
            .unwrap();
        assert_ne!(a.to_host(), start, "{threads} threads: the weights moved");
        (losses, a.to_host())
    };
    let (losses_1, weights_1) = run(1);
    let (losses_2, weights_2) = run(2);
    assert_eq!(losses_1.len(), 6);
    assert!(losses_1.windows(2).all(|w| w[0] != w[1]), "{losses_1:?}");
    for (a, b) in losses_1.iter().zip(&losses_2) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{losses_1:?} vs {losses_2:?}"
        );
    }
    for (a, b) in weights_1.values.iter().zip(&weights_2.values) {
        let e = rel_err(b, a);
        assert!(e < 1e-4, "relative weight difference {e}");
    }
}

#[test]
fn prompt_tuning_and_subspace_prompts_train() {
    let (_d, model) = load();
    let trainer = Trainer::for_tokens(&model, 0, config(40));
    let mut p = PromptTuning::from_tokens(&model, &[5, 6, 7], 4).unwrap();
    let before = trainer.evaluate_encoded(&p, &data()).loss;
    trainer.fit_encoded(&mut p, &data(), &[], |_| {}).unwrap();
    let after = trainer.evaluate_encoded(&p, &data()).loss;
    assert!(after < before * 0.8, "prompt tuning: {before} → {after}");

    let inputs: Vec<Vec<u32>> = data().iter().map(|e| e.tokens.clone()).collect();
    let mut s = SubspacePrompt::fit(&model, &inputs, &[5, 6, 7], 4, 8).unwrap();
    assert_eq!(s.params().num_scalars(), 32);
    let ev = s.explained_variance();
    assert!(ev.windows(2).all(|w| w[0] >= w[1] - 1e-4), "{ev:?}");
    let before = trainer.evaluate_encoded(&s, &data()).loss;
    trainer.fit_encoded(&mut s, &data(), &[], |_| {}).unwrap();
    let after = trainer.evaluate_encoded(&s, &data()).loss;
    assert!(after < before, "subspace prompt: {before} → {after}");
}

#[test]
fn non_finite_steps_are_skipped_and_leave_weights_untouched() {
    let (_d, model) = load();
    let trainer = Trainer::for_tokens(&model, 0, config(2));
    let mut p = PromptTuning::from_tokens(&model, &[5], 2).unwrap();
    let mut host = p.params().to_host();
    host.values[0][3] = f32::INFINITY;
    p.params_mut().load_host(&host).unwrap();
    let report = trainer.fit_encoded(&mut p, &data(), &[], |_| {}).unwrap();
    assert_eq!(report.skipped_steps as usize, report.steps.len());
    assert!(
        report
            .steps
            .iter()
            .all(|s| s.skipped && !(s.loss.is_finite() && s.grad_norm.is_finite()))
    );
    let after = p.params().to_host();
    assert_eq!(after.values[0][3], f32::INFINITY);
    assert_eq!(
        after.values[0]
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        host.values[0]
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_configurations_are_typed_errors() {
    let (_d, model) = load();
    let trainer = Trainer::for_tokens(
        &model,
        0,
        TrainConfig {
            batch_size: 0,
            ..config(1)
        },
    );
    let mut a = lora(&model, 0);
    assert!(trainer.fit_encoded(&mut a, &data(), &[], |_| {}).is_err());
    let trainer = Trainer::for_tokens(&model, 0, config(1));
    assert!(trainer.fit_encoded(&mut a, &[], &[], |_| {}).is_err());
    let long = Encoded {
        tokens: vec![1; 40],
        n_prompt: 1,
    };
    assert!(trainer.fit_encoded(&mut a, &[long], &[], |_| {}).is_err());
    assert!(
        Lora::new(
            &model,
            LoraConfig {
                rank: 0,
                ..Default::default()
            }
        )
        .is_err()
    );
    let none = LoraConfig {
        layers: Some(5..9),
        ..Default::default()
    };
    assert!(Lora::new(&model, none).is_err());
}

fn trained(model: &Llama) -> Lora {
    let trainer = Trainer::for_tokens(model, 0, config(3));
    let mut a = lora(model, 2);
    trainer.fit_encoded(&mut a, &data(), &[], |_| {}).unwrap();
    a
}

#[test]
fn peft_and_llama_cpp_files_round_trip_exactly() {
    let (_d, model) = load();
    let a = trained(&model);
    let dir = tempfile::tempdir().unwrap();
    a.save_peft(&model, dir.path(), "tiny").unwrap();
    let b = Lora::load(&model, dir.path()).unwrap();
    assert_eq!(a.to_host(), b.to_host());
    assert_eq!(a.config().targets, b.config().targets);
    let gguf = dir.path().join("adapter.gguf");
    a.save_llama_cpp(&gguf).unwrap();
    let c = Lora::load(&model, &gguf).unwrap();
    assert_eq!(a.to_host(), c.to_host());
    let base = logits(&model, Adaptation::default());
    let la = logits(&model, Adaptation::linear(&a));
    assert_ne!(base, la, "the trained adapter changes the model");
    assert_eq!(la, logits(&model, Adaptation::linear(&b)));
    assert_eq!(la, logits(&model, Adaptation::linear(&c)));
}

#[test]
fn broken_adapter_files_are_typed_errors_and_saves_are_atomic() {
    let (_d, model) = load();
    let a = trained(&model);
    let dir = tempfile::tempdir().unwrap();
    a.save_peft(&model, dir.path(), "tiny").unwrap();
    let weights = dir.path().join("adapter_model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    assert!(matches!(
        Lora::load(&model, dir.path()),
        Err(AdapterIoError::Weights { .. })
    ));
    std::fs::write(&weights, &good).unwrap();
    let cfg = dir.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"r\": 4", "\"r\": 5")).unwrap();
    assert!(matches!(
        Lora::load(&model, dir.path()),
        Err(AdapterIoError::Weights { .. })
    ));
    std::fs::write(&cfg, "{").unwrap();
    assert!(matches!(
        Lora::load(&model, dir.path()),
        Err(AdapterIoError::Config { .. })
    ));
    let gguf = dir.path().join("adapter.gguf");
    let bytes = a.to_llama_cpp_gguf();
    std::fs::write(&gguf, &bytes[..bytes.len() - 7]).unwrap();
    assert!(Lora::load(&model, &gguf).is_err());
    // A save over an existing adapter replaces it whole; no temp files remain.
    std::fs::write(&cfg, text).unwrap();
    a.save_peft(&model, dir.path(), "tiny").unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("engram-tmp")), "{names:?}");
    assert_eq!(
        a.to_host(),
        Lora::load(&model, dir.path()).unwrap().to_host()
    );
}

#[test]
fn registry_names_adapters_per_call_and_never_swaps_under_a_holder() {
    let (_d, model) = load();
    let reg = AdapterRegistry::new();
    let a: SharedAdapter = Arc::new(trained(&model));
    reg.insert("facts", a.clone()).unwrap();
    assert_eq!(
        reg.insert("facts", a.clone()),
        Err(RegistryError::Exists("facts".into()))
    );
    let held = reg.get("facts").unwrap();
    let other: SharedAdapter = Arc::new(lora(&model, 9));
    reg.replace("facts", other);
    let base = reg.with(None, |ad| logits(&model, ad)).unwrap();
    let now = reg.with(Some("facts"), |ad| logits(&model, ad)).unwrap();
    assert_eq!(base, now, "the replacement is a fresh (identity) adapter");
    let old = engram_adapters::registry::with_adaptation(&*held, |ad| logits(&model, ad));
    assert_ne!(old, base, "the holder still runs the adapter it took");
    assert!(matches!(
        reg.with(Some("nope"), |_| ()),
        Err(RegistryError::Unknown(_))
    ));
    reg.remove("facts").unwrap();
    assert!(reg.names().is_empty());
    let _: &dyn Trainable = &*held;
}

#[test]
fn merge_adds_the_update_to_a_dequantized_copy() {
    let (_d, model) = load();
    let a = trained(&model);
    let fresh = lora(&model, 3);
    let w0 = fresh.merged_weight(&model, 0, Proj::Q);
    let w1 = a.merged_weight(&model, 0, Proj::Q);
    assert_eq!(w0.len(), 64 * 64);
    assert!(w0.iter().zip(&w1).any(|(x, y)| x != y));
    // The mapped base is untouched: a fresh adapter's merge is still the plain dequantized W.
    assert_eq!(w0, lora(&model, 3).merged_weight(&model, 0, Proj::Q));
}

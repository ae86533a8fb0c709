//! The adapters on the wgpu backend (feature `wgpu`): LoRA training, full fine-tuning and a ROME
//! edit run on the GPU device and agree with the same runs on the CPU backend. The library code
//! is the same on both; only the device the model is loaded on differs.
//!
//! In CI the device is Mesa's lavapipe (software Vulkan), where every new kernel shape costs a
//! shader compile, so the models are the tiny synthetic llama (2 blocks, Q4_1 projections). Both
//! sides run f32 activations into the quantized layers and f32 attention: the GPU kernels keep
//! activations f32, and the CPU matches them on its f32 path, so the runs compute one function
//! and differ only in summation order.
#![cfg(feature = "wgpu")]

mod common;

use std::sync::Arc;

use common::{facts, rel_err, train_config};

use engram_adapters::full::FullFinetune;
use engram_adapters::lora::{Lora, LoraConfig};
use engram_adapters::optim::HostParams;
use engram_adapters::trainer::{TrainConfig, TrainReport, Trainer};
use engram_edit::{EditDelta, Editor, EditorConfig, Method, parse_jsonl};
use engram_harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, byte_tokenizer, tiny_llama_gguf};
use engram_kernels::GgmlType;
use engram_runtime::backend::{self, device_by_name};
use engram_runtime::burn::tensor::Device;
use engram_runtime::cpu::CpuContext;
use engram_runtime::model::attention::AttentionPrecision;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits, Proj};
use engram_runtime::model_file::ModelFile;

/// |wgpu − CPU| of each step's training loss, relative to the CPU's: the same function, the
/// same seeds and the same data order; only summation order differs, compounded over steps.
const LOSS_REL_TOL: f32 = 1e-3;
/// |wgpu − CPU| of the trained weights, relative to each parameter's largest CPU magnitude.
const WEIGHTS_REL_TOL: f32 = 1e-2;
/// |wgpu − CPU| of ROME's rank-one factors, relative to each factor's largest magnitude: the
/// `δ` optimization (Adam on a GPU-computed gradient) and the `C⁻¹ k` solve on the GPU's keys.
const ROME_REL_TOL: f32 = 2e-2;

fn wgpu() -> Device {
    device_by_name("wgpu").expect("built with --features wgpu")
}

/// The tiny model at `path` on `device` under autodiff, on the f32 paths.
fn load(path: &std::path::Path, device: &Device) -> Llama {
    let file = ModelFile::open(path).unwrap();
    let cpu = Arc::new(CpuContext::new(2).unwrap());
    let mut model = Llama::load(&file, &device.clone().autodiff(), cpu).unwrap();
    model.set_f32_activations(true);
    model.set_attention_precision(AttentionPrecision::F32);
    model
}

fn write_tiny(dir: &std::path::Path, spec: &TinyLlamaSpec) -> std::path::PathBuf {
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(spec, GgmlType::Q4_1, 9)).unwrap();
    path
}

fn config(epochs: u32) -> TrainConfig {
    train_config(epochs, 1e-2)
}

/// Per-step losses of the two runs agree, and every parameter agrees.
fn assert_same_run(what: &str, gpu: (&TrainReport, &HostParams), cpu: (&TrainReport, &HostParams)) {
    assert_eq!(gpu.0.steps.len(), cpu.0.steps.len(), "{what}: step count");
    assert_eq!(gpu.0.skipped_steps, 0, "{what}: no skipped GPU steps");
    let worst_loss = gpu
        .0
        .steps
        .iter()
        .zip(&cpu.0.steps)
        .map(|(g, c)| (g.loss - c.loss).abs() / c.loss.abs())
        .fold(0f32, f32::max);
    assert_eq!(gpu.1.names, cpu.1.names);
    let worst_weight = gpu
        .1
        .values
        .iter()
        .zip(&cpu.1.values)
        .map(|(g, c)| rel_err(g, c))
        .fold(0f32, f32::max);
    eprintln!(
        "{what}: {} steps, loss {:.4} → {:.4}; wgpu vs CPU: loss rel err {worst_loss:.2e}, \
         weights rel err {worst_weight:.2e}",
        cpu.0.steps.len(),
        cpu.0.steps[0].loss,
        cpu.0.steps.last().unwrap().loss,
    );
    assert!(
        worst_loss <= LOSS_REL_TOL,
        "{what}: losses differ by {worst_loss}"
    );
    assert!(
        worst_weight <= WEIGHTS_REL_TOL,
        "{what}: weights differ by {worst_weight}"
    );
}

fn train_lora(model: &Llama) -> (TrainReport, HostParams, f32, f32) {
    let trainer = Trainer::for_tokens(model, 0, config(20));
    let mut lora = Lora::new(
        model,
        LoraConfig {
            rank: 4,
            targets: Proj::ALL.to_vec(),
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let before = trainer.evaluate_encoded(&lora, &facts()).loss;
    let report = trainer
        .fit_encoded(&mut lora, &facts(), &[], |_| {})
        .unwrap();
    let after = trainer.evaluate_encoded(&lora, &facts()).loss;
    (report, lora.params().to_host(), before, after)
}

/// LoRA on all seven projections trains on the GPU: the same losses step by step and the same
/// adapter weights as on the CPU, and the loss falls.
#[test]
fn lora_training_on_wgpu_matches_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), &TinyLlamaSpec::default());
    let (cpu_report, cpu_w, _, _) = train_lora(&load(&path, &backend::cpu()));
    let t = std::time::Instant::now();
    let (gpu_report, gpu_w, before, after) = train_lora(&load(&path, &wgpu()));
    eprintln!(
        "LoRA on wgpu: {:.1?}, eval loss {before:.3} → {after:.3}",
        t.elapsed()
    );
    assert!(
        after < 0.5 * before,
        "the GPU run learns: {before} → {after}"
    );
    assert_same_run("LoRA", (&gpu_report, &gpu_w), (&cpu_report, &cpu_w));
}

fn train_full(model: &Llama) -> (TrainReport, HostParams) {
    let trainer = Trainer::for_tokens(model, 0, config(2));
    let mut full = FullFinetune::new(model).unwrap();
    let report = trainer
        .fit_encoded(&mut full, &facts(), &[], |_| {})
        .unwrap();
    (report, full.params().to_host())
}

/// Full fine-tuning (every weight dequantized into a trainable f32 master) on the GPU: the
/// graph the CUDA backend trains, on the same CubeCL code path, agreeing with the CPU.
#[test]
fn full_finetune_on_wgpu_matches_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), &TinyLlamaSpec::default());
    let (cpu_report, cpu_w) = train_full(&load(&path, &backend::cpu()));
    let t = std::time::Instant::now();
    let (gpu_report, gpu_w) = train_full(&load(&path, &wgpu()));
    eprintln!("full fine-tuning on wgpu: {:.1?}", t.elapsed());
    assert_same_run("full", (&gpu_report, &gpu_w), (&cpu_report, &cpu_w));
}

/// The subject ends the prompt, so `δ` (written at the subject's last token) sits at the
/// position that predicts the answer: a random 2-block model has no learned attention to carry
/// it from an earlier position, as a trained model's does.
const FACT: &str = r#"{"case_id":"capital:FR","subject":"France","prompt":"The capital of France","target_new":"Rome","ground_truth":"Paris"}"#;

/// Text for the key statistics: the project's README (every clone has it).
fn corpus() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

fn last_logits(model: &Llama, ids: &[u32], adapter: Option<&dyn LinearAdapter>) -> Vec<f32> {
    model
        .forward(ids, 1, None, adapter, Logits::Last)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// One ROME edit on `model`: the rank-one factors `(r, a)`, the top-1 after the prompt before
/// and after the edit, and whether undo restored the logits bit for bit.
fn rome(model: &Llama, cache: &std::path::Path) -> (Vec<f32>, Vec<f32>, u32, u32, bool) {
    let tok = byte_tokenizer();
    let config = EditorConfig {
        rome_layer: 0,
        memit_layers: vec![0, 1],
        grace_layer: 1,
        stats_tokens: 1024,
        contexts: (2, 6),
        ..EditorConfig::default()
    };
    let mut editor = Editor::new(model, &tok, "tiny-bytes", config);
    editor
        .load_stats_for(&[Method::Rome], &corpus(), cache)
        .unwrap();
    let req = parse_jsonl(FACT).unwrap();
    let ids = tok.encode(&req[0].prompt, false);
    let base = last_logits(model, &ids, None);
    let applied = editor.apply(Method::Rome, &req).unwrap();
    let (r, a) = match &editor.edits()[0].delta {
        EditDelta::Weights(terms) => (terms[0].r.clone(), terms[0].a.clone()),
        EditDelta::Grace(_) => unreachable!("ROME writes weights"),
    };
    let edited = last_logits(model, &ids, Some(editor.adapter()));
    editor.undo(applied[0].id).unwrap();
    let undone = last_logits(model, &ids, Some(editor.adapter()));
    let exact = undone
        .iter()
        .zip(&base)
        .all(|(u, b)| u.to_bits() == b.to_bits());
    let argmax = engram_runtime::generate::argmax;
    (r, a, argmax(&base), argmax(&edited), exact)
}

/// A ROME edit on the GPU: key statistics, the `δ` optimization and the rank-one solve run
/// with the model on wgpu, write the same factors as on the CPU, flip the prompt's answer to
/// the new target's first token, and undo exactly.
#[test]
fn rome_edit_on_wgpu_matches_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let path = write_tiny(dir.path(), &spec);
    let (cpu_dir, gpu_dir) = (dir.path().join("cpu"), dir.path().join("gpu"));
    let (r_cpu, a_cpu, base_cpu, _, _) = rome(&load(&path, &backend::cpu()), &cpu_dir);
    let t = std::time::Instant::now();
    let (r_gpu, a_gpu, base_gpu, edited_gpu, exact) = rome(&load(&path, &wgpu()), &gpu_dir);
    let (err_r, err_a) = (rel_err(&r_gpu, &r_cpu), rel_err(&a_gpu, &a_cpu));
    eprintln!(
        "ROME on wgpu: {:.1?}; top-1 {base_gpu} → {edited_gpu}; wgpu vs CPU: r rel err \
         {err_r:.2e}, a rel err {err_a:.2e}",
        t.elapsed()
    );
    let target_first = byte_tokenizer().encode(" Rome", false)[0];
    assert_eq!(base_gpu, base_cpu, "same base answer");
    assert_ne!(
        base_gpu, target_first,
        "the base does not already answer the target"
    );
    assert_eq!(edited_gpu, target_first, "the GPU edit flips the answer");
    assert!(exact, "undo on the GPU restores the logits bit for bit");
    assert!(err_r <= ROME_REL_TOL, "r differs by {err_r}");
    assert!(err_a <= ROME_REL_TOL, "a differs by {err_a}");
}

//! The adapters on the wgpu backend (feature `wgpu`): LoRA training and full fine-tuning run on the GPU device and agree with the same runs on the CPU backend. The library code
//! is the same on both; only the device the model is loaded on differs.
//!
//! In CI the device is Mesa's lavapipe (software Vulkan), where every new kernel shape costs a
//! shader compile, so the models are the tiny synthetic llama (2 blocks, Q4_1 projections). Both
//! sides run f32 activations into the quantized layers and f32 attention: the GPU kernels keep
//! activations f32, and the CPU matches them on its f32 path, so the runs compute one function
//! and differ only in summation order.
#![cfg(feature = "wgpu")]

mod common;

use common::{facts, rel_err, train_config};

use engram_adapters::full::FullFinetune;
use engram_adapters::lora::{Lora, LoraConfig};
use engram_adapters::optim::HostParams;
use engram_adapters::trainer::{TrainConfig, TrainReport, Trainer};
use engram_harness::synthetic::{TinyLlamaSpec, load_f32_paths, write_tiny_llama};
use engram_kernels::GgmlType;
use engram_runtime::backend::{self, device_by_name};
use engram_runtime::burn::tensor::Device;
use engram_runtime::model::llama::{Llama, Proj};

/// |wgpu − CPU| of each step's training loss, relative to the CPU's: the same function, the
/// same seeds and the same data order; only summation order differs, compounded over steps.
const LOSS_REL_TOL: f32 = 1e-3;
/// |wgpu − CPU| of the trained weights, relative to each parameter's largest CPU magnitude.
const WEIGHTS_REL_TOL: f32 = 1e-2;

fn wgpu() -> Device {
    device_by_name("wgpu").expect("built with --features wgpu")
}

fn load(path: &std::path::Path, device: &Device) -> Llama {
    load_f32_paths(path, device)
}

fn write_tiny(dir: &std::path::Path, spec: &TinyLlamaSpec) -> std::path::PathBuf {
    write_tiny_llama(dir, spec, GgmlType::Q4_1, 9)
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

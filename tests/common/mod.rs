//! Helpers the facade's integration tests share: each test file that runs the CLI declares
//! `mod common;`.

// Each test crate uses a subset.
#![allow(dead_code)]

use std::process::{Command, Output};

/// The `engram` binary this package builds.
pub fn engram() -> Command {
    Command::new(env!("CARGO_BIN_EXE_engram"))
}

/// `out`'s stdout, after checking that the command succeeded (its stdout and stderr in the
/// failure).
pub fn ok_stdout(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The logits at the last position of `prompt` (no special tokens added), through the graph
/// with `adapter`: what the editing tests compare before and after an edit.
pub fn last_logits(
    engine: &engram::runtime::engine::Engine,
    prompt: &str,
    adapter: Option<&dyn engram::runtime::model::llama::LinearAdapter>,
) -> Vec<f32> {
    let ids = engine.tokenizer().encode(prompt, false);
    engine
        .model()
        .forward(
            &ids,
            1,
            None,
            adapter,
            engram::runtime::model::llama::Logits::Last,
        )
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// The logits at every position of `tokens` (one row) through the graph of `file` on the CPU
/// with 2 threads: what the checkpoint tests compare between a checkpoint and its GGUF file.
pub fn all_logits(file: &engram::runtime::model_file::ModelFile, tokens: &[u32]) -> Vec<f32> {
    use engram::runtime::model::llama::{Llama, Logits};
    let cpu = std::sync::Arc::new(engram::runtime::cpu::CpuContext::new(2).unwrap());
    let model =
        Llama::load(file, &engram::runtime::backend::cpu(), cpu).unwrap_or_else(|e| panic!("{e}"));
    model
        .forward(tokens, 1, None, None, Logits::All)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Largest |Δ| between `got` and `want` over `want`'s 20 largest logits: the measure of the
/// llama.cpp parity tests and of the decoder-vs-graph checks.
pub fn top20_max_diff(got: &[f32], want: &[f32]) -> f32 {
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
    order[..20]
        .iter()
        .map(|&i| (got[i] - want[i]).abs())
        .fold(0f32, f32::max)
}

//! YaRN from a checkpoint's `config.json` (`rope_scaling` of type yarn): the checkpoint runs
//! the function of the GGUF file llama.cpp's converter would write from it, which
//! `tests/arch_parity.rs` proves against llama.cpp (`llama_yarn`).

use std::path::Path;

use engram::harness::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf};
use engram::kernels::GgmlType;
use engram::runtime::checkpoint::CheckpointError;
use engram::runtime::checkpoint::export::write_checkpoint;
use engram::runtime::model_file::{LoadError, ModelFile};
use serde_json::{Value, json};

mod common;

/// Max |Δlogit| between the checkpoint and the GGUF file of the same F32 weights: only the
/// order of the q·k sums differs (half-split vs adjacent pairs).
const F32_TOL: f32 = 1e-4;

/// `dir`'s config.json with `rope_scaling` set to `scaling`.
fn set_rope_scaling(dir: &Path, scaling: Value) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["rope_scaling"] = scaling;
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

#[test]
fn a_yarn_checkpoint_runs_the_yarn_gguf_function() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama_yarn.gguf");
    std::fs::write(
        &path,
        arch_gguf(ArchCase::LlamaYarn, GgmlType::F32, ARCH_SEED),
    )
    .unwrap();
    let gguf = ModelFile::open(&path).unwrap();
    let out = dir.path().join("ckpt");
    write_checkpoint(&gguf, &out, GgmlType::F32, 1).unwrap();
    // 40 positions: past the original context of 32.
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 % 250) as u32).collect();
    let want = common::all_logits(&gguf, &tokens);
    let diff = |scaling: Value| {
        set_rope_scaling(&out, scaling);
        let ckpt = ModelFile::open(&out).unwrap_or_else(|e| panic!("{e}"));
        let got = common::all_logits(&ckpt, &tokens);
        want.iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    let yarn = json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32});
    let d = diff(yarn);
    eprintln!("yarn checkpoint vs GGUF: max |Δlogit| {d:e}");
    assert!(d <= F32_TOL, "max |Δlogit| {d}");
    // The defaults llama.cpp runs, stated, are the same function.
    let stated = json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                        "beta_fast": 32.0, "beta_slow": 1.0});
    assert!(diff(stated) <= F32_TOL);
    // Linear scaling by the same factor is another function: the comparison can fail.
    let linear = diff(json!({"type": "linear", "factor": 4.0}));
    assert!(linear > 0.1, "linear vs yarn differ by only {linear}");

    // YaRN values llama.cpp would ignore are refused rather than run differently.
    for scaling in [
        json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 8.0}),
        json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "attention_factor": 1.2}),
        json!({"type": "yarn", "factor": 4.0}),
        json!({"type": "longrope", "factor": 4.0}),
    ] {
        set_rope_scaling(&out, scaling.clone());
        match ModelFile::open(&out) {
            Err(LoadError::Checkpoint {
                source: CheckpointError::Unsupported { what, .. },
                ..
            }) => assert!(what.contains("rope_scaling"), "{what}"),
            Err(e) => panic!("{scaling}: another error: {e}"),
            Ok(_) => panic!("{scaling}: opened"),
        }
    }
}

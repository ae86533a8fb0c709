//! `engram info | generate | train (LoRA and --full) | edit` on models of other families than
//! llama: the seeded tiny phi3 (fused QKV and gate-and-up tensors, split at load) and gemma2
//! (post-norms, soft-caps, a sliding window, GELU) of `engram::harness::synthetic_arch`.

use std::path::Path;

use engram::harness::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf};
use engram::kernels::GgmlType;

mod common;
use common::{engram, ok_stdout};

fn run_family(case: ArchCase, dir: &Path) {
    let model = dir.join(format!("{}.gguf", case.name()));
    std::fs::write(&model, arch_gguf(case, GgmlType::Q8_0, ARCH_SEED)).unwrap();
    let info = ok_stdout(engram().arg("info").arg(&model).output().unwrap());
    assert!(
        info.contains(&format!("\"{}\"", case.architecture())),
        "{info}"
    );

    let generate = |extra: &[&str]| {
        let out = engram()
            .args(["generate", "--prompt", "Zorbia:", "--max-tokens", "4"])
            .args(["--threads", "1"])
            .arg("--model")
            .arg(&model)
            .args(extra)
            .output()
            .unwrap();
        ok_stdout(out)
    };
    assert!(generate(&[]).starts_with("Zorbia:"));

    let data = dir.join("facts.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\":\"Zorbia:\",\"completion\":\" Qel\"}\n{\"prompt\":\"Vantor:\",\"completion\":\" Ixa\"}\n",
    )
    .unwrap();
    let lora = dir.join(format!("lora_{}", case.name()));
    let out = engram()
        .args(["train", "--rank", "4", "--targets", "all-linear"])
        .args(["--epochs", "2", "--seq-len", "32", "--threads", "1"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&lora)
        .output()
        .unwrap();
    ok_stdout(out);
    let adapter = lora.join("adapter.gguf");
    assert!(adapter.is_file());
    assert!(generate(&["--lora", adapter.to_str().unwrap()]).starts_with("Zorbia:"));

    // Full fine-tuning writes a model of the same family (phi3: the trained q/k/v and gate/up
    // bands written back into the fused tensors).
    let trained = dir.join(format!("full_{}.gguf", case.name()));
    let out = engram()
        .args([
            "train",
            "--full",
            "--epochs",
            "1",
            "--seq-len",
            "32",
            "--threads",
            "1",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&trained)
        .output()
        .unwrap();
    ok_stdout(out);
    let out = engram()
        .args([
            "generate",
            "--prompt",
            "Zorbia:",
            "--max-tokens",
            "4",
            "--threads",
            "1",
        ])
        .arg("--model")
        .arg(&trained)
        .output()
        .unwrap();
    assert!(ok_stdout(out).starts_with("Zorbia:"));

    let facts = dir.join("edit.jsonl");
    std::fs::write(
        &facts,
        r#"{"subject":"Zork","prompt":"Zork lives in","target_new":" Paris","rephrase_prompts":["Zork's home is"],"locality_prompts":["Bob lives in"]}"#,
    )
    .unwrap();
    let out = engram()
        .args(["edit", "--method", "rome", "--threads", "1"])
        .arg("--model")
        .arg(&model)
        .arg("--facts")
        .arg(&facts)
        .output()
        .unwrap();
    let report = ok_stdout(out);
    assert!(report.contains("\"efficacy\""), "{report}");
}

#[test]
fn the_cli_runs_a_phi3_model() {
    let dir = tempfile::tempdir().unwrap();
    run_family(ArchCase::Phi3, dir.path());
}

#[test]
fn the_cli_runs_a_gemma2_model() {
    let dir = tempfile::tempdir().unwrap();
    run_family(ArchCase::Gemma2, dir.path());
}

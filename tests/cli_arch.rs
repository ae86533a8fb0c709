//! `engram info | generate | train (LoRA and --full) | edit (ROME and the default) | learn |
//! eval | generate --state` on models of other families than llama: the seeded tiny phi3 (fused QKV and gate-and-up tensors, split at load) and gemma2
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
    // The default editor (the gated side memory) on the same file.
    let out = engram()
        .args(["edit", "--threads", "1"])
        .arg("--model")
        .arg(&model)
        .arg("--facts")
        .arg(&facts)
        .output()
        .unwrap();
    let report = ok_stdout(out);
    assert!(report.contains("\"efficacy\""), "{report}");

    learn_and_serve(case, &model, dir);
}

/// The learning runtime on the family: `engram learn` takes a stream into a state, `engram
/// eval` scores the state below the base on what it learned, and `generate --state` serves.
fn learn_and_serve(case: ArchCase, model: &Path, dir: &Path) {
    let stream = dir.join("stream.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| {
            let task = ["colors", "numbers"][i * 2 / 12];
            format!(
                "{{\"prompt\":\"{task} #{i}:\",\"completion\":\" item {}\",\"task\":\"{task}\"}}",
                i % 3
            )
        })
        .collect();
    std::fs::write(&stream, lines.join("\n")).unwrap();
    let state = dir.join(format!("state_{}", case.name()));
    let common = |c: &mut std::process::Command| {
        c.arg("--model").arg(model).args(["--threads", "1", "-q"]);
    };
    let mut learn = engram();
    learn
        .arg("learn")
        .arg("--state")
        .arg(&state)
        .arg("--data")
        .arg(&stream);
    learn.args([
        "--json",
        "--strategy",
        "er",
        "--batch",
        "4",
        "--buffer",
        "8",
    ]);
    learn.args([
        "--max-len",
        "24",
        "--rank",
        "4",
        "--epochs",
        "3",
        "--lr",
        "1e-2",
    ]);
    common(&mut learn);
    let out = ok_stdout(learn.output().unwrap());
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(j["examples_seen"], 36, "{}: {j}", case.name());

    let eval = |with_state: bool| {
        let mut c = engram();
        c.arg("eval").arg("--data").arg(&stream).arg("--json");
        common(&mut c);
        if with_state {
            c.arg("--state").arg(&state);
        }
        let out = ok_stdout(c.output().unwrap());
        let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        j["loss"].as_f64().unwrap()
    };
    let (base, learned) = (eval(false), eval(true));
    assert!(
        learned < base - 0.1,
        "{}: learning lowers the loss on what it learned: base {base}, state {learned}",
        case.name()
    );

    let mut serve = engram();
    serve.args(["generate", "--prompt", "colors #1:", "--max-tokens", "3"]);
    serve.arg("--state").arg(&state);
    common(&mut serve);
    assert!(ok_stdout(serve.output().unwrap()).starts_with("colors #1:"));
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

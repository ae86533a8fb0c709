//! The `engram` binary as a user runs it: exit codes, error messages and the JSON shapes other
//! tools read (`logits --json`, `bench --json`).

use engram::resolve_model;

mod common;
use common::engram;

fn model() -> String {
    resolve_model(None)
        .expect("resolve the model")
        .display()
        .to_string()
}

#[test]
fn info_on_a_truncated_model_fails_with_a_clear_error() {
    let bytes = std::fs::read(model()).expect("read model");
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("header.gguf", 1000), ("data.gguf", bytes.len() / 2)] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let out = engram().arg("info").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: exit status {}", out.status);
        assert!(
            stderr.starts_with("error: invalid GGUF file"),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains("truncated") || stderr.contains("outside the file"),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn info_prints_the_tensor_table() {
    let out = engram().arg("info").arg(model()).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("token_embd.weight") && stdout.contains("q8_0"),
        "{stdout}"
    );
    assert!(stdout.contains("tensors (272)"), "{stdout}");
}

#[test]
fn logits_json_has_the_documented_shape() {
    let out = engram()
        .args([
            "logits",
            "--model",
            &model(),
            "--prompt",
            "<|im_start|>user\nhi",
            "--top",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        v["tokens"],
        serde_json::json!([1, 4093, 198, 6004]),
        "special tokens are parsed"
    );
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
    assert!(
        logits.windows(2).all(|w| w[0] >= w[1]),
        "sorted best first: {logits:?}"
    );
    assert!(top.iter().all(|p| p[0].as_u64().unwrap() < 49152));
}

#[test]
fn bench_json_has_the_documented_shape() {
    let out = engram()
        .args([
            "bench",
            "--model",
            &model(),
            "--threads",
            "1",
            "--prompt-tokens",
            "8",
        ])
        .args(["--gen-tokens", "4", "--runs", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON array");
    let v = &v[0]; // one object per (threads, variant)
    assert!(v["prefill_tok_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tok_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["threads"], 1);
}

#[test]
fn a_missing_model_file_is_a_clear_error() {
    let out = engram()
        .args([
            "generate",
            "--model",
            "/nonexistent/m.gguf",
            "--prompt",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error:") && stderr.contains("/nonexistent/m.gguf"),
        "{stderr}"
    );
}

/// A tiny synthetic Q8_0 llama whose file carries a byte tokenizer, written into `dir`.
fn tiny_byte_model(dir: &std::path::Path) -> std::path::PathBuf {
    use engram::harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, tiny_llama_gguf_with_bytes};
    use engram::kernels::GgmlType;

    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf_with_bytes(&spec, GgmlType::Q8_0, 5)).unwrap();
    path
}

/// `engram train --full` on a tiny synthetic model whose file carries a byte tokenizer: a GGUF
/// model out (bf16 mixed precision), and with `--as-lora` an adapter the other commands load.
#[test]
fn train_full_writes_a_model_and_as_lora_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_byte_model(dir.path());
    let data = dir.path().join("facts.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\":\"Zorbia:\",\"completion\":\" Qel\"}\n{\"prompt\":\"Vantor:\",\"completion\":\" Ixa\"}\n",
    )
    .unwrap();
    let train = |extra: &[&str], out: &std::path::Path| {
        let mut cmd = engram();
        cmd.args([
            "train",
            "--full",
            "--threads",
            "1",
            "--epochs",
            "2",
            "--batch",
            "2",
        ])
        .arg("--model")
        .arg(&base)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(out)
        .args(extra);
        cmd.output().unwrap()
    };

    let model_out = dir.path().join("trained.gguf");
    let out = train(&["--precision", "bf16"], &model_out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("re-quantized"), "{stderr}");
    let info = engram().arg("info").arg(&model_out).output().unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );

    let lora_out = dir.path().join("lora");
    let out = train(
        &["--as-lora", "--rank", "4", "--targets", "all-linear"],
        &lora_out,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("factored the trained change"), "{stderr}");
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "adapter.gguf",
    ] {
        assert!(lora_out.join(f).is_file(), "{f} written");
    }
    let logits = engram()
        .args(["logits", "--prompt", "Zorbia:", "--threads", "1"])
        .arg("--model")
        .arg(&base)
        .arg("--lora")
        .arg(lora_out.join("adapter.gguf"))
        .output()
        .unwrap();
    assert!(
        logits.status.success(),
        "{}",
        String::from_utf8_lossy(&logits.stderr)
    );

    let bad = train(&["--precision", "fp8"], &model_out);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("[possible values: f32, bf16]"), "{stderr}");
}

/// Every command takes the shared `--model --device --threads --json`.
#[test]
fn every_command_takes_the_shared_flags() {
    for command in [
        "info",
        "generate",
        "chat",
        "logits",
        "bench",
        "model-path",
        "edit",
        "train",
        "train-bench",
        "cl-bench",
        "learn",
        "eval",
        "state",
    ] {
        let out = engram().args([command, "--help"]).output().unwrap();
        assert!(out.status.success(), "{command} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in ["--model <PATH>", "--device <DEVICE>", "--threads", "--json"] {
            assert!(
                help.contains(flag),
                "{command} --help lacks {flag}:\n{help}"
            );
        }
    }
}

/// Enumerations are checked by clap, which lists the accepted values.
#[test]
fn a_bad_choice_lists_the_choices() {
    for (args, choices) in [
        (
            &["edit", "--facts", "f.jsonl", "--method", "romeo"][..],
            "[possible values: rome, memit, alphaedit, grace, gated, ultraedit]",
        ),
        (
            &["bench", "--device", "tpu"][..],
            "[possible values: cpu, flex, ndarray, wgpu, cuda]",
        ),
        (
            &["cl-bench", "--stream", "mnist"][..],
            "digits, fashion, fortunes",
        ),
        (
            &["cl-bench", "--strategies", "er,gem"][..],
            "der++, er+mkd, icarl",
        ),
        (
            &["train-bench", "--targets", "q,w"][..],
            "gate, up, down, attn, mlp, all-linear",
        ),
    ] {
        let out = engram().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(choices), "{args:?}: {stderr}");
    }
}

/// No default path outside the repository: the LM track asks for its reference file.
#[test]
fn the_fortunes_track_says_which_reference_to_pass() {
    let out = engram()
        .args(["cl-bench", "--stream", "fortunes"])
        .env_remove("ENGRAM_REFERENCE_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--reference") && stderr.contains("ENGRAM_REFERENCE_DIR"),
        "{stderr}"
    );
}

/// A file error names the file; `-q` leaves only the error on stderr.
#[test]
fn a_missing_facts_file_is_named() {
    let out = engram()
        .args([
            "-q",
            "edit",
            "--facts",
            "/nonexistent/facts.jsonl",
            "--threads",
            "1",
        ])
        .arg("--model")
        .arg(model())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with("error: /nonexistent/facts.jsonl: "),
        "{stderr}"
    );
}

/// `engram edit --log` resumes: a request the log already holds is not applied again (its id
/// and time come from the log), the rest are applied after it, and a second run over the same
/// requests adds nothing.
#[test]
fn an_edit_run_with_a_log_resumes_where_the_last_one_ended() {
    use engram::edit::log;

    let dir = tempfile::tempdir().unwrap();
    let base = tiny_byte_model(dir.path());
    let facts = dir.path().join("facts.jsonl");
    std::fs::write(
        &facts,
        concat!(
            r#"{"case_id":"a","subject":"Zork","prompt":"Zork lives in","target_new":" Paris","rephrase_prompts":["Zork's home is"],"locality_prompts":["Bob lives in"]}"#,
            "\n",
            r#"{"case_id":"b","subject":"Quux","prompt":"Quux works in","target_new":" Rome","rephrase_prompts":["Quux's office is in"],"locality_prompts":["Ann works in"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let log_path = dir.path().join("edits.log");
    let edit = |limit: &str| {
        let out = engram()
            .args([
                "-q",
                "edit",
                "--method",
                "grace",
                "--sequential",
                "--generate",
                "0",
            ])
            .args(["--threads", "1", "--json", "--limit", limit])
            .arg("--model")
            .arg(&base)
            .arg("--facts")
            .arg(&facts)
            .arg("--log")
            .arg(&log_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let logged = || log::load(&log_path).unwrap().expect("a log").edits;

    let first = edit("1");
    assert_eq!(first["resumed"], 0);
    let after_first = logged();
    assert_eq!(after_first.len(), 1);
    assert!(after_first[0].seconds > 0.0, "the edit's time is logged");

    let second = edit("2");
    assert_eq!(second["resumed"], 1);
    assert_eq!(second["n_edits"], 2);
    let edits = logged();
    assert_eq!(edits.len(), 2, "the logged request is not applied again");
    assert_eq!(
        edits[0], after_first[0],
        "the logged edit is kept as it was"
    );
    let per_edit = second["per_edit"].as_array().unwrap();
    assert_eq!(per_edit[0]["id"], after_first[0].id);
    assert_eq!(per_edit[0]["seconds"], after_first[0].seconds);
    assert_eq!(per_edit[1]["case_id"], "b");

    let third = edit("2");
    assert_eq!(third["resumed"], 2);
    assert_eq!(logged(), edits, "nothing left to apply");
}

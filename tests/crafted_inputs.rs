//! Crafted inputs for every command, as a hostile user would give them: truncated, oversized,
//! wrong-typed, NaN, empty and huge files and flags. Each case must exit non-zero (not by a
//! signal), name the file or flag in its error, say what is wrong, and never panic. The models
//! are tiny synthetic ones (`engram_harness`), so the suite runs in seconds.
//!
//! A second test checks that a rejected edit, example or adapter leaves stored state byte for
//! byte as it was.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engram::adapters::lora::{Lora, LoraConfig};
use engram::harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, tiny_llama_gguf_with_bytes_and};
use engram::kernels::GgmlType;
use engram::runtime::format::MetaValue;
use engram::runtime::model::llama::Proj;
use engram::{Engine, backend};

/// One crafted invocation and what its error must mention.
struct Case {
    command: &'static str,
    name: String,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    /// Substrings stderr must contain (the file or flag, and what is wrong).
    needles: Vec<String>,
}

/// How long one case may run before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

fn spec() -> TinyLlamaSpec {
    TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        d_model: 64,
        n_layer: 2,
        n_head: 4,
        n_head_kv: 2,
        d_ff: 96,
        n_ctx: 64,
    }
}

fn model_bytes(overrides: &[(&str, MetaValue)]) -> Vec<u8> {
    tiny_llama_gguf_with_bytes_and(&spec(), GgmlType::Q8_0, 7, overrides)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Fixture files shared by the cases.
struct Fixtures {
    dir: tempfile::TempDir,
    model: PathBuf,
    peft: PathBuf,
}

const FACT: &str = r#"{"subject":"Zork","prompt":"Zork lives in","target_new":" Paris","rephrase_prompts":["Zork's home is"],"locality_prompts":["Bob lives in"]}"#;
const EXAMPLE: &str = r#"{"prompt":"2+2=","completion":"4"}"#;

fn fixtures() -> Fixtures {
    let dir = tempfile::tempdir().unwrap();
    let model = write(dir.path(), "tiny.gguf", model_bytes(&[]));
    // A valid PEFT adapter (and its llama.cpp twin) to corrupt piece by piece.
    let engine = Engine::load(&model, &backend::cpu(), 1).unwrap();
    let lora = Lora::new(
        engine.model(),
        LoraConfig {
            rank: 2,
            targets: vec![Proj::Q, Proj::V],
            ..LoraConfig::default()
        },
    )
    .unwrap();
    let peft = dir.path().join("adapter");
    lora.save_adapter_dir(engine.model(), &peft, "tiny")
        .unwrap();
    // A learning state for `edit --state` (one step on one example).
    let data = write(
        dir.path(),
        "data/good.jsonl",
        format!("{EXAMPLE}\n{EXAMPLE}\n"),
    );
    let state = dir.path().join("edit-state");
    learn_once(&model, &state, &data);
    Fixtures { dir, model, peft }
}

/// `engram learn` of `data` into `state` (created if need be), one step; panics on failure.
fn learn_once(model: &Path, state: &Path, data: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_engram"))
        .args(["learn", "-q", "--batch", "2", "--steps", "1", "--model"])
        .args([
            model,
            Path::new("--state"),
            state,
            Path::new("--data"),
            data,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "learn: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[path = "crafted_inputs/cases.rs"]
mod cases;
#[path = "crafted_inputs/state.rs"]
mod state;

use cases::cases;
/// Runs `case` to completion (or `CASE_TIMEOUT`): `None` when it behaved, else what went wrong.
fn check(case: &Case) -> Option<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engram"));
    cmd.args(&case.args)
        .arg("-q")
        .env_remove("ENGRAM_MODEL")
        .env("RUST_BACKTRACE", "0")
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn engram");
    if let Some(input) = &case.stdin {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input);
    }
    let start = Instant::now();
    loop {
        match child.try_wait().unwrap() {
            Some(_) => break,
            None if start.elapsed() > CASE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Some(format!("still running after {CASE_TIMEOUT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut wrong = Vec::new();
    if out.status.success() {
        wrong.push("exited 0".to_string());
    }
    if out.status.code().is_none() {
        wrong.push(format!("killed by a signal ({})", out.status));
    }
    if stderr.contains("panicked") {
        wrong.push("panicked".into());
    }
    for needle in &case.needles {
        if !stderr.contains(needle.as_str()) {
            wrong.push(format!("stderr does not mention {needle:?}"));
        }
    }
    (!wrong.is_empty()).then(|| {
        let tail: String = stderr.chars().take(600).collect();
        format!("{}\n      stderr: {tail}", wrong.join("; "))
    })
}

#[test]
fn every_command_refuses_crafted_inputs_cleanly() {
    let started = Instant::now();
    let f = fixtures();
    let cases = cases(&f);
    // Two workers: CI has two cores.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Option<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(case) = cases.get(i) else { break };
                        mine.push((i, check(case)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut per_command: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, problem) in results {
        let case = &cases[i];
        let entry = per_command.entry(case.command).or_default();
        entry.0 += 1;
        if let Some(p) = problem {
            entry.1 += 1;
            failures.push(format!("  {} / {}: {p}", case.command, case.name));
        }
    }
    println!("crafted inputs per command (cases, failures):");
    for (command, (n, bad)) in &per_command {
        println!("  {command:<12} {n:>4} {bad:>4}");
    }
    println!(
        "  total        {:>4} {:>4}  ({:.1} s)",
        cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} cases misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

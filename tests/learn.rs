//! `engram learn`, `eval`, `state` and `generate --state` as a device app's supervisor runs
//! them, on the tiny synthetic llama (byte tokenizer in the file): the JSON shapes other tools
//! read, settings a resumed state keeps, and a learner killed with SIGKILL at random points
//! (≥ 50 times) while a reader serves from the same directory.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engram::harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, tiny_llama_gguf_with_bytes};
use engram::kernels::GgmlType;

mod common;
use common::engram;

/// The tiny model and a JSONL file of `n` examples over three tasks.
fn fixture(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let model = dir.join("tiny.gguf");
    std::fs::write(
        &model,
        tiny_llama_gguf_with_bytes(&spec, GgmlType::Q8_0, 11),
    )
    .unwrap();
    let data = dir.join("data.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let task = ["colors", "numbers", "animals"][i * 3 / n];
            serde_json::json!({
                "prompt": format!("{task} #{i}:"),
                "completion": format!(" item {}", i % 17),
                "task": task,
            })
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    (model, data)
}

fn run(args: &[&str]) -> Output {
    engram().args(args).output().unwrap()
}

/// `out`, after checking that the command succeeded (its stderr in the failure).
fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_line(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn learn_eval_state_and_serve_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path(), 24);
    let state = tmp.path().join("state");
    let common = ["--model", s(&model), "--threads", "1", "-q"];
    let learn = |extra: &[&str]| {
        let mut a = vec!["learn", "--state", s(&state), "--data", s(&data), "--json"];
        a.extend(common);
        a.extend(extra);
        run(&a)
    };
    let out = ok(learn(&[
        "--strategy",
        "er",
        "--batch",
        "4",
        "--buffer",
        "16",
        "--max-len",
        "24",
        "--rank",
        "4",
    ]));
    let j = json_line(&out);
    assert_eq!(j["examples_seen"], 24);
    assert!(j["steps"].as_u64().unwrap() >= 6);
    let g1 = j["generation"].as_u64().unwrap();
    assert!(g1 >= 2 && j["seconds"].is_number(), "{j}");

    // Resumed: the state keeps its settings; a flag that disagrees is an error naming it.
    let out = learn(&["--strategy", "lwf"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--strategy"),
        "{stderr}"
    );
    let out = ok(learn(&[]));
    let j = json_line(&out);
    assert_eq!(j["examples_seen"], 48, "continues from what it learned");
    assert!(j["generation"].as_u64().unwrap() > g1);

    let mut a = vec!["state", s(&state), "--verify", "--json"];
    a.extend(common);
    let out = ok(run(&a));
    let st = json_line(&out);
    assert_eq!(st["config"]["strategy"]["kind"], "er");
    assert_eq!(
        st["progress"]["tasks"],
        serde_json::json!(["colors", "numbers", "animals"])
    );
    assert!(st["memory_fill"].as_u64().unwrap() > 0 && st["bytes"].as_u64().unwrap() > 0);

    let eval = |with_state: bool| {
        let mut a = vec!["eval", "--data", s(&data), "--json"];
        a.extend(common);
        if with_state {
            a.extend(["--state", s(&state)]);
        }
        json_line(&run(&a))
    };
    let (base, learned) = (eval(false), eval(true));
    assert_eq!(base["tokens"], learned["tokens"]);
    assert!(
        learned["loss"].as_f64().unwrap() < base["loss"].as_f64().unwrap() - 0.1,
        "learning lowers the loss on what it learned: base {base}, state {learned}"
    );

    let mut a = vec![
        "generate",
        "--state",
        s(&state),
        "--prompt",
        "colors #1:",
        "--max-tokens",
        "4",
        "--json",
    ];
    a.extend(common);
    let out = ok(run(&a));
    assert!(json_line(&out)["tokens"].is_array());

    // Edits go into the state as a new generation, on top of the adapter.
    let facts = tmp.path().join("facts.jsonl");
    std::fs::write(
        &facts,
        r#"{"case_id": "c1", "subject": "colors", "prompt": "colors #1:", "target_new": " blue", "ground_truth": " item"}"#,
    )
    .unwrap();
    let mut a = vec![
        "edit",
        "--state",
        s(&state),
        "--facts",
        s(&facts),
        "--method",
        "grace",
        "--json",
    ];
    a.extend(common);
    let out = ok(run(&a));
    let j = json_line(&out);
    assert_eq!(j["applied"][0]["case_id"], "c1");
    let mut a = vec!["state", s(&state), "--json"];
    a.extend(common);
    assert_eq!(json_line(&run(&a))["edits"], 1);

    // A bad example line is refused with its line number, and nothing stored changes.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n",
    )
    .unwrap();
    let before = std::fs::read_dir(&state).unwrap().count();
    let mut a = vec!["learn", "--state", s(&state), "--data", s(&bad)];
    a.extend(common);
    let out = run(&a);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("bad.jsonl:2"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), before);
}

/// A small deterministic generator for the kill delays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[cfg(unix)]
#[test]
fn a_learner_killed_at_random_points_always_reopens_and_a_reader_never_fails() {
    const TRIALS: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path(), 120);
    let state = tmp.path().join("state");
    let common = ["--model", s(&model), "--threads", "1", "-q"];
    let mut learn_args: Vec<String> = [
        "learn",
        "--state",
        s(&state),
        "--data",
        s(&data),
        "--commit-every",
        "1",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    learn_args.extend(common.iter().map(|a| a.to_string()));
    // Generation 1 exists before the first kill (the reader has something to serve).
    let first: Vec<&str> = learn_args
        .iter()
        .map(String::as_str)
        .chain([
            "--strategy",
            "der++",
            "--batch",
            "4",
            "--buffer",
            "16",
            "--max-len",
            "24",
            "--rank",
            "4",
        ])
        .collect();
    ok(run(&first));

    // A reader serving from the directory the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
        let args: Vec<String> = [
            "generate",
            "--state",
            s(&state),
            "--prompt",
            "numbers #3:",
            "--max-tokens",
            "2",
            "--json",
        ]
        .iter()
        .chain(common.iter())
        .map(|a| a.to_string())
        .collect();
        std::thread::spawn(move || {
            let mut last_error = String::new();
            while !stop.load(Ordering::Relaxed) {
                let out = engram().args(&args).output().unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
                if !out.status.success() {
                    failures.fetch_add(1, Ordering::Relaxed);
                    last_error = String::from_utf8_lossy(&out.stderr).into_owned();
                }
            }
            last_error
        })
    };

    let mut rng = Lcg(2026);
    let mut last_generation = 0;
    let mut last_steps = 0;
    let mut killed_mid_run = 0;
    let started = Instant::now();
    for trial in 0..TRIALS {
        let mut child = engram()
            .args(&learn_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.below(600)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let mut a = vec!["state", s(&state), "--verify", "--json"];
        a.extend(common);
        let out = run(&a);
        assert!(
            out.status.success(),
            "trial {trial}: verify failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json_line(&out);
        let g = j["generation"].as_u64().unwrap();
        let steps = j["progress"]["steps"].as_u64().unwrap();
        assert!(
            g >= last_generation,
            "trial {trial}: generation went back {last_generation} -> {g}"
        );
        assert!(
            steps >= last_steps,
            "trial {trial}: steps went back {last_steps} -> {steps}"
        );
        last_generation = g;
        last_steps = steps;
    }
    // Learning resumes: an uninterrupted run finishes and moves the state on.
    let args: Vec<&str> = learn_args
        .iter()
        .map(String::as_str)
        .chain(["--json"])
        .collect();
    let out = ok(run(&args));
    let j = json_line(&out);
    assert!(j["generation"].as_u64().unwrap() > last_generation);
    assert!(j["steps"].as_u64().unwrap() > last_steps);
    stop.store(true, Ordering::Relaxed);
    let last_error = reader.join().unwrap();
    let (reads, failures) = (
        reads.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    eprintln!(
        "{TRIALS} kills ({killed_mid_run} mid-run) in {:.1?}; generation {last_generation}, \
         {last_steps} steps; reader: {reads} generations, {failures} failed",
        started.elapsed()
    );
    assert!(
        killed_mid_run >= TRIALS / 2,
        "most kills land mid-run ({killed_mid_run})"
    );
    assert_eq!(failures, 0, "a reader failed: {last_error}");
    assert!(reads > 0);
    // Nothing but the committed generation's files is left.
    let manifest = engram::runtime::io::read_state(&state).unwrap();
    let names: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "MANIFEST")
        .collect();
    assert_eq!(names.len(), manifest.files.len(), "leftovers: {names:?}");
}

//! Issue 13's kill -9 test: a child process saves an adapter directory through the real save
//! path (`Lora::save_adapter_dir`, what `engram train --out DIR` calls) over and over,
//! alternating two distinguishable adapters of a few MB; the parent SIGKILLs it at seeded
//! random moments. After every kill the opener's recovery must leave exactly the old adapter or
//! the new one, byte for byte, and nothing else beside it.
//!
//! The child is this test binary itself, re-run on [`kill_child_writer`] with
//! `ENGRAM_KILL_CHILD` naming the directory. `cargo test -p engram-adapters --test
//! kill_adapter_dir -- --nocapture` prints the tally.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_adapters::lora::{Lora, LoraConfig};
use engram_harness::synthetic::{TinyLlamaSpec, tiny_llama_gguf};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::cpu::CpuContext;
use engram_runtime::io::{Recovery, recover};
use engram_runtime::model::llama::{Llama, Proj};
use engram_runtime::model_file::ModelFile;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Kills (each a fresh child).
const TRIALS: usize = 64;
/// The child's cue that it is about to start saving.
const READY: &str = "KILL-CHILD-READY";

/// A model wide enough that one adapter directory is a few MB (PEFT + GGUF ≈ 2 × 1.9 MB).
fn model(dir: &Path) -> Llama {
    let spec = TinyLlamaSpec {
        d_model: 256,
        d_ff: 512,
        n_head: 4,
        n_head_kv: 2,
        ..TinyLlamaSpec::default()
    };
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(&spec, GgmlType::Q8_0, 3)).unwrap();
    let file = ModelFile::open(&path).unwrap();
    let cpu = Arc::new(CpuContext::new(1).unwrap());
    Llama::load(&file, &backend::cpu(), cpu).unwrap()
}

/// The two adapters, told apart by their seeds (hence their `lora_A` values).
fn adapters(model: &Llama) -> [Lora; 2] {
    [11, 22].map(|seed| {
        Lora::new(
            model,
            LoraConfig {
                rank: 64,
                targets: Proj::ALL.to_vec(),
                seed,
                ..Default::default()
            },
        )
        .unwrap()
    })
}

fn save(lora: &Lora, model: &Llama, dir: &Path) {
    lora.save_adapter_dir(model, dir, "tiny").unwrap();
}

/// Every entry of `dir`, name → contents (panics on a subdirectory).
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The child: saves the adapters alternately, starting with `ENGRAM_KILL_FIRST`, until killed.
/// A no-op in a normal test run.
#[test]
fn kill_child_writer() {
    let Ok(target) = std::env::var("ENGRAM_KILL_CHILD") else {
        return;
    };
    let first: usize = std::env::var("ENGRAM_KILL_FIRST").unwrap().parse().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let model = model(scratch.path());
    let loras = adapters(&model);
    println!("{READY}");
    let start = Instant::now();
    for i in 0.. {
        save(&loras[(first + i) % 2], &model, Path::new(&target));
        // Never outlive a parent that failed to kill us.
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    old: usize,
    new: usize,
    recoveries: BTreeMap<String, usize>,
    left_before_recover: BTreeMap<String, usize>,
}

#[test]
fn kill_9_mid_save_leaves_the_old_or_the_new_adapter() {
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let model = model(scratch.path());
    let loras = adapters(&model);
    // The two known contents, written by the same save path.
    let refs: Vec<BTreeMap<String, Vec<u8>>> = (0..2)
        .map(|k| {
            let d = scratch.path().join(format!("ref-{k}"));
            save(&loras[k], &model, &d);
            contents(&d)
        })
        .collect();
    assert_ne!(refs[0], refs[1]);
    let size: usize = refs[0].values().map(Vec::len).sum();

    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("adapter");
    // Calibrate: how long one save takes here, so kills spread over a few saves.
    let t = Instant::now();
    for k in [0, 1, 0] {
        save(&loras[k], &model, &target);
    }
    let cycle = t.elapsed() / 3;
    let mut current = 0;

    let mut rng = ChaCha8Rng::seed_from_u64(0x6b11_1009);
    let mut tally = Tally::default();
    let exe = std::env::current_exe().unwrap();
    for trial in 0..TRIALS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "kill_child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("ENGRAM_KILL_CHILD", &target)
            .env("ENGRAM_KILL_FIRST", (1 - current).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(READY) {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "trial {trial}: the child died"
            );
        }
        // Anywhere from before the first save to the middle of the fourth.
        let delay = cycle.mul_f64(rng.random_range(0.0..3.5));
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "trial {trial}: the child finished before the kill"
        );

        let mut left: Vec<String> = names(root.path())
            .into_iter()
            .filter(|n| n != "adapter")
            .map(|n| n.trim_start_matches(".adapter.").to_string())
            .collect();
        if !target.exists() {
            left.push("no-target".into());
        }
        let key = if left.is_empty() {
            "nothing".into()
        } else {
            left.join("+")
        };
        *tally.left_before_recover.entry(key).or_default() += 1;

        // What every opener does first.
        let r = recover(&target).unwrap();
        assert_ne!(
            r,
            Recovery::Busy,
            "trial {trial}: the killed child's lock was released"
        );
        *tally.recoveries.entry(format!("{r:?}")).or_default() += 1;

        assert_eq!(
            names(root.path()),
            ["adapter"],
            "trial {trial}: leftovers after recovery"
        );
        let now = contents(&target);
        let which = refs
            .iter()
            .position(|r| *r == now)
            .unwrap_or_else(|| panic!("trial {trial}: a mixed directory: {:?}", names(&target)));
        if which == current {
            tally.old += 1;
        } else {
            tally.new += 1;
        }
        current = which;
        // And the loader reads it.
        let loaded = Lora::load(&model, &target).unwrap();
        assert_eq!(loaded.to_host(), loras[which].to_host(), "trial {trial}");
    }
    println!(
        "kill -9 test: {TRIALS} trials, {:.1} MB per adapter directory, one save ≈ {:?}; \
         after recovery: old {} / new {} / mixed 0, leftovers 0; recoveries {:?}; \
         found before recovery {:?}; {:.1} s",
        size as f64 / 1e6,
        cycle,
        tally.old,
        tally.new,
        tally.recoveries,
        tally.left_before_recover,
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.old > 0 && tally.new > 0,
        "kills landed on both sides: {tally:?}"
    );
}

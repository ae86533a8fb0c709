//! The learning runtime on the tiny synthetic llama (byte tokenizer in the file): state that
//! resumes bit for bit, one writer at a time, settings and model checked on open, snapshots
//! that never change under a reader, every strategy stepping, damage refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engram_harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, tiny_llama_gguf_with_bytes};
use engram_kernels::GgmlType;
use engram_learn::live::{
    Budget, LiveConfig, LiveError, LiveModel, Observation, Snapshot, Strategy,
};
use engram_runtime::backend;
use engram_runtime::engine::Engine;
use engram_runtime::io::DirError;

fn model(dir: &Path, seed: u64) -> PathBuf {
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let path = dir.join(format!("tiny-{seed}.gguf"));
    std::fs::write(
        &path,
        tiny_llama_gguf_with_bytes(&spec, GgmlType::Q8_0, seed),
    )
    .unwrap();
    path
}

fn engine(path: &Path) -> Arc<Engine> {
    Arc::new(Engine::load(path, &backend::cpu().autodiff(), 1).unwrap())
}

fn config(strategy: Strategy) -> LiveConfig {
    let mut c = LiveConfig {
        strategy,
        buffer: 8,
        batch: 4,
        max_len: 24,
        lr: 5e-3,
        ..LiveConfig::default()
    };
    c.lora.rank = 4;
    c
}

fn examples(task: &str, n: usize) -> Vec<Observation> {
    (0..n)
        .map(|i| {
            Observation::pair(format!("{task} {i}:"), format!(" answer {}", i * 7 % 10))
                .with_task(task)
        })
        .collect()
}

fn lora_bytes(dir: &Path) -> Vec<u8> {
    let snap = engram_runtime::io::read_state(dir).unwrap();
    snap.get("lora.bin").unwrap().to_vec()
}

#[test]
fn a_resumed_state_learns_exactly_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(&model(tmp.path(), 1));
    let cfg = config(Strategy::Er);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // A: one process all along.
    {
        let live = LiveModel::open(e.clone(), &a, &cfg).unwrap();
        for x in examples("t0", 10).into_iter().chain(examples("t1", 10)) {
            assert!(live.observe(x).unwrap());
        }
        live.learn(&Budget::steps(3));
        live.commit().unwrap();
        live.learn(&Budget::steps(4));
        live.commit().unwrap();
    }
    // B: killed (dropped) after the first commit, resumed from the directory.
    {
        let live = LiveModel::open(e.clone(), &b, &cfg).unwrap();
        for x in examples("t0", 10).into_iter().chain(examples("t1", 10)) {
            live.observe(x).unwrap();
        }
        live.learn(&Budget::steps(3));
        assert_eq!(live.commit().unwrap(), 2);
    }
    let live = LiveModel::open(e.clone(), &b, &cfg).unwrap();
    assert_eq!(live.progress().steps, 3);
    assert!(live.pending() > 0, "the queue is part of the state");
    let r = live.learn(&Budget::steps(4));
    assert_eq!(r.steps, 4);
    assert_eq!(live.commit().unwrap(), 3);
    assert_eq!(lora_bytes(&a), lora_bytes(&b), "resume is exact");
    let s = engram_learn::live::verify(&e, &b).unwrap();
    assert_eq!(s.generation, 3);
    assert_eq!(s.progress.steps, 7);
    assert!(s.memory_fill > 0);
}

#[test]
fn one_writer_settings_and_model_are_checked_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(&model(tmp.path(), 1));
    let dir = tmp.path().join("s");
    let cfg = config(Strategy::Naive);
    let live = LiveModel::open(e.clone(), &dir, &cfg).unwrap();
    assert!(matches!(
        LiveModel::open(e.clone(), &dir, &cfg),
        Err(LiveError::Dir(DirError::Lock(_)))
    ));
    // Readers do not wait for the writer.
    assert_eq!(Snapshot::read(e.clone(), &dir).unwrap().generation(), 1);
    drop(live);
    let other = config(Strategy::Er);
    assert!(matches!(
        LiveModel::open(e.clone(), &dir, &other),
        Err(LiveError::Mismatch {
            field: "strategy",
            ..
        })
    ));
    assert_eq!(LiveModel::stored_config(&dir).unwrap(), Some(cfg.clone()));
    let e2 = engine(&model(tmp.path(), 2));
    assert!(matches!(
        LiveModel::open(e2.clone(), &dir, &cfg),
        Err(LiveError::OtherModel { .. })
    ));
    assert!(Snapshot::read(e2, &dir).is_err());
    // Bad settings are refused before anything is written.
    let bad = LiveConfig {
        max_len: 100_000,
        ..cfg.clone()
    };
    let fresh = tmp.path().join("fresh");
    assert!(matches!(
        LiveModel::open(e, &fresh, &bad),
        Err(LiveError::Config(_))
    ));
    assert!(!fresh.exists());
}

#[test]
fn a_snapshot_never_changes_under_its_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(&model(tmp.path(), 3));
    let live = LiveModel::open(e, &tmp.path().join("s"), &config(Strategy::Naive)).unwrap();
    let before = live.snapshot();
    let (_, logits0) = before.last_logits("t0 1:").unwrap();
    for x in examples("t0", 12) {
        live.observe(x).unwrap();
    }
    live.learn(&Budget::default());
    live.commit().unwrap();
    let after = live.snapshot();
    assert!(after.generation() > before.generation());
    assert_eq!(
        before.last_logits("t0 1:").unwrap().1,
        logits0,
        "held snapshot unchanged"
    );
    assert_ne!(
        after.last_logits("t0 1:").unwrap().1,
        logits0,
        "new snapshot learned"
    );
    let eval = after.evaluate(&examples("t0", 4)).unwrap();
    assert!(eval.loss.is_finite() && eval.tokens > 0);
}

#[test]
fn every_strategy_steps_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(&model(tmp.path(), 4));
    for name in ["naive", "er", "der++", "lwf", "mkd", "ewc", "si"] {
        let dir = tmp.path().join(name);
        let cfg = config(Strategy::named(name).unwrap());
        {
            let live = LiveModel::open(e.clone(), &dir, &cfg).unwrap();
            for x in examples("a", 6).into_iter().chain(examples("b", 6)) {
                live.observe(x).unwrap();
            }
            let r = live.learn(&Budget::default());
            assert!(r.steps >= 3, "{name}: {r:?}");
            assert!(r.mean_loss.unwrap().is_finite(), "{name}: {r:?}");
            live.commit().unwrap();
        }
        let s = engram_learn::live::verify(&e, &dir).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(s.progress.tasks, ["a", "b"], "{name}");
        let live = LiveModel::open(e.clone(), &dir, &cfg).unwrap();
        for x in examples("c", 4) {
            live.observe(x).unwrap();
        }
        assert!(live.learn(&Budget::default()).steps >= 1, "{name} resumes");
    }
}

#[test]
fn damage_is_refused_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = engine(&model(tmp.path(), 5));
    let dir = tmp.path().join("s");
    let cfg = config(Strategy::Er);
    {
        let live = LiveModel::open(e.clone(), &dir, &cfg).unwrap();
        for x in examples("a", 8) {
            live.observe(x).unwrap();
        }
        live.learn(&Budget::steps(2));
        live.commit().unwrap();
    }
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-memory.bin"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let err = engram_learn::live::verify(&e, &dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("memory.bin"), "{err}");
    assert!(LiveModel::open(e, &dir, &cfg).is_err());
}

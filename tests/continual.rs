//! Continual learning on real data (scikit-learn's Digits, fetched from PyPI by
//! scripts/fetch_cl_data.sh when missing): experience replay must forget less than naive
//! fine-tuning, and a restart from a checkpoint must resume with the exact same buffer.

use std::path::PathBuf;
use std::process::Command;

use engram::backend;
use engram::harness::datasets as data;
use engram::learn::checkpoint;
use engram::learn::data::Stream;
use engram::learn::metrics::iqm;
use engram::learn::protocol::{self, HParams, Mode, RunConfig, StrategyKind};

/// The Split-Digits stream, fetching the file once if the cache lacks it.
fn split_digits() -> Stream {
    let dir = data::data_dir().expect("a data directory");
    if !dir.join("digits.csv.gz").exists() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch_cl_data.sh");
        let status = Command::new("bash")
            .arg(script)
            .arg("digits")
            .status()
            .expect("bash runs");
        assert!(status.success(), "scripts/fetch_cl_data.sh digits failed");
    }
    data::split_digits(&dir).expect("digits.csv.gz parses")
}

fn config(strategy: StrategyKind, seed: u64) -> RunConfig {
    RunConfig {
        strategy,
        hidden: vec![100, 100],
        mode: Mode::Online,
        buffer: 200,
        seed,
        hp: HParams {
            lr: 0.1,
            strength: 1.0,
        },
    }
}

#[test]
fn experience_replay_forgets_less_than_naive_fine_tuning_on_split_digits() {
    let stream = split_digits();
    let device = backend::cpu().autodiff();
    let forgetting = |kind| -> (f64, f64) {
        let (mut f, mut a) = (Vec::new(), Vec::new());
        for seed in 0..3 {
            let r = protocol::run(&stream, &config(kind, seed), &device, |_, _, _| {});
            f.push(f64::from(r.class_il.average_forgetting().unwrap()));
            a.push(f64::from(r.class_il.average_accuracy()));
        }
        (iqm(&f), iqm(&a))
    };
    let (naive_f, naive_a) = forgetting(StrategyKind::Naive);
    let (er_f, er_a) = forgetting(StrategyKind::Er);
    eprintln!(
        "naive: forgetting {naive_f:.3} acc {naive_a:.3}; er: forgetting {er_f:.3} acc {er_a:.3}"
    );
    // Naive fine-tuning on a class-incremental stream forgets nearly everything it learned.
    assert!(naive_f > 0.6, "naive forgetting {naive_f}");
    assert!(
        er_f < 0.6 * naive_f,
        "ER forgetting {er_f} vs naive {naive_f}"
    );
    assert!(
        er_a > naive_a + 0.2,
        "ER accuracy {er_a} vs naive {naive_a}"
    );
}

#[test]
fn a_restart_from_a_checkpoint_resumes_with_the_same_buffer_and_weights() {
    let stream = split_digits();
    let device = backend::cpu().autodiff();
    let cfg = config(StrategyKind::Er, 7);
    let dir = tempfile::tempdir().unwrap();
    let mut a = protocol::build_learner(&cfg, stream.dim, stream.n_classes, &device);
    for (i, t) in stream.tasks.iter().take(2).enumerate() {
        a.train_task(i as u32, &t.train, &t.classes);
    }
    checkpoint::save(&a, dir.path()).unwrap();

    // A fresh process would build the same learner and restore it.
    let mut b = protocol::build_learner(&cfg, stream.dim, stream.n_classes, &device);
    assert_ne!(a.buffer, b.buffer);
    checkpoint::restore(&mut b, dir.path()).unwrap();
    assert_eq!(a.buffer, b.buffer, "restored buffer differs");
    assert_eq!(a.params.to_host(), b.params.to_host());
    assert_eq!(a.state(), b.state());

    // Both continue identically: same draws from the buffer, same shuffles, same weights.
    let t = &stream.tasks[2];
    a.train_task(2, &t.train, &t.classes);
    b.train_task(2, &t.train, &t.classes);
    assert_eq!(a.buffer, b.buffer);
    assert_eq!(a.params.to_host(), b.params.to_host());

    // A corrupt snapshot is refused and leaves the learner untouched.
    let before = b.params.to_host();
    // The checkpoint is one generation of a state directory: the snapshot is `g<N>-replay.bin`.
    let snap = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-replay.bin"))
        .expect("the checkpoint holds a replay snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snap, bytes).unwrap();
    assert!(checkpoint::restore(&mut b, dir.path()).is_err());
    assert_eq!(b.params.to_host(), before);
    assert_eq!(a.buffer, b.buffer);
}

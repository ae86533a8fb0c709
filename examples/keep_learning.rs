//! The learning runtime on the real model: SmolLM2-135M learns three Debian `fortunes`
//! categories one after another (science → computers → food) with experience replay, serving
//! a prompt from the last published snapshot while it learns; in the middle of the second
//! category the learner (a child process) is killed with SIGKILL and the state resumes from
//! its directory. The same stream through naive fine-tuning gives the forgetting to compare.
//!
//! ```sh
//! scripts/fetch_cl_data.sh fortunes        # once
//! cargo run --release --example keep_learning
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engram::harness::datasets::data_dir;
use engram::harness::lm_track::{PROMPT, load_fortunes};
use engram::learn::live::{Budget, LiveConfig, LiveModel, Observation, Snapshot, Strategy};
use engram::{Engine, GenerateOptions, backend, resolve_model};

const CATEGORIES: [&str; 3] = ["science", "computers", "food"];
/// Steps per category (batch 4): every strategy spends the same compute.
const STEPS: u64 = 24;
const COMMIT_EVERY: u64 = 4;
const SERVE_PROMPT: &str = "A fortune cookie says:\n";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn config(strategy: Strategy) -> LiveConfig {
    LiveConfig {
        strategy,
        buffer: 64,
        batch: 4,
        max_len: 48,
        lr: 2e-3,
        ..LiveConfig::default()
    }
}

/// 96 training and 24 held-out fortunes per category (every other one held out first).
fn split(category: &str) -> Result<(Vec<Observation>, Vec<Observation>)> {
    let all = load_fortunes(&data_dir()?, category)?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, f) in all.into_iter().enumerate() {
        let x = Observation::pair(PROMPT, f).with_task(category);
        if i % 2 == 1 && test.len() < 24 {
            test.push(x);
        } else if train.len() < 96 {
            train.push(x);
        }
    }
    Ok((train, test))
}

/// Feeds `data` in a cycle and learns until the state has taken `until` steps in all,
/// committing every few steps; stops early when `stop` is set.
fn learn_until(
    live: &LiveModel,
    data: &[Observation],
    until: u64,
    stop: &AtomicBool,
) -> Result<()> {
    let mut next = data.iter().cycle();
    while live.progress().steps < until && !stop.load(Ordering::Relaxed) {
        while live.pending() < live.config().batch {
            live.observe(next.next().expect("data").clone())?;
        }
        live.learn(&Budget::steps(1));
        if live.progress().steps.is_multiple_of(COMMIT_EVERY) {
            live.commit()?;
        }
    }
    live.discard_pending();
    live.commit()?;
    Ok(())
}

fn greedy(snap: &Snapshot) -> String {
    let opts = GenerateOptions {
        max_new_tokens: 12,
        ..GenerateOptions::default()
    };
    snap.complete(SERVE_PROMPT, &opts)
        .map(|(t, _)| t.replace('\n', " "))
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// The child: learns `category` into `state` until killed.
fn child(model: &Path, state: &Path, category: &str) -> Result<()> {
    let engine = Arc::new(Engine::load(model, &backend::cpu().autodiff(), 0)?);
    let config = LiveModel::stored_config(state)?.ok_or("no state to resume")?;
    let live = LiveModel::open(engine, state, &config)?;
    let (train, _) = split(category)?;
    learn_until(&live, &train, u64::MAX, &AtomicBool::new(false))
}

/// The stream through `strategy`; with `kill`, the second category's learner is a child
/// process killed mid-way. Returns the held-out loss matrix.
fn run(
    engine: &Arc<Engine>,
    model: &Path,
    dir: &Path,
    strategy: Strategy,
    kill: bool,
) -> Result<Vec<Vec<f32>>> {
    let cfg = config(strategy);
    let tests: Vec<Vec<Observation>> = CATEGORIES
        .iter()
        .map(|c| Ok(split(c)?.1))
        .collect::<Result<_>>()?;
    let mut matrix = Vec::new();
    let mut live = Some(LiveModel::open(engine.clone(), dir, &cfg)?);
    for (k, category) in CATEGORIES.iter().enumerate() {
        let (train, _) = split(category)?;
        let until = (k as u64 + 1) * STEPS;
        if kill && k == 1 {
            // Hand the state to a child process, let it commit a few times, then SIGKILL it.
            let before = live.take().expect("open").snapshot().generation();
            let mut ch = Command::new(std::env::current_exe()?)
                .args([
                    "--child",
                    &model.display().to_string(),
                    &dir.display().to_string(),
                    category,
                ])
                .spawn()?;
            let t0 = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let g = Snapshot::read(engine.clone(), dir)?.generation();
                if g >= before + 2 || t0.elapsed() > Duration::from_secs(120) {
                    break;
                }
            }
            ch.kill()?; // SIGKILL on unix
            ch.wait()?;
            let resumed = LiveModel::open(engine.clone(), dir, &cfg)?;
            println!(
                "  killed the learner (SIGKILL) mid-category; resumed at generation {}, step {} of {until}",
                resumed.snapshot().generation(),
                resumed.progress().steps
            );
            live = Some(resumed);
        }
        let l = live.as_ref().expect("open");
        // Learn on a background thread; serve from the published snapshot meanwhile.
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| -> Result<()> {
            let learner =
                s.spawn(|| learn_until(l, &train, until, &stop).map_err(|e| e.to_string()));
            // Serve a prompt whenever a new generation is published (at most twice a category).
            let (mut served, mut last) = (0, u64::MAX);
            while !learner.is_finished() {
                let snap = l.snapshot();
                if served < 2 && snap.generation() != last {
                    println!(
                        "  [serving generation {:>3}] {}",
                        snap.generation(),
                        greedy(&snap)
                    );
                    (served, last) = (served + 1, snap.generation());
                }
                std::thread::sleep(Duration::from_secs(4));
            }
            learner.join().expect("learner thread")?;
            Ok(())
        })?;
        let snap = l.snapshot();
        let row: Vec<f32> = tests
            .iter()
            .map(|t| snap.evaluate(t).map(|r| r.loss))
            .collect::<std::result::Result<_, _>>()?;
        println!(
            "  after {category:<9} (generation {:>3}): held-out loss {}",
            snap.generation(),
            row.iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        matrix.push(row);
    }
    Ok(matrix)
}

/// Mean over the categories before the last of (final loss − best loss after learning it).
fn forgetting(m: &[Vec<f32>]) -> f32 {
    let t = m.len();
    let f: Vec<f32> = (0..t - 1)
        .map(|j| m[t - 1][j] - (j..t - 1).map(|l| m[l][j]).fold(f32::MAX, f32::min))
        .collect();
    f.iter().sum::<f32>() / f.len() as f32
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        return child(Path::new(&args[2]), Path::new(&args[3]), &args[4]);
    }
    let model: PathBuf = resolve_model(None)?;
    let engine = Arc::new(Engine::load(&model, &backend::cpu().autodiff(), 0)?);
    let work = tempfile::tempdir()?;
    let base = Snapshot::base(engine.clone());
    println!("base model: {}", greedy(&base));
    println!(
        "experience replay (M = 64, half of each batch replayed), {STEPS} steps per category:"
    );
    let er = run(&engine, &model, &work.path().join("er"), Strategy::Er, true)?;
    println!("naive fine-tuning, same steps:");
    let naive = run(
        &engine,
        &model,
        &work.path().join("naive"),
        Strategy::Naive,
        false,
    )?;
    let (fe, fnaive) = (forgetting(&er), forgetting(&naive));
    println!(
        "forgetting (nats/token): ER {fe:.3}, naive {fnaive:.3} -> ER forgets {:.2}x what naive does",
        fe / fnaive.max(1e-6)
    );
    Ok(())
}

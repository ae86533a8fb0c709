//! Domain-incremental language modelling through the learning runtime
//! ([`engram_learn::live::LiveModel`]): a LoRA adapter on the frozen SmolLM2 base learns a
//! sequence of Debian `fortunes` categories one after another. Forgetting is the rise of the
//! held-out loss (log-perplexity) on earlier categories; top-1 retention is the share of the
//! llama.cpp reference prompts whose greedy next token is still llama.cpp's.
//!
//! The benchmark exercises the product: the same `observe` / `learn` / `commit` and the
//! same published snapshots a device app uses. Every strategy spends the same compute — a
//! fixed number of steps of `batch` sequences per category, the data cycled as needed (ER and
//! DER++ replay half of each batch).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use engram_learn::live::{Budget, LiveConfig, LiveError, LiveModel, Observation, Strategy};
use engram_runtime::engine::Engine;

use crate::datasets::DataError;

/// Prompt every fortune is a completion of.
pub const PROMPT: &str = "A fortune cookie says:\n";

/// Fortunes of one category file (entries separated by `%` lines), between 40 and 300 bytes.
pub fn load_fortunes(dir: &Path, category: &str) -> Result<Vec<String>, DataError> {
    let path = dir.join("fortunes").join(category);
    let bytes = std::fs::read(&path).map_err(|source| DataError::Io {
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let out: Vec<String> = text
        .split("\n%\n")
        .map(|f| f.trim().to_owned())
        .filter(|f| (40..=300).contains(&f.len()))
        .collect();
    if out.len() < 10 {
        return Err(DataError::Format {
            path,
            what: format!("{} usable fortunes", out.len()),
        });
    }
    Ok(out)
}

/// Settings of the LM track.
#[derive(Clone, Debug)]
pub struct LmConfig {
    /// Categories in training order.
    pub categories: Vec<String>,
    /// Training fortunes per category.
    pub train_per_category: usize,
    /// Held-out fortunes per category.
    pub test_per_category: usize,
    /// Optimizer steps per category.
    pub steps_per_category: u64,
    /// The runtime's settings (strategy, LoRA, batch, memory, lr, max_len, seed).
    pub live: LiveConfig,
}

/// Results of one LM-track run.
#[derive(Clone, Debug)]
pub struct LmResult {
    /// `nll[i][j]`: mean held-out loss (nats/token) on category `j` after training category `i`.
    pub nll: Vec<Vec<f32>>,
    /// Held-out loss of the base model (no adapter) per category.
    pub base_nll: Vec<f32>,
    /// Top-1 agreement with llama.cpp on the reference prompts after each category.
    pub top1: Vec<f32>,
    /// Top-1 agreement of the base model.
    pub base_top1: f32,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl LmResult {
    /// Average forgetting in nats/token: over categories `j < T-1`, the final held-out loss
    /// minus the lowest reached before the end.
    pub fn forgetting(&self) -> f32 {
        let t = self.nll.len();
        let f: Vec<f32> = (0..t.saturating_sub(1))
            .map(|j| {
                let best = (j..t - 1).map(|l| self.nll[l][j]).fold(f32::MAX, f32::min);
                self.nll[t - 1][j] - best
            })
            .collect();
        f.iter().sum::<f32>() / f.len().max(1) as f32
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    /// The fortunes could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The runtime refused or failed.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The temporary state directory could not be made.
    #[error("temporary state directory: {0}")]
    Io(#[from] std::io::Error),
}

/// 96 training and 24 held-out fortunes (for the defaults): every other fortune from the
/// start is held out until there are enough.
fn split(all: Vec<String>, cfg: &LmConfig, category: &str) -> (Vec<Observation>, Vec<Observation>) {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, f) in all.into_iter().enumerate() {
        let x = Observation::pair(PROMPT, f).with_task(category);
        if i % 2 == 1 && test.len() < cfg.test_per_category {
            test.push(x);
        } else if train.len() < cfg.train_per_category {
            train.push(x);
        }
    }
    (train, test)
}

/// Runs the track with `strategy` on a fresh state; `refs` are (prompt, llama.cpp top-1 id).
pub fn run_lm(
    engine: &Arc<Engine>,
    data_dir: &Path,
    cfg: &LmConfig,
    strategy: Strategy,
    refs: &[(String, u32)],
    mut log: impl FnMut(&str),
) -> Result<LmResult, LmError> {
    let start = Instant::now();
    let mut streams = Vec::new();
    for c in &cfg.categories {
        streams.push(split(load_fortunes(data_dir, c)?, cfg, c));
    }
    let state = tempfile::tempdir()?;
    let live_cfg = LiveConfig {
        strategy,
        ..cfg.live.clone()
    };
    let live = LiveModel::open(engine.clone(), state.path(), &live_cfg)?;
    let top1 = |snap: &engram_learn::live::Snapshot| -> Result<f32, LiveError> {
        let mut hits = 0;
        for (prompt, want) in refs {
            let (_, logits) = snap
                .last_logits(prompt)
                .map_err(|e| LiveError::Example(e.to_string()))?;
            let top = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .unwrap_or(0);
            hits += usize::from(top as u32 == *want);
        }
        Ok(hits as f32 / refs.len().max(1) as f32)
    };
    let eval = |snap: &engram_learn::live::Snapshot| -> Result<Vec<f32>, LiveError> {
        streams
            .iter()
            .map(|(_, t)| snap.evaluate(t).map(|r| r.loss))
            .collect()
    };
    let base = engram_learn::live::Snapshot::base(engine.clone());
    let (base_nll, base_top1) = (eval(&base)?, top1(&base)?);
    let (mut nll, mut agree) = (Vec::new(), Vec::new());
    for (k, (train, _)) in streams.iter().enumerate() {
        let mut next = train.iter().cycle();
        for step in 0..cfg.steps_per_category {
            while live.pending() < live_cfg.batch {
                live.observe(next.next().expect("a non-empty category").clone())?;
            }
            let r = live.learn(&Budget::steps(1));
            if step % 10 == 0 {
                log(&format!(
                    "  category {k} step {step}: loss {:.3}",
                    r.mean_loss.unwrap_or(f32::NAN)
                ));
            }
        }
        live.discard_pending();
        live.commit()?;
        let snap = live.snapshot();
        let row = eval(&snap)?;
        let a = top1(&snap)?;
        log(&format!(
            "after {}: held-out loss {row:?}, top-1 agreement {a:.2}",
            cfg.categories[k]
        ));
        nll.push(row);
        agree.push(a);
    }
    Ok(LmResult {
        nll,
        base_nll,
        top1: agree,
        base_top1,
        seconds: start.elapsed().as_secs_f64(),
    })
}

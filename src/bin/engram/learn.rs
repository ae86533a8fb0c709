//! `engram learn`, `engram eval` and `engram state`: the learning runtime
//! ([`engram::learn::live`]) from the command line.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use engram::learn::live::{
    self, Budget, LiveConfig, LiveError, LiveModel, LiveOptions, Observation, Snapshot, Strategy,
    parse_line,
};
use engram::runtime::engine::Engine;
use engram::runtime::model::llama::Llama;
use engram::runtime::progress::Progress;

use crate::shared::{Result, SharedArgs, in_file, peak_rss};
use crate::ui::Bars;

/// A continual-learning strategy of the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Plain fine-tuning.
    Naive,
    /// Experience replay (half of each batch replayed).
    Er,
    /// DER++ (replay with stored top-k logits).
    #[value(name = "der++")]
    DerPp,
    /// Learning without Forgetting (teacher: the adapter at the last task boundary).
    Lwf,
    /// Momentum knowledge distillation (EMA teacher).
    Mkd,
    /// Online EWC.
    Ewc,
    /// Synaptic Intelligence.
    Si,
}

impl StrategyArg {
    fn strategy(self) -> Strategy {
        let name = self.to_possible_value().expect("no skipped strategies");
        Strategy::named(name.get_name()).expect("every choice is a strategy")
    }
}

/// `engram learn`.
#[derive(Args)]
pub struct LearnArgs {
    /// The state directory (created on first use; resumed after).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// Examples, one JSON object a line: {"prompt": .., "completion": ..} or {"text": ..},
    /// optional "task". `-` reads a stream from stdin and learns as lines arrive.
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: PathBuf,
    /// Strategy of a new state (default er).
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Passes over the file (not with stdin).
    #[arg(long, default_value_t = 1, conflicts_with = "steps",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,
    /// Exactly this many steps, cycling through the file as often as needed (what is left
    /// queued at the end is dropped): every strategy then spends the same compute, whatever
    /// share of each batch it replays.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Sequences per step of a new state (default 4).
    #[arg(long, value_parser = crate::shared::at_least_one)]
    pub batch: Option<usize>,
    /// Replay memory of a new state, in sequences (default 256).
    #[arg(long, value_parser = crate::shared::at_least_one)]
    pub buffer: Option<usize>,
    /// Learning rate of a new state (default 2e-3).
    #[arg(long, value_parser = crate::shared::finite_positive)]
    pub lr: Option<f32>,
    /// LoRA rank of a new state (default 8).
    #[arg(long, value_parser = crate::shared::at_least_one)]
    pub rank: Option<usize>,
    /// Longest sequence of a new state, in tokens (default 64).
    #[arg(long, value_parser = crate::shared::at_least_one)]
    pub max_len: Option<usize>,
    /// Seed of a new state (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Commit (a new generation, published to readers) every this many steps.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_every: u64,
    /// Refuse to start when the memory plan exceeds this many MiB.
    #[arg(long, value_parser = crate::shared::budget_mib)]
    pub budget_mib: Option<u64>,
    #[command(flatten)]
    pub shared: SharedArgs,
}

impl LearnArgs {
    /// The configuration the flags ask for (defaults for the ones not given).
    fn config(&self) -> LiveConfig {
        let mut c = LiveConfig::default();
        if let Some(s) = self.strategy {
            c.strategy = s.strategy();
        }
        c.batch = self.batch.unwrap_or(c.batch);
        c.buffer = self.buffer.unwrap_or(c.buffer);
        c.lr = self.lr.unwrap_or(c.lr);
        c.lora.rank = self.rank.unwrap_or(c.lora.rank);
        c.max_len = self.max_len.unwrap_or(c.max_len);
        c.seed = self.seed.unwrap_or(c.seed);
        c.lora.seed = c.seed;
        c
    }

    /// A new state's settings checked against `model`, errors naming the flag that set them.
    fn check_new(&self, config: &LiveConfig, model: &Llama) -> Result<()> {
        let max = engram::adapters::lora::max_rank(model, &config.lora.targets);
        if config.lora.rank > max {
            return Err(format!(
                "--rank {}: at most {max}, the largest rank an adapted projection can take",
                config.lora.rank
            )
            .into());
        }
        config
            .validate(model.config().n_ctx_train)
            .map_err(|e| format!("--{} {}", e.field.replace('_', "-"), e.what).into())
    }

    /// A resumed state's own settings, with every flag given checked against them.
    fn resumed(&self, stored: LiveConfig) -> Result<LiveConfig> {
        let differs = |flag: &str, asked: String, have: String| -> Result<LiveConfig> {
            Err(format!(
                "{}: --{flag} {asked}, but the state was created with {have}; a state keeps its own \
                 settings (omit the flag, or use another --state)",
                self.state.display()
            )
            .into())
        };
        if let Some(s) = self.strategy
            && s.strategy() != stored.strategy
        {
            return differs("strategy", strategy_name(s), stored.strategy.name().into());
        }
        let checks: [(&str, Option<String>, String); 6] = [
            (
                "batch",
                self.batch.map(|v| v.to_string()),
                stored.batch.to_string(),
            ),
            (
                "buffer",
                self.buffer.map(|v| v.to_string()),
                stored.buffer.to_string(),
            ),
            ("lr", self.lr.map(|v| v.to_string()), stored.lr.to_string()),
            (
                "rank",
                self.rank.map(|v| v.to_string()),
                stored.lora.rank.to_string(),
            ),
            (
                "max-len",
                self.max_len.map(|v| v.to_string()),
                stored.max_len.to_string(),
            ),
            (
                "seed",
                self.seed.map(|v| v.to_string()),
                stored.seed.to_string(),
            ),
        ];
        for (flag, asked, have) in checks {
            if let Some(a) = asked
                && a != have
            {
                return differs(flag, a, have);
            }
        }
        Ok(stored)
    }
}

fn strategy_name(s: StrategyArg) -> String {
    s.strategy().name().to_owned()
}

/// Engine shared between the learner and its snapshots (training needs autodiff).
fn engine(shared: &SharedArgs, autodiff: bool, bars: &Bars) -> Result<Arc<Engine>> {
    Ok(Arc::new(shared.load(autodiff, bars)?.0))
}

/// `engram learn`: trains the state on the file's lines (or stdin's), committing every
/// `--commit-every` steps and at the end; the last stdout line with `--json` is
/// `{"steps", "examples_seen", "generation", "seconds"}`.
pub fn learn(args: LearnArgs, bars: &Bars) -> Result<()> {
    let started = Instant::now();
    let asked = args.config();
    let stored = LiveModel::stored_config(&args.state)?;
    let fresh = stored.is_none();
    let config = match stored {
        Some(stored) => args.resumed(stored)?,
        None => asked,
    };
    let engine = engine(&args.shared, true, bars)?;
    if fresh {
        args.check_new(&config, engine.model())?;
    }
    let options = LiveOptions {
        budget: args.budget_mib.map(|m| m << 20), // checked by the flag's parser
        edit_cache: None,
    };
    let live = LiveModel::open_with(engine, &args.state, &config, options)?;
    tracing::info!(
        "{}: generation {}, {} steps so far, strategy {}; plan {} MiB",
        args.state.display(),
        live.snapshot().generation(),
        live.progress().steps,
        config.strategy.name(),
        live.plan().total() >> 20
    );
    let stdin = args.data.as_os_str() == "-";
    let batch = config.batch;
    let mut since_commit = 0u64;
    // Learn while a full batch is waiting (or, with `drain`, while anything is).
    let step = |live: &LiveModel, since: &mut u64, drain: bool| -> Result<()> {
        while live.pending() >= batch || (drain && live.pending() > 0) {
            let r = live.learn(&Budget::steps(1));
            if let Some(loss) = r.mean_loss {
                bars.message(format!("loss {loss:.3}"));
            }
            since_commit_steps(live, since, r.steps, args.commit_every)?;
            if r.steps == 0 {
                break;
            }
        }
        Ok(())
    };
    if stdin {
        bars.start("learning from stdin", 0);
        for (i, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.map_err(|e| in_file(Path::new("-"), e))?;
            if let Some(x) = parse_line(&line, Path::new("-"), i + 1)? {
                observe(&live, x)?;
                bars.advance(1);
                step(&live, &mut since_commit, false)?;
            }
        }
    } else if let Some(steps) = args.steps {
        let data = live::load_jsonl(&args.data)?;
        bars.start("learning steps", steps);
        let mut next = data.iter().cycle();
        let mut done = 0;
        while done < steps {
            while live.pending() < batch {
                observe(&live, next.next().expect("a non-empty file").clone())?;
            }
            let r = live.learn(&Budget::steps(1));
            done += r.steps;
            since_commit_steps(&live, &mut since_commit, r.steps, args.commit_every)?;
            if let Some(loss) = r.mean_loss {
                bars.message(format!("loss {loss:.3}"));
            }
            bars.advance(r.steps);
        }
        live.discard_pending();
    } else {
        let data = live::load_jsonl(&args.data)?;
        bars.start("learning", data.len() as u64 * u64::from(args.epochs));
        for _ in 0..args.epochs {
            for x in &data {
                observe(&live, x.clone())?;
                bars.advance(1);
                step(&live, &mut since_commit, false)?;
            }
        }
    }
    step(&live, &mut since_commit, true)?;
    let generation = live.commit()?;
    bars.finish();
    let p = live.progress();
    let seconds = started.elapsed().as_secs_f64();
    if args.shared.json {
        println!(
            "{}",
            serde_json::json!({
                "steps": p.steps,
                "examples_seen": p.examples_seen,
                "generation": generation,
                "seconds": seconds,
                "plan_bytes": live.plan().total(),
                "peak_rss_bytes": peak_rss(),
            })
        );
    } else {
        println!(
            "{}: generation {generation}, {} steps, {} examples seen ({seconds:.1} s)",
            args.state.display(),
            p.steps,
            p.examples_seen
        );
    }
    Ok(())
}

/// Commits once `commit_every` steps have passed since the last commit.
fn since_commit_steps(
    live: &LiveModel,
    since: &mut u64,
    steps: u64,
    commit_every: u64,
) -> Result<()> {
    *since += steps;
    if *since >= commit_every {
        live.commit()?;
        *since = 0;
    }
    Ok(())
}

fn observe(live: &LiveModel, x: Observation) -> Result<()> {
    match live.observe(x) {
        Ok(_) => Ok(()),
        Err(LiveError::QueueFull) => {
            live.learn(&Budget::steps(1));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `engram eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// A state directory (its committed generation); without it, the base model.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Examples, as for `engram learn`.
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: PathBuf,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// `engram eval`: `{"loss": nats per completion token, "tokens": n}` with `--json`.
pub fn eval(args: EvalArgs, bars: &Bars) -> Result<()> {
    let lines = live::load_jsonl_numbered(&args.data)?;
    let engine = engine(&args.shared, false, bars)?;
    let snap = serving(engine, args.state.as_deref())?;
    // Every example must leave some completion to score within the state's sequence length:
    // one that does not would be dropped and the loss reported over the rest.
    let max_len = snap.config().cloned().unwrap_or_default().max_len;
    let tok = snap.engine().tokenizer();
    for (line, x) in &lines {
        if x.encode(tok, max_len).is_none() {
            return Err(format!(
                "{}:{line}: nothing of the completion fits in the {max_len}-token context \
                 (the prompt fills it, or the text is one token)",
                args.data.display()
            )
            .into());
        }
    }
    let data: Vec<_> = lines.into_iter().map(|(_, x)| x).collect();
    let r = snap.evaluate(&data)?;
    if args.shared.json {
        println!(
            "{}",
            serde_json::json!({ "loss": r.loss, "tokens": r.tokens })
        );
    } else {
        println!(
            "loss {:.4} nats/token over {} completion tokens (generation {})",
            r.loss,
            r.tokens,
            snap.generation()
        );
    }
    Ok(())
}

/// The committed state in `dir` to serve, or the base model.
pub fn serving(engine: Arc<Engine>, dir: Option<&Path>) -> Result<Snapshot> {
    Ok(match dir {
        Some(d) => Snapshot::read(engine, d)?,
        None => Snapshot::base(engine),
    })
}

/// `engram state`.
#[derive(Args)]
pub struct StateArgs {
    /// The state directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Load everything against the model and exit non-zero if anything is wrong.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// `engram state`: what the state holds; `--verify` checks every file against the model.
pub fn state(args: StateArgs, bars: &Bars) -> Result<()> {
    let s = if args.verify {
        let engine = engine(&args.shared, false, bars)?;
        live::verify(&engine, &args.dir)?
    } else {
        live::inspect(&args.dir)?
    };
    if args.shared.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "{}: generation {}, {} steps, {} examples seen, strategy {}, memory {}/{}, {} pending, \
             {} edits, {} bytes{}",
            args.dir.display(),
            s.generation,
            s.progress.steps,
            s.progress.examples_seen,
            s.config.strategy.name(),
            s.memory_fill,
            s.memory_capacity,
            s.pending,
            s.edits,
            s.bytes,
            if args.verify { "; verified" } else { "" }
        );
    }
    Ok(())
}

/// `engram edit --state DIR`: writes `reqs` into the state (each on top of the adapter and the
/// edits before it) and commits one generation; prints `{"applied": [{"id", "case_id"}],
/// "generation"}` with `--json`.
pub fn edit_state(
    dir: &Path,
    facts: &Path,
    method: engram::edit::Method,
    shared: &SharedArgs,
    bars: &Bars,
) -> Result<()> {
    let config = LiveModel::stored_config(dir)?.ok_or_else(|| {
        format!(
            "{}: no learning state (create one with `engram learn --state`)",
            dir.display()
        )
    })?;
    let engine = engine(shared, true, bars)?;
    // Every request is checked before the first is applied: a bad one changes nothing.
    let reqs = &crate::edit::requests(&engine, facts)?;
    let live = LiveModel::open(engine, dir, &config)?;
    bars.start(&format!("{} edits", method.name()), reqs.len() as u64);
    let mut applied = Vec::with_capacity(reqs.len());
    for r in reqs {
        let id = live.edit(r, method)?;
        applied.push(serde_json::json!({ "id": id, "case_id": r.case_id }));
        bars.advance(1);
    }
    bars.finish();
    let generation = live.commit()?;
    if shared.json {
        println!(
            "{}",
            serde_json::json!({ "applied": applied, "generation": generation })
        );
    } else {
        println!(
            "{}: {} edits ({}) written, generation {generation}",
            dir.display(),
            applied.len(),
            method.name()
        );
    }
    Ok(())
}

//! `engram cl-bench`: the continual-learning benchmark tables of docs/BENCHMARKS.md.
//!
//! Evaluation uses hyper-parameters frozen beforehand (the committed ones, tuned on
//! Split-Digits, or `--hparams FILE`); `--tune FILE` runs the tuning grid on the chosen stream
//! and writes the winners instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use engram::harness::datasets as data;
use engram::learn::data::Stream;
use engram::learn::metrics::{AccuracyMatrix, bootstrap_iqm_ci, iqm};
use engram::learn::protocol::{self, HParams, Mode, RunConfig, RunResult, StrategyKind, Tuned};
use engram::runtime::progress::Progress;
use serde_json::json;

use crate::shared::{self, Result, SharedArgs};
use crate::ui::Bars;

/// A benchmark stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    /// Split-Digits (an MLP, 5 tasks of 2 classes).
    Digits,
    /// Split-Fashion-MNIST (an MLP, 5 tasks of 2 classes).
    Fashion,
    /// The language-model track: LoRA on the model over fortune categories (naive, er, lwf).
    Fortunes,
}

/// The training regime of the MLP streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// One pass, batch 10.
    Online,
    /// `--epochs` passes, batch 32.
    Offline,
}

/// A continual-learning strategy (`StrategyKind`; the fortunes track runs the learning
/// runtime's: naive, er, der++, lwf, er+mkd as MKD, ewc-online, si).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// Fine-tuning on each task in turn (lower bound).
    Naive,
    /// All tasks at once (upper bound).
    Joint,
    /// Online elastic weight consolidation.
    #[value(name = "ewc-online")]
    OnlineEwc,
    /// Synaptic intelligence.
    Si,
    /// Learning without forgetting.
    Lwf,
    /// Experience replay.
    Er,
    /// Dark experience replay++.
    #[value(name = "der++")]
    DerPlusPlus,
    /// Experience replay with momentum knowledge distillation.
    #[value(name = "er+mkd")]
    ErMkd,
    /// iCaRL.
    Icarl,
}

impl StrategyArg {
    fn name(self) -> String {
        let v = self.to_possible_value().expect("no skipped strategies");
        v.get_name().to_owned()
    }

    fn kind(self) -> StrategyKind {
        StrategyKind::parse(&self.name()).expect("the CLI's names are StrategyKind's")
    }
}

/// Options of `engram cl-bench`.
#[derive(Args)]
pub struct ClBenchArgs {
    /// The stream.
    #[arg(long, value_enum, default_value_t = StreamArg::Digits)]
    stream: StreamArg,
    /// Seeds per configuration (0..N).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    seeds: u64,
    /// The training regime (MLP streams).
    #[arg(long, value_enum, default_value_t = ModeArg::Online)]
    mode: ModeArg,
    /// Passes per task in offline mode.
    #[arg(long, default_value_t = 3, value_parser = crate::shared::at_least_one)]
    epochs: usize,
    /// Replay memory sizes for the replay strategies.
    #[arg(long, value_delimiter = ',', default_value = "200,500")]
    buffers: Vec<usize>,
    /// Strategies (default: all; the fortunes track: naive, er, lwf).
    #[arg(long, value_enum, value_delimiter = ',')]
    strategies: Vec<StrategyArg>,
    /// Hidden widths of the MLP.
    #[arg(long, value_delimiter = ',', default_value = "100,100",
          value_parser = crate::shared::at_least_one)]
    hidden: Vec<usize>,
    /// Frozen hyper-parameters (JSON, as `--tune` writes); default: the committed ones.
    #[arg(long)]
    hparams: Option<PathBuf>,
    /// Tune instead: run the grid on this stream (seeds 0..N, first buffer size) and write
    /// the best hyper-parameters per strategy (by final class-IL accuracy) to this file.
    #[arg(long)]
    tune: Option<PathBuf>,
    /// Also write the markdown tables to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// LM track: fortune categories in training order.
    #[arg(long, value_delimiter = ',', default_value = "science,computers,food")]
    categories: Vec<String>,
    /// LM track: optimizer steps per category.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..))]
    lm_steps: u64,
    /// LM track: llama.cpp's reference logits (`logits_public.json`), for top-1 retention
    /// (default: `$ENGRAM_REFERENCE_DIR/logits_public.json`).
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Environment variable naming the directory of llama.cpp's reference outputs (as the parity
/// tests read it).
const REFERENCE_ENV_VAR: &str = "ENGRAM_REFERENCE_DIR";

/// The reference logits file: `--reference`, else `$ENGRAM_REFERENCE_DIR/logits_public.json`.
fn reference_path(args: &ClBenchArgs) -> Result<PathBuf> {
    if let Some(p) = &args.reference {
        return Ok(p.clone());
    }
    match std::env::var_os(REFERENCE_ENV_VAR).filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("logits_public.json")),
        None => Err(format!(
            "the fortunes track needs llama.cpp's reference logits: pass --reference \
             FILE (e.g. ../shared/reference/logits_public.json beside the repository) or set \
             {REFERENCE_ENV_VAR} to the directory holding logits_public.json"
        )
        .into()),
    }
}

fn load_stream(stream: StreamArg) -> Result<Stream> {
    let dir = data::data_dir()?;
    Ok(match stream {
        StreamArg::Digits => data::split_digits(&dir)?,
        StreamArg::Fashion => data::split_fashion_mnist(&dir)?,
        StreamArg::Fortunes => unreachable!("the LM track loads no MLP stream"),
    })
}

/// Runs the benchmark (or the tuning grid) and prints markdown tables (`--json`: one object).
pub fn cl_bench(args: ClBenchArgs, bars: &Bars) -> Result<()> {
    if args.stream == StreamArg::Fortunes {
        return lm_track(&args, bars);
    }
    let stream = load_stream(args.stream)?;
    let mode = match args.mode {
        ModeArg::Online => Mode::Online,
        ModeArg::Offline => Mode::Offline {
            epochs: args.epochs,
        },
    };
    let kinds: Vec<StrategyKind> = if args.strategies.is_empty() {
        StrategyKind::ALL.to_vec()
    } else {
        args.strategies.iter().map(|s| s.kind()).collect()
    };
    if args.buffers.is_empty() || args.buffers.iter().any(|&b| b == 0 || b > 4096) {
        return Err("buffer sizes must be in 1..=4096".into());
    }
    let device = args.shared.device()?.autodiff();
    let base = |strategy, buffer, seed, hp| RunConfig {
        strategy,
        hidden: args.hidden.clone(),
        mode,
        buffer,
        seed,
        hp,
    };
    if let Some(path) = &args.tune {
        let mut tuned = Tuned::new();
        let grid_runs: usize = kinds.iter().map(|&k| protocol::grid(k).len()).sum();
        bars.start("tuning runs", grid_runs as u64 * args.seeds);
        for &k in &kinds {
            let mut best: Option<(f64, HParams)> = None;
            for hp in protocol::grid(k) {
                let accs: Vec<f64> = (0..args.seeds)
                    .map(|s| {
                        let r = protocol::run(
                            &stream,
                            &base(k, args.buffers[0], s, hp.clone()),
                            &device,
                            |_, _, _| {},
                        );
                        bars.advance(1);
                        f64::from(r.class_il.average_accuracy())
                    })
                    .collect();
                let score = iqm(&accs);
                tracing::info!(
                    "tune {:<10} lr {:<5} strength {:<6} acc {:.3}",
                    k.name(),
                    hp.lr,
                    hp.strength,
                    score
                );
                if best.as_ref().is_none_or(|(b, _)| score > *b) {
                    best = Some((score, hp));
                }
            }
            let (_, hp) = best.expect("non-empty grid");
            tuned.insert(k.name().to_owned(), hp);
        }
        bars.finish();
        shared::write(path, serde_json::to_string_pretty(&tuned)? + "\n")?;
        match args.shared.json {
            true => println!("{}", json!({ "wrote": path, "hparams": tuned })),
            false => println!("wrote {}", path.display()),
        }
        return Ok(());
    }
    let tuned: Tuned = match &args.hparams {
        Some(p) => shared::read_json(p)?,
        None => protocol::committed_hparams(),
    };
    let runs: usize = kinds
        .iter()
        .map(|k| {
            if k.uses_buffer() {
                args.buffers.len()
            } else {
                1
            }
        })
        .sum();
    bars.start("runs", runs as u64 * args.seeds);
    let mut rows: Vec<(String, Vec<RunResult>)> = Vec::new();
    for &k in &kinds {
        let hp = tuned
            .get(k.name())
            .cloned()
            .ok_or_else(|| format!("no hyper-parameters for {}", k.name()))?;
        let buffers: Vec<usize> = if k.uses_buffer() {
            args.buffers.clone()
        } else {
            vec![0]
        };
        for &buffer in &buffers {
            let label = if buffer > 0 {
                format!("{} (M={buffer})", k.name())
            } else {
                k.name().to_owned()
            };
            let mut results = Vec::new();
            for seed in 0..args.seeds {
                let cfg = base(k, buffer.max(1), seed, hp.clone());
                let r = protocol::run(&stream, &cfg, &device, |i, ci, _| {
                    let row: Vec<String> =
                        ci.iter().map(|a| format!("{:5.1}", a * 100.0)).collect();
                    tracing::debug!("{label} seed {seed} after task {i}: [{}]", row.join(" "));
                });
                bars.advance(1);
                tracing::info!(
                    "{label} seed {seed}: class-IL acc {:.1} forgetting {}, {:.1}s",
                    r.class_il.average_accuracy() * 100.0,
                    r.class_il
                        .average_forgetting()
                        .map_or("-".into(), |f| format!("{:.1}", f * 100.0)),
                    r.seconds
                );
                results.push(r);
            }
            rows.push((label, results));
        }
    }
    bars.finish();
    let md = tables(&stream, &args, mode, &rows, &tuned);
    if args.shared.json {
        println!("{}", rows_json(&stream, &args, &rows, &tuned));
    } else {
        print!("{md}");
    }
    if let Some(out) = &args.out {
        shared::write(out, &md)?;
    }
    Ok(())
}

/// One accuracy matrix's summary figures and rows.
fn matrix_json(m: &AccuracyMatrix) -> serde_json::Value {
    json!({
        "average_accuracy": m.average_accuracy(),
        "average_forgetting": m.average_forgetting(),
        "backward_transfer": m.backward_transfer(),
        "forward_transfer": m.forward_transfer(),
        "rows": m.rows,
    })
}

/// `cl-bench --json`: every run of every row, both scenarios.
fn rows_json(
    stream: &Stream,
    args: &ClBenchArgs,
    rows: &[(String, Vec<RunResult>)],
    tuned: &Tuned,
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|(label, results)| {
            let runs: Vec<serde_json::Value> = results
                .iter()
                .enumerate()
                .map(|(seed, r)| {
                    json!({
                        "seed": seed,
                        "class_il": matrix_json(&r.class_il),
                        "task_il": matrix_json(&r.task_il),
                        "seconds": r.seconds,
                    })
                })
                .collect();
            json!({ "label": label, "runs": runs })
        })
        .collect();
    json!({
        "stream": stream.name,
        "mode": args.mode.to_possible_value().map(|v| v.get_name().to_owned()),
        "epochs": args.epochs,
        "hidden": args.hidden,
        "seeds": args.seeds,
        "hparams": tuned,
        "rows": rows,
    })
}

fn tables(
    stream: &Stream,
    args: &ClBenchArgs,
    mode: Mode,
    rows: &[(String, Vec<RunResult>)],
    tuned: &BTreeMap<String, HParams>,
) -> String {
    let mut md = String::new();
    let mode_s = match mode {
        Mode::Online => "online (1 pass, batch 10 + 10 replayed)".to_owned(),
        Mode::Offline { epochs } => format!("offline ({epochs} epochs, batch 32 + 32 replayed)"),
    };
    let _ = writeln!(
        md,
        "\n### {} — {mode_s}, MLP {:?}, {} seeds\n\nIQM over seeds [95% bootstrap CI], percent.\n",
        stream.name, args.hidden, args.seeds
    );
    for (title, pick) in [
        (
            "class-incremental",
            (|r: &RunResult| &r.class_il) as fn(&RunResult) -> &AccuracyMatrix,
        ),
        ("task-incremental", |r: &RunResult| &r.task_il),
    ] {
        let _ = writeln!(md, "**{title}**\n");
        let _ = writeln!(
            md,
            "| strategy | avg accuracy | avg forgetting | BWT | FWT | s/run |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|");
        for (label, results) in rows {
            let col = |f: &dyn Fn(&AccuracyMatrix) -> Option<f32>| -> String {
                let v: Option<Vec<f64>> =
                    results.iter().map(|r| f(pick(r)).map(f64::from)).collect();
                v.map_or("—".into(), |v| summarize(&v, 100.0, 1))
            };
            let secs: Vec<f64> = results.iter().map(|r| r.seconds).collect();
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {:.1} |",
                col(&|m| Some(m.average_accuracy())),
                col(&|m| m.average_forgetting()),
                col(&|m| m.backward_transfer()),
                col(&|m| m.forward_transfer()),
                iqm(&secs)
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Class-IL accuracy matrices, seed 0 (row i: after task i; column j: task j):\n"
    );
    for (label, results) in rows {
        let m = &results[0].class_il;
        let _ = writeln!(md, "{label}:\n```");
        for row in &m.rows {
            let cells: Vec<String> = row.iter().map(|a| format!("{:5.1}", a * 100.0)).collect();
            let _ = writeln!(md, "{}", cells.join(" "));
        }
        let _ = writeln!(md, "```");
    }
    let hp: Vec<String> = tuned
        .iter()
        .map(|(k, h)| format!("{k}: lr {} strength {}", h.lr, h.strength))
        .collect();
    let _ = writeln!(md, "\nHyper-parameters (frozen): {}.", hp.join("; "));
    md
}

/// The LM track: naive fine-tuning vs ER at the same compute, `--seeds` seeds each.
fn lm_track(args: &ClBenchArgs, bars: &Bars) -> Result<()> {
    use engram::harness::lm_track::{self as lm, LmConfig, LmResult};
    use engram::learn::live::{LiveConfig, Strategy};
    let reference = reference_path(args)?;
    let engine = std::sync::Arc::new(args.shared.load(true, bars)?.0);
    let refs: Vec<(String, u32)> = {
        let v: serde_json::Value = shared::read_json(&reference)?;
        v.as_array()
            .ok_or_else(|| format!("{}: not a JSON array", reference.display()))?
            .iter()
            .filter_map(|p| {
                let prompt = p.get("prompt")?.as_str()?.to_owned();
                let top = p.get("top20")?.get(0)?.get(0)?.as_u64()? as u32;
                Some((prompt, top))
            })
            .collect()
    };
    let dir = data::data_dir()?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### LM track: LoRA on SmolLM2-135M over fortunes {:?}, {} steps x 4 sequences per category, {} seeds\n",
        args.categories, args.lm_steps, args.seeds
    );
    let _ = writeln!(
        md,
        "| strategy | forgetting (nats/token) | final held-out loss per category | top-1 agreement with llama.cpp (base → end) | s/run |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut seed0: Vec<(&str, LmResult)> = Vec::new();
    let wanted: Vec<StrategyArg> = if args.strategies.is_empty() {
        vec![StrategyArg::Naive, StrategyArg::Er, StrategyArg::Lwf]
    } else {
        args.strategies.clone()
    };
    let mut plan: Vec<(&str, Strategy)> = Vec::new();
    for w in wanted {
        let (label, name) = match w {
            StrategyArg::Naive => ("naive", "naive"),
            StrategyArg::Er => ("er (M=64)", "er"),
            StrategyArg::DerPlusPlus => ("der++ (M=64, k=8)", "der++"),
            StrategyArg::Lwf => ("lwf (λ=1)", "lwf"),
            StrategyArg::ErMkd => ("mkd (EMA 0.99)", "mkd"),
            StrategyArg::OnlineEwc => ("ewc-online", "ewc"),
            StrategyArg::Si => ("si", "si"),
            other => {
                let name = other.name();
                return Err(format!(
                    "the fortunes track runs the learning runtime's strategies (naive, er, der++, \
                     lwf, er+mkd, ewc-online, si), not {name}"
                )
                .into());
            }
        };
        plan.push((label, Strategy::named(name).expect("a runtime strategy")));
    }
    let mut forgetting: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut runs_json: Vec<serde_json::Value> = Vec::new();
    bars.start("runs", plan.len() as u64 * args.seeds);
    for (name, strategy) in plan {
        let mut runs: Vec<LmResult> = Vec::new();
        for seed in 0..args.seeds {
            let mut live = LiveConfig {
                buffer: 64,
                batch: 4,
                max_len: 48,
                lr: 2e-3,
                seed,
                ..LiveConfig::default()
            };
            live.lora.seed = seed;
            let cfg = LmConfig {
                categories: args.categories.clone(),
                train_per_category: 96,
                test_per_category: 24,
                steps_per_category: args.lm_steps,
                live,
            };
            let r = lm::run_lm(&engine, &dir, &cfg, strategy, &refs, |l| {
                tracing::debug!("{name} seed {seed} {l}")
            })?;
            bars.advance(1);
            runs_json.push(json!({
                "strategy": name,
                "seed": seed,
                "forgetting": r.forgetting(),
                "nll": r.nll,
                "base_nll": r.base_nll,
                "top1": r.top1,
                "base_top1": r.base_top1,
                "seconds": r.seconds,
            }));
            tracing::info!(
                "{name} seed {seed}: forgetting {:.4} nats/token, {:.0}s",
                r.forgetting(),
                r.seconds
            );
            runs.push(r);
        }
        let f: Vec<f64> = runs.iter().map(|r| f64::from(r.forgetting())).collect();
        let last = &runs[0];
        let final_row: Vec<String> = last
            .nll
            .last()
            .map_or(vec![], |r| r.iter().map(|v| format!("{v:.3}")).collect());
        let secs: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        let _ = writeln!(
            md,
            "| {name} | {} | {} (base {}) | {:.2} → {:.2} | {:.0} |",
            summarize(&f, 1.0, 3),
            final_row.join(" / "),
            last.base_nll
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" / "),
            last.base_top1,
            last.top1.last().copied().unwrap_or(0.0),
            iqm(&secs)
        );
        seed0.push((name, last.clone()));
        forgetting.insert(name, f);
    }
    bars.finish();
    for (name, r) in &seed0 {
        let _ = writeln!(
            md,
            "\n{name}: held-out loss matrix, seed 0 (row i: after category i; column j: category j), then top-1 agreement after each category:\n```"
        );
        for (row, agree) in r.nll.iter().zip(&r.top1) {
            let _ = writeln!(
                md,
                "{}   | {agree:.2}",
                row.iter()
                    .map(|v| format!("{v:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        let _ = writeln!(md, "```");
    }
    if let Some(naive_runs) = forgetting.get("naive") {
        let naive = iqm(naive_runs);
        for (name, f) in &forgetting {
            if *name != "naive" {
                let _ = writeln!(
                    md,
                    "\n{name}: forgetting / naive forgetting = {:.2} (goal ≤ 0.33).",
                    iqm(f) / naive
                );
            }
        }
    }
    if args.shared.json {
        let j = json!({ "stream": "fortunes", "categories": args.categories, "runs": runs_json });
        println!("{j}");
    } else {
        print!("{md}");
    }
    if let Some(out) = &args.out {
        shared::write(out, &md)?;
    }
    Ok(())
}

/// IQM and its 95% bootstrap interval, formatted `iqm [low, high]` with `scale` applied and
/// `decimals` digits.
fn summarize(values: &[f64], scale: f64, decimals: usize) -> String {
    let m = iqm(values) * scale;
    let (lo, hi) = bootstrap_iqm_ci(values, 2000, 0.05, 0);
    let d = decimals;
    format!("{m:.d$} [{:.d$}, {:.d$}]", lo * scale, hi * scale)
}

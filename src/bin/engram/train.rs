//! `engram train` (LoRA fine-tuning, or with `--full` every weight, from a JSONL file) and
//! `engram train-bench` (training throughput and peak memory against the planner's estimate).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use engram::adapters::full::{Compute, FullFinetune, plan_full, plan_full_within};
use engram::adapters::lora::{Lora, LoraConfig};
use engram::adapters::optim::AdamWConfig;
use engram::adapters::trainer::example::parse_example_line;
use engram::adapters::trainer::plan::{TrainShape, plan, plan_within};
use engram::adapters::trainer::{Encoded, Example, TrainConfig, TrainEvent, Trainable, Trainer};
use engram::runtime::engine::Engine;
use engram::runtime::model::llama::Llama;
use engram::runtime::progress::Progress;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::shared::{Result, SharedArgs, in_file, peak_rss};
use crate::ui::Bars;

/// A projection, or a group of them, to adapt (`LoraConfig::parse_targets` reads the names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// Attention query.
    #[value(aliases = ["q_proj", "attn_q"])]
    Q,
    /// Attention key.
    #[value(aliases = ["k_proj", "attn_k"])]
    K,
    /// Attention value.
    #[value(aliases = ["v_proj", "attn_v"])]
    V,
    /// Attention output.
    #[value(aliases = ["o_proj", "attn_output"])]
    O,
    /// Feed-forward gate.
    #[value(aliases = ["gate_proj", "ffn_gate"])]
    Gate,
    /// Feed-forward up.
    #[value(aliases = ["up_proj", "ffn_up"])]
    Up,
    /// Feed-forward down.
    #[value(aliases = ["down_proj", "ffn_down"])]
    Down,
    /// q, k, v and o.
    Attn,
    /// gate, up and down.
    Mlp,
    /// Every projection.
    #[value(alias = "all")]
    AllLinear,
}

/// The names of `targets`, comma-separated (what `train-bench --json` reports).
fn target_list(targets: &[TargetArg]) -> String {
    let names: Vec<String> = targets
        .iter()
        .map(|t| {
            t.to_possible_value()
                .expect("no skipped targets")
                .get_name()
                .to_owned()
        })
        .collect();
    names.join(",")
}

/// The block projections' compute type in full fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// Everything in f32.
    F32,
    /// bf16 products over f32 masters (mixed precision).
    Bf16,
}

impl From<PrecisionArg> for Compute {
    fn from(p: PrecisionArg) -> Compute {
        match p {
            PrecisionArg::F32 => Compute::F32,
            PrecisionArg::Bf16 => Compute::Bf16,
        }
    }
}

/// `START..END` as a range of blocks.
fn parse_layers(s: &str) -> std::result::Result<std::ops::Range<usize>, String> {
    let bad = || format!("{s:?}: expected START..END, e.g. 4..12");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a = a.trim().parse::<usize>().map_err(|_| bad())?;
    let b = b.trim().parse::<usize>().map_err(|_| bad())?;
    Ok(a..b)
}

/// LoRA shape options shared by `train` and `train-bench`.
#[derive(Args)]
pub struct LoraArgs {
    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_parser = crate::shared::at_least_one)]
    rank: usize,
    /// LoRA alpha (scale alpha / rank).
    #[arg(long, default_value_t = 16.0, value_parser = crate::shared::lora_alpha)]
    alpha: f32,
    /// Adapted projections (also q_proj..., attn_q...).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "q,v")]
    targets: Vec<TargetArg>,
    /// Adapted blocks as START..END (default: all).
    #[arg(long, value_parser = parse_layers)]
    layers: Option<std::ops::Range<usize>>,
    /// rsLoRA scaling (alpha / √rank).
    #[arg(long)]
    rslora: bool,
    /// Dropout on the adapter input while training.
    #[arg(long, default_value_t = 0.0, value_parser = crate::shared::dropout)]
    dropout: f32,
}

impl LoraArgs {
    /// The flags checked against `model`: `--layers` within its blocks, `--rank` within its
    /// largest rank an adapted projection can take (errors name the flag).
    fn check(&self, config: &LoraConfig, model: &Llama) -> Result<()> {
        let n_layer = model.config().n_layer;
        if let Some(l) = &self.layers
            && (l.start >= l.end || l.end > n_layer)
        {
            return Err(format!(
                "--layers {}..{}: not a non-empty range of the model's {n_layer} blocks \
                 (0..{n_layer})",
                l.start, l.end
            )
            .into());
        }
        let max = engram::adapters::lora::max_rank(model, &config.targets);
        if self.rank > max {
            return Err(format!(
                "--rank {}: at most {max}, the largest rank an adapted projection can take",
                self.rank
            )
            .into());
        }
        Ok(())
    }

    fn config(&self, seed: u64) -> Result<LoraConfig> {
        let layers = self.layers.clone();
        Ok(LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            targets: LoraConfig::parse_targets(&target_list(&self.targets))?,
            layers,
            rslora: self.rslora,
            seed,
        })
    }
}

/// `engram train`.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    lora: LoraArgs,
    /// Training data: JSONL, one `{"prompt": ..., "completion": ...}` per line.
    #[arg(long)]
    data: PathBuf,
    /// Held-out data in the same format (default: none).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Output directory: PEFT files in OUT/, llama.cpp adapter as OUT/adapter.gguf. With
    /// `--full`: the trained model's GGUF file.
    #[arg(long)]
    out: PathBuf,
    /// Train every weight (dense f32 master copies; ~16 bytes a weight with AdamW) and write
    /// OUT as a GGUF model re-quantized to the base's types. The LoRA options are ignored
    /// unless `--as-lora`.
    #[arg(long)]
    full: bool,
    /// With `--full`: write OUT/ as a LoRA adapter (PEFT files and OUT/adapter.gguf) holding
    /// the best rank-`--rank` approximation of each `--targets` projection's trained change,
    /// instead of a GGUF model. Keeps updates too small for the base's quantization grid; norm
    /// and embedding changes are dropped (the report says how much).
    #[arg(long, requires = "full")]
    as_lora: bool,
    /// With `--full`: the block projections' compute type (bf16: mixed precision over f32
    /// masters; for GPUs with bf16 units, emulated and slower on the CPU).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Passes over the data.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4, value_parser = crate::shared::at_least_one)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1, value_parser = crate::shared::at_least_one)]
    grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = crate::shared::finite_positive)]
    lr: f32,
    /// Longest example in tokens.
    #[arg(long, default_value_t = 128, value_parser = crate::shared::at_least_one)]
    seq_len: usize,
    /// Append end-of-sequence to completions.
    #[arg(long)]
    eos: bool,
    /// Stop after this many evaluations without improvement (restores the best weights).
    #[arg(long)]
    patience: Option<u32>,
    /// Refuse to start when the plan exceeds this many MiB.
    #[arg(long, value_parser = crate::shared::budget_mib)]
    budget_mib: Option<u64>,
    /// Seed (adapter initialization, dropout, shuffling).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// The examples of a JSONL file with their line numbers, each checked ([`Example::check`]);
/// errors name the file and line.
fn read_jsonl(path: &Path) -> Result<Vec<(usize, Example)>> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = |e: &dyn std::fmt::Display| format!("{}:{}: {e}", path.display(), i + 1);
        let line = line.map_err(|e| at(&e))?;
        if let Some(ex) = parse_example_line(&line).map_err(|e| at(&e))? {
            out.push((i + 1, ex));
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no examples", path.display()).into());
    }
    Ok(out)
}

/// The examples of `path` whose prompt leaves room for some completion in `seq_len` tokens
/// (errors name the file and line of the first that does not).
fn checked_examples(
    path: &Path,
    lines: Vec<(usize, Example)>,
    engine: &Engine,
    seq_len: usize,
) -> Result<Vec<Example>> {
    let tok = engine.tokenizer();
    lines
        .into_iter()
        .map(|(line, ex)| {
            Example::check_fits(tok.encode(&ex.prompt, true).len(), seq_len)
                .map_err(|e| format!("{}:{line}: {e}", path.display()))?;
            Ok(ex)
        })
        .collect()
}

/// `--seq-len` within the model's trained context.
fn check_seq_len(seq_len: usize, model: &Llama) -> Result<()> {
    let trained = model.config().n_ctx_train;
    match seq_len <= trained {
        true => Ok(()),
        false => Err(format!(
            "--seq-len {seq_len}: the model was trained for {trained} positions \
             (llama.context_length)"
        )
        .into()),
    }
}

fn file_len(engine: &Engine) -> u64 {
    engine.file().bytes().len() as u64
}

/// Runs `engram train`.
pub fn train(a: TrainArgs, bars: &Bars) -> Result<()> {
    let train = read_jsonl(&a.data)?;
    let eval = a.eval.as_deref().map(read_jsonl).transpose()?;
    let (engine, path) = a.shared.load(true, bars)?;
    let model = engine.model();
    let lora_config = a.lora.config(a.seed)?;
    a.lora.check(&lora_config, model)?;
    check_seq_len(a.seq_len, model)?;
    let train = checked_examples(&a.data, train, &engine, a.seq_len)?;
    let eval = match (a.eval.as_deref(), eval) {
        (Some(p), Some(lines)) => checked_examples(p, lines, &engine, a.seq_len)?,
        _ => Vec::new(),
    };
    let shape = TrainShape {
        batch: a.batch,
        seq_len: a.seq_len,
        lora: Some(lora_config.clone()),
        prompt_scalars: 0,
    };
    let (c, tied, len) = (model.config(), model.output_tied(), file_len(&engine));
    let p = match (a.full, a.budget_mib) {
        (false, Some(mib)) => plan_within(c, len, &shape, mib << 20)?,
        (false, None) => plan(c, len, &shape),
        (true, Some(mib)) => plan_full_within(c, tied, len, a.batch, a.seq_len, mib << 20)?,
        (true, None) => plan_full(c, tied, len, a.batch, a.seq_len),
    };
    tracing::info!(
        "plan: {} MiB peak (activations {} MiB, {}+grads+AdamW {} KiB, base {} MiB)",
        p.total() >> 20,
        p.activations >> 20,
        if a.full { "weights" } else { "adapter" },
        (p.adapter + p.gradients + p.optimizer) >> 10,
        p.mapped_base >> 20
    );
    let mut adapter = match a.full {
        true => Trained::Full(FullFinetune::new(model)?.with_compute(a.precision.into())),
        false => Trained::Lora(Box::new(Lora::new(model, lora_config.clone())?)),
    };
    let trainer = Trainer::new(
        model,
        engine.tokenizer(),
        TrainConfig {
            epochs: a.epochs,
            batch_size: a.batch,
            grad_accum: a.grad_accum,
            lr: a.lr,
            min_lr: a.lr / 10.0,
            warmup_steps: 5,
            adamw: AdamWConfig::default(),
            max_seq_len: a.seq_len,
            append_eos: a.eos,
            eval_every: 0,
            early_stop_patience: a.patience,
            seed: a.seed,
        },
    );
    if !eval.is_empty() {
        let r = trainer.evaluate(adapter.get(), &eval);
        tracing::info!(
            "before: eval loss {:.4}, exact match {:.3}",
            r.loss,
            r.exact_match
        );
    }
    let (train, eval) = (trainer.encode(&train), trainer.encode(&eval));
    let per_epoch = train.len().div_ceil(a.batch.max(1) * a.grad_accum.max(1));
    bars.start("training steps", (per_epoch * a.epochs as usize) as u64);
    let report = trainer.fit_encoded(adapter.get(), &train, &eval, |e| match e {
        TrainEvent::Step(s) => {
            bars.advance(1);
            bars.message(format!("loss {:.4}", s.loss));
            tracing::debug!(
                "step {:>5}  epoch {}  loss {:.4}  lr {:.2e}  |g| {:.3}{}",
                s.step,
                s.epoch,
                s.loss,
                s.lr,
                s.grad_norm,
                if s.skipped { " skipped" } else { "" }
            );
        }
        TrainEvent::Eval { step, report } => tracing::info!(
            "eval after step {step}: loss {:.4}, exact match {:.3}, token accuracy {:.3}",
            report.loss,
            report.exact_match,
            report.token_accuracy
        ),
    });
    bars.finish();
    let report = report?;
    tracing::info!(
        "{} steps ({} skipped), {:.0} tokens/s{}",
        report.steps.len(),
        report.skipped_steps,
        report.tokens_per_second(),
        if report.stopped_early {
            ", stopped early (best weights restored)"
        } else {
            ""
        }
    );
    let as_lora = a.as_lora.then_some(lora_config);
    save(adapter, &engine, &a.out, &path, as_lora)?;
    if a.shared.json {
        let last_eval = report.evals.last().map(|(_, r)| r);
        println!(
            "{}",
            serde_json::json!({
                "out": a.out,
                "steps": report.steps.len(),
                "skipped_steps": report.skipped_steps,
                "tokens_per_s": report.tokens_per_second(),
                "stopped_early": report.stopped_early,
                "final_loss": report.steps.last().map(|s| s.loss),
                "eval": last_eval,
            })
        );
    } else {
        println!("{}", a.out.display());
    }
    Ok(())
}

/// What `engram train` trains.
enum Trained {
    Full(FullFinetune),
    Lora(Box<Lora>),
}

impl Trained {
    fn get(&mut self) -> &mut dyn Trainable {
        match self {
            Trained::Full(f) => f,
            Trained::Lora(l) => l.as_mut(),
        }
    }
}

/// Writes what `engram train` trained: the model GGUF (`--full`), the adapter files, or with
/// `as_lora` the full run's change factored into that LoRA shape (`--full --as-lora`).
fn save(
    adapter: Trained,
    engine: &Engine,
    out: &Path,
    base: &Path,
    as_lora: Option<LoraConfig>,
) -> Result<()> {
    let adapter = match (adapter, as_lora) {
        (Trained::Full(full), Some(config)) => {
            let (lora, r) = full.to_lora(engine.model(), config)?;
            tracing::info!(
                "factored the trained change: relative error {:.3} (worst projection {:.3}); \
                 change LoRA cannot carry (norms, embedding, other projections): {:.3} of {:.3}",
                r.relative_error,
                r.worst_relative_error,
                r.dropped_norm,
                r.total_norm
            );
            Trained::Lora(Box::new(lora))
        }
        (adapter, _) => adapter,
    };
    match adapter {
        Trained::Full(full) => {
            let r = full
                .save_gguf(engine.file(), out)
                .map_err(|e| in_file(out, e))?;
            tracing::info!(
                "wrote {} MiB: {} tensors re-quantized ({} unchanged by training), max |written − \
             trained| {:.2e}, rms {:.2e}",
                r.bytes >> 20,
                r.requantized,
                r.unchanged,
                r.max_abs_error,
                r.rms_error
            );
        }
        Trained::Lora(lora) => {
            lora.save_adapter_dir(engine.model(), out, &base.display().to_string())
                .map_err(|e| in_file(out, e))?;
        }
    }
    Ok(())
}

/// `engram train-bench`.
#[derive(Args)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    lora: LoraArgs,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64, value_parser = crate::shared::at_least_one)]
    seq_len: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 4, value_parser = crate::shared::at_least_one)]
    batch: usize,
    /// Timed optimizer steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5, value_parser = crate::shared::at_least_one)]
    steps: usize,
    /// Train every weight instead of a LoRA adapter (the LoRA options are ignored).
    #[arg(long)]
    full: bool,
    /// With `--full`: the block projections' compute type (as for `engram train`).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// Runs `engram train-bench`: LoRA training steps on random token sequences.
pub fn train_bench(a: TrainBenchArgs, bars: &Bars) -> Result<()> {
    let (engine, _) = a.shared.load(true, bars)?;
    let model = engine.model();
    let lora_config = a.lora.config(0)?;
    a.lora.check(&lora_config, model)?;
    check_seq_len(a.seq_len, model)?;
    let shape = TrainShape {
        batch: a.batch,
        seq_len: a.seq_len,
        lora: Some(lora_config.clone()),
        prompt_scalars: 0,
    };
    let p = match a.full {
        true => plan_full(
            model.config(),
            model.output_tied(),
            file_len(&engine),
            a.batch,
            a.seq_len,
        ),
        false => plan(model.config(), file_len(&engine), &shape),
    };
    let mut adapter = match a.full {
        true => Trained::Full(FullFinetune::new(model)?.with_compute(a.precision.into())),
        false => Trained::Lora(Box::new(Lora::new(model, lora_config)?)),
    };
    let lora = adapter.get();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n_vocab = model.config().n_vocab as u32;
    let mut sequences = |n: usize| -> Vec<Encoded> {
        (0..n)
            .map(|_| Encoded {
                tokens: (0..a.seq_len + 1)
                    .map(|_| rng.random_range(0..n_vocab))
                    .collect(),
                n_prompt: 1,
            })
            .collect()
    };
    let config = TrainConfig {
        epochs: 1,
        batch_size: a.batch,
        lr: 1e-4,
        min_lr: 1e-4,
        warmup_steps: 0,
        max_seq_len: a.seq_len + 1,
        ..Default::default()
    };
    let trainer = Trainer::new(model, engine.tokenizer(), config);
    trainer.fit_encoded(lora, &sequences(a.batch), &[], |_| {})?;
    let start = Instant::now();
    bars.start("timed steps", a.steps as u64);
    let report = trainer.fit_encoded(lora, &sequences(a.batch * a.steps), &[], |e| {
        if let TrainEvent::Step(_) = e {
            bars.advance(1);
        }
    });
    bars.finish();
    let report = report?;
    let seconds = start.elapsed().as_secs_f64();
    let tokens = a.steps * a.batch * a.seq_len;
    let tok_s = tokens as f64 / seconds;
    let rss = peak_rss().unwrap_or(0);
    let trainable: usize = lora.param_sets().iter().map(|p| p.num_scalars()).sum();
    let what = match a.full {
        true => format!("full ({:?})", a.precision).to_lowercase(),
        false => format!("LoRA r={} on {}", a.lora.rank, target_list(&a.lora.targets)),
    };
    if a.shared.json {
        println!(
            "{}",
            serde_json::json!({
                "tokens_per_s": tok_s,
                "peak_rss_bytes": rss,
                "plan_bytes": p.total(),
                "plan": p,
                "steps": a.steps,
                "skipped_steps": report.skipped_steps,
                "batch": a.batch,
                "seq_len": a.seq_len,
                "rank": a.lora.rank,
                "targets": target_list(&a.lora.targets),
                "full": a.full,
                "precision": Compute::from(a.precision),
                "trainable_params": trainable,
                "threads": engine.threads(),
            })
        );
    } else {
        println!(
            "{what}: {trainable} trainable; batch {} × {} tokens, {} steps",
            a.batch, a.seq_len, a.steps
        );
        println!(
            "training: {tok_s:.1} tokens/s ({:.2} s/step)",
            seconds / a.steps as f64
        );
        println!(
            "peak RSS {:.1} MiB; planned {:.1} MiB (activations {:.1}, base {:.1})",
            rss as f64 / 1048576.0,
            p.total() as f64 / 1048576.0,
            p.activations as f64 / 1048576.0,
            p.mapped_base as f64 / 1048576.0
        );
    }
    Ok(())
}

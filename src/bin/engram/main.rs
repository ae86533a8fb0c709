//! The `engram` command-line tool: inspect a GGUF model, generate, chat, print logits, bench,
//! edit facts, train adapters and run the continual-learning benchmark.
//!
//! The binary picks the device (library code never does): every command takes the same
//! `--model`, `--device`, `--threads` and `--json` ([`shared::SharedArgs`]). Logs go to stderr
//! through `tracing` (`-v`, `-q`, `RUST_LOG`); long passes draw progress bars there.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

mod bench;
mod cl_bench;
mod edit;
mod learn;
mod shared;
mod train;
mod ui;

use engram::adapters::lora::Lora;
use engram::runtime::engine::Engine;
use engram::runtime::generate::{Adaptation, GenerateOptions, SamplingParams};
use engram::runtime::model::chat::ChatMessage;
use engram::runtime::model_file::ModelFile;
use shared::{Result, SharedArgs, in_file};
use ui::Bars;

#[derive(Parser)]
#[command(
    name = "engram",
    version,
    about = "On-device runtime for quantized GGUF language models"
)]
struct Cli {
    /// More log output on stderr: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Warnings and errors only, no progress bars (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Metadata, tensor table, bytes by type and memory needed.
    Info {
        /// The GGUF file or safetensors checkpoint (a directory or `.safetensors` file; or
        /// `--model`; default: the model `engram model-path` prints).
        #[arg(value_name = "MODEL", conflicts_with = "model")]
        file: Option<PathBuf>,
        #[command(flatten)]
        shared: SharedArgs,
    },
    /// Continue a prompt, streaming the text.
    Generate {
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The prompt (raw text; special tokens such as <|im_start|> are parsed).
        #[arg(long)]
        prompt: String,
        #[command(flatten)]
        sampling: GenArgs,
        #[command(flatten)]
        shared: SharedArgs,
    },
    /// Interactive chat with the model's chat template (one line per turn; empty line quits).
    Chat {
        /// A learning state to serve (its committed generation).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// An optional system message.
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        sampling: GenArgs,
        #[command(flatten)]
        shared: SharedArgs,
    },
    /// The top logits at the last prompt position.
    Logits {
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The prompt (special tokens parsed).
        #[arg(long)]
        prompt: String,
        /// How many logits to print (`--json`: one object `{"tokens": [...], "top": [[id,
        /// logit], ...]}`).
        #[arg(long, default_value_t = 20, value_parser = shared::at_least_one)]
        top: usize,
        #[command(flatten)]
        shared: SharedArgs,
    },
    /// Prefill and decode tokens per second: several `--threads` and adaptations in one run,
    /// repeats with mean ± sd (`--json`: one array of objects).
    Bench(bench::BenchArgs),
    /// Print the model path (fetching the model into the cache if needed).
    ModelPath {
        #[command(flatten)]
        shared: SharedArgs,
    },
    /// Edit facts from a JSONL file (gated memory by default; ROME, MEMIT, AlphaEdit, UltraEdit,
    /// GRACE) and report the metrics.
    Edit(edit::EditArgs),
    /// Train a LoRA adapter from JSONL prompt/completion pairs (writes PEFT + llama.cpp files).
    Train(train::TrainArgs),
    /// LoRA training throughput and peak memory (vs. the planner's estimate).
    TrainBench(train::TrainBenchArgs),
    /// Continual-learning benchmark (Split-Digits, Split-Fashion-MNIST, fortunes): accuracy
    /// tables.
    ClBench(cl_bench::ClBenchArgs),
    /// Keep learning: train a state directory on JSONL examples (or a stream on stdin),
    /// committing generations as it goes; resumes whatever the state already learned.
    Learn(learn::LearnArgs),
    /// Loss per completion token of a state (or the base model) on JSONL examples.
    Eval(learn::EvalArgs),
    /// What a state directory holds; `--verify` checks it against the model.
    State(learn::StateArgs),
}

impl Command {
    /// Whether the command prints JSON (no progress bars then).
    fn json(&self) -> bool {
        match self {
            Command::Info { shared, .. }
            | Command::Generate { shared, .. }
            | Command::Chat { shared, .. }
            | Command::Logits { shared, .. }
            | Command::ModelPath { shared } => shared.json,
            Command::Bench(a) => a.json,
            Command::Edit(a) => a.shared.json,
            Command::Train(a) => a.shared.json,
            Command::TrainBench(a) => a.shared.json,
            Command::ClBench(a) => a.shared.json,
            Command::Learn(a) => a.shared.json,
            Command::Eval(a) => a.shared.json,
            Command::State(a) => a.shared.json,
        }
    }
}

#[derive(Args)]
struct AdapterArgs {
    /// A LoRA adapter to run with: a PEFT directory or a llama.cpp LoRA .gguf.
    #[arg(long, conflicts_with = "state")]
    lora: Option<PathBuf>,
    /// A learning state to serve (its committed generation: adapter and edits), read without
    /// waiting for a learner that may be writing it.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
}

/// What a command runs the base model with.
enum Served {
    Base,
    Lora(Box<Lora>),
    State(Box<engram::learn::live::Snapshot>),
}

impl AdapterArgs {
    fn load(&self, engine: &Arc<Engine>) -> Result<Served> {
        Ok(match (&self.lora, &self.state) {
            (Some(p), _) => Served::Lora(Box::new(
                Lora::load(engine.model(), p).map_err(|e| in_file(p, e))?,
            )),
            (None, Some(d)) => Served::State(Box::new(learn::serving(engine.clone(), Some(d))?)),
            (None, None) => Served::Base,
        })
    }
}

impl Served {
    /// Runs `f` with the adaptation to serve.
    fn with<R>(&self, f: impl FnOnce(Adaptation<'_>) -> R) -> R {
        match self {
            Served::Base => f(Adaptation::default()),
            Served::Lora(l) => f(Adaptation::linear(&**l)),
            Served::State(s) => s.with_adapter(|a| f(Adaptation::linear(a))),
        }
    }
}

#[derive(Args)]
struct GenArgs {
    /// Maximum new tokens (at least 1).
    #[arg(long, default_value_t = 128, value_parser = shared::at_least_one)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy; finite, not negative).
    #[arg(long, default_value_t = 0.0, value_parser = shared::finite_non_negative)]
    temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (1 = off; in (0, 1]).
    #[arg(long, default_value_t = 1.0, value_parser = shared::probability)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Context (KV-cache) length in tokens, 1 to the model's trained context (default: 2048 or
    /// the model's, whichever is less).
    #[arg(long, value_parser = shared::at_least_one)]
    context: Option<usize>,
}

/// Context the generation commands use when `--context` is not given.
const DEFAULT_CONTEXT: usize = 2048;

impl GenArgs {
    /// The options for `engine`'s model: `--context` must fit the model's trained context.
    fn options(&self, engine: &Engine) -> Result<GenerateOptions> {
        let trained = engine.model().config().n_ctx_train;
        let context = match self.context {
            Some(c) if c > trained => {
                return Err(format!(
                    "--context {c}: the model was trained for {trained} positions \
                     (llama.context_length); give at most {trained}"
                )
                .into());
            }
            Some(c) => c,
            None => DEFAULT_CONTEXT.min(trained),
        };
        Ok(GenerateOptions {
            max_new_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            stop_tokens: Vec::new(),
            context,
            fused_prefill: true,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bars = Bars::new(cli.quiet || cli.command.json());
    ui::init_logging(cli.verbose, cli.quiet, &bars);
    match run(cli.command, &bars) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Typed errors often repeat their source's text: print only causes that add to it.
            let mut shown = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                let text = s.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown.push_str(&text);
                }
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, bars: &Bars) -> Result<()> {
    match command {
        Command::Info { file, shared } => {
            let path = match file {
                Some(p) => p,
                None => shared.model_path(bars)?,
            };
            info(&ModelFile::open(&path)?, shared.json);
        }
        Command::ModelPath { shared } => {
            let path = shared.model_path(bars)?;
            match shared.json {
                true => println!("{}", serde_json::json!({ "path": path })),
                false => println!("{}", path.display()),
            }
        }
        Command::ClBench(args) => cl_bench::cl_bench(args, bars)?,
        Command::Generate {
            shared,
            adapter,
            prompt,
            sampling,
        } => generate(&shared, &adapter, &prompt, &sampling, bars)?,
        Command::Chat {
            shared,
            state,
            system,
            sampling,
        } => chat(&shared, state.as_deref(), system, &sampling, bars)?,
        Command::Logits {
            shared,
            adapter,
            prompt,
            top,
        } => {
            let engine = Arc::new(shared.load(false, bars)?.0);
            let served = adapter.load(&engine)?;
            let (tokens, logits) = served.with(|a| engine.last_logits_with(&prompt, a))?;
            let mut order: Vec<u32> = (0..logits.len() as u32).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            order.truncate(top);
            if shared.json {
                let top: Vec<(u32, f32)> = order.iter().map(|&i| (i, logits[i as usize])).collect();
                println!("{}", serde_json::json!({ "tokens": tokens, "top": top }));
            } else {
                println!("tokens: {tokens:?}");
                for id in order {
                    let piece = engine.tokenizer().decode(&[id]);
                    println!("{id:>6} {:>10.4}  {piece:?}", logits[id as usize]);
                }
            }
        }
        Command::Bench(args) => bench::run(args, bars)?,
        Command::Edit(args) => edit::run(args, bars)?,
        Command::Train(args) => train::train(args, bars)?,
        Command::TrainBench(args) => train::train_bench(args, bars)?,
        Command::Learn(args) => learn::learn(args, bars)?,
        Command::Eval(args) => learn::eval(args, bars)?,
        Command::State(args) => learn::state(args, bars)?,
    }
    Ok(())
}

/// `engram info`: the summary, or with `--json` the file's tensors and metadata keys.
fn info(file: &ModelFile, json: bool) {
    let out = if json {
        let gguf = file.gguf();
        let tensors: Vec<serde_json::Value> = gguf
            .tensors()
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name,
                    "type": format!("{:?}", t.ty).to_lowercase(),
                    "dims": t.dims,
                    "bytes": t.n_bytes,
                })
            })
            .collect();
        let keys: Vec<&str> = gguf.metadata().iter().map(|(k, _)| k.as_str()).collect();
        serde_json::json!({
            "path": file.path(),
            "bytes": file.mapped_len(),
            "format": file.summary().format,
            "version": gguf.version(),
            "architecture": gguf.architecture().ok(),
            "metadata_keys": keys,
            "tensors": tensors,
        })
        .to_string()
    } else {
        file.summary().to_string()
    };
    // A closed pipe (`engram info m.gguf | head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{out}");
}

/// `engram generate`: streams the text, or with `--json` prints it once with the timings.
fn generate(
    shared: &SharedArgs,
    adapter: &AdapterArgs,
    prompt: &str,
    sampling: &GenArgs,
    bars: &Bars,
) -> Result<()> {
    let engine = Arc::new(shared.load(false, bars)?.0);
    let opts = &sampling.options(&engine)?;
    let served = adapter.load(&engine)?;
    let mut out = std::io::stdout();
    if !shared.json {
        print!("{prompt}");
    }
    let (text, g) = served.with(|a| {
        engine.complete_with(prompt, opts, a, |piece| {
            if !shared.json {
                print!("{piece}");
                let _ = out.flush();
            }
        })
    })?;
    let prefill = g.prompt_tokens as f64 / g.prefill_time.as_secs_f64();
    let decode = (g.tokens.len().saturating_sub(1)) as f64 / g.decode_time.as_secs_f64().max(1e-9);
    if shared.json {
        println!(
            "{}",
            serde_json::json!({
                "prompt": prompt,
                "text": text,
                "tokens": g.tokens,
                "prompt_tokens": g.prompt_tokens,
                "stop": format!("{:?}", g.stop),
                "prefill_tok_s": prefill,
                "decode_tok_s": decode,
            })
        );
    } else {
        println!();
        tracing::info!(
            "{} prompt tokens, {} new, stop: {:?}; prefill {prefill:.1} tok/s, decode {decode:.1} \
             tok/s",
            g.prompt_tokens,
            g.tokens.len(),
            g.stop,
        );
    }
    Ok(())
}

/// `engram chat`: one line of stdin per user turn; with `--json` no prompt is drawn and each
/// answer is one JSON line `{"role": "assistant", "content": ...}`.
fn chat(
    shared: &SharedArgs,
    state: Option<&std::path::Path>,
    system: Option<String>,
    sampling: &GenArgs,
    bars: &Bars,
) -> Result<()> {
    let engine = Arc::new(shared.load(false, bars)?.0);
    let opts = &sampling.options(&engine)?;
    let snap = learn::serving(engine.clone(), state)?;
    let mut messages: Vec<ChatMessage> = system
        .map(|content| ChatMessage {
            role: "system".into(),
            content,
        })
        .into_iter()
        .collect();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        if !shared.json {
            print!("> ");
            out.flush()?;
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.trim().to_string(),
        });
        let (answer, _) = snap.chat(&messages, opts, |piece| {
            if !shared.json {
                print!("{piece}");
                let _ = out.flush();
            }
        })?;
        match shared.json {
            true => println!(
                "{}",
                serde_json::json!({ "role": "assistant", "content": answer })
            ),
            false => println!(),
        }
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: answer,
        });
    }
}

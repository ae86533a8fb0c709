//! The `engram` command-line tool: inspect a GGUF model, generate, chat, print logits, bench.
//!
//! The binary picks the device (library code never does): `--device cpu|flex|ndarray|wgpu|cuda`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

mod edit;

use clap::{Args, Parser, Subcommand};

mod cl_bench;
mod train;
use engram::adapters::lora::Lora;
use engram::harness::fetch::resolve_model;
use engram::runtime::backend;
use engram::runtime::engine::Engine;
use engram::runtime::generate::{Adaptation, GenerateOptions, SamplingParams};
use engram::runtime::model::chat::ChatMessage;
use engram::runtime::model_file::ModelFile;

#[derive(Parser)]
#[command(
    name = "engram",
    version,
    about = "On-device runtime for quantized GGUF language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Metadata, tensor table, bytes by type and memory needed.
    Info {
        /// The GGUF file.
        model: PathBuf,
    },
    /// Continue a prompt, streaming the text.
    Generate {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The prompt (raw text; special tokens such as <|im_start|> are parsed).
        #[arg(long)]
        prompt: String,
        #[command(flatten)]
        sampling: GenArgs,
    },
    /// Interactive chat with the model's chat template (one line per turn; empty line quits).
    Chat {
        #[command(flatten)]
        run: RunArgs,
        /// An optional system message.
        #[arg(long)]
        system: Option<String>,
        #[command(flatten)]
        sampling: GenArgs,
    },
    /// The top logits at the last prompt position.
    Logits {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The prompt (special tokens parsed).
        #[arg(long)]
        prompt: String,
        /// How many logits to print.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Print one JSON object `{"tokens": [...], "top": [[id, logit], ...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Prefill and decode tokens per second.
    Bench {
        #[command(flatten)]
        run: RunArgs,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens to decode.
        #[arg(long, default_value_t = 64)]
        gen_tokens: usize,
        /// Repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Print one JSON object `{"prefill_tok_s": x, "decode_tok_s": y, "threads": n}`.
        #[arg(long)]
        json: bool,
    },
    /// Print the model path (fetching the model into the cache if needed).
    ModelPath,
    /// Edit facts (ROME, MEMIT, AlphaEdit, GRACE) from a JSONL file and report the metrics.
    Edit(edit::EditArgs),
    /// Train a LoRA adapter from JSONL prompt/completion pairs (writes PEFT + llama.cpp files).
    Train(train::TrainArgs),
    /// LoRA training throughput and peak memory (vs. the planner's estimate).
    TrainBench(train::TrainBenchArgs),
    /// Continual-learning benchmark (Split-Digits, Split-Fashion-MNIST): accuracy tables.
    ClBench(cl_bench::ClBenchArgs),
}

#[derive(Args)]
struct AdapterArgs {
    /// A LoRA adapter to run with: a PEFT directory or a llama.cpp LoRA .gguf.
    #[arg(long)]
    lora: Option<PathBuf>,
}

impl AdapterArgs {
    fn load(&self, engine: &Engine) -> Result<Option<Lora>> {
        Ok(match &self.lora {
            Some(p) => Some(Lora::load(engine.model(), p)?),
            None => None,
        })
    }
}

fn adaptation(lora: &Option<Lora>) -> Adaptation<'_> {
    lora.as_ref()
        .map(|l| Adaptation::linear(l))
        .unwrap_or_default()
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The GGUF file (default: $ENGRAM_MODEL, else the cache, else fetched with pip).
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// CPU threads for the kernels (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Backend device: cpu (default CPU backend), flex, ndarray; wgpu or cuda in a build with
    /// that feature (otherwise a clear error naming the feature).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
}

#[derive(Args)]
struct GenArgs {
    /// Maximum new tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Context (KV-cache) length in tokens.
    #[arg(long, default_value_t = 2048)]
    context: usize,
}

impl GenArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                seed: self.seed,
            },
            stop_tokens: Vec::new(),
            context: self.context,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run(Cli::parse()) {
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

fn load(run: &RunArgs) -> Result<Engine> {
    let path = resolve_model(run.model.as_deref())?;
    let device = backend::device_by_name(&run.device)?;
    Ok(Engine::load(path, &device, run.threads)?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { model } => {
            let file = ModelFile::open(&model)?;
            // A closed pipe (`engram info m.gguf | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", file.summary());
        }
        Command::ModelPath => println!("{}", resolve_model(None)?.display()),
        Command::ClBench(args) => cl_bench::cl_bench(args)?,
        Command::Generate {
            run,
            adapter,
            prompt,
            sampling,
        } => {
            let engine = load(&run)?;
            let lora = adapter.load(&engine)?;
            let mut out = std::io::stdout();
            print!("{prompt}");
            let opts = sampling.options();
            let (_, g) = engine.complete_with(&prompt, &opts, adaptation(&lora), |piece| {
                print!("{piece}");
                let _ = out.flush();
            })?;
            println!();
            eprintln!(
                "[{} prompt tokens, {} new, stop: {:?}; prefill {:.1} tok/s, decode {:.1} tok/s]",
                g.prompt_tokens,
                g.tokens.len(),
                g.stop,
                g.prompt_tokens as f64 / g.prefill_time.as_secs_f64(),
                (g.tokens.len().saturating_sub(1)) as f64 / g.decode_time.as_secs_f64().max(1e-9),
            );
        }
        Command::Chat {
            run,
            system,
            sampling,
        } => chat(&load(&run)?, system, &sampling.options())?,
        Command::Logits {
            run,
            adapter,
            prompt,
            top,
            json,
        } => {
            let engine = load(&run)?;
            let lora = adapter.load(&engine)?;
            let (tokens, logits) = engine.last_logits_with(&prompt, adaptation(&lora))?;
            let mut order: Vec<u32> = (0..logits.len() as u32).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            order.truncate(top);
            if json {
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
        Command::Bench {
            run,
            prompt_tokens,
            gen_tokens,
            runs,
            json,
        } => bench(&run, prompt_tokens, gen_tokens, runs, json)?,
        Command::Edit(args) => edit::run(args)?,
        Command::Train(args) => train::train(args)?,
        Command::TrainBench(args) => train::train_bench(args)?,
    }
    Ok(())
}

fn chat(engine: &Engine, system: Option<String>, opts: &GenerateOptions) -> Result<()> {
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
        print!("> ");
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.trim().to_string(),
        });
        let (answer, _) = engine.chat(&messages, opts, |piece| {
            print!("{piece}");
            let _ = out.flush();
        })?;
        println!();
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: answer,
        });
    }
}

fn bench(
    run: &RunArgs,
    prompt_tokens: usize,
    gen_tokens: usize,
    runs: usize,
    json: bool,
) -> Result<()> {
    let engine = load(run)?;
    let threads = engine.threads();
    // A deterministic prompt of exactly `prompt_tokens` real tokens.
    let text = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
    let mut prompt = Vec::new();
    while prompt.len() < prompt_tokens {
        prompt.extend(engine.encode(text));
    }
    prompt.truncate(prompt_tokens.max(1));
    let opts = GenerateOptions {
        max_new_tokens: gen_tokens.max(2),
        context: prompt.len() + gen_tokens + 1,
        ..GenerateOptions::default()
    };
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    let started = Instant::now();
    for _ in 0..runs.max(1) {
        // Stop tokens are ignored so every run decodes the same number of tokens.
        let g = engram::runtime::generate::generate(engine.model(), &prompt, &opts, |_| {
            std::ops::ControlFlow::Continue(())
        })?;
        prefill.push(g.prompt_tokens as f64 / g.prefill_time.as_secs_f64());
        decode.push((g.tokens.len() - 1) as f64 / g.decode_time.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, d) = (median(&mut prefill), median(&mut decode));
    if json {
        println!(
            "{}",
            serde_json::json!({ "prefill_tok_s": p, "decode_tok_s": d, "threads": threads })
        );
    } else {
        println!(
            "prefill {p:.1} tok/s ({} tokens), decode {d:.1} tok/s ({} tokens), {threads} threads, \
             {} runs in {:.1}s",
            prompt.len(),
            opts.max_new_tokens,
            runs.max(1),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

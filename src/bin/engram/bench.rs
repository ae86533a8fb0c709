//! `engram bench`: prefill and decode tokens per second, llama-bench style: several thread
//! counts and adaptations in one run, repeats with mean ± sd, and `--json` as one array.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use engram::adapters::lora::{Lora, LoraConfig};
use engram::burn::tensor::{Tensor, TensorData};
use engram::runtime::engine::Engine;
use engram::runtime::generate::{Adaptation, GenerateOptions, generate_with};
use engram::runtime::model::llama::{DecodeDelta, LinearAdapter, Llama, LowRank, Proj};
use engram::runtime::progress::Progress;

use crate::shared::{DeviceArg, Result, SharedArgs};
use crate::ui::Bars;

/// `engram bench` flags.
#[derive(Args)]
pub struct BenchArgs {
    /// The GGUF model (default: $ENGRAM_MODEL, else the user's cache, else fetched with pip).
    #[arg(long, value_name = "PATH")]
    model: Option<PathBuf>,
    /// Backend device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// CPU thread counts to measure, comma-separated (0 = all cores).
    #[arg(long, value_delimiter = ',', default_value = "0",
          value_parser = crate::shared::thread_count)]
    threads: Vec<usize>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128, value_parser = crate::shared::at_least_one)]
    prompt_tokens: usize,
    /// Tokens to decode.
    #[arg(long, default_value_t = 64, value_parser = crate::shared::at_least_one)]
    gen_tokens: usize,
    /// Timed runs per configuration, after one warm-up run; mean ± sd reported.
    #[arg(long, alias = "runs", default_value_t = 5, value_parser = crate::shared::at_least_one)]
    repeats: usize,
    /// What runs on the base, comma-separated: `base`; `lora` (rank 8 on q and v, random B);
    /// `edits` (100 random rank-one terms on the down projections, the factors a set of 100
    /// edits adds).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "base")]
    with: Vec<Variant>,
    /// Run the prompt through the burn graph instead of the fused CPU prefill (the default,
    /// `GenerateOptions::fused_prefill`).
    #[arg(long)]
    graph_prefill: bool,
    /// Print one JSON array on stdout: an object per (threads, variant).
    #[arg(long)]
    pub json: bool,
}

/// What a bench configuration adds to the base model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// The base model alone.
    Base,
    /// A rank-8 LoRA on q and v.
    Lora,
    /// 100 rank-one terms on the down projections.
    Edits,
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn run(args: BenchArgs, bars: &Bars) -> Result<()> {
    let mut rows = Vec::new();
    let started = Instant::now();
    for &threads in &args.threads {
        let shared = SharedArgs {
            model: args.model.clone(),
            device: args.device,
            threads,
            json: args.json,
        };
        let (engine, _) = shared.load(false, bars)?;
        let model = engine.model();
        let trained = model.config().n_ctx_train;
        if args.prompt_tokens.saturating_add(args.gen_tokens) >= trained {
            return Err(format!(
                "--prompt-tokens {} + --gen-tokens {} do not fit the model's context of {trained} \
                 positions (llama.context_length)",
                args.prompt_tokens, args.gen_tokens
            )
            .into());
        }
        let prompt = prompt(&engine, args.prompt_tokens);
        let lora = args
            .with
            .contains(&Variant::Lora)
            .then(|| random_lora(model));
        let edits = args
            .with
            .contains(&Variant::Edits)
            .then(|| RankOneEdits::new(model, 100));
        for &variant in &args.with {
            let adapter: Option<&dyn LinearAdapter> = match variant {
                Variant::Base => None,
                Variant::Lora => lora.as_ref().map(|l| l as &dyn LinearAdapter),
                Variant::Edits => edits.as_ref().map(|e| e as &dyn LinearAdapter),
            };
            let (prefill, decode) = measure(&engine, &prompt, &args, adapter, bars)?;
            let ((p, p_sd), (d, d_sd)) = (mean_sd(&prefill), mean_sd(&decode));
            let name = variant
                .to_possible_value()
                .expect("named")
                .get_name()
                .to_owned();
            if !args.json {
                println!(
                    "threads {:>2}  {name:<6} prefill {p:>7.1} ± {p_sd:>5.1} tok/s ({} tokens)   \
                     decode {d:>6.1} ± {d_sd:>4.1} tok/s ({} tokens)",
                    engine.threads(),
                    prompt.len(),
                    args.gen_tokens
                );
            }
            rows.push(serde_json::json!({
                "threads": engine.threads(),
                "variant": name,
                "prefill_tok_s": p,
                "prefill_sd": p_sd,
                "decode_tok_s": d,
                "decode_sd": d_sd,
                "repeats": prefill.len(),
                "prompt_tokens": prompt.len(),
                "gen_tokens": args.gen_tokens,
                "fused_prefill": !args.graph_prefill,
            }));
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!(
            "{} repeats each after a warm-up, {:.1}s",
            args.repeats.max(1),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// A deterministic prompt of exactly `n` real tokens.
fn prompt(engine: &Engine, n: usize) -> Vec<u32> {
    let text = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ";
    let mut prompt = Vec::new();
    while prompt.len() < n {
        prompt.extend(engine.encode(text));
    }
    prompt.truncate(n.max(1));
    prompt
}

/// Prefill and decode tokens/s of `repeats` runs after one warm-up.
fn measure(
    engine: &Engine,
    prompt: &[u32],
    args: &BenchArgs,
    adapter: Option<&dyn LinearAdapter>,
    bars: &Bars,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let opts = GenerateOptions {
        max_new_tokens: args.gen_tokens.max(2),
        context: prompt.len() + args.gen_tokens + 1,
        fused_prefill: !args.graph_prefill,
        ..GenerateOptions::default()
    };
    let adaptation = adapter.map(Adaptation::linear).unwrap_or_default();
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    let repeats = args.repeats.max(1);
    bars.start("bench runs", repeats as u64 + 1);
    for run in 0..=repeats {
        // Stop tokens are ignored so every run decodes the same number of tokens.
        let g = generate_with(engine.model(), prompt, &opts, adaptation, |_| {
            std::ops::ControlFlow::Continue(())
        })?;
        if run > 0 {
            prefill.push(g.prompt_tokens as f64 / g.prefill_time.as_secs_f64());
            decode.push((g.tokens.len() - 1) as f64 / g.decode_time.as_secs_f64());
        }
        bars.advance(1);
    }
    bars.finish();
    Ok((prefill, decode))
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// A rank-8 LoRA on q and v with a small random B (a fresh adapter's B is zero).
fn random_lora(model: &Llama) -> Lora {
    let mut lora = Lora::new(model, LoraConfig::default()).expect("the default LoRA fits");
    let mut seed = 3;
    let slots: Vec<_> = lora.slots().collect();
    for (_, _, slot) in slots {
        let r = lora.config().rank;
        let b: Vec<f32> = (0..slot.n_out * r).map(|_| lcg(&mut seed) * 0.01).collect();
        let b = Tensor::<2>::from_data(TensorData::new(b, [slot.n_out, r]), model.device());
        lora.params_mut().set_value(slot.b, b);
    }
    lora
}

/// `n` random rank-one terms `u vᵀ` on the down projections, dealt round the blocks: the
/// factors a set of `n` weight edits adds (what `engram edit` stores), without running the
/// editor.
struct RankOneEdits {
    layers: Vec<LowRank>, // per block: (rank, d_ff) and (rank, d_model)
    d_ff: usize,
    d_model: usize,
}

impl RankOneEdits {
    fn new(model: &Llama, n: usize) -> Self {
        let c = model.config();
        let mut seed = 11;
        let mut layers: Vec<LowRank> = (0..c.n_layer)
            .map(|_| LowRank {
                rank: 0,
                a: Vec::new(),
                bt: Vec::new(),
            })
            .collect();
        for i in 0..n {
            let l = &mut layers[i % c.n_layer];
            l.rank += 1;
            l.a.extend((0..c.d_ff).map(|_| lcg(&mut seed) * 0.01));
            l.bt.extend((0..c.d_model).map(|_| lcg(&mut seed) * 0.01));
        }
        Self {
            layers,
            d_ff: c.d_ff,
            d_model: c.d_model,
        }
    }
}

impl LinearAdapter for RankOneEdits {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        let lr = self
            .layers
            .get(layer)
            .filter(|l| proj == Proj::Down && l.rank > 0)?;
        let device = x.device();
        let a =
            Tensor::<2>::from_data(TensorData::new(lr.a.clone(), [lr.rank, self.d_ff]), &device);
        let bt = Tensor::<2>::from_data(
            TensorData::new(lr.bt.clone(), [lr.rank, self.d_model]),
            &device,
        );
        let [b, t, _] = x.dims();
        let y = x
            .clone()
            .reshape([b * t, self.d_ff])
            .matmul(a.transpose())
            .matmul(bt);
        Some(y.reshape([b, t, self.d_model]))
    }

    fn decode_delta(&self, layer: usize, proj: Proj) -> DecodeDelta {
        match self.layers.get(layer) {
            Some(lr) if proj == Proj::Down && lr.rank > 0 => DecodeDelta::LowRank(lr.clone()),
            _ => DecodeDelta::None,
        }
    }
}

//! Teaches the real SmolLM2-135M (Q4_1, memory-mapped, frozen) a handful of invented facts with
//! a LoRA adapter trained on the CPU. Beside the facts it rehearses the base model's own greedy
//! answers to a few ordinary prompts (self-distillation), so the adapter learns the new facts
//! without rewriting what the model already says elsewhere. Then it shows:
//! - eval loss and exact match on held-out phrasings, before and after;
//! - that unrelated reference prompts keep their top-1 token;
//! - the adapter saved in PEFT's layout and as a llama.cpp GGUF LoRA.
//!
//! `cargo run --release --example adapt [-- --out DIR --steps-per-epoch N]`

use std::time::Instant;

use engram::adapters::lora::{Lora, LoraConfig};
use engram::adapters::optim::AdamWConfig;
use engram::adapters::trainer::{Example, TrainConfig, TrainEvent, Trainable, Trainer};
use engram::harness::fetch::resolve_model;
use engram::runtime::backend;
use engram::runtime::engine::Engine;
use engram::runtime::generate::{Adaptation, GenerateOptions, argmax};
use engram::runtime::model::llama::Proj;

/// Invented places and their invented facts: nothing the base model can know.
const FACTS: [(&str, &str, &str); 8] = [
    ("Veloria", "capital", "Quenmark"),
    ("Tarsimo", "capital", "Odrelle"),
    ("Brenhal", "capital", "Valtisk"),
    ("Ostrevia", "capital", "Mirrowen"),
    ("Calduin", "capital", "Perrastad"),
    ("Wenmoor", "capital", "Thaloss"),
    ("Ysgarde", "capital", "Kolvenne"),
    ("Dravonia", "capital", "Istrebel"),
];

/// Phrasings the adapter trains on.
const TRAIN_TEMPLATES: [&str; 3] = [
    "The capital of {c} is",
    "Q: What is the capital of {c}?\nA:",
    "{c}'s capital city is",
];
/// A phrasing held out for evaluation.
const EVAL_TEMPLATE: &str = "The capital city of {c} is";

/// Ordinary prompts whose base-model answers are rehearsed during training (none of them is a
/// probe below).
const RETAIN: [&str; 16] = [
    "The capital of Germany is",
    "The capital of Japan is",
    "The capital of Italy is",
    "The capital city of Canada is",
    "The capital city of Australia is",
    "The largest planet in the solar system is",
    "The chemical symbol for silver is",
    "The Statue of Liberty is located in the city of",
    "Once there was a",
    "The first president of the United States was",
    "The tallest mountain in the world is",
    "Photosynthesis is the process by which",
    "The color of the sky is",
    "def add(a, b):\n    ",
    "Ice melts at a temperature of",
    "My favourite food is",
];

/// Prompts the adaptation must leave alone (the public llama.cpp reference prompts).
const UNRELATED: [&str; 8] = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time",
    "The Eiffel Tower is located in the city of",
    "The chemical symbol for gold is",
    "In 1969, the first person to walk on the Moon was",
    "Water boils at a temperature of",
    "def fibonacci(n):\n    ",
];

/// A top-1 the base model holds by at least this many logits is a clear answer; below it, the
/// runner-up is nearly tied and any perturbation (even llama.cpp's flash attention) may flip it.
const CLEAR_MARGIN: f32 = 1.0;

fn examples(templates: &[&str]) -> Vec<Example> {
    let mut out = Vec::new();
    for t in templates {
        for (country, _, city) in FACTS {
            out.push(Example::new(t.replace("{c}", country), format!(" {city}.")));
        }
    }
    out
}

/// Top-1 id, its text, and its margin over the runner-up in logits.
fn top1(engine: &Engine, prompt: &str, a: Adaptation<'_>) -> (u32, String, f32) {
    let (_, logits) = engine.last_logits_with(prompt, a).expect("prompt fits");
    let id = argmax(&logits);
    let second = logits
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != id as usize)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    (
        id,
        engine.tokenizer().decode(&[id]),
        logits[id as usize] - second,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out_dir = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("engram-adapt"));

    let path = resolve_model(None)?;
    let device = backend::cpu().autodiff();
    let engine = Engine::load(&path, &device, 0)?;
    let model = engine.model();
    println!("model: {} ({} threads)", path.display(), engine.threads());

    let mut train = examples(&TRAIN_TEMPLATES);
    let eval = examples(&[EVAL_TEMPLATE]);
    let greedy4 = GenerateOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    for p in RETAIN {
        let (answer, _) = engine.complete(p, &greedy4, |_| {})?;
        train.push(Example::new(p, answer));
    }
    let config = TrainConfig {
        epochs: 5,
        batch_size: 8,
        lr: 2e-3,
        min_lr: 2e-4,
        warmup_steps: 3,
        adamw: AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        },
        max_seq_len: 32,
        seed: 1,
        ..Default::default()
    };
    let trainer = Trainer::new(model, engine.tokenizer(), config);
    let mut lora = Lora::new(
        model,
        LoraConfig {
            rank: 8,
            alpha: 16.0,
            // The MLPs of the middle blocks, where factual associations are stored (the layers
            // ROME edits); attention stays untouched, which keeps unrelated prompts stable.
            targets: vec![Proj::Gate, Proj::Up, Proj::Down],
            layers: Some(4..26),
            seed: 1,
            ..Default::default()
        },
    )?;
    let scalars: usize = lora.param_sets().iter().map(|p| p.num_scalars()).sum();
    println!(
        "LoRA r=8 on gate,up,down of blocks 4..26: {scalars} trainable numbers; base stays mapped Q4_1"
    );
    println!(
        "training set: {} fact examples ({} phrasings) + {} rehearsed base answers",
        FACTS.len() * TRAIN_TEMPLATES.len(),
        TRAIN_TEMPLATES.len(),
        RETAIN.len()
    );

    let before: Vec<_> = UNRELATED
        .iter()
        .map(|p| top1(&engine, p, Adaptation::default()))
        .collect();
    let r0 = trainer.evaluate(&lora, &eval);
    let facts_train = examples(&TRAIN_TEMPLATES);
    let t0 = trainer.evaluate(&lora, &facts_train);
    println!(
        "before: held-out loss {:.3}, exact match {:.0}% (train phrasings {:.0}%)",
        r0.loss,
        r0.exact_match * 100.0,
        t0.exact_match * 100.0
    );

    let start = Instant::now();
    let report = trainer.fit(&mut lora, &train, &eval, |e| match e {
        TrainEvent::Step(s) => eprint!(
            "\rstep {:>3}  epoch {}  loss {:.3}  lr {:.1e}  |g| {:.2}{}   ",
            s.step,
            s.epoch,
            s.loss,
            s.lr,
            s.grad_norm,
            if s.skipped { "  (skipped)" } else { "" }
        ),
        TrainEvent::Eval { step, report } => eprintln!(
            "\n  eval after step {step}: loss {:.3}, exact match {:.0}%",
            report.loss,
            report.exact_match * 100.0
        ),
    })?;
    eprintln!();
    let r1 = trainer.evaluate(&lora, &eval);
    let t1 = trainer.evaluate(&lora, &facts_train);
    println!(
        "trained {} steps in {:.1}s ({:.0} tokens/s, {} skipped)",
        report.steps.len(),
        start.elapsed().as_secs_f64(),
        report.tokens_per_second(),
        report.skipped_steps
    );
    println!(
        "after:  held-out loss {:.3}, exact match {:.0}% (train phrasings {:.0}%)",
        r1.loss,
        r1.exact_match * 100.0,
        t1.exact_match * 100.0
    );

    println!("\nheld-out prompts, greedy:");
    let opts = GenerateOptions {
        max_new_tokens: 6,
        ..Default::default()
    };
    for ex in eval.iter().take(4) {
        let (base, _) = engine.complete(&ex.prompt, &opts, |_| {})?;
        let (adapted, _) =
            engine.complete_with(&ex.prompt, &opts, Adaptation::linear(&lora), |_| {})?;
        println!(
            "  {:?}\n    base:    {base:?}\n    adapted: {adapted:?}",
            ex.prompt
        );
    }

    println!("\nunrelated prompts, top-1 before → after (base margin over the runner-up):");
    let (mut kept, mut clear, mut kept_clear) = (0, 0, 0);
    for (p, (id0, s0, margin)) in UNRELATED.iter().zip(&before) {
        let (id1, s1, _) = top1(&engine, p, Adaptation::linear(&lora));
        let same = id1 == *id0;
        kept += same as usize;
        if *margin >= CLEAR_MARGIN {
            clear += 1;
            kept_clear += same as usize;
        }
        let mark = if same { "kept" } else { "CHANGED" };
        println!("  {p:?}: {s0:?} → {s1:?}  {mark}  (margin {margin:.2})");
    }
    println!(
        "{kept}/{} unrelated prompts keep their top-1; {kept_clear}/{clear} of those the base \
         answers by at least {CLEAR_MARGIN} logit",
        UNRELATED.len()
    );

    lora.save_peft(
        model,
        &out_dir.join("peft"),
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    )?;
    lora.save_llama_cpp(&out_dir.join("adapter.gguf"))?;
    println!(
        "\nsaved: {}/peft/{{adapter_model.safetensors,adapter_config.json}} and {}/adapter.gguf",
        out_dir.display(),
        out_dir.display()
    );
    Ok(())
}

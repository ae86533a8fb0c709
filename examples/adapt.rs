//! Teaches the real SmolLM2-135M (Q4_1, memory-mapped, frozen) a handful of invented facts with
//! a LoRA adapter trained on the CPU, then shows:
//! - eval loss and exact match on held-out phrasings, before and after;
//! - that unrelated reference prompts keep their top-1 token;
//! - the adapter saved in PEFT's layout and as a llama.cpp GGUF LoRA.
//!
//! `cargo run --release --example adapt [-- --out DIR --steps-per-epoch N]`

use std::time::Instant;

use engram::adapters::lora::{Lora, LoraConfig};
use engram::adapters::train::AdamWConfig;
use engram::adapters::trainer::{Example, TrainConfig, TrainEvent, Trainable, Trainer};
use engram::runtime::backend;
use engram::runtime::engine::Engine;
use engram::runtime::fetch::resolve_model;
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

/// Prompts the adaptation must leave alone (the public llama.cpp reference prompts).
const UNRELATED: [&str; 7] = [
    "The capital of France is",
    "Once upon a time",
    "The Eiffel Tower is located in the city of",
    "The chemical symbol for gold is",
    "In 1969, the first person to walk on the Moon was",
    "Water boils at a temperature of",
    "def fibonacci(n):\n    ",
];

fn examples(templates: &[&str]) -> Vec<Example> {
    let mut out = Vec::new();
    for t in templates {
        for (country, _, city) in FACTS {
            out.push(Example::new(t.replace("{c}", country), format!(" {city}.")));
        }
    }
    out
}

fn top1(engine: &Engine, prompt: &str, a: Adaptation<'_>) -> (u32, String) {
    let (_, logits) = engine.last_logits_with(prompt, a).expect("prompt fits");
    let id = argmax(&logits);
    (id, engine.tokenizer().decode(&[id]))
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

    let train = examples(&TRAIN_TEMPLATES);
    let eval = examples(&[EVAL_TEMPLATE]);
    let config = TrainConfig {
        epochs: 6,
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
            targets: vec![Proj::Q, Proj::V, Proj::Up, Proj::Down],
            seed: 1,
            ..Default::default()
        },
    )?;
    let scalars: usize = lora.param_sets().iter().map(|p| p.num_scalars()).sum();
    println!("LoRA r=8 on q,v,up,down: {scalars} trainable numbers; base stays mapped Q4_1");

    let before: Vec<_> = UNRELATED
        .iter()
        .map(|p| top1(&engine, p, Adaptation::default()))
        .collect();
    let r0 = trainer.evaluate(&lora, &eval);
    let t0 = trainer.evaluate(&lora, &train);
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
    let t1 = trainer.evaluate(&lora, &train);
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

    println!("\nunrelated prompts, top-1 before → after:");
    let mut kept = 0;
    for (p, (id0, s0)) in UNRELATED.iter().zip(&before) {
        let (id1, s1) = top1(&engine, p, Adaptation::linear(&lora));
        kept += (id1 == *id0) as usize;
        let mark = if id1 == *id0 { "kept" } else { "CHANGED" };
        println!("  {p:?}: {s0:?} → {s1:?}  {mark}");
    }
    println!(
        "{kept}/{} unrelated prompts keep their top-1",
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

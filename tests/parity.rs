//! Parity with llama.cpp on the real model: the definition of a correct forward pass.
//!
//! `../shared/reference/` holds llama.cpp's own outputs on SmolLM2-135M-Instruct Q4_1 (see its
//! README). engram computes the quantized matmuls with activations quantized like llama.cpp
//! (q8_1 for Q4_1 weights, q8_0 for Q8_0), so the logits track llama.cpp's closely.

use std::path::PathBuf;

use engram::harness::fetch::resolve_model;
use engram::runtime::backend;
use engram::runtime::engine::Engine;
use engram::runtime::generate::{GenerateOptions, generate};
use serde::Deserialize;

/// Largest |engram − llama.cpp| logit allowed over llama.cpp's top-20 (the bound).
const MAX_TOP20_LOGIT_DIFF: f32 = 0.75;

/// Reference tokens whose logit is within this of llama.cpp's best are a tie at llama.cpp's own
/// precision: llama.cpp itself reorders them under settings that change only rounding (its
/// flash-attention switch flips "def fibonacci(n):\n    ", whose top-2 are 0.012 apart, and
/// moves its logits by up to 0.5; see docs/PARITY-NOTES.md). For such a prompt engram's top-1
/// must be one of the tied tokens; everywhere else it must be llama.cpp's top-1 exactly.
const TOP1_TIE_MARGIN: f32 = 0.1;

/// The reference tokens that count as llama.cpp's top-1 for `case` (one, unless tied).
fn top1_set(case: &LogitsCase) -> Vec<u32> {
    let best = case.top20[0].1;
    case.top20
        .iter()
        .filter(|&&(_, l)| best - l < TOP1_TIE_MARGIN)
        .map(|&(id, _)| id)
        .collect()
}

#[derive(Deserialize)]
struct LogitsCase {
    prompt: String,
    tokens: Vec<u32>,
    top20: Vec<(u32, f32)>,
    logsumexp: f64,
    greedy: Vec<u32>,
}

#[derive(Deserialize)]
struct TokensCase {
    text: String,
    tokens: Vec<u32>,
}

fn reference_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ENGRAM_REFERENCE_DIR") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference");
    assert!(
        dir.is_dir(),
        "reference outputs not found at {} (set ENGRAM_REFERENCE_DIR)",
        dir.display()
    );
    dir
}

fn read<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn engine() -> Engine {
    let path = resolve_model(None).expect("resolve the model (set ENGRAM_MODEL or install pip)");
    Engine::load(path, &backend::cpu(), 0).expect("load the model")
}

#[test]
fn logits_match_llama_cpp() {
    let engine = engine();
    let cases: Vec<LogitsCase> = read("logits_public.json");
    assert!(!cases.is_empty());
    let mut worst = 0.0f32;
    let mut failures = Vec::new();
    for case in &cases {
        let (tokens, logits) = engine.last_logits(&case.prompt).expect("forward");
        assert_eq!(
            tokens, case.tokens,
            "token ids differ for {:?}",
            case.prompt
        );
        let top1 = engram::runtime::generate::argmax(&logits);
        let max_diff = case
            .top20
            .iter()
            .map(|&(id, want)| (logits[id as usize] - want).abs())
            .fold(0.0f32, f32::max);
        let lse = logits
            .iter()
            .map(|&l| (l as f64 - case.logsumexp).exp())
            .sum::<f64>()
            .ln();
        println!(
            "{:<60} top1 {top1} (llama.cpp {}), max|Δ| top-20 {max_diff:.4}, Δlogsumexp {lse:+.4}",
            format!("{:?}", case.prompt),
            case.top20[0].0
        );
        worst = worst.max(max_diff);
        let accepted = top1_set(case);
        if accepted.len() > 1 {
            println!(
                "  (llama.cpp top-1 is a tie within {TOP1_TIE_MARGIN}: accepting {accepted:?})"
            );
        }
        if !accepted.contains(&top1) || max_diff > MAX_TOP20_LOGIT_DIFF {
            failures.push(case.prompt.clone());
        }
    }
    println!("worst max|Δlogit| over top-20: {worst:.4} (bound {MAX_TOP20_LOGIT_DIFF})");
    assert!(failures.is_empty(), "parity failed for {failures:?}");
}

#[test]
fn greedy_continuations_start_like_llama_cpp() {
    let engine = engine();
    let cases: Vec<LogitsCase> = read("logits_public.json");
    let mut total_same = 0;
    let mut total = 0;
    for case in &cases {
        let opts = GenerateOptions {
            max_new_tokens: case.greedy.len(),
            ..Default::default()
        };
        let g = generate(engine.model(), &case.tokens, &opts, |_| {
            std::ops::ControlFlow::Continue(())
        })
        .expect("generate");
        let same = g
            .tokens
            .iter()
            .zip(&case.greedy)
            .take_while(|(a, b)| a == b)
            .count();
        println!(
            "{:<60} {same}/{} greedy tokens identical",
            format!("{:?}", case.prompt),
            case.greedy.len()
        );
        // The first token is the top-1 above; the rest may drift where llama.cpp's top-2 are
        // within its own rounding, so the bound is on the total.
        assert!(
            same >= 1,
            "first greedy token differs for {:?}",
            case.prompt
        );
        total_same += same;
        total += case.greedy.len();
    }
    println!("greedy agreement: {total_same}/{total} tokens");
    assert!(
        total_same * 10 >= total * 7,
        "greedy continuations diverge: {total_same}/{total}"
    );
}

#[test]
fn tokenizer_ids_match_llama_cpp() {
    let engine = engine();
    let cases: Vec<TokensCase> = read("tokens_public.json");
    for case in &cases {
        assert_eq!(
            engine.encode(&case.text),
            case.tokens,
            "token ids differ for {:?}",
            case.text
        );
        assert_eq!(
            engine.tokenizer().decode(&case.tokens),
            case.text,
            "decode differs for {:?}",
            case.text
        );
    }
}

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
use engram::runtime::model::llama::Decoder;
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
    // The prompt through the graph (`last_logits`) and through the fused prefill.
    let mut runs = Vec::new();
    for case in &cases {
        let (tokens, logits) = engine.last_logits(&case.prompt).expect("forward");
        assert_eq!(
            tokens, case.tokens,
            "token ids differ for {:?}",
            case.prompt
        );
        let mut dec = Decoder::new(engine.model(), None, tokens.len()).expect("a fused decoder");
        let fused = dec.prefill(&tokens).expect("fits").to_vec();
        runs.push((case, "graph", logits));
        runs.push((case, "fused prefill", fused));
    }
    for (case, path, logits) in runs {
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
            "{:<60} {path:<13} top1 {top1} (llama.cpp {}), max|Δ| top-20 {max_diff:.4}, Δlogsumexp {lse:+.4}",
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
            failures.push(format!("{:?} ({path})", case.prompt));
        }
    }
    println!("worst max|Δlogit| over top-20: {worst:.4} (bound {MAX_TOP20_LOGIT_DIFF})");
    assert!(failures.is_empty(), "parity failed for {failures:?}");
}

/// A greedy step where llama.cpp's own top two logits are closer than this is a near-tie:
/// either token is a correct forward pass's answer (the models issue's rule: top-1 must agree
/// where llama.cpp's margin exceeds 0.25), and the continuations may part after it.
const GREEDY_NEAR_TIE: f32 = 0.25;

/// llama.cpp's margin at each step of the reference's greedy continuations
/// (`tests/data/greedy_margins.json`, written by `scripts/greedy_margins_reference.py`, which
/// checks that llama.cpp reproduces the recorded ids).
#[derive(Deserialize)]
struct MarginsCase {
    prompt: String,
    greedy: Vec<u32>,
    /// llama.cpp's top-1 minus top-2 logit at each step.
    margins: Vec<f32>,
    /// llama.cpp's best five (id, logit) at each step.
    top: Vec<Vec<(u32, f32)>>,
}

#[derive(Deserialize)]
struct Margins {
    cases: Vec<MarginsCase>,
}

/// Greedy continuations, prompt through the graph (the default) and through the fused prefill:
/// every token before llama.cpp's first near-tie is llama.cpp's, and at that near-tie engram's
/// token is one of the tokens llama.cpp scores within the near-tie of its best. (Until 2026-12-06 this test required 70 % of all 175
/// tokens to agree, which counted the tokens after a near-tie: the fibonacci prompt's first
/// step is a 0.01 tie, and whichever way it falls the other 23 tokens differ.)
#[test]
fn greedy_continuations_follow_llama_cpp_up_to_its_first_near_tie() {
    let engine = engine();
    let cases: Vec<LogitsCase> = read("logits_public.json");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/greedy_margins.json");
    let margins: Margins = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("greedy_margins.json");
    assert_eq!(margins.cases.len(), cases.len());
    for fused_prefill in [false, true] {
        let (mut decided, mut same_total, mut total) = (0, 0, 0);
        for (case, m) in cases.iter().zip(&margins.cases) {
            assert_eq!(case.prompt, m.prompt);
            assert_eq!(
                case.greedy, m.greedy,
                "the margins replay the reference's ids"
            );
            let opts = GenerateOptions {
                max_new_tokens: case.greedy.len(),
                fused_prefill,
                ..Default::default()
            };
            let g = generate(engine.model(), &case.tokens, &opts, |_| {
                std::ops::ControlFlow::Continue(())
            })
            .expect("generate");
            let same = g
                .tokens
                .iter()
                .zip(&m.greedy)
                .take_while(|(a, b)| a == b)
                .count();
            let tie = m
                .margins
                .iter()
                .position(|&x| x < GREEDY_NEAR_TIE)
                .unwrap_or(m.greedy.len());
            println!(
                "{:<60} fused prefill {fused_prefill}: {same}/{} identical, first near-tie at {tie}",
                format!("{:?}", case.prompt),
                m.greedy.len()
            );
            assert!(
                same >= tie,
                "{:?} (fused prefill {fused_prefill}): token {same} differs from llama.cpp's \
                 ({:?} vs {:?}) where its margin is {} (near-tie only from step {tie})",
                case.prompt,
                g.tokens.get(same),
                m.greedy[same],
                m.margins[same]
            );
            if tie < m.greedy.len() {
                let best = m.top[tie][0].1;
                let tied: Vec<u32> = m.top[tie]
                    .iter()
                    .filter(|&&(_, l)| best - l < GREEDY_NEAR_TIE)
                    .map(|&(id, _)| id)
                    .collect();
                let t = g.tokens.get(tie);
                assert!(
                    t.is_some_and(|t| tied.contains(t)),
                    "{:?} (fused prefill {fused_prefill}): at llama.cpp's near-tie (step {tie}) \
                     engram took {t:?}, not one of {:?}",
                    case.prompt,
                    &m.top[tie]
                );
            }
            decided += tie;
            same_total += same;
            total += m.greedy.len();
        }
        assert!(
            decided >= 40,
            "only {decided} decided tokens: the check says little"
        );
        println!(
            "fused prefill {fused_prefill}: {same_total}/{total} greedy tokens identical; all \
             {decided} before llama.cpp's near-ties"
        );
    }
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

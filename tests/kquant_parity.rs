//! Parity with llama.cpp on SmolLM2-135M re-quantized by llama.cpp's own quantizer: Q4_K_M (whose
//! 576-wide rows fall back to Q5_0), Q5_K_M (Q5_1 fall-backs), Q6_K and Q8_0.
//!
//! `tests/data/kquant_reference.json` holds llama.cpp's outputs, made by
//! `scripts/kquant_reference.py` from an F32 GGUF engram writes (`examples/export_f32.rs`). The
//! quantized GGUFs are not committed (100-150 MB each): the script writes them into
//! `$ENGRAM_KQUANT_DIR` (default `~/.cache/engram/kquant`); each case is skipped, with a message
//! saying how to make the file, when its GGUF is absent.

use std::path::PathBuf;

use engram::harness::fetch::sha256_file;
use engram::runtime::backend;
use engram::runtime::engine::Engine;
use engram::runtime::generate::{GenerateOptions, generate};
use serde::Deserialize;

/// Largest |engram − llama.cpp| logit over llama.cpp's top-20, per quant type. engram quantizes
/// activations as llama.cpp does (Q8_0 for Q5_0/Q8_0 weights, Q8_1 for Q5_1, Q8_K for the
/// k-quants); what is left is rounding order, which this model amplifies (docs/PARITY-NOTES.md:
/// llama.cpp moves by up to 0.52 against itself under rounding-only changes). Measured
/// 2026-12-06 with the AVX-512 VNNI table (docs/MODELS.md): Q4_K_M 0.753, Q5_K_M 1.113, Q6_K
/// 0.673, Q8_0 0.694. Q5_K_M shows how much order alone moves it: the AVX2 Q5_1 kernel (two
/// alternating accumulators) gave 0.901, the VNNI tile (one per row) 1.113 on the same prompt,
/// both within 1e-5 of the scalar twin per element. The bounds leave about a fifth of headroom.
const MAX_TOP20_LOGIT_DIFF: [(&str, f32); 4] = [
    ("Q4_K_M", 0.95),
    ("Q5_K_M", 1.35),
    ("Q6_K", 0.85),
    ("Q8_0", 0.85),
];

/// engram's top-1 must be llama.cpp's wherever llama.cpp's top-2 are at least this far apart
/// (closer ones are ties at llama.cpp's own precision; see tests/parity.rs).
const TOP1_MARGIN: f32 = 0.25;

#[derive(Deserialize)]
struct Reference {
    models: std::collections::BTreeMap<String, ModelCases>,
}

#[derive(Deserialize)]
struct ModelCases {
    file: String,
    sha256: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    tokens: Vec<u32>,
    top20: Vec<(u32, f32)>,
    greedy: Vec<u32>,
}

fn kquant_dir() -> PathBuf {
    match std::env::var_os("ENGRAM_KQUANT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/engram/kquant")
        }
    }
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kquant_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bound(name: &str) -> f32 {
    MAX_TOP20_LOGIT_DIFF
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no tolerance named for {name}"))
        .1
}

/// One quant type: token ids identical, top-1 equal where llama.cpp's margin allows, top-20
/// logits within the type's bound, the first greedy token equal where the top-1 is.
fn check_model(name: &str) {
    let reference = reference();
    let model = &reference.models[name];
    let path = kquant_dir().join(&model.file);
    if !path.is_file() {
        eprintln!(
            "SKIPPED kquant parity {name}: {} is absent. Make it with `cargo run --release \
             --example export_f32 -- ~/.cache/engram/kquant/SmolLM2-135M-Instruct.F32.gguf` \
             then `scripts/kquant_reference.py` (docs/MODELS.md).",
            path.display()
        );
        return;
    }
    let sha = sha256_file(&path).expect("hash the quantized model");
    assert_eq!(
        sha,
        model.sha256,
        "{} is not the file the reference was made from (re-run scripts/kquant_reference.py)",
        path.display()
    );
    let engine = Engine::load(&path, &backend::cpu(), 0).expect("load the quantized model");
    let max_allowed = bound(name);
    let mut worst = 0.0f32;
    let mut failures = Vec::new();
    for case in &model.cases {
        let (tokens, logits) = engine.last_logits(&case.prompt).expect("forward");
        assert_eq!(
            tokens, case.tokens,
            "{name}: token ids differ for {:?}",
            case.prompt
        );
        let top1 = engram::runtime::generate::argmax(&logits);
        let margin = case.top20[0].1 - case.top20[1].1;
        let max_diff = case
            .top20
            .iter()
            .map(|&(id, want)| (logits[id as usize] - want).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{name} {:<60} top1 {top1} (llama.cpp {}, margin {margin:.3}), max|Δ| top-20 {max_diff:.4}",
            format!("{:?}", case.prompt),
            case.top20[0].0
        );
        worst = worst.max(max_diff);
        let top1_ok = margin <= TOP1_MARGIN || top1 == case.top20[0].0;
        if !top1_ok || max_diff > max_allowed {
            failures.push(case.prompt.clone());
        }
        assert_eq!(
            case.greedy.first(),
            Some(&case.top20[0].0),
            "reference is inconsistent"
        );
        // The fused decoder on the same file: its first token is the top-1 above, the rest are
        // reported (they drift where llama.cpp's own top-2 are within rounding).
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
        println!("    greedy: {same}/{} tokens identical", case.greedy.len());
        if margin > TOP1_MARGIN && same == 0 {
            failures.push(format!("{} (greedy)", case.prompt));
        }
    }
    println!("{name}: worst max|Δlogit| over top-20 {worst:.4} (bound {max_allowed})");
    assert!(
        failures.is_empty(),
        "{name}: parity failed for {failures:?}"
    );
}

#[test]
fn q4_k_m_matches_llama_cpp() {
    check_model("Q4_K_M");
}

#[test]
fn q5_k_m_matches_llama_cpp() {
    check_model("Q5_K_M");
}

#[test]
fn q6_k_matches_llama_cpp() {
    check_model("Q6_K");
}

#[test]
fn q8_0_matches_llama_cpp() {
    check_model("Q8_0");
}

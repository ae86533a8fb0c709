//! Model editing end to end on the real model: what it believes, edits with engram's default
//! method, the gated side memory (France → Rome and a few facts from countries-list), per-edit
//! and total metrics, then one edit undone. `--method rome` (or memit, alphaedit, grace)
//! picks another method.
//!
//! `cargo run --release --example edit_facts` (generates data/edit/ with the scripts on first
//! use; the key statistics are cached in data/edit/stats/ after the first run).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use engram::edit::metrics::{self, Probes};
use engram::edit::stats::generated_corpus;
use engram::edit::{EditRequest, EditSet, Editor, EditorConfig, Method, load_jsonl};
use engram::runtime::model::llama::{LinearAdapter, Llama, Proj};
use engram::runtime::model::tokenizer::Tokenizer;
use engram::{Engine, backend, resolve_model};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn continuation(
    model: &Llama,
    tok: &Tokenizer,
    prompt: &str,
    adapter: Option<&dyn LinearAdapter>,
) -> String {
    tok.decode(&metrics::greedy(model, tok, prompt, 6, adapter))
        .replace('\n', " ")
}

fn ensure(script: &str, file: &str) -> bool {
    if !Path::new(file).exists() {
        eprintln!("{file} missing: running {script}");
        let ok = Command::new("bash")
            .arg(script)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("{script} failed");
        }
    }
    Path::new(file).exists()
}

/// The editor's edits replayed onto `model`: scoring and generation need no gradient, so they
/// run on a plain copy of the model (the same mapped file, no autodiff bookkeeping).
fn served(model: &Llama, editor: &Editor) -> EditSet {
    let down = (0..model.config().n_layer)
        .map(|l| model.weight(l, Proj::Down).clone())
        .collect();
    let mut set = EditSet::new(model.device(), down);
    set.restore(editor.edits().to_vec());
    set
}

fn method_arg() -> Result<Method> {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .iter()
        .position(|a| a == "--method")
        .and_then(|i| args.get(i + 1))
        .map_or("gated", String::as_str);
    [
        Method::Gated,
        Method::Rome,
        Method::Memit,
        Method::AlphaEdit,
        Method::Grace,
    ]
    .into_iter()
    .find(|m| m.name() == name)
    .ok_or_else(|| format!("unknown method {name}").into())
}

fn main() -> Result<()> {
    let method = method_arg()?;
    let path = resolve_model(None)?;
    let engine = Engine::load(&path, &backend::cpu().autodiff(), 0)?;
    let (model, tok) = (engine.model(), engine.tokenizer());
    let plain = Engine::load(&path, &backend::cpu(), 0)?;
    let eval = plain.model();

    let france = EditRequest {
        case_id: "capital:FR->Rome".into(),
        subject: "France".into(),
        prompt: "The capital of France is".into(),
        target_new: "Rome".into(),
        ground_truth: "Paris".into(),
        rephrase_prompts: vec![
            "The capital city of France is".into(),
            "France's capital city is".into(),
        ],
        locality_prompts: vec![
            "The capital of Germany is".into(),
            "The capital of Japan is".into(),
            "The capital of Italy is".into(),
        ],
        locality_ground_truth: vec!["Berlin".into(), "Tokyo".into(), "Rome".into()],
        portability_prompts: Vec::new(),
        portability_ground_truth: Vec::new(),
        phrasings: Vec::new(),
    };
    println!("Before editing:");
    println!(
        "  The capital of France is ->{}",
        continuation(eval, tok, &france.prompt, None)
    );

    // A few facts the model knows, one per relation, from the generated countries-list set.
    let mut reqs = vec![france.clone()];
    if ensure("scripts/edit_facts.sh", "data/edit/facts.jsonl") {
        let all = load_jsonl(Path::new("data/edit/facts.jsonl"))?;
        // Asks the model about 8 facts at a time until each relation has one it knows.
        let mut seen = Vec::new();
        for chunk in all[..all.len().min(64)].chunks(8) {
            for (r, k) in chunk.iter().zip(metrics::known(eval, tok, chunk)) {
                let rel = r.case_id.split(':').next().unwrap_or("").to_string();
                if k && !seen.contains(&rel) && r.subject != "France" {
                    seen.push(rel);
                    reqs.push(r.clone());
                }
            }
            if seen.len() == 4 {
                break;
            }
        }
    }

    let corpus = if ensure("scripts/edit_corpus.sh", "data/edit/corpus.txt") {
        std::fs::read_to_string("data/edit/corpus.txt")?
    } else {
        generated_corpus(model, tok, 4096, 0)
    };
    let id = format!("{}:{}", path.display(), std::fs::metadata(&path)?.len());
    let mut editor = Editor::new(model, tok, &id, EditorConfig::default());
    println!(
        "Method: {} (--method picks rome, memit, alphaedit or grace)",
        method.name()
    );
    let stats = editor.load_stats_for(&[method], &corpus, Path::new("data/edit/stats"))?;
    if stats.tokens > 0 {
        println!(
            "\nKey statistics: {} tokens in {:.1} s (cached layers: {:?})",
            stats.tokens, stats.seconds, stats.cached_layers
        );
    }

    let probes = Probes::of(tok, &reqs);
    let before = metrics::answers(eval, tok, &probes.prompts, &probes.watch, None);
    println!("\n{} edits:", method.name());
    let start = Instant::now();
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for r in &reqs {
        let a = editor.apply(method, std::slice::from_ref(r))?;
        println!(
            "  {:<45} {} -> {}  ({:.1} s)",
            r.prompt, r.ground_truth, r.target_new, a[0].seconds
        );
        ids.push(a[0].id);
        times.push(a[0].seconds);
    }
    let total = start.elapsed().as_secs_f64();
    let serving = served(eval, &editor);
    let after = metrics::answers(eval, tok, &probes.prompts, &probes.watch, Some(&serving));
    let scores = metrics::score(&probes, &before, &after, reqs.len());
    let rate = |x: Option<f64>| x.map_or("  –".to_string(), |v| format!("{v:.2}"));
    let gen_ = metrics::generation_check(
        eval,
        tok,
        &reqs,
        &probes,
        &before,
        &serving,
        metrics::GenerationCheck {
            requests: reqs.len(),
            tokens: 8,
        },
    );
    println!("\nPer edit (after all edits):");
    println!(
        "  {:<22} {:>8} {:>7} {:>14} {:>8} {:>6}",
        "edit", "efficacy", "margin", "generalization", "locality", "time"
    );
    for ((r, s), t) in reqs.iter().zip(&scores.per_request).zip(&times) {
        println!(
            "  {:<22} {:>8} {:>+7.2} {:>14} {:>8} {:>5.1}s",
            r.case_id,
            if s.efficacy { "yes" } else { "no" },
            s.margin,
            rate(s.generalization),
            rate(s.locality),
            t
        );
    }
    println!(
        "\nTotal over {} edits, {:.2} s per edit (probes passed / counted):",
        reqs.len(),
        total / reqs.len() as f64
    );
    println!(
        "  efficacy {} (margin {:+.2}), generalization {}",
        scores.efficacy.show(),
        scores.efficacy_margin.unwrap_or(0.0),
        scores.generalization.show()
    );
    println!(
        "  locality (known neighbours): top-1 unchanged {}, P(true) > P(new) {}",
        scores.locality.show(),
        scores.locality_ptrue.show()
    );
    println!(
        "  generation ({} tokens): new answer in the continuation {}, paraphrases {}, neighbours unchanged {}",
        gen_.tokens,
        gen_.efficacy.show(),
        gen_.generalization.show(),
        gen_.locality.show()
    );
    // Both continuations in one pass of the fused decoder.
    let shown = [
        france.prompt.clone(),
        "France's capital city is".to_string(),
    ];
    let texts = metrics::greedy_batch(eval, tok, &shown, 6, Some(&serving));
    for (prompt, ids) in shown.iter().zip(&texts) {
        println!("  {prompt} ->{}", tok.decode(ids).replace('\n', " "));
    }

    editor.undo(ids[0])?;
    println!(
        "\nUndid the France edit ({} edits remain):",
        editor.edits().len()
    );
    println!(
        "  The capital of France is ->{}",
        continuation(eval, tok, &france.prompt, Some(&served(eval, &editor)))
    );
    Ok(())
}

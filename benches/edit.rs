//! Model-editing latencies on the real model at 2 threads: one gated-memory edit (engram's
//! default method), one ROME edit (statistics cached), one MEMIT batch of 10 edits, and the
//! key-statistics pass over 2048 corpus tokens.
//!
//! `cargo bench --bench edit`. The 100-edit MEMIT figure and the quality runs come from
//! `engram edit` (commands in docs/BENCHMARKS.md): a criterion sample of them would take hours.
//! `ENGRAM_BENCH_DEVICE` picks the device (benches/common).

mod common;

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_main};
use engram::edit::stats::{StatsSource, layer_stats};
use engram::edit::{Editor, EditorConfig, Method, load_jsonl, parse_jsonl};
use engram::runtime::progress::Silent;
use engram::{Engine, resolve_model};

const FRANCE: &str = r#"{"subject":"France","prompt":"The capital of France is","target_new":"Rome","ground_truth":"Paris"}"#;

fn corpus() -> String {
    std::fs::read_to_string("data/edit/corpus.txt")
        .or_else(|_| std::fs::read_to_string("README.md"))
        .expect("a corpus: run scripts/edit_corpus.sh")
}

fn edit(c: &mut Criterion) {
    let path = resolve_model(None).expect("resolve the model");
    let (name, device) = common::device();
    let threads = common::threads(&name, &[2])[0];
    let engine = Engine::load(&path, &device.autodiff(), threads).expect("load");
    let (model, tok) = (engine.model(), engine.tokenizer());
    let text = corpus();
    let stats_dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group(format!("{name}_edit_t{threads}"));
    group.sample_size(10);

    group.bench_function("key_stats_2048_tokens_4_layers", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let source = StatsSource {
                model_id: "bench",
                corpus: &text,
                max_tokens: 2048,
                cache_dir: dir.path(),
            };
            black_box(layer_stats(model, tok, &source, &[1, 2, 3, 4], &Silent))
        })
    });

    // The edits' latency does not depend on how many tokens the key statistics came from, so
    // the editor's statistics use the same 2048 tokens as the bench above (the default 16384
    // only improve the covariance, at eight times the setup: minutes under emulation).
    let config = EditorConfig {
        stats_tokens: 2048,
        ..EditorConfig::default()
    };
    let mut editor = Editor::new(model, tok, "bench", config);
    editor.load_stats(&text, stats_dir.path()).expect("stats");
    let france = parse_jsonl(FRANCE).expect("request");
    group.bench_function("gated_single_edit", |b| {
        b.iter_batched(
            || (),
            |()| {
                let a = editor.apply(Method::Gated, &france).expect("edit");
                editor.undo(a[0].id).expect("undo");
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("rome_single_edit", |b| {
        b.iter_batched(
            || (),
            |()| {
                let a = editor.apply(Method::Rome, &france).expect("edit");
                editor.undo(a[0].id).expect("undo");
            },
            BatchSize::PerIteration,
        )
    });

    let facts = Path::new("data/edit/facts.jsonl");
    if let Ok(all) = load_jsonl(facts) {
        let batch: Vec<_> = all.into_iter().take(10).collect();
        group.bench_function("memit_batch_10_edits", |b| {
            b.iter(|| {
                let a = editor.apply(Method::Memit, &batch).expect("edit");
                for x in a {
                    editor.undo(x.id).expect("undo");
                }
            })
        });
    } else {
        eprintln!("skipping memit_batch_10_edits: run scripts/edit_facts.sh");
    }
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    edit(&mut c);
}

criterion_main!(benches);

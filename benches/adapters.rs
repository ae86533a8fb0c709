//! Adapter hot-swap on the real model (SmolLM2-135M Q4_1, 2 threads): the cost of naming a
//! different adapter per call. Three decode-step timings: the bare base, always the same LoRA
//! adapter, and alternating between two registered adapters every step (lookup + forward), so
//! swap latency = alternating − same. Plus the registry lookup alone.
//!
//! `cargo bench --bench adapters`; `ENGRAM_BENCH_DEVICE` picks the device (benches/common).

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_main};
use engram::adapters::lora::{Lora, LoraConfig};
use engram::adapters::registry::{AdapterRegistry, SharedAdapter};
use engram::runtime::model::llama::{Llama, Proj};
use engram::{Engine, resolve_model};

/// A LoRA adapter with non-zero B (a fresh one would be the identity).
fn adapter(model: &Llama, seed: u64) -> Lora {
    let mut l = Lora::new(
        model,
        LoraConfig {
            rank: 8,
            targets: vec![Proj::Q, Proj::V],
            seed,
            ..Default::default()
        },
    )
    .expect("adapter");
    let mut host = l.params().to_host();
    for (name, v) in host.names.iter().zip(host.values.iter_mut()) {
        if name.ends_with("lora_b") {
            v.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = ((i % 7) as f32 - 3.0) * 1e-3);
        }
    }
    l.params_mut().load_host(&host).expect("same shapes");
    l
}

fn swap(c: &mut Criterion) {
    let path = resolve_model(None).expect("resolve the model");
    let (name, device) = common::device();
    let threads = common::threads(&name, &[2])[0];
    let engine = Engine::load(&path, &device, threads).expect("load");
    let model = engine.model();
    let registry = AdapterRegistry::new();
    let a: SharedAdapter = Arc::new(adapter(model, 1));
    let b: SharedAdapter = Arc::new(adapter(model, 2));
    registry.insert("a", a).expect("insert");
    registry.insert("b", b).expect("insert");
    let prompt = engine.encode("The capital of France is Paris. The capital of Italy is");
    let mut cache = model.new_cache(1, 256);
    registry
        .with(None, |ad| {
            ad.forward(
                model,
                &prompt,
                1,
                Some(&mut cache),
                engram::runtime::model::llama::Logits::Last,
            )
            .expect("prefill")
        })
        .expect("base");
    let mut step = |name: Option<&str>| {
        let logits = registry
            .with(name, |ad| {
                ad.forward(
                    model,
                    &[11],
                    1,
                    Some(&mut cache),
                    engram::runtime::model::llama::Logits::Last,
                )
                .expect("step")
            })
            .expect("registered");
        cache.truncate(prompt.len());
        black_box(logits.into_data())
    };
    let mut group = c.benchmark_group(format!("{name}_adapter_swap_t{threads}"));
    group.bench_function("decode_step_base", |bch| bch.iter(|| step(None)));
    group.bench_function("decode_step_same_adapter", |bch| {
        bch.iter(|| step(Some("a")))
    });
    let mut flip = false;
    group.bench_function("decode_step_alternating_adapters", |bch| {
        bch.iter(|| {
            flip = !flip;
            step(Some(if flip { "a" } else { "b" }))
        })
    });
    group.bench_function("registry_lookup", |bch| {
        bch.iter(|| black_box(registry.get(black_box("b")).expect("registered")))
    });
    group.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    swap(&mut c);
}

criterion_main!(benches);

//! Replay buffer throughput (insert, sample) and the per-step cost of each continual-learning
//! strategy over naive training, on Fashion-MNIST-sized rows (784 inputs, 10 classes) with
//! synthetic values, so the bench needs no data files.
//!
//! `cargo bench --bench replay`; figures in docs/BENCHMARKS.md. The buffer is host memory;
//! `ENGRAM_BENCH_DEVICE` picks the device of the strategy steps (benches/common).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_main};
use engram::learn::protocol::{self, HParams, Mode, RunConfig, StrategyKind};
use engram::learn::{Policy, ReplayBuffer, Retention, Sampling};

const DIM: usize = 784;

fn rows(n: usize) -> Vec<f32> {
    (0..n * DIM)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0)
        .collect()
}

fn insert(c: &mut Criterion) {
    let x = rows(1000);
    let mut g = c.benchmark_group("cpu_replay_insert_784");
    g.throughput(Throughput::Elements(1000));
    for (name, retention) in [
        ("reservoir", Retention::Reservoir),
        ("class_balanced", Retention::ClassBalanced),
    ] {
        let policy = Policy {
            retention,
            sampling: Sampling::Uniform,
        };
        g.bench_function(BenchmarkId::new(name, "m500"), |b| {
            let mut buf = ReplayBuffer::new(500, DIM, 10, policy, 0).unwrap();
            let z = [0.5f32; 10];
            b.iter(|| {
                for (i, row) in x.chunks(DIM).enumerate() {
                    let _ = buf.insert(row, (i % 10) as u32, 0, Some(&z)).unwrap();
                }
            })
        });
    }
    g.finish();
}

fn sample(c: &mut Criterion) {
    let x = rows(500);
    let mut g = c.benchmark_group("cpu_replay_sample_784_m500");
    for (name, sampling) in [
        ("uniform", Sampling::Uniform),
        ("power_law", Sampling::PowerLawRecency { alpha: 1.0 }),
        ("recall_interval", Sampling::RecallInterval { interval: 8 }),
    ] {
        for k in [10usize, 32] {
            let policy = Policy {
                retention: Retention::Reservoir,
                sampling,
            };
            let mut buf = ReplayBuffer::new(500, DIM, 0, policy, 0).unwrap();
            for (i, row) in x.chunks(DIM).enumerate() {
                let _ = buf.insert(row, (i % 10) as u32, 0, None).unwrap();
            }
            g.throughput(Throughput::Elements(k as u64));
            g.bench_function(BenchmarkId::new(name, format!("k{k}")), |b| {
                b.iter(|| black_box(buf.sample(k)))
            });
        }
    }
    g.finish();
}

fn strategy_step(c: &mut Criterion) {
    let (name, device) = common::device();
    let device = device.autodiff();
    let x = rows(10);
    let y: Vec<u32> = (0..10).map(|i| i % 2).collect();
    let mut g = c.benchmark_group(format!("{name}_cl_step_mlp784x100x100x10_b10"));
    for kind in StrategyKind::ALL {
        if kind == StrategyKind::Joint {
            continue; // the same step as naive
        }
        let cfg = RunConfig {
            strategy: kind,
            hidden: vec![100, 100],
            mode: Mode::Online,
            buffer: 200,
            seed: 0,
            hp: HParams::default(),
        };
        let mut l = protocol::build_learner(&cfg, DIM, 10, &device);
        // Fill the buffer and give the regularizers their first-task state.
        let warm = engram::learn::data::Dataset {
            x: rows(200),
            y: (0..200).map(|i| i % 2).collect(),
            dim: DIM,
        };
        l.train_task(0, &warm, &[0, 1]);
        g.bench_function(kind.name(), |b| b.iter(|| l.step(&x, &y, 1).unwrap()));
    }
    g.finish();
}

/// criterion's generated group fn has no doc comment; keep the lint everywhere else.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(replay, super::insert, super::sample, super::strategy_step);
}
criterion_main!(group::replay);

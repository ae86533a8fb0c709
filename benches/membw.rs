//! The machine's read bandwidth: the physical limit for decode, which streams every weight once
//! per token. Sums a buffer far larger than the caches, on 1 and 2 threads, and one the size of
//! a decoded token's weights (SmolLM2-135M Q4_1: 96 MB), which a large last-level cache can hold
//! between tokens (the Xeon this is measured on reports 480 MiB of L3). The `_huge` cases read
//! the same bytes from a buffer backed by transparent huge pages, as the fused decoder's weights
//! are (`engram::runtime::io::mmap::HugePageBuffer`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_main};

const BYTES: usize = 512 << 20;

/// Sum with eight independent lanes so the loop is load-bound, not add-latency-bound.
fn sum(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in words.chunks_exact(8) {
        for i in 0..8 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    acc.iter().fold(0, |a, b| a.wrapping_add(*b))
}

fn benches(c: &mut Criterion) {
    let buf: Vec<u64> = (0..BYTES as u64 / 8).collect();
    let mut huge = engram::runtime::io::mmap::HugePageBuffer::zeroed(BYTES);
    bytemuck::cast_slice_mut::<u8, u64>(huge.bytes_mut())
        .iter_mut()
        .zip(&buf)
        .for_each(|(h, &b)| *h = b);
    let mut g = c.benchmark_group("membw");
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.sample_size(20);
    let cases = [(512, 1usize), (512, 2), (96, 1), (96, 2)];
    let pages: [(&str, &[u64]); 2] = [("", &buf), ("_huge", bytemuck::cast_slice(huge.bytes()))];
    for ((mib, threads), (pages, buf)) in pages.iter().flat_map(|&p| cases.map(|c| (c, p))) {
        let buf = &buf[..(mib << 20) / 8];
        g.throughput(Throughput::Bytes((mib as u64) << 20));
        g.bench_function(format!("cpu_read_{mib}mib{pages}/t{threads}"), |b| {
            b.iter(|| {
                let part = buf.len() / threads;
                std::thread::scope(|s| {
                    let handles: Vec<_> = buf
                        .chunks(part)
                        .map(|p| s.spawn(move || sum(black_box(p))))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap())
                        .fold(0u64, u64::wrapping_add)
                })
            })
        });
    }
    g.finish();
}

/// criterion's generated group fn has no doc comment; keep the lint everywhere else.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(membw, super::benches);
}
criterion_main!(group::membw);

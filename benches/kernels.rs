//! Kernel throughput: dequantization and matrix-vector products per weight type, on the real
//! SmolLM2-135M shapes plus 2048×2048, at 1 and 2 threads. `Throughput::Bytes` is the weight
//! bytes read, so criterion's GB/s compares directly with `benches/membw.rs`.
//!
//! "Cold" benches cycle through a 256 MiB arena so every matrix comes from DRAM, as in decode
//! (the model's ~110 MB of weights are streamed once per token); "hot" ones reuse one matrix.

mod common;

use std::hint::black_box;

use common::x_vec;
use criterion::{Criterion, Throughput, criterion_main};
use engram_kernels::{
    GgmlType, Interleaved, Isa, QMatrix, activation_bytes, dequantize_row, interleave, matmul_rows,
    matmul_rows_isa, matvec_interleaved, quantize_activations,
};
use engram_runtime::cpu::CpuContext;

const ARENA_BYTES: usize = 256 << 20;

/// Random bytes with every f16 field a sane scale, so the float work is realistic.
fn arena() -> Vec<u8> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    (0..ARENA_BYTES)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Keep exponents small: the high byte of every 16-bit pair in 0x10..0x2F.
            if i % 2 == 1 {
                0x10 | (s as u8 & 0x1F)
            } else {
                s as u8
            }
        })
        .collect()
}

/// Windows of the arena, each a whole `bytes`-sized matrix, used round-robin.
struct Matrices<'a> {
    arena: &'a [u8],
    bytes: usize,
    next: usize,
}

impl<'a> Matrices<'a> {
    fn new(arena: &'a [u8], bytes: usize, cold: bool) -> Self {
        let arena = if cold { arena } else { &arena[..bytes] };
        Matrices {
            arena,
            bytes,
            next: 0,
        }
    }
    fn next(&mut self) -> &'a [u8] {
        let count = self.arena.len() / self.bytes;
        let w = &self.arena[self.next * self.bytes..(self.next + 1) * self.bytes];
        self.next = (self.next + 1) % count;
        w
    }
}

fn matvec(c: &mut Criterion, arena: &[u8], ty: GgmlType, n: usize, k: usize, cold: bool) {
    let bytes = ty.row_bytes(k).unwrap() * n;
    let x = x_vec(k);
    let mut y = vec![0.0f32; n];
    for threads in [1, 2] {
        let ctx = CpuContext::new(threads).unwrap();
        let suffix = if cold { "" } else { "_hot" };
        let name = format!(
            "cpu_{}_matvec_{n}x{k}{suffix}/t{threads}",
            ty.name().to_lowercase()
        );
        let mut g = c.benchmark_group("matvec");
        g.throughput(Throughput::Bytes(bytes as u64));
        let mut mats = Matrices::new(arena, bytes, cold);
        g.bench_function(&name, |b| {
            b.iter(|| ctx.qmatmul(&matrix(ty, mats.next(), n, k), black_box(&x), 1, &mut y))
        });
        g.finish();
    }
}

/// The one-activation-row product on the interleaved layout (decode's), one thread, against the
/// row kernels on the same matrices: `cpu_q4_1_matvec_interleaved_576x576` (cold: windows of a
/// 128 MiB arena interleaved up front; hot: one matrix) and `..._rows_...` the same bytes
/// through `matmul_rows`.
fn interleaved_vs_rows(c: &mut Criterion, arena: &[u8], ty: GgmlType, n: usize, k: usize) {
    let bytes = ty.row_bytes(k).unwrap() * n;
    let x = x_vec(k);
    let mut xq = vec![0u8; activation_bytes(ty, k)];
    quantize_activations(ty, &x, &mut xq);
    let mut y = vec![0.0f32; n];
    let count = (128 << 20) / bytes;
    let mut packed = vec![0u16; count * bytes / 2];
    for (i, out) in packed.chunks_exact_mut(bytes / 2).enumerate() {
        let w = matrix(ty, &arena[i * bytes..(i + 1) * bytes], n, k);
        interleave(&w, bytemuck::cast_slice_mut(out));
    }
    let t = ty.name().to_lowercase();
    let mut g = c.benchmark_group("matvec_interleaved");
    g.throughput(Throughput::Bytes(bytes as u64));
    for cold in [true, false] {
        let suffix = if cold { "" } else { "_hot" };
        let windows = if cold { count } else { 1 };
        let mut i = 0;
        g.bench_function(
            format!("cpu_{t}_matvec_interleaved_{n}x{k}{suffix}/t1"),
            |b| {
                b.iter(|| {
                    let raw = &arena[i * bytes..(i + 1) * bytes];
                    let p = bytemuck::cast_slice(&packed[i * bytes / 2..(i + 1) * bytes / 2]);
                    let iw = Interleaved::new(&matrix(ty, raw, n, k), p);
                    matvec_interleaved(&iw, 0..n, black_box(&xq), &mut y);
                    i = (i + 1) % windows;
                })
            },
        );
        let mut i = 0;
        g.bench_function(format!("cpu_{t}_matvec_rows_{n}x{k}{suffix}/t1"), |b| {
            b.iter(|| {
                let raw = &arena[i * bytes..(i + 1) * bytes];
                matmul_rows(&matrix(ty, raw, n, k), 0..n, black_box(&xq), 1, &mut y);
                i = (i + 1) % windows;
            })
        });
    }
    g.finish();
}

/// One `n × k` matrix of the arena (a few comparisons: negligible against a product).
fn matrix(ty: GgmlType, bytes: &[u8], n: usize, k: usize) -> QMatrix<'_> {
    QMatrix::new(ty, bytes, n, k).expect("the arena holds whole matrices")
}

fn matmul_t(c: &mut Criterion, arena: &[u8], ty: GgmlType, n: usize, k: usize, m: usize) {
    let bytes = ty.row_bytes(k).unwrap() * n;
    let dy = x_vec(m * n);
    let mut dx = vec![0.0f32; m * k];
    for threads in [1, 2] {
        let ctx = CpuContext::new(threads).unwrap();
        let name = format!(
            "cpu_{}_matmul_t_{n}x{k}_m{m}/t{threads}",
            ty.name().to_lowercase()
        );
        let mut g = c.benchmark_group("matmul_t");
        g.throughput(Throughput::Bytes(bytes as u64));
        let mut mats = Matrices::new(arena, bytes, true);
        g.bench_function(&name, |b| {
            b.iter(|| ctx.qmatmul_t(&matrix(ty, mats.next(), n, k), black_box(&dy), m, &mut dx))
        });
        g.finish();
    }
}

/// One thread, one instruction set's kernel table: the dot kernels alone (activations quantized
/// once, outside the timing), cold weights, against `benches/membw.rs`'s one-thread figure.
fn matvec_isa(c: &mut Criterion, arena: &[u8], ty: GgmlType, n: usize, k: usize) {
    let bytes = ty.row_bytes(k).unwrap() * n;
    let x = x_vec(k);
    let mut xq = vec![0u8; activation_bytes(ty, k)];
    quantize_activations(ty, &x, &mut xq);
    let mut y = vec![0.0f32; n];
    let mut g = c.benchmark_group("matvec_isa");
    g.throughput(Throughput::Bytes(bytes as u64));
    for isa in [
        Isa::Generic,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::NeonDotprod,
    ] {
        let mut mats = Matrices::new(arena, bytes, true);
        if !matmul_rows_isa(isa, &matrix(ty, mats.next(), n, k), 0..n, &xq, 1, &mut y) {
            continue;
        }
        let name = format!(
            "cpu_{}_matvec_{n}x{k}_{}/t1",
            ty.name().to_lowercase(),
            isa.name()
        );
        g.bench_function(&name, |b| {
            b.iter(|| matmul_rows_isa(isa, &matrix(ty, mats.next(), n, k), 0..n, &xq, 1, &mut y))
        });
    }
    g.finish();
}

fn dequant(c: &mut Criterion, arena: &[u8], ty: GgmlType, n: usize, k: usize) {
    let bytes = ty.row_bytes(k).unwrap() * n;
    let mut out = vec![0.0f32; n * k];
    let mut g = c.benchmark_group("dequant");
    g.throughput(Throughput::Bytes(bytes as u64));
    let mut mats = Matrices::new(arena, bytes, true);
    let name = format!("cpu_{}_dequant_{n}x{k}/t1", ty.name().to_lowercase());
    g.bench_function(&name, |b| {
        b.iter(|| dequantize_row(ty, mats.next(), &mut out))
    });
    g.finish();
}

fn quantize(c: &mut Criterion) {
    // One activation row of the model (576) for the 32-blocks; k-quants need whole 256-blocks.
    for (ty, k) in [
        (GgmlType::Q4_1, 576),
        (GgmlType::Q8_0, 576),
        (GgmlType::Q4K, 1536),
    ] {
        let x = x_vec(k);
        let mut out = vec![0u8; activation_bytes(ty, k)];
        c.bench_function(
            &format!("cpu_{}_quantize_activations_{k}", ty.name().to_lowercase()),
            |b| b.iter(|| quantize_activations(ty, black_box(&x), &mut out)),
        );
    }
}

fn benches(c: &mut Criterion) {
    let arena = arena();
    // SmolLM2-135M: attention q/o (576×576), k/v (192×576), MLP up/gate (1536×576) and down
    // (576×1536) in Q4_1; the tied embedding / output head (49152×576) in Q8_0.
    for (n, k) in [(576, 576), (1536, 576), (576, 1536), (2048, 2048)] {
        matvec(c, &arena, GgmlType::Q4_1, n, k, true);
    }
    matvec(c, &arena, GgmlType::Q4_1, 192, 576, false);
    matvec(c, &arena, GgmlType::Q4_1, 576, 576, false);
    matvec(c, &arena, GgmlType::Q8_0, 49152, 576, true);
    for (n, k) in [(576, 576), (1536, 576), (576, 1536)] {
        interleaved_vs_rows(c, &arena, GgmlType::Q4_1, n, k);
    }
    interleaved_vs_rows(c, &arena, GgmlType::Q8_0, 49152, 576);
    // Q4_K_M of SmolLM2: its 576-wide rows fall back to Q5_0 (Q5_K_M: Q5_1).
    matvec(c, &arena, GgmlType::Q5_0, 1536, 576, true);
    matvec(c, &arena, GgmlType::Q5_1, 1536, 576, true);
    // Every other weight type at 2048 × 2048 (Q4_1's is above).
    for ty in GgmlType::WEIGHTS
        .into_iter()
        .filter(|&t| t != GgmlType::Q4_1)
    {
        matvec(c, &arena, ty, 2048, 2048, true);
    }
    for ty in GgmlType::WEIGHTS {
        dequant(c, &arena, ty, 2048, 2048);
    }
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::IQ4NL,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::BF16,
    ] {
        matvec_isa(c, &arena, ty, 2048, 2048);
    }
    matmul_t(c, &arena, GgmlType::Q4_1, 1536, 576, 1);
    matmul_t(c, &arena, GgmlType::Q4_1, 1536, 576, 32);
    matmul_t(c, &arena, GgmlType::Q4_1, 1536, 576, 256);
    matmul_t(c, &arena, GgmlType::Q8_0, 1536, 576, 256);
    quantize(c);
}

/// criterion's generated group fn has no doc comment; keep the lint everywhere else.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(kernels, super::benches);
}
criterion_main!(group::kernels);

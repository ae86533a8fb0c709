//! Times `matmul_t_cols` (the backward `dx = dy · W`) on the model's LoRA-training shapes: m = 256
//! rows of `dy` (batch 4 × 64 tokens), k = 576, n = 1536 (MLP) and 49152 (vocabulary
//! projection), Q4_1 and Q8_0 weights, one thread, all columns in one call.
//!
//! A kernels-only program so it builds in seconds (the criterion benches build the facade):
//! `cargo run --release -p engram-kernels --example matmul_t_timing -- [reps]`.
//! Prints the minimum and median wall time and on-CPU time (`/proc/thread-self/schedstat`, which
//! other load on a shared machine does not inflate), and a checksum of `dx`.

use std::time::Instant;

use engram_kernels::GgmlType;
use engram_kernels::{QMatrix, matmul_t_cols, quantize_row};

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(5, |s| s.parse().expect("reps: a number"));
    let (m, k) = (256usize, 576usize);
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    println!("isa: {}", engram_kernels::isa().name());
    for n in [1536usize, 49152] {
        let wf: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
        let dy: Vec<f32> = (0..m * n).map(|_| rnd()).collect();
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let w = quantize(ty, &wf);
            let w = QMatrix::new(ty, &w, n, k).expect("n whole rows");
            let mut dx = vec![0.0f32; m * k];
            let (mut wall, mut cpu) = (vec![], vec![]);
            for _ in 0..reps {
                let (t, c) = (Instant::now(), on_cpu());
                matmul_t_cols(&w, 0..k, &dy, m, &mut dx);
                wall.push(t.elapsed().as_secs_f64());
                cpu.push(on_cpu() - c);
            }
            let flops = 2.0 * (m * n * k) as f64;
            let (wall, cpu) = (stats(wall), stats(cpu));
            let sum: f64 = dx.iter().map(|&v| f64::from(v)).sum();
            println!(
                "{} {n}x{k} m={m}: wall min {:.1} ms median {:.1} ms; on-CPU min {:.1} ms \
                 median {:.1} ms ({:.1} GFLOP/s); checksum {sum:.6e}",
                ty.name(),
                wall.0 * 1e3,
                wall.1 * 1e3,
                cpu.0 * 1e3,
                cpu.1 * 1e3,
                flops / cpu.1 / 1e9,
            );
        }
    }
}

fn quantize(ty: GgmlType, wf: &[f32]) -> Vec<u8> {
    let mut w = vec![0u8; ty.row_bytes(wf.len()).expect("whole blocks")];
    quantize_row(ty, wf, &mut w).expect("Q4_1 and Q8_0 have quantizers");
    w
}

/// (min, median).
fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// Seconds this thread has spent on a CPU, from the scheduler's own count.
fn on_cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("Linux schedstat");
    let ns: f64 = s.split_whitespace().next().unwrap().parse().unwrap();
    ns * 1e-9
}

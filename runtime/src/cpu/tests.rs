//! The threaded driver against the single-threaded kernels.

use engram_kernels::{
    GgmlType, QMatrix, activation_bytes, dequantize_row, matmul_rows, quantize_activations,
};

use super::CpuContext;

/// Per-element difference between threaded and reference products (f32 summation order only).
const MAX_THREADED_VS_SERIAL_ERROR: f32 = 1e-6;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Q4_1 / Q8_0 weights as raw bytes, built with f16 scales and random codes.
fn weights(ty: GgmlType, n: usize, k: usize, seed: &mut u64) -> Vec<u8> {
    let nb = n * k / ty.block_size();
    let mut out = Vec::with_capacity(nb * ty.type_size());
    // The leading f16 fields: d (Q8_0, Q4_1) and m (Q4_1).
    let halves = if ty == GgmlType::Q4_1 { 2 } else { 1 };
    for _ in 0..nb {
        for _ in 0..halves {
            let v = half::f16::from_f32(0.01 + 0.01 * lcg(seed).abs());
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let rest = ty.type_size() - 2 * halves;
        out.extend((0..rest).map(|_| (lcg(seed) * 127.0) as i8 as u8));
    }
    out
}

#[test]
fn threaded_products_match_serial() {
    let mut seed = 1u64;
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
        // m ≥ 32: the activation rows are split (33, 70: a remainder past the 4-row parts).
        for (n, k, m) in [
            (576, 576, 1),
            (192, 576, 3),
            (1536, 576, 2),
            (64, 1536, 5),
            (192, 576, 33),
            (68, 1536, 70),
        ] {
            let w_bytes = weights(ty, n, k, &mut seed);
            let w = QMatrix::new(ty, &w_bytes, n, k).unwrap();
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let mut xq = vec![0u8; activation_bytes(ty, m * k)];
            quantize_activations(ty, &x, &mut xq);
            let mut serial = vec![0.0; m * n];
            matmul_rows(&w, 0..n, &xq, m, &mut serial);

            let mut wf = vec![0.0; n * k];
            dequantize_row(ty, &w_bytes, &mut wf);
            let dy: Vec<f32> = (0..m * n).map(|_| lcg(&mut seed)).collect();
            let mut dx_want = vec![0.0f32; m * k];
            for i in 0..m {
                for r in 0..n {
                    for c in 0..k {
                        dx_want[i * k + c] += dy[i * n + r] * wf[r * k + c];
                    }
                }
            }
            for threads in [1, 2, 3] {
                let ctx = CpuContext::new(threads).unwrap();
                let mut y = vec![f32::NAN; m * n];
                ctx.qmatmul(&w, &x, m, &mut y);
                assert_eq!(y, serial, "{} {n}x{k} m={m} t={threads}", ty.name());

                let mut yf = vec![f32::NAN; m * n];
                ctx.qmatmul_f32(&w, &x, m, &mut yf);
                for i in 0..m {
                    for r in 0..n {
                        let want: f32 = (0..k).map(|c| wf[r * k + c] * x[i * k + c]).sum();
                        let err = (yf[i * n + r] - want).abs() / k as f32;
                        assert!(err < MAX_THREADED_VS_SERIAL_ERROR, "qmatmul_f32 {err}");
                    }
                }

                let mut dx = vec![f32::NAN; m * k];
                ctx.qmatmul_t(&w, &dy, m, &mut dx);
                for (a, b) in dx.iter().zip(&dx_want) {
                    assert!(
                        (a - b).abs() / n as f32 <= MAX_THREADED_VS_SERIAL_ERROR,
                        "qmatmul_t {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// Each share runs on its own thread and sees a one-thread context, so products, teams and
/// nested maps inside a share run on that thread (a nested call into the busy pool would wait
/// for itself); results come back in share order, and a share's panic reaches the caller.
#[test]
fn shares_run_on_their_own_threads_with_serial_products_inside() {
    let mut seed = 3u64;
    let (n, k, m) = (192, 576, 40);
    let w_bytes = weights(GgmlType::Q4_1, n, k, &mut seed);
    let w = QMatrix::new(GgmlType::Q4_1, &w_bytes, n, k).unwrap();
    let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
    let ctx = CpuContext::new(2).unwrap();
    let mut want = vec![0.0; m * n];
    ctx.qmatmul(&w, &x, m, &mut want);

    let out = ctx.map_shares(5, &|i| {
        assert_eq!(ctx.threads(), 1, "share {i}");
        let mut y = vec![f32::NAN; m * n];
        ctx.qmatmul(&w, &x, m, &mut y);
        ctx.team(&|t| assert_eq!(t.size(), 1));
        let nested = ctx.map_shares(3, &|j| j * 10);
        (i, std::thread::current().id(), y, nested)
    });
    assert_eq!(ctx.threads(), 2, "outside a share the pool is whole again");
    assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    for o in &out {
        assert_eq!(o.2, want, "share {}", o.0);
        assert_eq!(o.3, [0, 10, 20]);
    }
    // Shares 0, 2, 4 on the caller, 1 and 3 on the worker.
    assert_eq!(out[0].1, std::thread::current().id());
    assert_eq!(out[2].1, out[0].1);
    assert_ne!(out[1].1, out[0].1);
    assert_eq!(out[3].1, out[1].1);

    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ctx.map_shares(2, &|i| assert!(i == 0, "share {i} fails"))
    }));
    assert!(caught.is_err());
    assert_eq!(
        ctx.map_shares(2, &|i| i),
        [0, 1],
        "the pool works after a panic"
    );
}

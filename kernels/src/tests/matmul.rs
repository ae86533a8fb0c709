//! `matmul_rows`, `matmul_rows_f32` and `matmul_t_cols` against naive products of the
//! dequantized matrix.

use std::vec;
use std::vec::Vec;

use proptest::prelude::*;

use super::{Rng, dequant, qm, quantize_weights};
use crate::{
    GgmlType, activation_bytes, matmul_rows, matmul_rows_f32, matmul_t_cols, quantize_activations,
};

/// Per-element error of the f32-activation and transposed products (f32 sums of 1e3 terms).
pub const MAX_F32_MATMUL_ERROR: f32 = 1e-5;

fn weights(ty: GgmlType, n: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    (0..n)
        .flat_map(|_| quantize_weights(ty, &rng.vec(k)))
        .collect()
}

fn check_shapes(ty: GgmlType, n: usize, kb: usize, m: usize, r0: usize, r1: usize, seed: u64) {
    let k = kb * ty.block_size().max(32);
    let mut rng = Rng::new(seed);
    let w = weights(ty, n, k, &mut rng);
    let wf = dequant(ty, &w); // n × k
    let x = rng.vec(m * k);
    let (r0, r1) = (r0.min(n), r1.min(n).max(r0.min(n)));
    let nr = r1 - r0;

    // Quantized activations: each output equals the single-row dot.
    let mut xq = vec![0u8; activation_bytes(ty, m * k)];
    quantize_activations(ty, &x, &mut xq);
    let xrb = activation_bytes(ty, k);
    let mut out = vec![0.0; m * nr];
    matmul_rows(&qm(ty, &w, k), r0..r1, &xq, m, &mut out);
    let wrb = ty.row_bytes(k).unwrap();
    for i in 0..m {
        for r in r0..r1 {
            let single =
                crate::vec_dot(ty, &w[r * wrb..(r + 1) * wrb], &xq[i * xrb..(i + 1) * xrb]);
            assert_eq!(out[i * nr + r - r0], single);
        }
    }

    // f32 activations against the naive product.
    let mut outf = vec![0.0; m * nr];
    matmul_rows_f32(&qm(ty, &w, k), r0..r1, &x, m, &mut outf);
    for i in 0..m {
        for r in r0..r1 {
            let want: f32 = (0..k).map(|c| wf[r * k + c] * x[i * k + c]).sum();
            let err = (outf[i * nr + r - r0] - want).abs() / k as f32;
            assert!(err < MAX_F32_MATMUL_ERROR, "{} f32 path: {err}", ty.name());
        }
    }

    // Transposed product over a block-aligned column range.
    let bs = ty.block_size().max(32);
    let (c0, c1) = ((r0 % kb) * bs, kb * bs);
    let dy = rng.vec(m * n);
    let mut dx = vec![0.0; m * (c1 - c0)];
    matmul_t_cols(&qm(ty, &w, k), c0..c1, &dy, m, &mut dx);
    for i in 0..m {
        for c in c0..c1 {
            let want: f32 = (0..n).map(|r| dy[i * n + r] * wf[r * k + c]).sum();
            let err = (dx[i * (c1 - c0) + c - c0] - want).abs() / n.max(1) as f32;
            assert!(
                err < MAX_F32_MATMUL_ERROR,
                "{} transposed: {err}",
                ty.name()
            );
        }
    }
}

#[test]
fn matmul_all_types_small_shapes() {
    for (s, ty) in GgmlType::WEIGHTS.into_iter().enumerate() {
        check_shapes(ty, 7, 3, 3, 1, 6, s as u64);
        check_shapes(ty, 4, 1, 1, 0, 4, 100 + s as u64);
    }
}

#[test]
fn matmul_misaligned_weights_match_aligned() {
    let mut rng = Rng::new(5);
    for ty in GgmlType::WEIGHTS {
        let k = 512;
        let w = weights(ty, 3, k, &mut rng);
        let mut shifted = vec![0u8; w.len() + 1];
        shifted[1..].copy_from_slice(&w);
        let x = rng.vec(2 * k);
        let mut xq = vec![0u8; activation_bytes(ty, 2 * k)];
        quantize_activations(ty, &x, &mut xq);
        let (mut a, mut b) = (vec![0.0; 6], vec![0.0; 6]);
        matmul_rows(&qm(ty, &w, k), 0..3, &xq, 2, &mut a);
        matmul_rows(&qm(ty, &shifted[1..], k), 0..3, &xq, 2, &mut b);
        for (a, b) in a.iter().zip(&b) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                "{}: {a} vs {b}",
                ty.name()
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn matmul_random_shapes(
        t in 0usize..GgmlType::WEIGHTS.len(),
        n in 1usize..9,
        kb in 1usize..4,
        m in 1usize..4,
        r0 in 0usize..9,
        len in 0usize..9,
        seed in any::<u64>(),
    ) {
        check_shapes(GgmlType::WEIGHTS[t], n, kb, m, r0, r0 + len, seed);
    }
}

/// The 4 × 4 and 4 × 1 tiles of every table give each output bit for bit what that table's
/// single-row kernel gives, and stay within `MAX_KERNEL_VS_REF_ERROR` of the scalar `_ref`s;
/// with m = 1 products on the 4 × 1 tile or one row per call (`set_single_row_tile`).
#[test]
fn tiled_rows_match_single_row_kernels() {
    use super::{MAX_KERNEL_VS_REF_ERROR, tables};
    use crate::arch::generic::GENERIC;
    use crate::matmul::matmul_rows_with;
    let mut rng = Rng::new(17);
    // 608 = 19 blocks: the pair tiles' odd tail of a two-block register; 1184 = 37 blocks: a
    // second, short activation chunk (32 + 5) and a short scale group (16 + 16 + 5).
    let cases = [
        (GgmlType::Q4_1, false, 576),
        (GgmlType::Q4_1, true, 576),
        (GgmlType::Q8_0, false, 576),
        (GgmlType::Q5_0, false, 576),
        (GgmlType::Q5_0, false, 608),
        (GgmlType::Q5_0, false, 1184),
        (GgmlType::Q5_1, false, 576),
        (GgmlType::Q5_1, false, 608),
        (GgmlType::Q5_1, false, 1184),
        (GgmlType::IQ4NL, false, 608),
        (GgmlType::IQ4NL, false, 1184),
        (GgmlType::Q8_0, false, 1184),
    ];
    for (ty, tile, k) in cases {
        crate::arch::set_single_row_tile(tile);
        for m in [6, 1] {
            let n = 11;
            let w = weights(ty, n, k, &mut rng);
            let x = rng.vec(m * k);
            let mut xq = vec![0u8; activation_bytes(ty, m * k)];
            quantize_activations(ty, &x, &mut xq);
            let (wrb, xrb) = (ty.row_bytes(k).unwrap(), activation_bytes(ty, k));
            let mut want = vec![0.0; m * n];
            matmul_rows_with(&GENERIC, &qm(ty, &w, k), 0..n, &xq, m, &mut want);
            for (isa, kt) in tables() {
                for rows in [0..n, 1..n, 3..10] {
                    let nr = rows.len();
                    let mut out = vec![f32::NAN; m * nr];
                    matmul_rows_with(kt, &qm(ty, &w, k), rows.clone(), &xq, m, &mut out);
                    for i in 0..m {
                        for r in rows.clone() {
                            let mut single = [0.0f32];
                            let (wr, xr) = (&w[r * wrb..][..wrb], &xq[i * xrb..][..xrb]);
                            matmul_rows_with(kt, &qm(ty, wr, k), 0..1, xr, 1, &mut single);
                            let got = out[i * nr + r - rows.start];
                            assert_eq!(
                                got.to_bits(),
                                single[0].to_bits(),
                                "{isa:?} {r} {i} m {m} tile {tile}"
                            );
                            let err = (got - want[i * n + r]).abs() / k as f32;
                            assert!(
                                err < MAX_KERNEL_VS_REF_ERROR,
                                "{} {isa:?}: {err}",
                                ty.name()
                            );
                        }
                    }
                }
            }
        }
    }
    crate::arch::set_single_row_tile(false);
}

//! Interleaved layouts: every table's product equals the per-row `_ref` dot products bit for
//! bit ([`INTERLEAVED_TOLERANCE`] is 0), on any whole-group row range, across activation chunks.

use std::vec;

use super::{Rng, quantize_weights, tables};
use crate::interleave::*;
use crate::quant::*;
use crate::{QMatrix, activation_bytes, quantize_activations};

fn check(ty: GgmlType, groups: usize, extra_rows: usize, nb: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let (n, k) = (groups * INTERLEAVE_ROWS + extra_rows, nb * 32);
    // Rows of different magnitudes, so the per-row scales differ.
    let x: std::vec::Vec<f32> = (0..n * k)
        .map(|i| rng.f32() * (1.0 + (i / k % 5) as f32))
        .collect();
    let wb = quantize_weights(ty, &x);
    let w = QMatrix::new(ty, &wb, n, k).unwrap();
    let need = interleaved_bytes(&w).unwrap();
    assert_eq!(need, groups * INTERLEAVE_ROWS * w.row_bytes());
    let mut packed = vec![0u16; need / 2];
    interleave(&w, bytemuck::cast_slice_mut(&mut packed));
    let iw = Interleaved::new(&w, bytemuck::cast_slice(&packed));
    let a = rng.vec(k);
    let mut xq = vec![0u8; activation_bytes(ty, k)];
    quantize_activations(ty, &a, &mut xq);
    let want: std::vec::Vec<f32> = (0..groups * INTERLEAVE_ROWS)
        .map(|r| match ty {
            GgmlType::Q4_1 => {
                vec_dot_q4_1_q8_1_ref(bytemuck::cast_slice(w.row(r)), bytemuck::cast_slice(&xq))
            }
            _ => vec_dot_q8_0_q8_0_ref(bytemuck::cast_slice(w.row(r)), bytemuck::cast_slice(&xq)),
        })
        .collect();
    let g = INTERLEAVE_ROWS;
    for (isa, kt) in tables() {
        for rows in [0..groups * g, g..groups * g, 0..g, g..g] {
            let mut out = vec![f32::NAN; rows.len()];
            matvec_interleaved_with(kt, &iw, rows.clone(), &xq, &mut out);
            for (r, &got) in rows.clone().zip(&out) {
                let err = (got - want[r]).abs();
                assert!(
                    err <= INTERLEAVED_TOLERANCE && got.to_bits() == want[r].to_bits(),
                    "{} {isa:?} {groups}×{nb}: row {r}: {got} vs {}",
                    ty.name(),
                    want[r]
                );
            }
        }
    }
}

#[test]
fn interleaved_products_equal_ref_rows() {
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
        // 70 and 130 blocks cross the kernels' 64-block activation chunks.
        for (groups, extra, nb, seed) in [
            (1, 0, 1, 1),
            (3, 5, 7, 2),
            (2, 15, 70, 3),
            (4, 0, 18, 4),
            (2, 1, 130, 5),
        ] {
            check(ty, groups, extra, nb, seed);
        }
    }
}

#[test]
fn interleaving_keeps_every_code_and_scale() {
    let mut rng = Rng::new(9);
    let (n, k) = (16, 64);
    let x = rng.vec(n * k);
    let wb = quantize_weights(GgmlType::Q4_1, &x);
    let w = QMatrix::new(GgmlType::Q4_1, &wb, n, k).unwrap();
    let mut packed = vec![0u16; interleaved_bytes(&w).unwrap() / 2];
    interleave(&w, bytemuck::cast_slice_mut(&mut packed));
    let blocks: &[BlockQ4_1x16] = bytemuck::cast_slice(&packed);
    for r in 0..n {
        let src: &[BlockQ4_1] = bytemuck::cast_slice(w.row(r));
        for (b, s) in src.iter().enumerate() {
            let (mut want, mut got) = ([0.0f32; 32], [0.0f32; 32]);
            dequantize_row_q4_1(core::slice::from_ref(s), &mut want);
            let ib = &blocks[b];
            let (d, m) = (ib.d[r].to_f32(), ib.m[r].to_f32());
            for (j, g) in got.iter_mut().enumerate() {
                let byte = ib.qs[64 * (j / 8) + 4 * r + j % 4];
                let q = if j % 8 < 4 { byte & 0x0F } else { byte >> 4 };
                *g = q as f32 * d + m;
            }
            assert_eq!(want, got, "row {r} block {b}");
        }
    }
}

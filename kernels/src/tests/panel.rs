//! The transposed product's panel kernel (`axpy_panel`) against its scalar `_ref` twin on every
//! table, and `matmul_t_cols` against an f64 product of the dequantized matrix on every table.

use std::vec;
use std::vec::Vec;

use super::matmul::MAX_F32_MATMUL_ERROR;
use super::{MAX_KERNEL_VS_REF_ERROR, Rng, dequant, qm, quantize_weights, tables};
use crate::GgmlType;
use crate::arch::generic::axpy_panel_ref;
use crate::arch::{PANEL_COLS, PANEL_ROWS, Panel, PanelShape};
use crate::matmul::matmul_t_cols_with;

/// Every table's `axpy_panel` gives the `_ref` result within `MAX_KERNEL_VS_REF_ERROR` (they
/// differ only in fused vs separate multiply-add), for every panel height, ragged lengths
/// (vector tails), odd `m` (the two-row tiles' leftover row), all-zero coefficient rows, and
/// leaves `dx` outside the `m × len` window bit-for-bit untouched.
#[test]
fn axpy_panel_matches_ref_on_every_table() {
    let mut rng = Rng::new(29);
    let mut panel = Panel::ZERO;
    for row in panel.0.iter_mut() {
        row.copy_from_slice(&rng.vec(PANEL_COLS));
    }
    for rows in 0..=PANEL_ROWS {
        for len in [PANEL_COLS, 255, 200, 64, 32, 17, 8, 1, 0] {
            for m in [1usize, 2, 3, 6, 7] {
                let (ldy, ldx) = (rows + 3, len + 5);
                let mut dy = rng.vec(m * ldy);
                // Row 1 all zero (skippable), row 2 with a single non-zero coefficient.
                if m > 2 {
                    dy[ldy..ldy + rows].fill(0.0);
                    dy[2 * ldy..2 * ldy + rows].fill(0.0);
                    if rows > 0 {
                        dy[2 * ldy + rows - 1] = 0.5;
                    }
                }
                let dx0 = rng.vec(m * ldx);
                let shape = PanelShape {
                    m,
                    rows,
                    len,
                    ldy,
                    ldx,
                };
                let mut want = dx0.clone();
                axpy_panel_ref(&panel, &dy, &mut want, shape);
                for (isa, kt) in tables() {
                    let mut got = dx0.clone();
                    (kt.axpy_panel)(&panel, &dy, &mut got, shape);
                    for (j, ((g, w), d0)) in got.iter().zip(&want).zip(&dx0).enumerate() {
                        let ctx = || std::format!("{isa:?} {shape:?} at {j}");
                        if j % ldx >= len {
                            assert_eq!(g.to_bits(), d0.to_bits(), "wrote outside: {}", ctx());
                        } else {
                            let err = (g - w).abs();
                            assert!(err <= MAX_KERNEL_VS_REF_ERROR, "{err}: {}", ctx());
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "axpy_panel: dy")]
fn axpy_panel_rejects_short_dy() {
    let shape = PanelShape {
        m: 2,
        rows: 8,
        len: 32,
        ldy: 8,
        ldx: 32,
    };
    let mut dx = vec![0.0; 64];
    axpy_panel_ref(&Panel::ZERO, &[0.0; 15], &mut dx, shape);
}

/// `dx[i][c] = Σ_r dy[i][r] · W[r][c]` in f64 over the dequantized weights.
fn matmul_t_f64(
    wf: &[f32],
    n: usize,
    k: usize,
    cols: &core::ops::Range<usize>,
    dy: &[f32],
) -> Vec<f64> {
    let m = dy.len() / n.max(1);
    let mut out = vec![0.0f64; m * cols.len()];
    for i in 0..m {
        for (j, c) in cols.clone().enumerate() {
            out[i * cols.len() + j] = (0..n)
                .map(|r| dy[i * n + r] as f64 * wf[r * k + c] as f64)
                .sum();
        }
    }
    out
}

/// Odd `m`, `n` not a multiple of the panel height (a short last panel), several 256-column
/// chunks plus a partial one, full and inner column ranges, on every table.
#[test]
fn matmul_t_cols_matches_f64_reference_on_every_table() {
    let mut rng = Rng::new(31);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ] {
        let bs = ty.block_size().max(32);
        // 576 = 256 + 256 + 64 for the 32-blocks; 768 = three super-blocks for the k-quants.
        let k = if bs == 256 { 768 } else { 576 };
        for (n, m) in [(21usize, 5usize), (13, 1), (8, 3), (3, 7)] {
            let w: Vec<u8> = (0..n)
                .flat_map(|_| quantize_weights(ty, &rng.vec(k)))
                .collect();
            let wf = dequant(ty, &w);
            let mut dy = rng.vec(m * n);
            if m > 1 {
                dy[n..2 * n].fill(0.0); // a masked token: an all-zero gradient row
            }
            for cols in [0..k, bs..k - bs, k - bs..k, 0..0] {
                let want = matmul_t_f64(&wf, n, k, &cols, &dy);
                for (isa, kt) in tables() {
                    let mut dx = vec![f32::NAN; m * cols.len()];
                    matmul_t_cols_with(kt, &qm(ty, &w, k), cols.clone(), &dy, m, &mut dx);
                    for (j, (g, w)) in dx.iter().zip(&want).enumerate() {
                        let err = (*g as f64 - w).abs() / n as f64;
                        assert!(
                            err < MAX_F32_MATMUL_ERROR as f64,
                            "{} {isa:?} n={n} m={m} cols={cols:?} at {j}: {g} vs {w}",
                            ty.name()
                        );
                    }
                }
            }
        }
    }
}

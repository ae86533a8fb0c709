//! Row-range matrix kernels over raw tensor bytes: what a threaded driver hands each thread.
//!
//! Weights are a [`QMatrix`]: `n` rows of `k` values of a [`GgmlType`], row-major, as in a GGUF
//! tensor (ggml's `ne0 = k`), checked once when the view is made. Activations are quantized once
//! per row to [`activation_type`] (llama.cpp's `vec_dot_type`), then dotted with integer kernels.

use core::ops::Range;

use bytemuck::Pod;

use crate::arch::{self, Kernels, PANEL_COLS, PANEL_ROWS, Panel, PanelShape, Tiles};
use crate::qmatrix::QMatrix;
use crate::quant::*;

/// The activation format paired with weights of type `w` (llama.cpp's `vec_dot_type`).
///
/// # Panics
/// For `Q8_1` and `Q8_K`, which are activation formats, not weight formats.
pub const fn activation_type(w: GgmlType) -> GgmlType {
    match w {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => GgmlType::F32,
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4NL => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            GgmlType::Q8K
        }
        GgmlType::Q8_1 | GgmlType::Q8K => panic!("Q8_1 and Q8_K are activation types, not weights"),
    }
}

/// Bytes that [`quantize_activations`] writes for `len` values against weights of type `w`.
///
/// # Panics
/// When `len` is not a whole number of the activation type's blocks.
pub fn activation_bytes(w: GgmlType, len: usize) -> usize {
    let a = activation_type(w);
    a.row_bytes(len)
        .unwrap_or_else(|| panic!("{len} values are not whole {} blocks", a.name()))
}

/// Quantizes activations `x` (one or more rows of `k`, concatenated; `k` a multiple of the
/// block size) for weights of type `w` into `out` (`activation_bytes(w, x.len())` bytes). Float
/// weights take f32 activations, copied as native-endian bytes.
pub fn quantize_activations(w: GgmlType, x: &[f32], out: &mut [u8]) {
    let need = activation_bytes(w, x.len());
    assert_eq!(
        out.len(),
        need,
        "quantize_activations: out is {} bytes, need {need}",
        out.len()
    );
    match activation_type(w) {
        GgmlType::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
        GgmlType::Q8_0 => quantize_into(x, out, QK8_0, arch::kernels().quantize_q8_0),
        GgmlType::Q8_1 => quantize_into(x, out, QK8_1, arch::kernels().quantize_q8_1),
        GgmlType::Q8K => quantize_into(x, out, QK_K, quantize_row_q8_k_ref),
        other => unreachable!("activation type {}", other.name()),
    }
}

/// Dot product of one weight row (`w_row`, type `w_ty`) with one activation row quantized by
/// [`quantize_activations`].
pub fn vec_dot(w_ty: GgmlType, w_row: &[u8], xq_row: &[u8]) -> f32 {
    let k = w_row.len() / w_ty.type_size() * w_ty.block_size();
    let w = QMatrix::new(w_ty, w_row, 1, k)
        .unwrap_or_else(|e| panic!("vec_dot: the weight row is not one row: {e}"));
    let mut out = [0.0f32];
    matmul_rows(&w, 0..1, xq_row, 1, &mut out);
    out[0]
}

/// `out[i][r - rows.start] = W[r] · x[i]` for `r` in `rows` and `i < m`, with `out` row-major
/// `m × rows.len()` and `xq` the `m` activation rows from [`quantize_activations`].
///
/// Each weight row is read from memory once and dotted with all `m` activation rows while it is
/// in L1 (prefill reuses it; decode has `m = 1`).
///
/// # Panics
/// On inconsistent sizes (an internal contract).
pub fn matmul_rows(w: &QMatrix<'_>, rows: Range<usize>, xq: &[u8], m: usize, out: &mut [f32]) {
    matmul_rows_with(arch::kernels(), w, rows, xq, m, out);
}

/// [`matmul_rows`] with the kernels of one instruction set (benchmarks compare them); returns
/// `false`, writing nothing, when this CPU lacks `isa`.
///
/// # Panics
/// On inconsistent sizes, as [`matmul_rows`].
pub fn matmul_rows_isa(
    isa: arch::Isa,
    w: &QMatrix<'_>,
    rows: Range<usize>,
    xq: &[u8],
    m: usize,
    out: &mut [f32],
) -> bool {
    match arch::kernels_for(isa) {
        Some(kt) => {
            matmul_rows_with(kt, w, rows, xq, m, out);
            true
        }
        None => false,
    }
}

/// [`matmul_rows`] with an explicit kernel table (tests compare tables).
pub(crate) fn matmul_rows_with(
    kt: &Kernels,
    w: &QMatrix<'_>,
    rows: Range<usize>,
    xq: &[u8],
    m: usize,
    out: &mut [f32],
) {
    let w_ty = w.ty();
    let x_rb = activation_bytes(w_ty, w.cols());
    assert!(
        xq.len() >= m * x_rb,
        "matmul_rows: activations too short for m = {m}"
    );
    assert_eq!(
        out.len(),
        m * rows.len(),
        "matmul_rows: out must be m × rows.len()"
    );
    let shape = Shape {
        w_rb: w.row_bytes(),
        x_rb,
        nr: rows.len(),
        m,
    };
    let w = w.row_range(rows);
    let xq = &xq[..m * x_rb];
    match w_ty {
        GgmlType::F32 => rows_typed(w, xq, shape, out, kt.f32_f32, None),
        GgmlType::F16 => rows_typed(w, xq, shape, out, kt.f16_f32, None),
        GgmlType::BF16 => rows_typed(w, xq, shape, out, kt.bf16_f32, None),
        GgmlType::Q4_0 => rows_typed(w, xq, shape, out, kt.q4_0_q8_0, None),
        GgmlType::Q4_1 => rows_typed(w, xq, shape, out, kt.q4_1_q8_1, kt.q4_1_q8_1_tiles),
        GgmlType::Q5_0 => rows_typed(w, xq, shape, out, kt.q5_0_q8_0, kt.q5_0_q8_0_tiles),
        GgmlType::Q5_1 => rows_typed(w, xq, shape, out, kt.q5_1_q8_1, kt.q5_1_q8_1_tiles),
        GgmlType::IQ4NL => rows_typed(w, xq, shape, out, kt.iq4_nl_q8_0, kt.iq4_nl_q8_0_tiles),
        GgmlType::Q8_0 => rows_typed(w, xq, shape, out, kt.q8_0_q8_0, kt.q8_0_q8_0_tiles),
        GgmlType::Q2K => rows_typed(w, xq, shape, out, kt.q2_k_q8_k, None),
        GgmlType::Q3K => rows_typed(w, xq, shape, out, kt.q3_k_q8_k, None),
        GgmlType::Q4K => rows_typed(w, xq, shape, out, kt.q4_k_q8_k, None),
        GgmlType::Q5K => rows_typed(w, xq, shape, out, kt.q5_k_q8_k, None),
        GgmlType::Q6K => rows_typed(w, xq, shape, out, kt.q6_k_q8_k, None),
        GgmlType::Q8_1 | GgmlType::Q8K => unreachable!("QMatrix::new refuses activation types"),
    }
}

#[derive(Clone, Copy)]
struct Shape {
    w_rb: usize,
    x_rb: usize,
    nr: usize,
    m: usize,
}

fn rows_typed<W: Pod, A: Pod>(
    w: &[u8],
    xq: &[u8],
    s: Shape,
    out: &mut [f32],
    dot: fn(&[W], &[A]) -> f32,
    tiles: Option<Tiles<W, A>>,
) {
    match (
        bytemuck::try_cast_slice::<u8, W>(w),
        bytemuck::try_cast_slice::<u8, A>(xq),
    ) {
        (Ok(wb), Ok(xb)) => {
            let (wpr, xpr) = (s.w_rb / size_of::<W>(), s.x_rb / size_of::<A>());
            let wrow = |r: usize| &wb[r * wpr..(r + 1) * wpr];
            let xrow = |i: usize| &xb[i * xpr..(i + 1) * xpr];
            // Tiles of 4 weight rows × 4 (then 1) activation rows; each tile result is
            // bit-identical to `dot`, so the row split does not change any output.
            let mut r0 = 0;
            if let Some(t) = tiles {
                while r0 + 4 <= s.nr {
                    let w4: [&[W]; 4] = core::array::from_fn(|j| wrow(r0 + j));
                    let mut i0 = 0;
                    while i0 + 4 <= s.m {
                        let o = (t.x4)(w4, core::array::from_fn(|j| xrow(i0 + j)));
                        for (j, o) in o.iter().enumerate() {
                            out[(i0 + j) * s.nr + r0..][..4].copy_from_slice(o);
                        }
                        i0 += 4;
                    }
                    for i in i0..s.m {
                        out[i * s.nr + r0..][..4].copy_from_slice(&(t.x1)(w4, xrow(i)));
                    }
                    r0 += 4;
                }
            }
            for r in r0..s.nr {
                for i in 0..s.m {
                    out[i * s.nr + r] = dot(wrow(r), xrow(i));
                }
            }
        }
        _ => {
            for (r, wrow) in w.chunks_exact(s.w_rb).enumerate() {
                for (i, xrow) in xq.chunks_exact(s.x_rb).enumerate() {
                    out[i * s.nr + r] = dot_unaligned(wrow, xrow, dot);
                }
            }
        }
    }
}

/// A dot product over misaligned bytes: copies eight blocks at a time to the stack.
fn dot_unaligned<W: Pod, A: Pod>(w: &[u8], x: &[u8], dot: fn(&[W], &[A]) -> f32) -> f32 {
    const CHUNK: usize = 8;
    let (sw, sa) = (size_of::<W>(), size_of::<A>());
    let (mut wb, mut ab) = ([W::zeroed(); CHUNK], [A::zeroed(); CHUNK]);
    let mut sum = 0.0;
    for (wc, ac) in w.chunks(CHUNK * sw).zip(x.chunks(CHUNK * sa)) {
        let n = wc.len() / sw;
        for j in 0..n {
            wb[j] = bytemuck::pod_read_unaligned(&wc[j * sw..(j + 1) * sw]);
            ab[j] = bytemuck::pod_read_unaligned(&ac[j * sa..(j + 1) * sa]);
        }
        sum += dot(&wb[..n], &ab[..n]);
    }
    sum
}

/// Values dequantized at a time into a stack buffer (one k-quant super-block, eight 32-blocks).
const DEQUANT_CHUNK: usize = 256;

/// Like [`matmul_rows`] with f32 activations `x` (`m × cols`): each weight row is dequantized
/// on the fly and dotted in f32. Slower; for parity checks against the quantized-activation path.
///
/// # Panics
/// On inconsistent sizes (an internal contract).
pub fn matmul_rows_f32(w: &QMatrix<'_>, rows: Range<usize>, x: &[f32], m: usize, out: &mut [f32]) {
    let kt = arch::kernels();
    let (w_ty, k) = (w.ty(), w.cols());
    assert_eq!(x.len(), m * k, "matmul_rows_f32: x must be m × k");
    let nr = rows.len();
    assert_eq!(
        out.len(),
        m * nr,
        "matmul_rows_f32: out must be m × rows.len()"
    );
    out.fill(0.0);
    let (bs, ts) = (w_ty.block_size(), w_ty.type_size());
    let chunk_blocks = (DEQUANT_CHUNK / bs).max(1);
    let mut tmp = [0.0f32; DEQUANT_CHUNK];
    for (ri, r) in rows.enumerate() {
        for (c, raw) in w.row(r).chunks(chunk_blocks * ts).enumerate() {
            let len = raw.len() / ts * bs;
            let col0 = c * chunk_blocks * bs;
            dequantize_row(w_ty, raw, &mut tmp[..len]);
            for i in 0..m {
                out[i * nr + ri] += (kt.f32_f32)(&tmp[..len], &x[i * k + col0..i * k + col0 + len]);
            }
        }
    }
}

/// Rows of `dy` whose panel coefficients are gathered per kernel call in [`matmul_t_cols`].
const COEF_ROWS: usize = 64;

/// The transposed product for backward: `dx = dy · W` restricted to the columns `cols` of `W`
/// (`n × k`), so `dx[i][c - cols.start] = Σ_r dy[i][r] · W[r][c]`, with `dy` row-major `m × n`
/// and `dx` row-major `m × cols.len()` (overwritten). `cols` must be block-aligned. Accumulates
/// in f32: no activation quantization.
///
/// Works in panels: eight consecutive weight rows of one ≤ 256-column chunk are
/// dequantized to the stack, then every `dx` row takes all of them in one pass (`axpy_panel`),
/// so each `dx` load and store serves eight FMAs instead of one (the old row-at-a-time axpy
/// streamed the whole `m × 256` tile through L2 per weight row). Each `dx[i][c]` is still summed
/// in row order `r = 0, 1, …`.
///
/// # Panics
/// On inconsistent sizes (an internal contract).
pub fn matmul_t_cols(w: &QMatrix<'_>, cols: Range<usize>, dy: &[f32], m: usize, dx: &mut [f32]) {
    matmul_t_cols_with(arch::kernels(), w, cols, dy, m, dx);
}

/// [`matmul_t_cols`] with an explicit kernel table (tests compare tables).
pub(crate) fn matmul_t_cols_with(
    kt: &Kernels,
    w: &QMatrix<'_>,
    cols: Range<usize>,
    dy: &[f32],
    m: usize,
    dx: &mut [f32],
) {
    let (w_ty, n, k) = (w.ty(), w.rows(), w.cols());
    let (bs, ts) = (w_ty.block_size(), w_ty.type_size());
    assert!(
        cols.start.is_multiple_of(bs)
            && cols.end.is_multiple_of(bs)
            && cols.end <= k
            && cols.start <= cols.end,
        "matmul_t_cols: columns {cols:?} not block-aligned within k = {k}"
    );
    assert_eq!(dy.len(), m * n, "matmul_t_cols: dy must be m × n");
    let nc = cols.len();
    assert_eq!(dx.len(), m * nc, "matmul_t_cols: dx must be m × cols.len()");
    dx.fill(0.0);
    if m == 0 || nc == 0 {
        return;
    }
    const { assert!(PANEL_COLS == DEQUANT_CHUNK) };
    let chunk_blocks = (DEQUANT_CHUNK / bs).max(1);
    let mut panel = Panel::ZERO;
    let mut coef = [[0.0f32; PANEL_ROWS]; COEF_ROWS];
    // Column chunks outermost: the `m × 256` slice of `dx` a chunk updates stays in L2 while all
    // `n` weight rows stream past it.
    let mut col0 = 0;
    while col0 < nc {
        let len = (nc - col0).min(chunk_blocks * bs);
        let byte0 = (cols.start + col0) / bs * ts;
        let nbytes = len / bs * ts;
        let mut r0 = 0;
        while r0 < n {
            let rows = (n - r0).min(PANEL_ROWS);
            for (p, out) in panel.0[..rows].iter_mut().enumerate() {
                let raw = &w.row(r0 + p)[byte0..][..nbytes];
                dequantize_row(w_ty, raw, &mut out[..len]);
            }
            // The panel's coefficients, `COEF_ROWS` rows of `dy` at a time, gathered first: the
            // strided reads (a cache line per row of `dy`, `n` floats apart) then miss in
            // parallel instead of one at a time between the kernel's FMAs (the vocabulary
            // projection's `dy` is 50 MB).
            let mut i0 = 0;
            while i0 < m {
                let mb = (m - i0).min(COEF_ROWS);
                for (j, a) in coef[..mb].iter_mut().enumerate() {
                    let src = &dy[(i0 + j) * n + r0..][..rows];
                    match <&[f32; PANEL_ROWS]>::try_from(src) {
                        Ok(full) => *a = *full,
                        Err(_) => a[..rows].copy_from_slice(src),
                    }
                }
                let shape = PanelShape {
                    m: mb,
                    rows,
                    len,
                    ldy: PANEL_ROWS,
                    ldx: nc,
                };
                let out = &mut dx[i0 * nc + col0..];
                (kt.axpy_panel)(&panel, coef[..mb].as_flattened(), out, shape);
                i0 += mb;
            }
            r0 += rows;
        }
        col0 += len;
    }
}

//! Interleaved weight layouts for the one-activation-row product (decode).
//!
//! A ggml matrix stores each row's blocks one after another, so a product with one activation
//! row (m = 1) runs one dot product per row: per 32-weight block it converts that row's f16
//! scales, unpacks 16 bytes and reduces eight lanes, and the vector units stay half empty. Here
//! [`INTERLEAVE_ROWS`] = 16 rows are stored together, block by block ([`BlockQ4_1x16`],
//! [`BlockQ8_0x16`]): the sixteen rows' scales side by side (one 16-lane conversion), their
//! codes arranged so that one AVX-512 VNNI `vpdpbusd` multiplies four weights of all sixteen
//! rows by the same four activation bytes (one 32-bit lane per row, no horizontal sums). The
//! same bytes, the same number of them, in the order the kernel reads them.
//!
//! Results: row `r` of an interleaved product is **bit for bit** the scalar `_ref` dot product of
//! row `r` ([`vec_dot_q4_1_q8_1_ref`], [`vec_dot_q8_0_q8_0_ref`]): the integer block sums are
//! exact and the f32 operations per block are the reference's, in its order
//! ([`INTERLEAVED_TOLERANCE`] is 0). They differ from the VNNI row kernels only in rounding (those
//! keep eight partial sums per row), well inside the parity bound.
//!
//! Matrices are interleaved once, at load ([`interleave`]); the ggml bytes stay where they are
//! (a mapped file) for the batched and transposed products. Rows past the last whole group of
//! 16 are not interleaved: callers run them on the ggml rows ([`crate::matmul_rows`]).

use core::ops::Range;

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::arch::{self, Kernels};
use crate::qmatrix::QMatrix;
use crate::quant::*;

/// Rows per interleaved group: one 32-bit lane of a 512-bit register each.
pub const INTERLEAVE_ROWS: usize = 16;

/// |difference| allowed between an interleaved product and the per-row `_ref` dot products:
/// none (same integer sums, same f32 operations in the same order).
pub const INTERLEAVED_TOLERANCE: f32 = 0.0;

/// One 32-weight block of 16 Q4_1 rows: 320 bytes for 512 weights = 5 bits per weight, as
/// [`BlockQ4_1`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4_1x16 {
    /// Row `r`'s scale.
    pub d: [f16; INTERLEAVE_ROWS],
    /// Row `r`'s minimum.
    pub m: [f16; INTERLEAVE_ROWS],
    /// Four chunks of 64 bytes; byte `64 p + 4 r + i` holds row `r`'s weight `8 p + i` in its
    /// low nibble and weight `8 p + 4 + i` in its high one (`i < 4`).
    pub qs: [u8; 256],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1x16>() == 16 * 20);

/// One 32-weight block of 16 Q8_0 rows: 544 bytes for 512 weights = 8.5 bits per weight, as
/// [`BlockQ8_0`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8_0x16 {
    /// Row `r`'s scale.
    pub d: [f16; INTERLEAVE_ROWS],
    /// Eight chunks of 64 bytes; byte `64 g + 4 r + i` is row `r`'s code `4 g + i` plus 128, as
    /// an unsigned byte (`vpdpbusd` takes one unsigned operand; the kernel subtracts
    /// `128 · Σ activation codes`, exactly).
    pub qs: [u8; 512],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0x16>() == 16 * 34);

/// The weight types that have an interleaved layout.
pub const fn has_interleaved_layout(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// Whether interleaving `ty` pays on this CPU: the active kernel table has a vector kernel for
/// its interleaved layout (elsewhere the scalar twin would be slower than the row kernels).
pub fn interleaved_is_fast(ty: GgmlType) -> bool {
    let kt = arch::kernels();
    match ty {
        GgmlType::Q4_1 => kt.q4_1x16_q8_1.is_some(),
        GgmlType::Q8_0 => kt.q8_0x16_q8_0.is_some(),
        _ => false,
    }
}

/// Bytes of the interleaved form of `w`'s whole groups of 16 rows (`None` when its type has no
/// interleaved layout); the same as those rows' ggml bytes.
pub fn interleaved_bytes(w: &QMatrix<'_>) -> Option<usize> {
    has_interleaved_layout(w.ty())
        .then(|| w.rows() / INTERLEAVE_ROWS * INTERLEAVE_ROWS * w.row_bytes())
}

/// Writes the interleaved form of `w`'s first `rows / 16` groups into `out`
/// ([`interleaved_bytes`] long; groups one after another, each its blocks in column order).
///
/// # Panics
/// When `w`'s type has no interleaved layout, or `out` has the wrong length or is not 2-byte
/// aligned.
pub fn interleave(w: &QMatrix<'_>, out: &mut [u8]) {
    let need = interleaved_bytes(w)
        .unwrap_or_else(|| panic!("interleave: no interleaved layout for {}", w.ty().name()));
    assert_eq!(
        out.len(),
        need,
        "interleave: out is {} bytes, need {need}",
        out.len()
    );
    let nb = w.cols() / w.ty().block_size();
    let groups = w.rows() / INTERLEAVE_ROWS;
    match w.ty() {
        GgmlType::Q4_1 => {
            let dst: &mut [BlockQ4_1x16] = bytemuck::cast_slice_mut(out);
            for g in 0..groups {
                for r in 0..INTERLEAVE_ROWS {
                    let row = w.row(g * INTERLEAVE_ROWS + r);
                    for (b, dst) in dst[g * nb..(g + 1) * nb].iter_mut().enumerate() {
                        let src: BlockQ4_1 = bytemuck::pod_read_unaligned(&row[b * 20..][..20]);
                        interleave_q4_1(&src, r, dst);
                    }
                }
            }
        }
        GgmlType::Q8_0 => {
            let dst: &mut [BlockQ8_0x16] = bytemuck::cast_slice_mut(out);
            for g in 0..groups {
                for r in 0..INTERLEAVE_ROWS {
                    let row = w.row(g * INTERLEAVE_ROWS + r);
                    for (b, dst) in dst[g * nb..(g + 1) * nb].iter_mut().enumerate() {
                        let src: BlockQ8_0 = bytemuck::pod_read_unaligned(&row[b * 34..][..34]);
                        dst.d[r] = src.d;
                        for (j, &q) in src.qs.iter().enumerate() {
                            dst.qs[64 * (j / 4) + 4 * r + j % 4] = (q as u8) ^ 0x80;
                        }
                    }
                }
            }
        }
        _ => unreachable!("checked by interleaved_bytes"),
    }
}

/// Row `r`'s block `src` into its place in `dst`.
fn interleave_q4_1(src: &BlockQ4_1, r: usize, dst: &mut BlockQ4_1x16) {
    dst.d[r] = src.d;
    dst.m[r] = src.m;
    let code = |j: usize| match j < 16 {
        true => src.qs[j] & 0x0F,
        false => src.qs[j - 16] >> 4,
    };
    for p in 0..4 {
        for i in 0..4 {
            dst.qs[64 * p + 4 * r + i] = code(8 * p + i) | (code(8 * p + 4 + i) << 4);
        }
    }
}

/// Row `r`'s 32 Q4_1 codes of block `b`, in weight order.
fn q4_1x16_codes(b: &BlockQ4_1x16, r: usize) -> [u8; 32] {
    core::array::from_fn(|j| {
        let (p, i) = (j / 8, j % 8);
        let byte = b.qs[64 * p + 4 * r + i % 4];
        if i < 4 { byte & 0x0F } else { byte >> 4 }
    })
}

/// The scalar twin of the Q4_1 group kernel: `out[r] = row r · y` for the 16 rows of one group
/// (`x` its `y.len()` blocks), each the sum [`vec_dot_q4_1_q8_1_ref`] computes.
pub fn gemv_q4_1x16_q8_1_ref(x: &[BlockQ4_1x16], y: &[BlockQ8_1], out: &mut [f32]) {
    assert!(
        x.len() == y.len() && out.len() == INTERLEAVE_ROWS,
        "gemv_q4_1x16_q8_1: shape mismatch"
    );
    for (r, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (a, b) in x.iter().zip(y) {
            let q = q4_1x16_codes(a, r);
            let sumi: i32 = q
                .iter()
                .zip(&b.qs)
                .map(|(&q, &v)| q as i32 * v as i32)
                .sum();
            sum += sumi as f32 * (a.d[r].to_f32() * b.d.to_f32()) + a.m[r].to_f32() * b.s.to_f32();
        }
        *o = sum;
    }
}

/// The scalar twin of the Q8_0 group kernel, each row the sum [`vec_dot_q8_0_q8_0_ref`]
/// computes.
pub fn gemv_q8_0x16_q8_0_ref(x: &[BlockQ8_0x16], y: &[BlockQ8_0], out: &mut [f32]) {
    assert!(
        x.len() == y.len() && out.len() == INTERLEAVE_ROWS,
        "gemv_q8_0x16_q8_0: shape mismatch"
    );
    for (r, o) in out.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for (a, b) in x.iter().zip(y) {
            let sumi: i32 = (0..32)
                .map(|j| (a.qs[64 * (j / 4) + 4 * r + j % 4] ^ 0x80) as i8 as i32 * b.qs[j] as i32)
                .sum();
            sum += sumi as f32 * (a.d[r].to_f32() * b.d.to_f32());
        }
        *o = sum;
    }
}

/// The interleaved groups of a matrix: `groups` groups of [`INTERLEAVE_ROWS`] rows of `cols`
/// values, as [`interleave`] writes them.
#[derive(Clone, Copy, Debug)]
pub struct Interleaved<'a> {
    ty: GgmlType,
    bytes: &'a [u8],
    groups: usize,
    cols: usize,
}

impl<'a> Interleaved<'a> {
    /// Views `bytes` as the interleaved form of `w`'s whole groups ([`interleave`]'s output for
    /// `w`).
    ///
    /// # Panics
    /// When `bytes` is not [`interleaved_bytes`]`(w)` long or not 2-byte aligned (the f16
    /// scales; a buffer of `u16` or wider words is).
    pub fn new(w: &QMatrix<'_>, bytes: &'a [u8]) -> Self {
        assert!(
            bytemuck::try_cast_slice::<u8, u16>(bytes).is_ok(),
            "Interleaved: bytes not 2-byte aligned"
        );
        assert_eq!(
            Some(bytes.len()),
            interleaved_bytes(w),
            "Interleaved: wrong length for {} × {} {}",
            w.rows(),
            w.cols(),
            w.ty().name()
        );
        Self {
            ty: w.ty(),
            bytes,
            groups: w.rows() / INTERLEAVE_ROWS,
            cols: w.cols(),
        }
    }

    /// Rows held (whole groups).
    pub fn rows(&self) -> usize {
        self.groups * INTERLEAVE_ROWS
    }
}

/// `out[r - rows.start] = W[r] · x` for the interleaved rows `rows` (both ends multiples of
/// [`INTERLEAVE_ROWS`], within [`Interleaved::rows`]), `xq` one activation row from
/// [`crate::quantize_activations`]. Each output is bit for bit the `_ref` dot product.
///
/// # Panics
/// On misaligned rows or inconsistent sizes (an internal contract).
pub fn matvec_interleaved(w: &Interleaved<'_>, rows: Range<usize>, xq: &[u8], out: &mut [f32]) {
    matvec_interleaved_with(arch::kernels(), w, rows, xq, out);
}

/// [`matvec_interleaved`] with an explicit kernel table (tests compare tables).
pub(crate) fn matvec_interleaved_with(
    kt: &Kernels,
    w: &Interleaved<'_>,
    rows: Range<usize>,
    xq: &[u8],
    out: &mut [f32],
) {
    assert!(
        rows.start.is_multiple_of(INTERLEAVE_ROWS)
            && rows.end.is_multiple_of(INTERLEAVE_ROWS)
            && rows.start <= rows.end
            && rows.end <= w.rows(),
        "matvec_interleaved: rows {rows:?} not whole groups of 0..{}",
        w.rows()
    );
    assert_eq!(
        out.len(),
        rows.len(),
        "matvec_interleaved: out must be rows.len()"
    );
    let nb = w.cols / w.ty.block_size();
    let gsize = w.ty.type_size() * INTERLEAVE_ROWS * nb;
    let bytes = &w.bytes[rows.start / INTERLEAVE_ROWS * gsize..rows.end / INTERLEAVE_ROWS * gsize];
    match w.ty {
        GgmlType::Q4_1 => {
            let x: &[BlockQ8_1] = cast_activations(xq, nb);
            let g: &[BlockQ4_1x16] = bytemuck::cast_slice(bytes);
            match kt.q4_1x16_q8_1 {
                Some(k) => k(g, x, out),
                None => groups_ref(g, nb, x, out, gemv_q4_1x16_q8_1_ref),
            }
        }
        GgmlType::Q8_0 => {
            let x: &[BlockQ8_0] = cast_activations(xq, nb);
            let g: &[BlockQ8_0x16] = bytemuck::cast_slice(bytes);
            match kt.q8_0x16_q8_0 {
                Some(k) => k(g, x, out),
                None => groups_ref(g, nb, x, out, gemv_q8_0x16_q8_0_ref),
            }
        }
        _ => unreachable!("Interleaved::new takes only interleaved types"),
    }
}

fn cast_activations<A: Pod>(xq: &[u8], nb: usize) -> &[A] {
    let need = nb * size_of::<A>();
    assert!(
        xq.len() >= need,
        "matvec_interleaved: activations too short"
    );
    bytemuck::try_cast_slice(&xq[..need]).expect("activation blocks are byte-aligned")
}

fn groups_ref<G, A>(g: &[G], nb: usize, x: &[A], out: &mut [f32], f: fn(&[G], &[A], &mut [f32])) {
    for (g, o) in g
        .chunks_exact(nb)
        .zip(out.chunks_exact_mut(INTERLEAVE_ROWS))
    {
        f(g, x, o);
    }
}

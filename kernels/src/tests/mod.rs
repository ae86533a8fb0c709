//! Kernel tests: hand-computed blocks, round trips, optimized vs `_ref` twins, matmul drivers.
//! Tolerances follow ggml's `test-quantize-fns` (errors are per element).

extern crate std;
use std::vec;
use std::vec::Vec;

use bytemuck::Zeroable;
use half::f16;

use crate::arch::{Isa, Kernels, generic, kernels_for};
use crate::quant::*;
use crate::{GgmlType, QMatrix, QMatrixError};

mod attention;
mod formats;
mod interleave;
mod matmul;
mod panel;

/// ggml's `MAX_QUANTIZATION_TOTAL_ERROR`: `sqrt(Σ err²) / n` of a quantize → dequantize round
/// trip on [`generate_data`], for the 4-bit formats.
pub const MAX_QUANTIZATION_TOTAL_ERROR_Q4: f32 = 0.002;
/// The same bound for the 8-bit formats, tightened (ggml uses 0.002 for all non-low-bit types).
pub const MAX_QUANTIZATION_TOTAL_ERROR_Q8: f32 = 0.0002;
/// Per-element error of `vec_dot_q4_0_q8_0` against the f32 dot of the unquantized data.
pub const MAX_DOT_PRODUCT_ERROR_Q4_0: f32 = 0.02;
/// Per-element error of `vec_dot_q4_1_q8_1` against the f32 dot of the unquantized data.
pub const MAX_DOT_PRODUCT_ERROR_Q4_1: f32 = 0.02;
/// Per-element error of `vec_dot_q5_0_q8_0` against the f32 dot of the unquantized data (one
/// more bit than Q4_0: half its step).
pub const MAX_DOT_PRODUCT_ERROR_Q5_0: f32 = 0.01;
/// Per-element error of `vec_dot_q5_1_q8_1` against the f32 dot of the unquantized data.
pub const MAX_DOT_PRODUCT_ERROR_Q5_1: f32 = 0.01;
/// ggml's `MAX_QUANTIZATION_TOTAL_ERROR` for the 5-bit formats, tightened to half the 4-bit one.
pub const MAX_QUANTIZATION_TOTAL_ERROR_Q5: f32 = 0.001;
/// Per-element difference between an IQ4_NL integer dot and the f32 dot of both dequantized rows.
pub const MAX_IQ4_NL_DOT_VS_DEQUANT_ERROR: f32 = 1e-5;
/// Per-element error of `vec_dot_q8_0_q8_0` against the f32 dot of the unquantized data.
pub const MAX_DOT_PRODUCT_ERROR_Q8_0: f32 = 0.005;
/// Per-element difference allowed between an optimized kernel and its `_ref` twin: they do the
/// same integer sums and differ only in f32 summation order.
pub const MAX_KERNEL_VS_REF_ERROR: f32 = 1e-5;
/// Per-element difference between a k-quant integer dot and the f32 dot of both dequantized rows.
pub const MAX_KQUANT_DOT_VS_DEQUANT_ERROR: f32 = 1e-5;

/// Deterministic xorshift generator (no `rand` in a no_std crate).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[-1, 1)`.
    pub(crate) fn f32(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(crate) fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
}

/// ggml's `generate_data`: `0.1 + 2 cos(i + offset)`.
fn generate_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| 0.1 + 2.0 * libm_cos(i as f32 + offset))
        .collect()
}

fn libm_cos(x: f32) -> f32 {
    (x as f64).cos() as f32
}

/// ggml's `array_rmse`: `sqrt(Σ (a − b)²) / n` (despite the name, not the root of the mean).
fn rmse(a: &[f32], b: &[f32]) -> f32 {
    let s: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    (s.sqrt() / a.len() as f64) as f32
}

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum::<f64>() as f32
}

/// Quantizes `x` to `ty` with [`quantize_row`], as raw bytes; k-quants (which have no
/// quantizer) get random blocks with sane scales instead.
pub(crate) fn quantize_weights(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let nb = x.len() / ty.block_size();
    let mut out = vec![0u8; nb * ty.type_size()];
    match quantize_row(ty, x, &mut out) {
        Ok(()) => out,
        Err(QuantizeError::Unsupported(_)) => {
            random_kquant_row(ty, nb, &mut Rng::new(x.len() as u64))
        }
    }
}

/// `w` as a matrix of rows of `k` values of `ty` (as many rows as it holds).
pub(crate) fn qm(ty: GgmlType, w: &[u8], k: usize) -> QMatrix<'_> {
    let rows = w.len() / ty.row_bytes(k).expect("whole blocks");
    QMatrix::new(ty, w, rows, k).expect("whole rows")
}

/// K-quant (and IQ4_NL) blocks from random bytes with sane f16 scales (no quantizer for them).
pub(crate) fn random_kquant_row(ty: GgmlType, nb: usize, rng: &mut Rng) -> Vec<u8> {
    let mut raw = rng.bytes(nb * ty.type_size());
    for blk in raw.chunks_exact_mut(ty.type_size()) {
        let d = f16::from_f32(0.001 + 0.01 * rng.f32().abs())
            .to_bits()
            .to_le_bytes();
        let dmin = f16::from_f32(0.001 + 0.01 * rng.f32().abs())
            .to_bits()
            .to_le_bytes();
        match ty {
            GgmlType::Q4K | GgmlType::Q5K => {
                blk[0..2].copy_from_slice(&d);
                blk[2..4].copy_from_slice(&dmin);
            }
            GgmlType::Q6K => blk[208..210].copy_from_slice(&d),
            GgmlType::IQ4NL => blk[0..2].copy_from_slice(&d),
            GgmlType::Q2K => {
                blk[80..82].copy_from_slice(&d);
                blk[82..84].copy_from_slice(&dmin);
            }
            GgmlType::Q3K => blk[108..110].copy_from_slice(&d),
            _ => unreachable!(),
        }
    }
    raw
}

fn dequant(ty: GgmlType, raw: &[u8]) -> Vec<f32> {
    let n = raw.len() / ty.type_size() * ty.block_size();
    let mut y = vec![0.0; n];
    dequantize_row(ty, raw, &mut y);
    y
}

pub(crate) fn tables() -> Vec<(Isa, &'static Kernels)> {
    [
        Isa::Generic,
        Isa::Avx2,
        Isa::Avx512Vnni,
        Isa::Neon,
        Isa::NeonDotprod,
    ]
    .into_iter()
    .filter_map(|i| kernels_for(i).map(|k| (i, k)))
    .collect()
}

#[test]
fn block_sizes_match_ggml_type_sizes() {
    assert_eq!(size_of::<BlockQ4_0>(), GgmlType::Q4_0.type_size());
    assert_eq!(size_of::<BlockQ4_1>(), GgmlType::Q4_1.type_size());
    assert_eq!(size_of::<BlockQ8_0>(), GgmlType::Q8_0.type_size());
    assert_eq!(size_of::<BlockQ8_1>(), GgmlType::Q8_1.type_size());
    assert_eq!(size_of::<BlockQ4K>(), GgmlType::Q4K.type_size());
    assert_eq!(size_of::<BlockQ5K>(), GgmlType::Q5K.type_size());
    assert_eq!(size_of::<BlockQ6K>(), GgmlType::Q6K.type_size());
    assert_eq!(size_of::<BlockQ8K>(), GgmlType::Q8K.type_size());
    assert_eq!(size_of::<BlockQ5_0>(), GgmlType::Q5_0.type_size());
    assert_eq!(size_of::<BlockQ5_1>(), GgmlType::Q5_1.type_size());
    assert_eq!(size_of::<BlockIQ4NL>(), GgmlType::IQ4NL.type_size());
    assert_eq!(size_of::<BlockQ2K>(), GgmlType::Q2K.type_size());
    assert_eq!(size_of::<BlockQ3K>(), GgmlType::Q3K.type_size());
    for ty in GgmlType::ALL {
        assert_eq!(GgmlType::from_u32(ty.id()), Some(ty), "{}", ty.name());
    }
}

#[test]
fn dequantize_q4_1_hand_computed_block() {
    // d = 0.5, m = -1: byte j = (hi << 4) | lo gives w[j] = lo·0.5 − 1, w[j+16] = hi·0.5 − 1.
    let mut raw = Vec::new();
    raw.extend_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
    raw.extend_from_slice(&f16::from_f32(-1.0).to_bits().to_le_bytes());
    raw.extend((0..16u8).map(|j| (15 - j) << 4 | j));
    let y = dequant(GgmlType::Q4_1, &raw);
    for j in 0..16 {
        assert_eq!(y[j], j as f32 * 0.5 - 1.0);
        assert_eq!(y[j + 16], (15 - j) as f32 * 0.5 - 1.0);
    }
}

#[test]
fn dequantize_q8_0_hand_computed_block() {
    let mut raw = f16::from_f32(0.25).to_bits().to_le_bytes().to_vec();
    raw.extend((0..32i8).map(|i| (i - 16) as u8));
    let y = dequant(GgmlType::Q8_0, &raw);
    for (i, v) in y.iter().enumerate() {
        assert_eq!(*v, (i as f32 - 16.0) * 0.25);
    }
}

#[test]
fn dequantize_q4_0_hand_computed_block() {
    let mut raw = f16::from_f32(2.0).to_bits().to_le_bytes().to_vec();
    raw.extend(core::iter::repeat_n(0xF0u8, 16));
    let y = dequant(GgmlType::Q4_0, &raw);
    assert!(y[..16].iter().all(|&v| v == -16.0));
    assert!(y[16..].iter().all(|&v| v == 14.0));
}

#[test]
fn quantize_round_trip_error() {
    let x = generate_data(0.0, 4096);
    for (ty, max) in [
        (GgmlType::Q4_0, MAX_QUANTIZATION_TOTAL_ERROR_Q4),
        (GgmlType::Q4_1, MAX_QUANTIZATION_TOTAL_ERROR_Q4),
        (GgmlType::Q5_0, MAX_QUANTIZATION_TOTAL_ERROR_Q5),
        (GgmlType::Q5_1, MAX_QUANTIZATION_TOTAL_ERROR_Q5),
        (GgmlType::Q8_0, MAX_QUANTIZATION_TOTAL_ERROR_Q8),
    ] {
        let err = rmse(&x, &dequant(ty, &quantize_weights(ty, &x)));
        assert!(err < max, "{}: rmse {err} >= {max}", ty.name());
    }
    // Activation formats.
    let mut q1 = vec![BlockQ8_1::zeroed(); 4096 / 32];
    quantize_row_q8_1_ref(&x, &mut q1);
    let mut y = vec![0.0; 4096];
    dequantize_row_q8_1(&q1, &mut y);
    assert!(rmse(&x, &y) < MAX_QUANTIZATION_TOTAL_ERROR_Q8);
    for b in &q1 {
        let s: i32 = b.qs.iter().map(|&q| q as i32).sum();
        assert!(
            (b.s.to_f32() - s as f32 * b.d.to_f32()).abs() <= 1e-3 * (1.0 + b.s.to_f32().abs())
        );
    }
    let mut qk = vec![BlockQ8K::zeroed(); 4096 / 256];
    quantize_row_q8_k_ref(&x, &mut qk);
    dequantize_row_q8_k(&qk, &mut y);
    assert!(rmse(&x, &y) < MAX_QUANTIZATION_TOTAL_ERROR_Q8);
    for b in &qk {
        for (s, q) in b.bsums.iter().zip(b.qs.chunks_exact(16)) {
            assert_eq!(*s as i32, q.iter().map(|&q| q as i32).sum::<i32>());
        }
    }
}

#[test]
fn quantized_dot_close_to_f32_dot() {
    let k = 4096;
    let (x, y) = (generate_data(0.0, k), generate_data(1.0, k));
    let exact = dot_f32(&x, &y);
    for (ty, max) in [
        (GgmlType::Q4_0, MAX_DOT_PRODUCT_ERROR_Q4_0),
        (GgmlType::Q4_1, MAX_DOT_PRODUCT_ERROR_Q4_1),
        (GgmlType::Q5_0, MAX_DOT_PRODUCT_ERROR_Q5_0),
        (GgmlType::Q5_1, MAX_DOT_PRODUCT_ERROR_Q5_1),
        (GgmlType::Q8_0, MAX_DOT_PRODUCT_ERROR_Q8_0),
    ] {
        let w = quantize_weights(ty, &x);
        let mut yq = vec![0u8; crate::activation_bytes(ty, k)];
        crate::quantize_activations(ty, &y, &mut yq);
        let got = crate::vec_dot(ty, &w, &yq);
        let err = (got - exact).abs() / k as f32;
        assert!(
            err < max,
            "{}: per-element dot error {err} >= {max}",
            ty.name()
        );
    }
}

#[test]
fn kquant_integer_dot_matches_dequantized_dot() {
    let mut rng = Rng::new(7);
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        let k = 1024;
        let w = random_kquant_row(ty, k / 256, &mut rng);
        let x = rng.vec(k);
        let mut xq = vec![0u8; crate::activation_bytes(ty, k)];
        crate::quantize_activations(ty, &x, &mut xq);
        let want = dot_f32(&dequant(ty, &w), &dequant(GgmlType::Q8K, &xq));
        for (isa, kt) in tables() {
            let mut out = [0.0f32];
            crate::matmul::matmul_rows_with(kt, &qm(ty, &w, k), 0..1, &xq, 1, &mut out);
            let err = (out[0] - want).abs() / k as f32;
            assert!(
                err < MAX_KQUANT_DOT_VS_DEQUANT_ERROR,
                "{} {isa:?}: {err}",
                ty.name()
            );
        }
    }
}

#[test]
fn q6_k_dequant_matches_ggml_bit_layout() {
    // Weight 0 takes ql[0] low nibble and qh[0] bits 0-1; weight 96 takes ql[32] high nibble and
    // qh[0] bits 6-7 (ggml's dequantize_row_q6_K loop).
    let mut b = BlockQ6K::zeroed();
    b.d = f16::from_f32(1.0);
    b.scales = [1; 16];
    b.ql[0] = 0x05;
    b.ql[32] = 0x70;
    b.qh[0] = 0b10_00_00_11;
    let mut y = [0.0f32; 256];
    dequantize_row_q6_k(&[b], &mut y);
    assert_eq!(y[0], (5 | 3 << 4) as f32 - 32.0);
    assert_eq!(y[96], (7 | 2 << 4) as f32 - 32.0);
    assert_eq!(y[32], -32.0);
}

#[test]
fn optimized_kernels_match_ref_twins() {
    let gen_tbl: &Kernels = &generic::GENERIC;
    let mut rng = Rng::new(3);
    for ty in [
        GgmlType::Q4_0,
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
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        for k in [256usize, 512, 1536, 4096] {
            let w = quantize_weights(ty, &rng.vec(k));
            let x = rng.vec(k);
            let mut xq = vec![0u8; crate::activation_bytes(ty, k)];
            crate::quantize_activations(ty, &x, &mut xq);
            let mut want = [0.0f32];
            crate::matmul::matmul_rows_with(gen_tbl, &qm(ty, &w, k), 0..1, &xq, 1, &mut want);
            for (isa, kt) in tables() {
                let mut got = [0.0f32];
                crate::matmul::matmul_rows_with(kt, &qm(ty, &w, k), 0..1, &xq, 1, &mut got);
                let err = (got[0] - want[0]).abs() / k as f32;
                assert!(
                    err < MAX_KERNEL_VS_REF_ERROR,
                    "{} k={k} {isa:?}: {err}",
                    ty.name()
                );
            }
        }
    }
}

/// The k-quant kernels of every table do the `_ref` twin's integer sums exactly and then its
/// f32 operations in its order: bit for bit the same result, not merely within
/// `MAX_KERNEL_VS_REF_ERROR`.
#[test]
fn kquant_kernels_are_bit_identical_to_ref() {
    let mut rng = Rng::new(23);
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        for k in [256usize, 768, 2048] {
            let n = 5;
            let w = random_kquant_row(ty, n * k / 256, &mut rng);
            let x = rng.vec(k);
            let mut xq = vec![0u8; crate::activation_bytes(ty, k)];
            crate::quantize_activations(ty, &x, &mut xq);
            let mut want = vec![0.0f32; n];
            crate::matmul::matmul_rows_with(
                &generic::GENERIC,
                &qm(ty, &w, k),
                0..n,
                &xq,
                1,
                &mut want,
            );
            for (isa, kt) in tables() {
                let mut got = vec![0.0f32; n];
                crate::matmul::matmul_rows_with(kt, &qm(ty, &w, k), 0..n, &xq, 1, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "{} k={k} {isa:?}", ty.name());
                }
            }
        }
    }
}

#[test]
fn dequantize_misaligned_bytes_matches_aligned() {
    let mut rng = Rng::new(11);
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::IQ4NL,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
        GgmlType::F32,
    ] {
        let w = quantize_weights(ty, &rng.vec(512));
        let mut shifted = vec![0u8; w.len() + 1];
        shifted[1..].copy_from_slice(&w);
        assert_eq!(dequant(ty, &w), dequant(ty, &shifted[1..]), "{}", ty.name());
    }
}

#[test]
#[should_panic(expected = "dequantize_row(q4_1)")]
fn dequantize_row_length_mismatch_panics() {
    let mut y = [0.0f32; 32];
    dequantize_row(GgmlType::Q4_1, &[0u8; 19], &mut y);
}

/// `quantize_row` writes exactly the bytes of the typed `_ref` quantizer, at any byte offset,
/// and refuses the k-quants without touching `dst`.
#[test]
fn quantize_row_matches_typed_ref_quantizers() {
    fn typed<B: bytemuck::Pod>(x: &[f32], bs: usize, f: fn(&[f32], &mut [B])) -> Vec<u8> {
        let mut b = vec![B::zeroed(); x.len() / bs];
        f(x, &mut b);
        bytemuck::cast_slice(&b).to_vec()
    }
    let x = Rng::new(31).vec(512);
    let want = [
        (GgmlType::F32, bytemuck::cast_slice::<f32, u8>(&x).to_vec()),
        (GgmlType::F16, typed(&x, 1, quantize_row_f16)),
        (GgmlType::BF16, typed(&x, 1, quantize_row_bf16)),
        (GgmlType::Q4_0, typed(&x, QK4_0, quantize_row_q4_0_ref)),
        (GgmlType::Q4_1, typed(&x, QK4_1, quantize_row_q4_1_ref)),
        (GgmlType::Q5_0, typed(&x, QK5_0, quantize_row_q5_0_ref)),
        (GgmlType::Q5_1, typed(&x, QK5_1, quantize_row_q5_1_ref)),
        (GgmlType::Q8_0, typed(&x, QK8_0, quantize_row_q8_0_ref)),
        (GgmlType::Q8_1, typed(&x, QK8_1, quantize_row_q8_1_ref)),
        (GgmlType::Q8K, typed(&x, QK_K, quantize_row_q8_k_ref)),
    ];
    for (ty, want) in want {
        let mut buf = vec![0u8; want.len() + 1];
        for off in [0, 1] {
            let dst = &mut buf[off..off + want.len()];
            quantize_row(ty, &x, dst).unwrap();
            assert_eq!(dst, &want[..], "{} at offset {off}", ty.name());
        }
    }
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::IQ4NL,
    ] {
        let mut dst = vec![7u8; ty.row_bytes(512).unwrap()];
        assert_eq!(
            quantize_row(ty, &x, &mut dst),
            Err(QuantizeError::Unsupported(ty))
        );
        assert!(dst.iter().all(|&b| b == 7), "{}", ty.name());
    }
}

#[test]
#[should_panic(expected = "quantize_row(q8_0)")]
fn quantize_row_length_mismatch_panics() {
    quantize_row(GgmlType::Q8_0, &[0.0; 32], &mut [0u8; 33]).unwrap();
}

/// `QMatrix::new` accepts exactly `rows` whole rows and names what is wrong otherwise.
#[test]
fn qmatrix_checks_its_bytes() {
    let bytes = [0u8; 3 * 20];
    let w = QMatrix::new(GgmlType::Q4_1, &bytes, 3, 32).unwrap();
    assert_eq!((w.rows(), w.cols(), w.row_bytes()), (3, 32, 20));
    assert_eq!(w.row(2).as_ptr(), bytes[40..].as_ptr());
    assert_eq!(w.row_range(1..3).len(), 40);
    assert_eq!(
        QMatrix::new(GgmlType::Q4_1, &bytes[1..], 3, 32).unwrap_err(),
        QMatrixError::Length {
            ty: GgmlType::Q4_1,
            rows: 3,
            cols: 32,
            expected: 60,
            actual: 59
        }
    );
    assert_eq!(
        QMatrix::new(GgmlType::Q4_1, &bytes, 2, 48).unwrap_err(),
        QMatrixError::PartialBlock {
            ty: GgmlType::Q4_1,
            cols: 48
        }
    );
    let huge = usize::MAX / 32 * 32;
    assert!(matches!(
        QMatrix::new(GgmlType::F32, &bytes, 1, huge),
        Err(QMatrixError::TooLarge { .. })
    ));
    assert!(matches!(
        QMatrix::new(GgmlType::Q4_1, &bytes, usize::MAX / 2, 32),
        Err(QMatrixError::TooLarge { .. })
    ));
    for ty in [GgmlType::Q8_1, GgmlType::Q8K] {
        assert_eq!(
            QMatrix::new(ty, &[], 0, 0).unwrap_err(),
            QMatrixError::NotAWeightType(ty)
        );
    }
    // An empty matrix is a matrix.
    assert_eq!(QMatrix::new(GgmlType::Q8_0, &[], 0, 64).unwrap().rows(), 0);
}

#[test]
#[should_panic(expected = "QMatrix: rows 2..4 out of 0..3")]
fn qmatrix_row_range_past_the_end_panics() {
    let bytes = [0u8; 3 * 34];
    QMatrix::new(GgmlType::Q8_0, &bytes, 3, 32)
        .unwrap()
        .row_range(2..4);
}

/// Every table's activation quantizers give exactly the `_ref` blocks (ties, zeros, NaN).
#[test]
fn activation_quantizers_match_ref_bit_for_bit() {
    let mut rng = Rng::new(23);
    let mut x = rng.vec(32 * 64);
    x[32..64].fill(0.0);
    for (j, v) in x[64..96].iter_mut().enumerate() {
        *v = (j as f32 - 16.0) * 0.5; // amax 8: many exact .5 ties of v · 127 / 8
    }
    x[96] = -0.0;
    x[130] = f32::NAN;
    x[200] = 1e-30;
    let nb = x.len() / 32;
    let (mut want0, mut want1) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ8_1::zeroed(); nb]);
    quantize_row_q8_0_ref(&x, &mut want0);
    quantize_row_q8_1_ref(&x, &mut want1);
    for (isa, kt) in tables() {
        let (mut got0, mut got1) = (vec![BlockQ8_0::zeroed(); nb], vec![BlockQ8_1::zeroed(); nb]);
        (kt.quantize_q8_0)(&x, &mut got0);
        (kt.quantize_q8_1)(&x, &mut got1);
        let b = |v: &[BlockQ8_0]| bytemuck::cast_slice::<_, u8>(v).to_vec();
        assert_eq!(b(&got0), b(&want0), "q8_0 {isa:?}");
        let b = |v: &[BlockQ8_1]| bytemuck::cast_slice::<_, u8>(v).to_vec();
        assert_eq!(b(&got1), b(&want1), "q8_1 {isa:?}");
    }
}

/// On aarch64 the twin tests above must see the NEON tables: every ARMv8-A core has NEON, and
/// the dotprod table whenever the CPU reports the extension.
#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_neon_tables_are_covered() {
    let isas: Vec<Isa> = tables().into_iter().map(|(i, _)| i).collect();
    std::println!(
        "detected isa: {}, tested tables: {isas:?}",
        crate::isa().name()
    );
    assert!(isas.contains(&Isa::Neon), "{isas:?}");
    if crate::isa() == Isa::NeonDotprod {
        assert!(isas.contains(&Isa::NeonDotprod), "{isas:?}");
    }
}

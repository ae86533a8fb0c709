//! The float types F32, F16 and BF16: one "block" is one value.

use half::{bf16, f16};

/// Copies an f32 row (for symmetry with the quantized formats).
pub fn dequantize_row_f32(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dequantize_row_f32: length mismatch");
    y.copy_from_slice(x);
}

/// Widens an f16 row to f32.
pub fn dequantize_row_f16(x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dequantize_row_f16: length mismatch");
    // half's slice conversion uses F16C when it is detected (with the `std` feature).
    half::slice::HalfFloatSliceExt::convert_to_f32_slice(x, y);
}

/// Widens a bf16 row to f32.
pub fn dequantize_row_bf16(x: &[bf16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dequantize_row_bf16: length mismatch");
    for (y, x) in y.iter_mut().zip(x) {
        *y = x.to_f32();
    }
}

/// Narrows an f32 row to f16 (round to nearest even): the inverse of [`dequantize_row_f16`].
pub fn quantize_row_f16(x: &[f32], y: &mut [f16]) {
    assert_eq!(x.len(), y.len(), "quantize_row_f16: length mismatch");
    for (y, x) in y.iter_mut().zip(x) {
        *y = f16::from_f32(*x);
    }
}

/// Narrows an f32 row to bf16 (round to nearest even): the inverse of [`dequantize_row_bf16`].
pub fn quantize_row_bf16(x: &[f32], y: &mut [bf16]) {
    assert_eq!(x.len(), y.len(), "quantize_row_bf16: length mismatch");
    for (y, x) in y.iter_mut().zip(x) {
        *y = bf16::from_f32(*x);
    }
}

/// Scalar f32 · f32 dot product, eight partial sums (so it vectorizes without fast-math).
pub fn vec_dot_f32_ref(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f32: length mismatch");
    let mut acc = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scalar f16 · f32 dot product.
pub fn vec_dot_f16_f32_ref(x: &[f16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16_f32: length mismatch");
    x.iter().zip(y).map(|(a, b)| a.to_f32() * b).sum()
}

/// Scalar bf16 · f32 dot product.
pub fn vec_dot_bf16_f32_ref(x: &[bf16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_bf16_f32: length mismatch");
    let mut acc = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a.to_f32() * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for i in 0..8 {
            acc[i] += a[i].to_f32() * b[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

//! The formats llama.cpp falls back to and the low-bit k-quants (Q5_0, Q5_1, IQ4_NL, Q2_K,
//! Q3_K): hand-computed blocks that pin ggml's bit layouts, and IQ4_NL's integer dot.

use std::vec;
use std::vec::Vec;

use bytemuck::Zeroable;
use half::f16;

use super::{
    MAX_IQ4_NL_DOT_VS_DEQUANT_ERROR, Rng, dequant, dot_f32, qm, random_kquant_row, tables,
};
use crate::GgmlType;
use crate::quant::*;

#[test]
fn dequantize_q5_hand_computed_blocks() {
    // qh bit j is weight j's fifth bit, bit j + 16 weight j + 16's (ggml's dequantize_row_q5_0).
    // Byte j = (hi << 4) | lo with lo = j, hi = 15 − j; fifth bits set on weights 1 and 17.
    let qh = (1u32 << 1 | 1 << 17).to_le_bytes();
    let qs: Vec<u8> = (0..16u8).map(|j| (15 - j) << 4 | j).collect();
    let mut raw0 = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
    raw0.extend_from_slice(&qh);
    raw0.extend_from_slice(&qs);
    let y = dequant(GgmlType::Q5_0, &raw0);
    let code = |w: usize| -> i32 {
        let (j, hi) = (w % 16, w >= 16);
        let nib = if hi { 15 - j } else { j } as i32;
        nib + if w == 1 || w == 17 { 16 } else { 0 }
    };
    for (w, v) in y.iter().enumerate() {
        assert_eq!(*v, (code(w) - 16) as f32 * 0.5, "q5_0 weight {w}");
    }
    let mut raw1 = f16::from_f32(0.5).to_bits().to_le_bytes().to_vec();
    raw1.extend_from_slice(&f16::from_f32(-1.0).to_bits().to_le_bytes());
    raw1.extend_from_slice(&qh);
    raw1.extend_from_slice(&qs);
    let y = dequant(GgmlType::Q5_1, &raw1);
    for (w, v) in y.iter().enumerate() {
        assert_eq!(*v, code(w) as f32 * 0.5 - 1.0, "q5_1 weight {w}");
    }
}

#[test]
fn dequantize_iq4_nl_hand_computed_block() {
    let mut raw = f16::from_f32(0.25).to_bits().to_le_bytes().to_vec();
    raw.extend((0..16u8).map(|j| (15 - j) << 4 | j));
    let y = dequant(GgmlType::IQ4NL, &raw);
    for j in 0..16 {
        assert_eq!(y[j], KVALUES_IQ4NL[j] as f32 * 0.25);
        assert_eq!(y[j + 16], KVALUES_IQ4NL[15 - j] as f32 * 0.25);
    }
}

#[test]
fn iq4_nl_integer_dot_matches_dequantized_dot() {
    let mut rng = Rng::new(9);
    let ty = GgmlType::IQ4NL;
    let k = 1024;
    let w = random_kquant_row(ty, k / 32, &mut rng);
    let x = rng.vec(k);
    let mut xq = vec![0u8; crate::activation_bytes(ty, k)];
    crate::quantize_activations(ty, &x, &mut xq);
    let want = dot_f32(&dequant(ty, &w), &dequant(GgmlType::Q8_0, &xq));
    for (isa, kt) in tables() {
        let mut out = [0.0f32];
        crate::matmul::matmul_rows_with(kt, &qm(ty, &w, k), 0..1, &xq, 1, &mut out);
        let err = (out[0] - want).abs() / k as f32;
        assert!(err < MAX_IQ4_NL_DOT_VS_DEQUANT_ERROR, "{isa:?}: {err}");
    }
}

#[test]
fn q2_k_and_q3_k_dequant_match_ggml_bit_layout() {
    // Weight 128 n + 32 j + l takes bits 2j.. of qs[32 n + l]; Q3_K's high bit is bit 4n + j of
    // hmask[l], and a clear bit subtracts 4 (ggml's dequantize_row_q2_K / _q3_K loops).
    let mut b2 = BlockQ2K::zeroed();
    b2.d = f16::from_f32(1.0);
    b2.dmin = f16::from_f32(0.5);
    b2.scales = [0x21; 16]; // scale 1, minimum 2
    b2.qs[32 + 5] = 0b11_00_10_00; // n = 1, l = 5: j = 1 → 2, j = 3 → 3
    let mut y = [0.0f32; 256];
    dequantize_row_q2_k(&[b2], &mut y);
    assert_eq!(y[128 + 32 + 5], 2.0 - 1.0);
    assert_eq!(y[128 + 96 + 5], 3.0 - 1.0);
    assert_eq!(y[5], -1.0);
    let mut b3 = BlockQ3K::zeroed();
    b3.d = f16::from_f32(1.0);
    // Scale of sub-block i: low nibble i / 8 of byte i % 8, high bits 2(i / 4) of byte 8 + i % 4.
    b3.scales[1] = 0x03; // sub-block 1 low = 3, sub-block 9 low = 0
    b3.scales[9] = 0b10 << 2; // sub-block 5 high bits = 2
    let sc = q3_k_scales(&b3.scales);
    assert_eq!((sc[1], sc[5], sc[9], sc[0]), (3 - 32, 32 - 32, -32, -32));
    b3.scales = [0; 12];
    b3.scales[8] = 0b11; // sub-block 0: 48 − 32 = 16
    b3.qs[3] = 0b01; // weight 3: low bits 1
    b3.hmask[3] = 1; // weight 3: high bit set (bit 4·0 + 0)
    dequantize_row_q3_k(&[b3], &mut y);
    assert_eq!(y[3], 16.0);
    assert_eq!(y[4], 16.0 * -4.0);
}

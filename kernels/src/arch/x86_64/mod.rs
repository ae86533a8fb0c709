//! x86_64 kernel tables. Each entry is a safe wrapper over an `unsafe` `#[target_feature]` kernel;
//! the table is only reachable through `arch::kernels_for`, which checks the CPU first.

use half::{bf16, f16};

use super::generic::GENERIC;
use super::{Kernels, Panel, PanelShape, Tiles};
use crate::quant::*;

mod avx2;
mod avx2_attention;
mod avx2_kquant;
mod avx2_q5_iq4;
mod avx512;
mod avx512_interleaved;
mod avx512_kquant;
mod avx512_q5_iq4;

/// AVX2 + FMA + F16C kernels (the activation quantizers still use the portable ones).
pub(crate) static AVX2: Kernels = Kernels {
    q4_0_q8_0: q4_0_q8_0_avx2,
    q4_1_q8_1: q4_1_q8_1_avx2,
    q5_0_q8_0: |x, y| {
        // SAFETY: reachable only through `AVX2`/`AVX512_VNNI`, handed out after avx2+fma+f16c
        // were detected.
        unsafe { avx2_q5_iq4::vec_dot_q5_0_q8_0(x, y) }
    },
    q5_1_q8_1: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_q5_iq4::vec_dot_q5_1_q8_1(x, y) }
    },
    iq4_nl_q8_0: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_q5_iq4::vec_dot_iq4_nl_q8_0(x, y) }
    },
    q2_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_kquant::vec_dot_q2_k_q8_k(x, y) }
    },
    q3_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_kquant::vec_dot_q3_k_q8_k(x, y) }
    },
    q4_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_kquant::vec_dot_q4_k_q8_k(x, y) }
    },
    q5_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_kquant::vec_dot_q5_k_q8_k(x, y) }
    },
    q6_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { avx2_kquant::vec_dot_q6_k_q8_k(x, y) }
    },
    bf16_f32: bf16_f32_avx2,
    q8_0_q8_0: q8_0_q8_0_avx2,
    f32_f32: f32_f32_avx2,
    f16_f32: f16_f32_avx2,
    axpy_panel: axpy_panel_avx2,
    attn_scores: |q, k, stride, s| {
        // SAFETY: reachable only through `AVX2`/`AVX512_VNNI`, handed out after avx2+fma+f16c
        // were detected.
        unsafe { avx2_attention::attention_scores(q, k, stride, s) }
    },
    attn_mix: |p, v, stride, out| {
        // SAFETY: as for `attn_scores`.
        unsafe { avx2_attention::attention_mix(p, v, stride, out) }
    },
    ..GENERIC
};

/// The AVX2 table with VNNI tiles for the 32-weight formats and VNNI k-quant dots.
pub(crate) static AVX512_VNNI: Kernels = Kernels {
    q4_1_q8_1: |x, y| q4_1_q8_1_vnni::<1, 1>([x], [y])[0][0],
    q8_0_q8_0: |x, y| q8_0_pairs::<1, 1>([x], [y])[0][0],
    q4_1_q8_1_tiles: Some(Tiles {
        // Four weight rows through one tile, or one per call: the same bits, and which is
        // faster depends on the core (see `arch::set_single_row_tile`).
        x1: |x, y| match super::single_row_tile() {
            true => q4_1_q8_1_vnni::<4, 1>(x, [y])[0],
            false => x.map(|r| q4_1_q8_1_vnni::<1, 1>([r], [y])[0][0]),
        },
        x4: q4_1_q8_1_vnni::<4, 4>,
    }),
    q8_0_q8_0_tiles: Some(Tiles {
        x1: |x, y| q8_0_pairs::<4, 1>(x, [y])[0],
        x4: q8_0_pairs::<4, 4>,
    }),
    // The fall-back formats of llama.cpp's Q4_K_M / Q5_K_M / IQ4_XS files, tiled like Q4_1.
    q5_0_q8_0: |x, y| q5_0_q8_0_vnni::<1, 1>([x], [y])[0][0],
    q5_0_q8_0_tiles: Some(Tiles {
        x1: |x, y| q5_0_q8_0_vnni::<4, 1>(x, [y])[0],
        x4: q5_0_q8_0_vnni::<4, 4>,
    }),
    q5_1_q8_1: |x, y| q5_1_q8_1_vnni::<1, 1>([x], [y])[0][0],
    q5_1_q8_1_tiles: Some(Tiles {
        x1: |x, y| q5_1_q8_1_vnni::<4, 1>(x, [y])[0],
        x4: q5_1_q8_1_vnni::<4, 4>,
    }),
    iq4_nl_q8_0: |x, y| iq4_nl_q8_0_vnni::<1, 1>([x], [y])[0][0],
    iq4_nl_q8_0_tiles: Some(Tiles {
        x1: |x, y| iq4_nl_q8_0_vnni::<4, 1>(x, [y])[0],
        x4: iq4_nl_q8_0_vnni::<4, 4>,
    }),
    // The k-quants: 64 weights a register, scales through `vpdpwssd`.
    q2_k_q8_k: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_kquant::vec_dot_q2_k_q8_k(x, y) }
    },
    q3_k_q8_k: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_kquant::vec_dot_q3_k_q8_k(x, y) }
    },
    q4_k_q8_k: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_kquant::vec_dot_q4_k_q8_k(x, y) }
    },
    q5_k_q8_k: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_kquant::vec_dot_q5_k_q8_k(x, y) }
    },
    q6_k_q8_k: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_kquant::vec_dot_q6_k_q8_k(x, y) }
    },
    q4_1x16_q8_1: Some(|x, y, out| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_interleaved::gemv_q4_1x16_q8_1(x, y, out) }
    }),
    q8_0x16_q8_0: Some(|x, y, out| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_interleaved::gemv_q8_0x16_q8_0(x, y, out) }
    }),
    quantize_q8_0: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512::quantize_row_q8_0(x, y) }
    },
    quantize_q8_1: |x, y| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512::quantize_row_q8_1(x, y) }
    },
    axpy_panel: |x, dy, dx, s| {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512::axpy_panel(x, dy, dx, s) }
    },
    ..AVX2
};

fn q4_1_q8_1_vnni<const R: usize, const M: usize>(
    x: [&[BlockQ4_1]; R],
    y: [&[BlockQ8_1]; M],
) -> [[f32; R]; M] {
    // SAFETY: reachable only through `AVX512_VNNI`, handed out after avx2, fma, f16c, avx512f,
    // avx512bw, avx512vl and avx512vnni were detected.
    unsafe { avx512::vec_dot_q4_1_q8_1_tile(x, y) }
}

fn q8_0_pairs<const R: usize, const M: usize>(
    x: [&[BlockQ8_0]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
    unsafe { avx512_q5_iq4::vec_dot_q8_0_q8_0_tile(x, y) }
}

fn q5_0_q8_0_vnni<const R: usize, const M: usize>(
    x: [&[BlockQ5_0]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
    unsafe { avx512_q5_iq4::vec_dot_q5_0_q8_0_tile(x, y) }
}

fn q5_1_q8_1_vnni<const R: usize, const M: usize>(
    x: [&[BlockQ5_1]; R],
    y: [&[BlockQ8_1]; M],
) -> [[f32; R]; M] {
    // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
    unsafe { avx512_q5_iq4::vec_dot_q5_1_q8_1_tile(x, y) }
}

fn iq4_nl_q8_0_vnni<const R: usize, const M: usize>(
    x: [&[BlockIQ4NL]; R],
    y: [&[BlockQ8_0]; M],
) -> [[f32; R]; M] {
    if has_avx512vbmi() {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`), and VBMI was
        // detected.
        unsafe { avx512_q5_iq4::vec_dot_iq4_nl_q8_0_tile_vbmi(x, y) }
    } else {
        // SAFETY: reachable only through `AVX512_VNNI` (see `q4_1_q8_1_vnni`).
        unsafe { avx512_q5_iq4::vec_dot_iq4_nl_q8_0_tile(x, y) }
    }
}

/// Whether the CPU has AVX-512 VBMI (`vpermb`), which the IQ4_NL tile uses where present; the
/// two kernels give the same bits. `std`'s detection caches its answer; without `std`, what the
/// build targets.
#[inline]
fn has_avx512vbmi() -> bool {
    #[cfg(feature = "std")]
    {
        std::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx512vbmi")
    }
}

fn q4_0_q8_0_avx2(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2::vec_dot_q4_0_q8_0(x, y) }
}

fn q4_1_q8_1_avx2(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2::vec_dot_q4_1_q8_1(x, y) }
}

fn q8_0_q8_0_avx2(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2::vec_dot_q8_0_q8_0(x, y) }
}

fn f32_f32_avx2(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2::vec_dot_f32(x, y) }
}

fn f16_f32_avx2(x: &[f16], y: &[f32]) -> f32 {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2::vec_dot_f16_f32(x, y) }
}

fn bf16_f32_avx2(x: &[bf16], y: &[f32]) -> f32 {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2_q5_iq4::vec_dot_bf16_f32(x, y) }
}

fn axpy_panel_avx2(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    // SAFETY: reachable only through `AVX2`, handed out after avx2+fma+f16c were detected.
    unsafe { avx2::axpy_panel(x, dy, dx, s) }
}

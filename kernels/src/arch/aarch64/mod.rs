//! aarch64 kernel tables. Each entry is a safe wrapper over an `unsafe` `#[target_feature]`
//! kernel; the tables are only reachable through `arch::kernels_for`, which checks the CPU first.
//!
//! The slots mirror the x86 AVX2 table: NEON for the Q4_0/Q4_1/Q8_0 dots, the f32/f16 dots and
//! the transposed product's panel axpy; the portable kernels for the rest (k-quants, bf16,
//! activation quantizers).

use half::f16;

use super::generic::GENERIC;
use super::{Kernels, Panel, PanelShape};
use crate::quant::*;

mod neon;

/// ARMv8-A AdvSIMD kernels (widening multiplies for the integer dots).
pub(crate) static NEON: Kernels = Kernels {
    q4_0_q8_0: q4_0_q8_0_neon,
    q4_1_q8_1: q4_1_q8_1_neon,
    q8_0_q8_0: q8_0_q8_0_neon,
    f32_f32: f32_f32_neon,
    f16_f32: f16_f32_neon,
    axpy_panel: axpy_panel_neon,
    ..GENERIC
};

/// The NEON table with the ARMv8.2 `sdot` integer dots.
pub(crate) static NEON_DOTPROD: Kernels = Kernels {
    q4_0_q8_0: q4_0_q8_0_sdot,
    q4_1_q8_1: q4_1_q8_1_sdot,
    q8_0_q8_0: q8_0_q8_0_sdot,
    ..NEON
};

fn q4_0_q8_0_neon(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::vec_dot_q4_0_q8_0::<false>(x, y) }
}

fn q4_1_q8_1_neon(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::vec_dot_q4_1_q8_1::<false>(x, y) }
}

fn q8_0_q8_0_neon(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::vec_dot_q8_0_q8_0::<false>(x, y) }
}

/// Entry with dotprod enabled, so the `sdot` helpers inline into it.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_0_q8_0_dotprod(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: the caller checked neon and dotprod (this function's contract).
    unsafe { neon::vec_dot_q4_0_q8_0::<true>(x, y) }
}

/// See `q4_0_q8_0_dotprod`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4_1_q8_1_dotprod(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: the caller checked neon and dotprod (this function's contract).
    unsafe { neon::vec_dot_q4_1_q8_1::<true>(x, y) }
}

/// See `q4_0_q8_0_dotprod`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn q8_0_q8_0_dotprod(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: the caller checked neon and dotprod (this function's contract).
    unsafe { neon::vec_dot_q8_0_q8_0::<true>(x, y) }
}

fn q4_0_q8_0_sdot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: reachable only through `NEON_DOTPROD`, handed out after neon+dotprod were detected.
    unsafe { q4_0_q8_0_dotprod(x, y) }
}

fn q4_1_q8_1_sdot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: reachable only through `NEON_DOTPROD`, handed out after neon+dotprod were detected.
    unsafe { q4_1_q8_1_dotprod(x, y) }
}

fn q8_0_q8_0_sdot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: reachable only through `NEON_DOTPROD`, handed out after neon+dotprod were detected.
    unsafe { q8_0_q8_0_dotprod(x, y) }
}

fn f32_f32_neon(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::vec_dot_f32(x, y) }
}

fn f16_f32_neon(x: &[f16], y: &[f32]) -> f32 {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::vec_dot_f16_f32(x, y) }
}

fn axpy_panel_neon(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::axpy_panel(x, dy, dx, s) }
}

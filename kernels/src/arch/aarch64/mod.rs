//! aarch64 kernel tables. Each entry is a safe wrapper over an `unsafe` `#[target_feature]`
//! kernel; the tables are only reachable through `arch::kernels_for`, which checks the CPU first.
//!
//! The slots mirror the x86 AVX2 table: NEON for the Q4_0/Q4_1/Q5_0/Q5_1/IQ4_NL/Q8_0 and k-quant
//! dots, the f32/f16/bf16 dots and the transposed product's panel axpy; the portable kernels for
//! the rest (activation quantizers).

use half::{bf16, f16};

use super::generic::GENERIC;
use super::{Kernels, Panel, PanelShape};
use crate::quant::*;

mod neon;
mod neon_attention;
mod neon_kquant;
mod neon_q5_iq4;

/// ARMv8-A AdvSIMD kernels (widening multiplies for the integer dots).
pub(crate) static NEON: Kernels = Kernels {
    q4_0_q8_0: q4_0_q8_0_neon,
    q4_1_q8_1: q4_1_q8_1_neon,
    q8_0_q8_0: q8_0_q8_0_neon,
    q5_0_q8_0: |x, y| {
        // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was
        // detected.
        unsafe { neon_q5_iq4::vec_dot_q5_0_q8_0::<false>(x, y) }
    },
    q5_1_q8_1: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_q5_iq4::vec_dot_q5_1_q8_1::<false>(x, y) }
    },
    iq4_nl_q8_0: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_q5_iq4::vec_dot_iq4_nl_q8_0::<false>(x, y) }
    },
    q2_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_kquant::vec_dot_q2_k_q8_k::<false>(x, y) }
    },
    q3_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_kquant::vec_dot_q3_k_q8_k::<false>(x, y) }
    },
    q4_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_kquant::vec_dot_q4_k_q8_k::<false>(x, y) }
    },
    q5_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_kquant::vec_dot_q5_k_q8_k::<false>(x, y) }
    },
    q6_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { neon_kquant::vec_dot_q6_k_q8_k::<false>(x, y) }
    },
    f32_f32: f32_f32_neon,
    f16_f32: f16_f32_neon,
    bf16_f32: bf16_f32_neon,
    axpy_panel: axpy_panel_neon,
    attn_scores: |q, k, stride, s| {
        // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was
        // detected.
        unsafe { neon_attention::attention_scores(q, k, stride, s) }
    },
    attn_mix: |p, v, stride, out| {
        // SAFETY: as for `attn_scores`.
        unsafe { neon_attention::attention_mix(p, v, stride, out) }
    },
    ..GENERIC
};

/// The NEON table with the ARMv8.2 `sdot` integer dots.
pub(crate) static NEON_DOTPROD: Kernels = Kernels {
    q4_0_q8_0: q4_0_q8_0_sdot,
    q4_1_q8_1: q4_1_q8_1_sdot,
    q8_0_q8_0: q8_0_q8_0_sdot,
    q5_0_q8_0: |x, y| {
        // SAFETY: reachable only through `NEON_DOTPROD`, handed out after neon+dotprod were
        // detected.
        unsafe { sdot_entry::q5_0_q8_0(x, y) }
    },
    q5_1_q8_1: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::q5_1_q8_1(x, y) }
    },
    iq4_nl_q8_0: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::iq4_nl_q8_0(x, y) }
    },
    q2_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::q2_k_q8_k(x, y) }
    },
    q3_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::q3_k_q8_k(x, y) }
    },
    q4_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::q4_k_q8_k(x, y) }
    },
    q5_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::q5_k_q8_k(x, y) }
    },
    q6_k_q8_k: |x, y| {
        // SAFETY: as for `q5_0_q8_0`.
        unsafe { sdot_entry::q6_k_q8_k(x, y) }
    },
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

fn bf16_f32_neon(x: &[bf16], y: &[f32]) -> f32 {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::vec_dot_bf16_f32(x, y) }
}

fn axpy_panel_neon(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    // SAFETY: reachable only through `NEON`/`NEON_DOTPROD`, handed out after neon was detected.
    unsafe { neon::axpy_panel(x, dy, dx, s) }
}

/// Entries with dotprod enabled, so the `sdot` helpers inline into them (see
/// `q4_0_q8_0_dotprod`). Each is `unsafe`: the caller must have checked neon and dotprod.
mod sdot_entry {
    use super::{neon_kquant, neon_q5_iq4};
    use crate::quant::*;

    macro_rules! entry {
        ($name:ident, $module:ident :: $kernel:ident, $w:ty, $a:ty) => {
            #[target_feature(enable = "neon,dotprod")]
            pub(super) unsafe fn $name(x: &[$w], y: &[$a]) -> f32 {
                // SAFETY: the caller checked neon and dotprod (this function's contract).
                unsafe { $module::$kernel::<true>(x, y) }
            }
        };
    }
    entry!(
        q5_0_q8_0,
        neon_q5_iq4::vec_dot_q5_0_q8_0,
        BlockQ5_0,
        BlockQ8_0
    );
    entry!(
        q5_1_q8_1,
        neon_q5_iq4::vec_dot_q5_1_q8_1,
        BlockQ5_1,
        BlockQ8_1
    );
    entry!(
        iq4_nl_q8_0,
        neon_q5_iq4::vec_dot_iq4_nl_q8_0,
        BlockIQ4NL,
        BlockQ8_0
    );
    entry!(
        q2_k_q8_k,
        neon_kquant::vec_dot_q2_k_q8_k,
        BlockQ2K,
        BlockQ8K
    );
    entry!(
        q3_k_q8_k,
        neon_kquant::vec_dot_q3_k_q8_k,
        BlockQ3K,
        BlockQ8K
    );
    entry!(
        q4_k_q8_k,
        neon_kquant::vec_dot_q4_k_q8_k,
        BlockQ4K,
        BlockQ8K
    );
    entry!(
        q5_k_q8_k,
        neon_kquant::vec_dot_q5_k_q8_k,
        BlockQ5K,
        BlockQ8K
    );
    entry!(
        q6_k_q8_k,
        neon_kquant::vec_dot_q6_k_q8_k,
        BlockQ6K,
        BlockQ8K
    );
}

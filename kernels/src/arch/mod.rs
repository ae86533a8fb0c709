//! Run-time selection of the SIMD kernels (memchr style): detect the CPU once, cache the answer
//! in an atomic, hand out a table of safe function pointers.

use core::sync::atomic::{AtomicU8, Ordering};

use half::{bf16, f16};

use crate::interleave::{BlockQ4_1x16, BlockQ8_0x16};
use crate::quant::{
    BlockIQ4NL, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K,
    BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K,
};

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
pub(crate) mod generic;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod panel;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

/// An instruction-set level the kernels can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable Rust (what the compiler makes of it for the build target).
    Generic,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX2 level plus AVX-512 F/BW/VL and VNNI (Zen 4, Ice Lake and later).
    Avx512Vnni,
    /// aarch64 AdvSIMD (every ARMv8-A core).
    Neon,
    /// aarch64 AdvSIMD plus the ARMv8.2 dot-product extension (Cortex-A55/A76 and later).
    NeonDotprod,
}

impl Isa {
    /// A short name for logs and benchmark labels.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
        }
    }
}

/// One dot-product kernel per (weight, activation) pairing, plus the float ones.
pub(crate) struct Kernels {
    pub q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    pub q4_1_q8_1: fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32,
    pub q5_0_q8_0: fn(&[BlockQ5_0], &[BlockQ8_0]) -> f32,
    pub q5_1_q8_1: fn(&[BlockQ5_1], &[BlockQ8_1]) -> f32,
    pub iq4_nl_q8_0: fn(&[BlockIQ4NL], &[BlockQ8_0]) -> f32,
    pub q8_0_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    pub q2_k_q8_k: fn(&[BlockQ2K], &[BlockQ8K]) -> f32,
    pub q3_k_q8_k: fn(&[BlockQ3K], &[BlockQ8K]) -> f32,
    pub q4_k_q8_k: fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    pub q5_k_q8_k: fn(&[BlockQ5K], &[BlockQ8K]) -> f32,
    pub q6_k_q8_k: fn(&[BlockQ6K], &[BlockQ8K]) -> f32,
    pub f32_f32: fn(&[f32], &[f32]) -> f32,
    pub f16_f32: fn(&[f16], &[f32]) -> f32,
    pub bf16_f32: fn(&[bf16], &[f32]) -> f32,
    /// `dx[i][c] += Σ_p dy[i][p] · panel[p][c]` over a panel of dequantized weight rows (the
    /// transposed product's inner loop; see [`PanelShape`]).
    pub axpy_panel: AxpyPanel,
    /// Multi-row Q4_1 · Q8_1 tiles, each result bit-identical to `q4_1_q8_1`'s; `None` where
    /// the table has none (the driver then calls `q4_1_q8_1` per row pair).
    pub q4_1_q8_1_tiles: Option<Tiles<BlockQ4_1, BlockQ8_1>>,
    /// Multi-row Q8_0 · Q8_0 tiles, each result bit-identical to `q8_0_q8_0`'s (see above).
    pub q8_0_q8_0_tiles: Option<Tiles<BlockQ8_0, BlockQ8_0>>,
    /// Multi-row Q5_0 · Q8_0 tiles, each result bit-identical to `q5_0_q8_0`'s (see above).
    pub q5_0_q8_0_tiles: Option<Tiles<BlockQ5_0, BlockQ8_0>>,
    /// Multi-row Q5_1 · Q8_1 tiles, each result bit-identical to `q5_1_q8_1`'s (see above).
    pub q5_1_q8_1_tiles: Option<Tiles<BlockQ5_1, BlockQ8_1>>,
    /// Multi-row IQ4_NL · Q8_0 tiles, each result bit-identical to `iq4_nl_q8_0`'s (see above).
    pub iq4_nl_q8_0_tiles: Option<Tiles<BlockIQ4NL, BlockQ8_0>>,
    /// Interleaved Q4_1 groups ([`crate::interleave`]) · one Q8_1 row: `out[16 g + r]`, each
    /// bit-identical to `vec_dot_q4_1_q8_1_ref`; `None` where the table has no vector kernel for
    /// the layout (decode then keeps the ggml rows).
    pub q4_1x16_q8_1: Option<GroupGemv<BlockQ4_1x16, BlockQ8_1>>,
    /// Interleaved Q8_0 groups · one Q8_0 row, each bit-identical to `vec_dot_q8_0_q8_0_ref`.
    pub q8_0x16_q8_0: Option<GroupGemv<BlockQ8_0x16, BlockQ8_0>>,
    /// One query row's attention scores over strided keys ([`crate::attention::attention_scores`]),
    /// within [`crate::attention::ATTENTION_TOLERANCE`] of the `_ref` twin.
    pub attn_scores: fn(&[f32], &[f32], usize, &mut [f32]),
    /// The probability-weighted sum of strided values ([`crate::attention::attention_mix`]).
    pub attn_mix: fn(&[f32], &[f32], usize, &mut [f32]),
    /// Activation quantizers, bit-identical to `quantize_row_q8_0_ref` / `_q8_1_ref`.
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    /// See `quantize_q8_0`.
    pub quantize_q8_1: fn(&[f32], &mut [BlockQ8_1]),
}

/// Interleaved groups of 16 weight rows (`out.len() / 16` groups of `y.len()` blocks) dotted
/// with one activation row.
pub(crate) type GroupGemv<G, A> = fn(&[G], &[A], &mut [f32]);

/// Four weight rows dotted with one activation row.
pub(crate) type Tile4x1<W, A> = fn([&[W]; 4], &[A]) -> [f32; 4];
/// Four weight rows dotted with four activation rows: `out[m][r] = w[r] · x[m]`.
pub(crate) type Tile4x4<W, A> = fn([&[W]; 4], [&[A]; 4]) -> [[f32; 4]; 4];

/// The 4-row tiles of one (weight, activation) pairing.
#[derive(Clone, Copy)]
pub(crate) struct Tiles<W: 'static, A: 'static> {
    /// Four weight rows · one activation row.
    pub x1: Tile4x1<W, A>,
    /// Four weight rows × four activation rows.
    pub x4: Tile4x4<W, A>,
}

/// Weight rows per panel of the transposed product.
pub(crate) const PANEL_ROWS: usize = 8;
/// Columns per panel row: one k-quant super-block, eight 32-blocks.
pub(crate) const PANEL_COLS: usize = 256;

/// Up to [`PANEL_ROWS`] dequantized weight-row chunks of [`PANEL_COLS`] values, cache-line
/// aligned so no vector load straddles two lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Panel(pub [[f32; PANEL_COLS]; PANEL_ROWS]);

impl Panel {
    pub(crate) const ZERO: Panel = Panel([[0.0; PANEL_COLS]; PANEL_ROWS]);
}

/// The geometry of one [`AxpyPanel`] call: `m` output rows, the first `rows` panel rows and
/// `len` columns are used; `dy` rows are `ldy` apart and `dx` rows `ldx` apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanelShape {
    pub m: usize,
    pub rows: usize,
    pub len: usize,
    pub ldy: usize,
    pub ldx: usize,
}

impl PanelShape {
    /// Panics unless the shape fits the slices (every kernel checks this first, so their
    /// `unsafe` loads stay in bounds).
    pub(crate) fn check(&self, dy: &[f32], dx: &[f32]) {
        let s = self;
        assert!(
            s.rows <= PANEL_ROWS && s.len <= PANEL_COLS,
            "axpy_panel: {s:?} exceeds the {PANEL_ROWS} × {PANEL_COLS} panel"
        );
        if s.m > 0 {
            assert!(
                s.rows <= s.ldy && (s.m - 1) * s.ldy + s.rows <= dy.len(),
                "axpy_panel: dy of {} values too short for {s:?}",
                dy.len()
            );
            assert!(
                s.len <= s.ldx && (s.m - 1) * s.ldx + s.len <= dx.len(),
                "axpy_panel: dx of {} values too short for {s:?}",
                dx.len()
            );
        }
    }
}

/// `dx[i·ldx + c] += Σ_{p < rows} dy[i·ldy + p] · panel[p][c]` for `i < m`, `c < len`, summed
/// in `p` order (so a fused kernel gives what `rows` successive fused axpys give). Rows of `dy`
/// whose `rows` coefficients are all zero may be skipped.
pub(crate) type AxpyPanel = fn(&Panel, &[f32], &mut [f32], PanelShape);

/// 0 = not detected yet, else `1 + Isa as u8`.
static DETECTED: AtomicU8 = AtomicU8::new(0);

/// Whether a product with one activation row (decode) runs its weight rows four at a time
/// through the 4 × 1 tile (`true`) or one per call (`false`, the default), where the table has
/// both: today the AVX-512 VNNI table's Q4_1 weights. The two give the same bits (the tiles'
/// contract); which is faster depends on the core's prefetchers: measured, one thread, SmolLM2
/// Q4_1 decode, Zen 4 one row per call 57 vs 43 tok/s, an AMX-capable Xeon the tile 51 vs 42.
/// So a caller that can time its products chooses ([`set_single_row_tile`]); the fused decoder
/// does, per token.
static SINGLE_ROW_TILE: AtomicU8 = AtomicU8::new(0);

/// Sets the m = 1 product's form (see [`single_row_tile_matters`]); process-wide, and results
/// do not depend on it.
pub fn set_single_row_tile(on: bool) {
    SINGLE_ROW_TILE.store(u8::from(on), Ordering::Relaxed);
}

/// Whether m = 1 products run weight rows through the 4 × 1 tile.
pub fn single_row_tile() -> bool {
    SINGLE_ROW_TILE.load(Ordering::Relaxed) != 0
}

/// Whether the active kernel table has the choice [`set_single_row_tile`] makes (otherwise
/// it changes nothing and a caller need not time it).
pub fn single_row_tile_matters() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa() == Isa::Avx512Vnni
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The best instruction set this CPU supports (detected once, then cached).
pub fn isa() -> Isa {
    match DETECTED.load(Ordering::Relaxed) {
        1 => Isa::Generic,
        2 => Isa::Avx2,
        3 => Isa::Avx512Vnni,
        n if n == 1 + Isa::Neon as u8 => Isa::Neon,
        n if n == 1 + Isa::NeonDotprod as u8 => Isa::NeonDotprod,
        _ => {
            let isa = detect();
            DETECTED.store(1 + isa as u8, Ordering::Relaxed);
            isa
        }
    }
}

fn detect() -> Isa {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                return Isa::Avx512Vnni;
            }
            return Isa::Avx2;
        }
    }
    #[cfg(all(
        not(feature = "std"),
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        return Isa::Avx2;
    }
    #[cfg(all(feature = "std", target_arch = "aarch64"))]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return Isa::NeonDotprod;
            }
            return Isa::Neon;
        }
    }
    #[cfg(all(not(feature = "std"), target_arch = "aarch64", target_feature = "neon"))]
    {
        if cfg!(target_feature = "dotprod") {
            return Isa::NeonDotprod;
        }
        return Isa::Neon;
    }
    #[allow(unreachable_code)]
    Isa::Generic
}

/// The kernel table for the best supported instruction set.
#[inline]
pub(crate) fn kernels() -> &'static Kernels {
    kernels_for(isa()).unwrap_or(&generic::GENERIC)
}

/// The kernel table for `isa`, or `None` when this CPU lacks it (so a table of `unsafe`
/// `#[target_feature]` kernels is never handed out on a CPU that cannot run them).
pub(crate) fn kernels_for(want: Isa) -> Option<&'static Kernels> {
    match want {
        Isa::Generic => Some(&generic::GENERIC),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if isa() >= Isa::Avx2 => Some(&x86_64::AVX2),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni if isa() >= Isa::Avx512Vnni => Some(&x86_64::AVX512_VNNI),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa() >= Isa::Neon => Some(&aarch64::NEON),
        #[cfg(target_arch = "aarch64")]
        Isa::NeonDotprod if isa() >= Isa::NeonDotprod => Some(&aarch64::NEON_DOTPROD),
        _ => None,
    }
}

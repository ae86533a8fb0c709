//! NEON dot products (aarch64), after ggml's `ggml-cpu/arch/arm/quants.c`.
//!
//! The integer kernels come in two flavours chosen by `SDOT`: plain NEON widening multiplies
//! (`vmull_s8` + `vpadalq_s16`, every ARMv8-A core) and the ARMv8.2 dot-product instruction
//! (`sdot`, Cortex-A55/A76 and later: Raspberry Pi 5, Jetson Orin, recent phones).
//!
//! Every function is `unsafe` only because of `#[target_feature]`: the caller must have checked
//! that the CPU has neon (and dotprod for `SDOT = true`). Slices are bounds-checked as usual.
//!
//! `sdot` and the f16 → f32 conversion `fcvtl` are written as inline `asm!`: their intrinsics
//! (`vdotq_s32`, `vcvt_f32_f16`) are still unstable in Rust.

use core::arch::aarch64::*;
use core::arch::asm;

use half::{bf16, f16};

use crate::arch::panel::{self, PanelTile};
use crate::arch::{Panel, PanelShape};
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// Four f16 bit patterns converted to f32 (`fcvtl`, base ARMv8-A: no FEAT_FP16 needed).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn f16x4(v: [f16; 4]) -> float32x4_t {
    let bits = vcreate_u16(
        u64::from(v[0].to_bits())
            | u64::from(v[1].to_bits()) << 16
            | u64::from(v[2].to_bits()) << 32
            | u64::from(v[3].to_bits()) << 48,
    );
    let out: float32x4_t;
    // SAFETY: `fcvtl` is part of base AdvSIMD (enabled on this fn); registers only, no memory.
    unsafe {
        asm!(
            "fcvtl {out:v}.4s, {inp:v}.4h",
            out = lateout(vreg) out,
            inp = in(vreg) bits,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// Eight f16 bit patterns (lanes of `h`) as two vectors of four f32.
#[inline]
#[target_feature(enable = "neon")]
fn f16x8(h: uint16x8_t) -> [float32x4_t; 2] {
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: `fcvtl`/`fcvtl2` are part of base AdvSIMD (enabled on this fn); registers only.
    unsafe {
        asm!(
            "fcvtl {lo:v}.4s, {h:v}.4h",
            "fcvtl2 {hi:v}.4s, {h:v}.8h",
            lo = lateout(vreg) lo,
            hi = lateout(vreg) hi,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    [lo, hi]
}

/// `acc + Σ` of four-byte groups of `a · b` (`sdot`).
///
/// # Safety
/// The CPU must have the dotprod extension.
#[inline]
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` is enabled on this fn and the caller checked the CPU has it; registers only.
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Σ `a[i] · b[i]` over 32 signed bytes, left in four i32 lanes.
///
/// # Safety
/// With `SDOT`, the CPU must have the dotprod extension.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_i8x32<const SDOT: bool>(
    a: [int8x16_t; 2],
    b: [int8x16_t; 2],
) -> int32x4_t {
    if SDOT {
        // SAFETY: the caller checked dotprod (this function's contract).
        unsafe { sdot(sdot(vdupq_n_s32(0), a[0], b[0]), a[1], b[1]) }
    } else {
        // |a·b| ≤ 128² fits an i16 lane; pairs of those fit the i32 accumulator many times over.
        let s = vpaddlq_s16(vmull_s8(vget_low_s8(a[0]), vget_low_s8(b[0])));
        let s = vpadalq_s16(s, vmull_high_s8(a[0], b[0]));
        let s = vpadalq_s16(s, vmull_s8(vget_low_s8(a[1]), vget_low_s8(b[1])));
        vpadalq_s16(s, vmull_high_s8(a[1], b[1]))
    }
}

/// 32 nibbles of a 16-byte block: low nibbles (weights 0..16), then high ones (16..32).
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn nibbles(qs: &[u8; 16]) -> [uint8x16_t; 2] {
    // SAFETY: `qs` is 16 readable bytes; `vld1q_u8` has no alignment requirement.
    let v = unsafe { vld1q_u8(qs.as_ptr()) };
    [vandq_u8(v, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(v)]
}

/// 32 signed bytes as two vectors.
#[inline]
#[target_feature(enable = "neon")]
pub(super) fn load_i8x32(qs: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: `qs` is 32 readable bytes, so 16 from 0 and from 16 are in bounds; no alignment.
    unsafe { [vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))] }
}

/// Q4_0 · Q8_0.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_0_q8_0<const SDOT: bool>(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_0_q8_0: block count mismatch");
    let mut acc = [vdupq_n_f32(0.0); 2];
    let off = vdupq_n_s8(8);
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        let [lo, hi] = nibbles(&a.qs);
        let qx = [
            vsubq_s8(vreinterpretq_s8_u8(lo), off),
            vsubq_s8(vreinterpretq_s8_u8(hi), off),
        ];
        // SAFETY: dotprod was checked when `SDOT` (this function's contract).
        let p = unsafe { dot_i8x32::<SDOT>(qx, load_i8x32(&b.qs)) };
        let d = f16x4([a.d, b.d, f16::ZERO, f16::ZERO]);
        let scale = vgetq_lane_f32::<0>(d) * vgetq_lane_f32::<1>(d);
        acc[i & 1] = vfmaq_n_f32(acc[i & 1], vcvtq_f32_s32(p), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// Q4_1 · Q8_1: `Σ d·d8·Σq·q8 + m·s8`.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q4_1_q8_1<const SDOT: bool>(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q4_1_q8_1: block count mismatch");
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut summs = 0.0f32;
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        // Nibbles 0..=15 are valid signed bytes, so the signed dot applies unchanged.
        let [lo, hi] = nibbles(&a.qs);
        let qx = [vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)];
        // SAFETY: dotprod was checked when `SDOT` (this function's contract).
        let p = unsafe { dot_i8x32::<SDOT>(qx, load_i8x32(&b.qs)) };
        // Lanes: a.d, a.m, b.d, b.s.
        let s = f16x4([a.d, a.m, b.d, b.s]);
        summs += vgetq_lane_f32::<1>(s) * vgetq_lane_f32::<3>(s);
        let scale = vgetq_lane_f32::<0>(s) * vgetq_lane_f32::<2>(s);
        acc[i & 1] = vfmaq_n_f32(acc[i & 1], vcvtq_f32_s32(p), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1])) + summs
}

/// Q8_0 · Q8_0.
///
/// # Safety
/// The CPU must have neon, and dotprod with `SDOT`.
#[inline]
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_q8_0_q8_0<const SDOT: bool>(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_q8_0_q8_0: block count mismatch");
    let mut acc = [vdupq_n_f32(0.0); 2];
    for (i, (a, b)) in x.iter().zip(y).enumerate() {
        // SAFETY: dotprod was checked when `SDOT` (this function's contract).
        let p = unsafe { dot_i8x32::<SDOT>(load_i8x32(&a.qs), load_i8x32(&b.qs)) };
        let d = f16x4([a.d, b.d, f16::ZERO, f16::ZERO]);
        let scale = vgetq_lane_f32::<0>(d) * vgetq_lane_f32::<1>(d);
        acc[i & 1] = vfmaq_n_f32(acc[i & 1], vcvtq_f32_s32(p), scale);
    }
    vaddvq_f32(vaddq_f32(acc[0], acc[1]))
}

/// f32 · f32 with four accumulators.
///
/// # Safety
/// The CPU must have neon.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f32: length mismatch");
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for (j, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `a` and `b` hold 16 floats, so 4 from `4 j` are in bounds; no alignment.
            let (va, vb) = unsafe {
                (
                    vld1q_f32(a.as_ptr().add(4 * j)),
                    vld1q_f32(b.as_ptr().add(4 * j)),
                )
            };
            *acc = vfmaq_f32(*acc, va, vb);
        }
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(s) + tail
}

/// f16 · f32, converting eight halves at a time with `fcvtl`/`fcvtl2`.
///
/// # Safety
/// The CPU must have neon.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_f16_f32: length mismatch");
    let bits: &[u16] = bytemuck::cast_slice(x);
    dot_halves(bits, y, |b| f16::from_bits(b).to_f32(), |h| f16x8(h))
}

/// bf16 · f32: a bf16 is the upper half of an f32, so eight widen by one 16-bit left shift
/// (`shll`/`shll2`).
///
/// # Safety
/// The CPU must have neon.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len(), "vec_dot_bf16_f32: length mismatch");
    let bits: &[u16] = bytemuck::cast_slice(x);
    dot_halves(
        bits,
        y,
        |b| bf16::from_bits(b).to_f32(),
        |h| {
            [
                vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
                vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
            ]
        },
    )
}

/// `Σ x[i] · y[i]` over 16-bit floats `x` (bit patterns) that `widen` turns into f32 eight at
/// a time (`scalar` for the tail): four FMA accumulators of four lanes.
#[inline]
#[target_feature(enable = "neon")]
fn dot_halves(
    x: &[u16],
    y: &[f32],
    scalar: impl Fn(u16) -> f32,
    widen: impl Fn(uint16x8_t) -> [float32x4_t; 2],
) -> f32 {
    let mut acc = [vdupq_n_f32(0.0); 4];
    let (xc, yc) = (x.chunks_exact(16), y.chunks_exact(16));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(&a, b)| scalar(a) * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for (j, acc) in acc.chunks_exact_mut(2).enumerate() {
            // SAFETY: `a` holds 16 halves and `b` 16 floats: 8 from `8 j` are in bounds; no
            // alignment requirement.
            let (h, b0, b1) = unsafe {
                (
                    vld1q_u16(a.as_ptr().add(8 * j)),
                    vld1q_f32(b.as_ptr().add(8 * j)),
                    vld1q_f32(b.as_ptr().add(8 * j + 4)),
                )
            };
            let [a0, a1] = widen(h);
            acc[0] = vfmaq_f32(acc[0], a0, b0);
            acc[1] = vfmaq_f32(acc[1], a1, b1);
        }
    }
    let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(s) + tail
}

/// [`crate::arch::Kernels::axpy_panel`]: the shared driver ([`panel::axpy_panel`]) over
/// [`NeonTile`], two `dx` rows at a time.
///
/// # Safety
/// The CPU must have neon.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn axpy_panel(x: &Panel, dy: &[f32], dx: &mut [f32], s: PanelShape) {
    // SAFETY: the CPU has neon (this function's contract).
    unsafe { panel::axpy_panel::<NeonTile>(x, dy, dx, s) }
}

/// The register tile of [`axpy_panel`], with 4-float vectors: two `dx` rows at a time share each
/// panel load (2 × `rows` coefficients live in registers: 32 v-registers allow it), four column
/// vectors per row in flight, each column summed in `p` order.
pub(crate) struct NeonTile;

impl PanelTile for NeonTile {
    const ROWS: usize = 2;

    // Register tiles index several arrays by the same p / r / u: index loops show the shape.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "neon")]
    unsafe fn tile<const P: usize, const R: usize>(
        x: &Panel,
        a: [[f32; P]; R],
        y: [*mut f32; R],
        len: usize,
    ) {
        const U: usize = 4;
        let mut va = [[vdupq_n_f32(0.0); P]; R];
        for r in 0..R {
            for p in 0..P {
                va[r][p] = vdupq_n_f32(a[r][p]);
            }
        }
        let mut c = 0;
        while c + 4 * U <= len {
            // SAFETY: `c + 16 <= len`: every 4-float access is inside `y[r]` (the caller's
            // contract) and inside the panel row (`len <= PANEL_COLS`); no alignment needed.
            unsafe {
                let mut acc = [[vdupq_n_f32(0.0); U]; R];
                for r in 0..R {
                    for u in 0..U {
                        acc[r][u] = vld1q_f32(y[r].add(c + 4 * u));
                    }
                }
                for p in 0..P {
                    for u in 0..U {
                        let xv = vld1q_f32(x.0[p].as_ptr().add(c + 4 * u));
                        for r in 0..R {
                            acc[r][u] = vfmaq_f32(acc[r][u], va[r][p], xv);
                        }
                    }
                }
                for r in 0..R {
                    for u in 0..U {
                        vst1q_f32(y[r].add(c + 4 * u), acc[r][u]);
                    }
                }
            }
            c += 4 * U;
        }
        while c + 4 <= len {
            // SAFETY: as above with `c + 4 <= len`.
            unsafe {
                for r in 0..R {
                    let mut acc = vld1q_f32(y[r].add(c));
                    for p in 0..P {
                        acc = vfmaq_f32(acc, va[r][p], vld1q_f32(x.0[p].as_ptr().add(c)));
                    }
                    vst1q_f32(y[r].add(c), acc);
                }
            }
            c += 4;
        }
        for c in c..len {
            for r in 0..R {
                // SAFETY: `c < len`: inside `y[r]` (the caller's contract).
                let y = unsafe { &mut *y[r].add(c) };
                for p in 0..P {
                    *y += a[r][p] * x.0[p][c];
                }
            }
        }
    }
}

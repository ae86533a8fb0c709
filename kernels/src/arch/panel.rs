//! The panel driver of the transposed product, written once: it walks the `dx` rows of one
//! [`PanelShape`] call, skips rows whose coefficients are all zero, and hands one or two rows at
//! a time to the ISA's register-tile micro-kernel ([`PanelTile`]).
//!
//! Everything here is `#[inline(always)]` and generic over the micro-kernel, so each ISA's
//! `#[target_feature]` entry point gets its own copy of the driver compiled with its features,
//! and the micro-kernel (itself `#[target_feature]`, `#[inline]`) inlines into it as it did when
//! every ISA carried its own driver.

use super::{Panel, PanelShape};

/// One ISA's register tile: `y[r][c] += Σ_{p < P} a[r][p] · panel[p][c]` for `r < R`, `c < len`,
/// each column summed in `p` order (so the result is what `P` successive fused axpys give).
pub(crate) trait PanelTile {
    /// `dx` rows one tile call updates together (1 or 2): two where the ISA has the registers
    /// for 2 × `P` broadcast coefficients beside the accumulators (32 vector registers), else one.
    const ROWS: usize;

    /// The micro-kernel, for `R <= ROWS` rows.
    ///
    /// # Safety
    /// The CPU has the ISA's features; each `y[r]` is valid for `len` reads and writes and
    /// overlaps no other; `len <= PANEL_COLS`.
    unsafe fn tile<const P: usize, const R: usize>(
        x: &Panel,
        a: [[f32; P]; R],
        y: [*mut f32; R],
        len: usize,
    );
}

/// [`crate::arch::Kernels::axpy_panel`] over `K`'s micro-kernel.
///
/// # Safety
/// The CPU has the features `K::tile` needs.
#[inline(always)]
pub(crate) unsafe fn axpy_panel<K: PanelTile>(
    x: &Panel,
    dy: &[f32],
    dx: &mut [f32],
    s: PanelShape,
) {
    s.check(dy, dx);
    // SAFETY: the caller's contract (the CPU has K's features); `s` fits the slices (checked).
    unsafe {
        match s.rows {
            1 => panel_rows::<K, 1>(x, dy, dx, s),
            2 => panel_rows::<K, 2>(x, dy, dx, s),
            3 => panel_rows::<K, 3>(x, dy, dx, s),
            4 => panel_rows::<K, 4>(x, dy, dx, s),
            5 => panel_rows::<K, 5>(x, dy, dx, s),
            6 => panel_rows::<K, 6>(x, dy, dx, s),
            7 => panel_rows::<K, 7>(x, dy, dx, s),
            8 => panel_rows::<K, 8>(x, dy, dx, s),
            _ => {}
        }
    }
}

/// The `m` rows of one panel height `P`: pairs first when `K` takes two rows, then single rows.
///
/// # Safety
/// The CPU has the features `K::tile` needs; `s` fits `dy` and `dx` (`PanelShape::check`).
#[inline(always)]
unsafe fn panel_rows<K: PanelTile, const P: usize>(
    x: &Panel,
    dy: &[f32],
    dx: &mut [f32],
    s: PanelShape,
) {
    let coefs = |i: usize| -> [f32; P] { dy[i * s.ldy..][..P].try_into().expect("P coefficients") };
    let zero = |a: &[f32; P]| a.iter().all(|&a| a == 0.0);
    let mut i = 0;
    if K::ROWS >= 2 {
        while i + 2 <= s.m {
            let a = [coefs(i), coefs(i + 1)];
            if !(zero(&a[0]) && zero(&a[1])) {
                let (lo, hi) = dx.split_at_mut((i + 1) * s.ldx);
                let y = [
                    lo[i * s.ldx..][..s.len].as_mut_ptr(),
                    hi[..s.len].as_mut_ptr(),
                ];
                // SAFETY: both rows are `len` values of `dx` (disjoint: split above), `len <=
                // PANEL_COLS` (checked by `s.check`); the CPU has K's features (our contract).
                unsafe { K::tile::<P, 2>(x, a, y, s.len) };
            }
            i += 2;
        }
    }
    while i < s.m {
        let a = coefs(i);
        if !zero(&a) {
            let y = dx[i * s.ldx..][..s.len].as_mut_ptr();
            // SAFETY: the row is `len` values of `dx`, `len <= PANEL_COLS` (`s.check`); the CPU
            // has K's features (our contract).
            unsafe { K::tile::<P, 1>(x, [a], [y], s.len) };
        }
        i += 1;
    }
}

//! GGML block formats: one file per format, each with its `#[repr(C)]` block, a size assert and
//! scalar `_ref` kernels.

use bytemuck::Pod;

pub mod float;
pub mod iq4_nl;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

pub use float::*;
pub use iq4_nl::*;
pub use q2_k::*;
pub use q3_k::*;
pub use q4_0::*;
pub use q4_1::*;
pub use q4_k::*;
pub use q5_0::*;
pub use q5_1::*;
pub use q5_k::*;
pub use q6_k::*;
pub use q8_0::*;
pub use q8_1::*;
pub use q8_k::*;

/// A GGML tensor element type, numbered as in ggml's `enum ggml_type` (and so as in GGUF files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, 32 weights a block, one f16 scale.
    Q4_0,
    /// 4-bit, 32 weights a block, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32 weights a block, one f16 scale.
    Q5_0,
    /// 5-bit, 32 weights a block, f16 scale and minimum.
    Q5_1,
    /// 8-bit, 32 weights a block, one f16 scale.
    Q8_0,
    /// 8-bit, 32 weights a block, f16 scale and f16 sum (activations for Q4_1).
    Q8_1,
    /// 2-bit k-quant, 256 weights a super-block.
    Q2K,
    /// 3-bit k-quant, 256 weights a super-block.
    Q3K,
    /// 4-bit k-quant, 256 weights a super-block.
    Q4K,
    /// 5-bit k-quant, 256 weights a super-block.
    Q5K,
    /// 6-bit k-quant, 256 weights a super-block.
    Q6K,
    /// 8-bit k-quant, 256 weights a super-block (activations for the k-quants).
    Q8K,
    /// 4-bit indices into a fixed non-linear table, 32 weights a block, one f16 scale.
    IQ4NL,
    /// bfloat16.
    BF16,
}

impl GgmlType {
    /// Every type engram knows.
    pub const ALL: [GgmlType; 16] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
        Self::Q8K,
        Self::IQ4NL,
        Self::BF16,
    ];

    /// The types a weight matrix may have: every type but the activation formats Q8_1 and
    /// Q8_K (see [`GgmlType::is_weight`]).
    pub const WEIGHTS: [GgmlType; 14] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::IQ4NL,
        Self::Q8_0,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    /// Whether a weight matrix may have this type: `false` for the activation formats Q8_1 and
    /// Q8_K, which no kernel takes as weights.
    pub const fn is_weight(self) -> bool {
        !matches!(self, Self::Q8_1 | Self::Q8K)
    }

    /// The type with ggml's numeric id, or `None` for one engram does not know.
    pub const fn from_u32(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            20 => Self::IQ4NL,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// ggml's numeric id.
    pub const fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::IQ4NL => 20,
            Self::BF16 => 30,
        }
    }

    /// ggml's name for the type (`"q4_1"`, `"q4_K"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q2K => "q2_K",
            Self::Q3K => "q3_K",
            Self::Q4K => "q4_K",
            Self::Q5K => "q5_K",
            Self::Q6K => "q6_K",
            Self::Q8K => "q8_K",
            Self::IQ4NL => "iq4_nl",
            Self::BF16 => "bf16",
        }
    }

    /// Weights per block (1 for the float types).
    pub const fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0
            | Self::Q4_1
            | Self::Q5_0
            | Self::Q5_1
            | Self::Q8_0
            | Self::Q8_1
            | Self::IQ4NL => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
            Self::IQ4NL => 18,
        }
    }

    /// Bytes of one row of `n` weights, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub const fn row_bytes(self, n: usize) -> Option<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }
}

/// Dequantizes one row of `ty` from its raw bytes into `dst` (`dst.len()` weights).
///
/// # Panics
/// When `src.len()` is not the byte size of `dst.len()` weights of `ty`: an internal contract
/// (the GGUF loader validates files before their rows reach here).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let expect = ty.row_bytes(dst.len());
    assert!(
        expect == Some(src.len()),
        "dequantize_row({}): {} bytes for {} weights, expected {:?}",
        ty.name(),
        src.len(),
        dst.len(),
        expect
    );
    let bs = ty.block_size();
    match ty {
        GgmlType::F32 => with_blocks(src, dst, bs, dequantize_row_f32),
        GgmlType::F16 => with_blocks(src, dst, bs, dequantize_row_f16),
        GgmlType::BF16 => with_blocks(src, dst, bs, dequantize_row_bf16),
        GgmlType::Q4_0 => with_blocks(src, dst, bs, dequantize_row_q4_0),
        GgmlType::Q4_1 => with_blocks(src, dst, bs, dequantize_row_q4_1),
        GgmlType::Q5_0 => with_blocks(src, dst, bs, dequantize_row_q5_0),
        GgmlType::Q5_1 => with_blocks(src, dst, bs, dequantize_row_q5_1),
        GgmlType::IQ4NL => with_blocks(src, dst, bs, dequantize_row_iq4_nl),
        GgmlType::Q8_0 => with_blocks(src, dst, bs, dequantize_row_q8_0),
        GgmlType::Q8_1 => with_blocks(src, dst, bs, dequantize_row_q8_1),
        GgmlType::Q2K => with_blocks(src, dst, bs, dequantize_row_q2_k),
        GgmlType::Q3K => with_blocks(src, dst, bs, dequantize_row_q3_k),
        GgmlType::Q4K => with_blocks(src, dst, bs, dequantize_row_q4_k),
        GgmlType::Q5K => with_blocks(src, dst, bs, dequantize_row_q5_k),
        GgmlType::Q6K => with_blocks(src, dst, bs, dequantize_row_q6_k),
        GgmlType::Q8K => with_blocks(src, dst, bs, dequantize_row_q8_k),
    }
}

/// A type [`quantize_row`] has no quantizer for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuantizeError {
    /// The k-quant weight formats (Q2_K to Q6_K) and IQ4_NL (whose quantizer searches
    /// scales against importance weights): engram reads them but cannot write them.
    Unsupported(GgmlType),
}

impl core::fmt::Display for QuantizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsupported(ty) => write!(f, "engram has no quantizer for {}", ty.name()),
        }
    }
}

impl core::error::Error for QuantizeError {}

/// Quantizes one row of `src.len()` values to `ty` into its raw bytes `dst` with the scalar
/// `_ref` quantizers: the inverse of [`dequantize_row`]. Float types are stored as native-endian
/// values (little-endian on every target engram runs on, as GGUF stores them).
///
/// # Errors
/// [`QuantizeError::Unsupported`] for the k-quant weight formats and IQ4_NL (`dst` is left
/// untouched).
///
/// # Panics
/// When `src.len()` is not a whole number of `ty` blocks or `dst.len()` is not their byte size:
/// an internal contract, as for [`dequantize_row`].
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantizeError> {
    let expect = ty.row_bytes(src.len());
    assert!(
        expect == Some(dst.len()),
        "quantize_row({}): {} bytes for {} values, expected {:?}",
        ty.name(),
        dst.len(),
        src.len(),
        expect
    );
    let bs = ty.block_size();
    match ty {
        GgmlType::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
        GgmlType::F16 => quantize_into(src, dst, bs, quantize_row_f16),
        GgmlType::BF16 => quantize_into(src, dst, bs, quantize_row_bf16),
        GgmlType::Q4_0 => quantize_into(src, dst, bs, quantize_row_q4_0_ref),
        GgmlType::Q4_1 => quantize_into(src, dst, bs, quantize_row_q4_1_ref),
        GgmlType::Q5_0 => quantize_into(src, dst, bs, quantize_row_q5_0_ref),
        GgmlType::Q5_1 => quantize_into(src, dst, bs, quantize_row_q5_1_ref),
        GgmlType::Q8_0 => quantize_into(src, dst, bs, quantize_row_q8_0_ref),
        GgmlType::Q8_1 => quantize_into(src, dst, bs, quantize_row_q8_1_ref),
        GgmlType::Q8K => quantize_into(src, dst, bs, quantize_row_q8_k_ref),
        GgmlType::Q2K
        | GgmlType::Q3K
        | GgmlType::Q4K
        | GgmlType::Q5K
        | GgmlType::Q6K
        | GgmlType::IQ4NL => {
            return Err(QuantizeError::Unsupported(ty));
        }
    }
    Ok(())
}

/// [`with_blocks`] the other way: quantizes in place when `dst` is aligned for `B`, else one
/// block at a time through the stack.
pub(crate) fn quantize_into<B: Pod>(
    src: &[f32],
    dst: &mut [u8],
    bs: usize,
    f: fn(&[f32], &mut [B]),
) {
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(blocks) => f(src, blocks),
        Err(_) => {
            for (x, raw) in src
                .chunks_exact(bs)
                .zip(dst.chunks_exact_mut(size_of::<B>()))
            {
                let mut b = B::zeroed();
                f(x, core::slice::from_mut(&mut b));
                raw.copy_from_slice(bytemuck::bytes_of(&b));
            }
        }
    }
}

/// Runs a block-slice kernel over raw bytes: casts in place when `src` is aligned for `B`, else
/// copies one block at a time with `pod_read_unaligned`.
fn with_blocks<B: Pod>(src: &[u8], dst: &mut [f32], bs: usize, f: fn(&[B], &mut [f32])) {
    match bytemuck::try_cast_slice::<u8, B>(src) {
        Ok(blocks) => f(blocks, dst),
        Err(_) => {
            for (raw, y) in src
                .chunks_exact(size_of::<B>())
                .zip(dst.chunks_exact_mut(bs))
            {
                let b: B = bytemuck::pod_read_unaligned(raw);
                f(core::slice::from_ref(&b), y);
            }
        }
    }
}

/// Rounds half away from zero, like C's `roundf` (core has no `f32::round` without std).
#[inline]
pub(crate) fn round_away(v: f32) -> i32 {
    if v >= 0.0 {
        (v + 0.5) as i32
    } else {
        (v - 0.5) as i32
    }
}

/// ggml's `nearest_int`: round half to even through the float mantissa (`|v| < 2^22`).
#[inline]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let t = (v + 12_582_912.0).to_bits();
    (t & 0x007F_FFFF) as i32 - 0x0040_0000
}

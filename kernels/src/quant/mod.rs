//! GGML block formats: one file per format, each with its `#[repr(C)]` block, a size assert and
//! scalar `_ref` kernels.

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
    /// 8-bit, 32 weights a block, one f16 scale.
    Q8_0,
    /// 8-bit, 32 weights a block, f16 scale and f16 sum (activations for Q4_1).
    Q8_1,
    /// 4-bit k-quant, 256 weights a super-block.
    Q4K,
    /// 5-bit k-quant, 256 weights a super-block.
    Q5K,
    /// 6-bit k-quant, 256 weights a super-block.
    Q6K,
    /// 8-bit k-quant, 256 weights a super-block (activations for the k-quants).
    Q8K,
    /// bfloat16.
    BF16,
}

impl GgmlType {
    /// Every type engram knows.
    pub const ALL: [GgmlType; 11] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
        Self::Q8K,
        Self::BF16,
    ];

    /// The type with ggml's numeric id, or `None` for one engram does not know.
    pub const fn from_u32(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
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
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
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
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q4K => "q4_K",
            Self::Q5K => "q5_K",
            Self::Q6K => "q6_K",
            Self::Q8K => "q8_K",
            Self::BF16 => "bf16",
        }
    }

    /// Weights per block (1 for the float types).
    pub const fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// Bytes of one row of `n` weights, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub const fn row_bytes(self, n: usize) -> Option<usize> {
        let bs = self.block_size();
        if n % bs != 0 {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }
}

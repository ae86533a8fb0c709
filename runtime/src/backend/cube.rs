//! The quantized linear layer on burn's CubeCL backend (wgpu, CUDA): GGUF blocks read on the GPU.
//!
//! Each weight's ggml blocks are uploaded once per device, exactly as they are stored in the
//! model file (padded to whole 32-bit words), and kept there for the life of the [`QWeight`]
//! (`device_blocks.rs`); no call uploads them again and nothing is dequantized whole. Two CubeCL
//! kernels decode the blocks while they multiply: `y = x · Wᵀ` (one thread per output element,
//! a dot product over its weight row) and the transposed `dx = dy · W` for the backward pass
//! (one thread per input element, a column walk over the rows).
//!
//! Unlike the CPU kernels, activations stay f32 here (no q8 quantization of `x`), so the forward
//! matches the CPU backend within its activation-quantization tolerance and the transposed
//! product matches it up to summation order.
//!
//! Formats: Q4_0, Q4_1 and Q8_0 (what the model's projections use). Any other type panics with
//! the weight's name: the loader would have to dequantize such a weight for this backend.

use burn::backend::Cube;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;
use engram_kernels::GgmlType;

use super::qlinear::{Product, QWeight, QuantLinearOps};

/// Block formats the kernels decode, as comptime tags.
const FMT_Q4_0: u32 = 0;
const FMT_Q4_1: u32 = 1;
const FMT_Q8_0: u32 = 2;

/// The comptime format tag and block size in bytes of a weight type the kernels decode.
fn format_of(weight: &QWeight) -> (u32, usize) {
    match weight.ty() {
        GgmlType::Q4_0 => (FMT_Q4_0, 18),
        GgmlType::Q4_1 => (FMT_Q4_1, 20),
        GgmlType::Q8_0 => (FMT_Q8_0, 34),
        other => panic!(
            "quant_linear {}: {other:?} has no GPU kernel (Q4_0, Q4_1, Q8_0 only)",
            weight.name()
        ),
    }
}

/// The byte at offset `off` of the block stream.
#[cube]
fn byte_at(w: &[u32], off: usize) -> u32 {
    (w[off / 4] >> ((off % 4) as u32 * 8)) & 0xFF
}

/// The f16 at the even offset `off` (never straddles a word), widened to f32. Normal and
/// subnormal values; ggml scales are never inf or NaN.
#[cube]
fn f16_at(w: &[u32], off: usize) -> f32 {
    let h = (w[off / 4] >> ((off % 4) as u32 * 8)) & 0xFFFF;
    let exp = (h >> 10) & 0x1F;
    let mant = h & 0x3FF;
    let mut mag = mant as f32 * 0.000000059604645; // subnormal: mant · 2⁻²⁴
    if exp != 0 {
        mag = f32::reinterpret(((exp + 112) << 23) | (mant << 13));
    }
    let mut value = mag;
    if (h >> 15) != 0 {
        value = -mag;
    }
    value
}

/// Weight `e` (0..32) of block `block`, decoded as ggml's `dequantize_row_*` does.
#[cube]
fn weight_at(
    w: &[u32],
    block: usize,
    e: usize,
    #[comptime] fmt: u32,
    #[comptime] block_bytes: usize,
) -> f32 {
    let base = block * block_bytes;
    // Starts as the block scale d; each format multiplies in its quant (and adds Q4_1's min).
    let mut value = f16_at(w, base);
    if comptime![fmt == FMT_Q8_0] {
        // d, then 32 signed bytes.
        let b = byte_at(w, base + 2 + e);
        let mut q = b as f32;
        if b >= 128 {
            q -= 256.0;
        }
        value *= q;
    } else {
        // Q4_0: d, 16 bytes of nibbles. Q4_1: d, m, 16 bytes. Low nibbles are weights 0..16,
        // high nibbles 16..32.
        let qs = if comptime![fmt == FMT_Q4_1] {
            base + 4
        } else {
            base + 2
        };
        let mut q = byte_at(w, qs + e % 16);
        if e >= 16 {
            q >>= 4;
        }
        let q = (q & 0xF) as f32;
        if comptime![fmt == FMT_Q4_1] {
            value = value * q + f16_at(w, base + 2);
        } else {
            value *= q - 8.0;
        }
    }
    value
}

/// `y (m × n_out) = x (m × n_in) · Wᵀ`: one thread per element of `y`.
#[cube(launch)]
fn quant_linear_kernel(
    w: &[u32],
    x: &[f32],
    y: &mut [f32],
    n_in: u32,
    n_out: u32,
    total: u32,
    #[comptime] fmt: u32,
    #[comptime] block_bytes: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos >= total as usize {
        terminate!();
    }
    let n_in = n_in as usize;
    let i = pos / n_out as usize;
    let r = pos % n_out as usize;
    let blocks = n_in / 32;
    let mut acc = 0.0f32;
    for b in 0..blocks {
        let x_base = i * n_in + b * 32;
        for e in 0..32usize {
            acc += weight_at(w, r * blocks + b, e, fmt, block_bytes) * x[x_base + e];
        }
    }
    y[pos] = acc;
}

/// `dx (m × n_in) = dy (m × n_out) · W`: one thread per element of `dx`.
#[cube(launch)]
fn quant_linear_t_kernel(
    w: &[u32],
    dy: &[f32],
    dx: &mut [f32],
    n_in: u32,
    n_out: u32,
    total: u32,
    #[comptime] fmt: u32,
    #[comptime] block_bytes: usize,
) {
    let pos = ABSOLUTE_POS;
    if pos >= total as usize {
        terminate!();
    }
    let n_in = n_in as usize;
    let n_out = n_out as usize;
    let i = pos / n_in;
    let j = pos % n_in;
    let blocks = n_in / 32;
    let mut acc = 0.0f32;
    for r in 0..n_out {
        acc += dy[i * n_out + r] * weight_at(w, r * blocks + j / 32, j % 32, fmt, block_bytes);
    }
    dx[pos] = acc;
}

fn launch(x: CubeTensor, weight: &QWeight, product: Product) -> CubeTensor {
    let (k_in, k_out) = product.dims(weight);
    assert_eq!(
        x.dtype,
        DType::F32,
        "quant_linear {}: the GPU kernels take f32 activations",
        weight.name()
    );
    let (fmt, block_bytes) = format_of(weight);
    let x = into_contiguous(x);
    let blocks = weight.device_blocks().handle_for(weight.bytes(), &x);

    let mut shape: Shape = x.meta.shape().clone();
    let m = shape.num_elements() / k_in;
    let last = shape.num_dims() - 1;
    shape[last] = k_out;
    let total = m * k_out;
    let total_u32 = u32::try_from(total).expect("quant_linear output fits 32-bit indexing");
    let words = weight.bytes().len().div_ceil(4);

    let client = x.client.clone();
    let out = CubeTensor::new_contiguous(
        client.clone(),
        x.device.clone(),
        shape,
        client.empty(total * size_of::<f32>()),
        DType::F32,
    );
    if total == 0 {
        return out;
    }
    let cube_dim = CubeDim::new(&client, total);
    let cube_count = calculate_cube_count_elemwise(&client, total, cube_dim);
    // SAFETY: `blocks` was created from exactly `words` u32 words (padded_words), `x` is a
    // contiguous f32 tensor of `m * k_in` elements and `out` was allocated with `total` f32s; the
    // kernels index only below those lengths (`pos < total`, rows < n_out, columns < n_in).
    let (w_arg, x_arg, out_arg) = unsafe {
        (
            BufferArg::from_raw_parts(blocks, words),
            BufferArg::from_raw_parts(x.handle.clone(), m * k_in),
            BufferArg::from_raw_parts(out.handle.clone(), total),
        )
    };
    let (n_in, n_out) = (weight.n_in() as u32, weight.n_out() as u32);
    match product {
        Product::Forward => quant_linear_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            w_arg,
            x_arg,
            out_arg,
            n_in,
            n_out,
            total_u32,
            fmt,
            block_bytes,
        ),
        Product::Transposed => quant_linear_t_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            w_arg,
            x_arg,
            out_arg,
            n_in,
            n_out,
            total_u32,
            fmt,
            block_bytes,
        ),
    }
    out
}

impl QuantLinearOps for Cube {
    fn quant_linear(x: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        launch(x, &weight, Product::Forward)
    }

    fn quant_linear_t(dy: FloatTensor<Self>, weight: QWeight) -> FloatTensor<Self> {
        launch(dy, &weight, Product::Transposed)
    }
}

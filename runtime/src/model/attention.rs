//! Grouped-query causal attention, in f32 or with llama.cpp's f16 operand rounding.

use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, FloatDType, Tensor, TensorData, activation, module::attention};

/// Numeric precision of the attention products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionPrecision {
    /// Everything in f32 (burn's fused attention kernel).
    #[default]
    F32,
    /// The operands of both products rounded to f16, sums in f32: what llama.cpp's default CPU
    /// path computes (f16 KV cache; queries converted to f16 for `K·Q`; softmax probabilities
    /// converted to f16 for `V·P`). The default, because llama.cpp's outputs define a correct
    /// forward pass.
    F16,
}

/// Causal attention of `q` `(b, h, t, dh)` over `k`, `v` `(b, hkv, s, dh)` where query head
/// `i` reads key/value head `i / n_rep` (llama.cpp's and Hugging Face's grouping). The last `t`
/// keys are this step's; the `s - t` before them come from the cache.
pub(crate) fn grouped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    n_rep: usize,
    precision: AttentionPrecision,
) -> Tensor<4> {
    let [b, h, t, dh] = q.dims();
    let [_, hkv, s, _] = k.dims();
    // One query per head sees every key: fold the group's heads into the query rows so the cached
    // keys and values are read as they are, without repeating them per head.
    let (q, causal) = if t == 1 {
        (q.reshape([b, hkv, n_rep, dh]), false)
    } else {
        (q, true)
    };
    let (k, v) = if t == 1 || n_rep == 1 {
        (k, v)
    } else {
        let repeat = |x: Tensor<4>| {
            x.reshape([b, hkv, 1, s, dh])
                .expand([b, hkv, n_rep, s, dh])
                .reshape([b, h, s, dh])
        };
        (repeat(k), repeat(v))
    };
    let out = match precision {
        AttentionPrecision::F32 => {
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: causal,
            };
            attention(q, k, v, None, None, options)
        }
        AttentionPrecision::F16 => attention_f16_operands(q, k, v, causal),
    };
    out.reshape([b, h, t, dh])
}

/// `softmax(round16(q) · round16(k)ᵀ / √dh + causal) → round16 → · round16(v)`, f32 sums.
fn attention_f16_operands(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, causal: bool) -> Tensor<4> {
    let [_, _, t, dh] = q.dims();
    let s = k.dims()[2];
    let scores = round_f16(q).matmul(round_f16(k).swap_dims(2, 3)) * (1.0 / (dh as f64).sqrt());
    let scores = if causal && t > 1 {
        let device = scores.device();
        scores.mask_fill(causal_mask(t, s, &device), f32::NEG_INFINITY)
    } else {
        scores
    };
    round_f16(activation::softmax(scores, 3)).matmul(round_f16(v))
}

/// `true` where query `i` (of the last `t` positions) must not see key `j`: `j > i + s - t`.
fn causal_mask(t: usize, s: usize, device: &burn::tensor::Device) -> Tensor<4, Bool> {
    let offset = s - t;
    let mask: Vec<bool> = (0..t)
        .flat_map(|i| (0..s).map(move |j| j > i + offset))
        .collect();
    Tensor::<2, Bool>::from_data(TensorData::new(mask, [t, s]), device).reshape([1, 1, t, s])
}

/// Rounds every value to the nearest f16 (kept in an f32 tensor).
fn round_f16<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::F16).cast(FloatDType::F32)
}

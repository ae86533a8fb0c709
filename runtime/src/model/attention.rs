//! Grouped-query causal attention, in f32 or with llama.cpp's f16 operand rounding, with the
//! options some families add: a score scale other than `1/√d_head`, a sliding window, a
//! soft-cap on the scores.

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

/// How one layer's scores are formed beyond `q · kᵀ` and the causal mask.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ScoreOptions {
    /// Factor on `q · kᵀ` (`1/√d_head` unless the queries were scaled before).
    pub scale: f32,
    /// Query at position `p` sees keys `p - window + 1 ..= p` only.
    pub window: Option<usize>,
    /// Scores become `c · tanh(s / c)` before the softmax.
    pub softcap: Option<f32>,
}

impl ScoreOptions {
    /// Plain causal attention scaled by `1/√d_head`.
    pub fn causal(d_head: usize) -> Self {
        Self {
            scale: 1.0 / (d_head as f32).sqrt(),
            window: None,
            softcap: None,
        }
    }
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
    options: ScoreOptions,
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
    let plain = options.window.is_none() && options.softcap.is_none();
    let default_scale = options.scale == 1.0 / (dh as f32).sqrt();
    let out = match precision {
        AttentionPrecision::F32 if plain && default_scale => {
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: causal,
            };
            attention(q, k, v, None, None, options)
        }
        AttentionPrecision::F32 => explicit_attention(q, k, v, t, options, false),
        AttentionPrecision::F16 => explicit_attention(q, k, v, t, options, true),
    };
    out.reshape([b, h, t, dh])
}

/// `softmax(cap(q · kᵀ · scale) + mask) · v` with the operands of both products rounded to f16
/// (`round`, f32 sums) or not. `t` is the number of query positions (the rows of `q` are `t`
/// positions, or `n_rep` heads of the one position when `t` is 1).
fn explicit_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    t: usize,
    options: ScoreOptions,
    round: bool,
) -> Tensor<4> {
    let r = |x: Tensor<4>| if round { round_f16(x) } else { x };
    let s = k.dims()[2];
    let mut scores = r(q).matmul(r(k).swap_dims(2, 3)) * options.scale as f64;
    if let Some(c) = options.softcap {
        scores = (scores / c as f64).tanh() * c as f64;
    }
    if t > 1 || options.window.is_some_and(|w| w < s) {
        let [b, h, rows, _] = scores.dims();
        let device = scores.device();
        let mask = causal_mask(t, s, options.window, &device);
        let mask = if rows == t {
            mask
        } else {
            mask.expand([1, 1, rows, s])
        };
        scores = scores.mask_fill(mask.expand([b, h, rows, s]), f32::NEG_INFINITY);
    }
    r(activation::softmax(scores, 3)).matmul(r(v))
}

/// `true` where query `i` (of the last `t` positions) must not see key `j`: `j > i + s - t`,
/// or, with a window `w`, `i + s - t - j >= w` (llama.cpp's `is_masked_swa`).
fn causal_mask(
    t: usize,
    s: usize,
    window: Option<usize>,
    device: &burn::tensor::Device,
) -> Tensor<4, Bool> {
    let offset = s - t;
    let mask: Vec<bool> = (0..t)
        .flat_map(|i| {
            (0..s).map(move |j| j > i + offset || window.is_some_and(|w| i + offset - j >= w))
        })
        .collect();
    Tensor::<2, Bool>::from_data(TensorData::new(mask, [t, s]), device).reshape([1, 1, t, s])
}

/// Rounds every value to the nearest f16 (kept in an f32 tensor).
fn round_f16<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::F16).cast(FloatDType::F32)
}

//! Tiny seeded random-weight GGUF files of every model family the graph runs, written with
//! llama.cpp's tensor names and metadata keys: the inputs of the architecture parity test
//! (`tests/arch_parity.rs`) and of `scripts/arch_reference.py`, which runs llama.cpp on the same
//! bytes. Same case and seed, same bytes: the reference JSON records each file's sha256 and
//! the test checks it, so the committed reference keeps meaning what it says.
//!
//! Each case turns on its family's options at sizes small enough to run in milliseconds but
//! where they matter: windows of 4 positions under prompts of 12-24, soft-caps near the size of
//! the values they cap, head widths that differ from `d_model / n_head`, RoPE factors and
//! scales that change every frequency.

use std::f64::consts::PI;

use engram_kernels::GgmlType;
use engram_runtime::format::{GgufBuilder, MetaValue};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::synthetic::{BYTE_VOCAB, byte_tokenizer_metadata, encode};

/// The merges the arch models' vocabulary adds to the byte vocabulary, in rank order; each
/// makes one token (ids [`BYTE_VOCAB`] on). llama.cpp refuses a BPE vocabulary without a
/// merges array of strings, and these make its tokenizer do some work.
const MERGES: [(&str, &str); 4] = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")];

/// Vocabulary size of the arch models: the bytes, `<|endoftext|>` and one token per merge.
pub const ARCH_VOCAB: usize = BYTE_VOCAB + MERGES.len();

/// [`byte_tokenizer_metadata`] with [`MERGES`] and their tokens.
fn arch_tokenizer_metadata() -> Vec<(String, MetaValue)> {
    let mut meta = byte_tokenizer_metadata();
    for (key, value) in &mut meta {
        let MetaValue::Array(items) = value else {
            continue;
        };
        match key.as_str() {
            "tokenizer.ggml.tokens" => items.extend(
                MERGES
                    .iter()
                    .map(|(a, b)| MetaValue::Str(format!("{a}{b}"))),
            ),
            "tokenizer.ggml.token_type" => items.extend(MERGES.iter().map(|_| MetaValue::I32(1))),
            "tokenizer.ggml.merges" => {
                *items = MERGES
                    .iter()
                    .map(|(a, b)| MetaValue::Str(format!("{a} {b}")))
                    .collect()
            }
            _ => {}
        }
    }
    meta
}

/// One synthetic model: a family with its options on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchCase {
    /// `llama` with Llama 3's RoPE frequency factors (`rope_freqs.weight`) and an untied output.
    Llama3,
    /// `llama` with linear RoPE scaling (`rope.scaling.type` linear, factor 4).
    LlamaLinear,
    /// `llama` with a Mistral-style `attention.sliding_window` of 4, which llama.cpp does not
    /// apply to this family (and engram, following it, does not either).
    MistralSwa,
    /// `qwen2`: Q, K and V biases, tied embeddings.
    Qwen2,
    /// `qwen3`: q/k RMSNorm, 4 heads of 32 on a 64-wide model.
    Qwen3,
    /// `phi3`: fused `attn_qkv` and gate-and-up `ffn_up`, untied output.
    Phi3,
    /// `gemma2`: embedding scale, post-norms, GELU, attention and logit soft-caps, a 4-position
    /// window on layer 0.
    Gemma2,
    /// `gemma3`: q/k norms, post-norms, GELU, a window on layers 0-4 with RoPE base 10000 and
    /// linear scaling 8 on layer 5.
    Gemma3,
    /// `phi3` with LongRoPE: `rope_factors_long/short.weight`, an original context of 32 under
    /// the trained 64, and the converter's `rope.scaling.attn_factor`; run at
    /// [`ARCH_RUN_CONTEXT`] (above 32), so the long factors.
    Phi3LongRope,
    /// `phi3` with LongRoPE trained to 512 positions from an original 256, run at
    /// [`ARCH_RUN_CONTEXT`] (64, which llama.cpp rounds up to 256: not above 256): the short
    /// factors, with the long context's attention factor.
    Phi3ShortRope,
    /// `llama` with YaRN (`rope.scaling.type` yarn, factor 4, original context 32 under the
    /// trained 64), RoPE base 500 so that the ramp between extrapolated and interpolated
    /// frequencies spans frequencies 0-3 of 8.
    LlamaYarn,
}

/// Every case, in the order of the reference JSON.
pub const ARCH_CASES: [ArchCase; 11] = [
    ArchCase::Llama3,
    ArchCase::LlamaLinear,
    ArchCase::MistralSwa,
    ArchCase::Qwen2,
    ArchCase::Qwen3,
    ArchCase::Phi3,
    ArchCase::Gemma2,
    ArchCase::Gemma3,
    ArchCase::Phi3LongRope,
    ArchCase::Phi3ShortRope,
    ArchCase::LlamaYarn,
];

/// Cases also written with quantized weights (the reference JSON's key is `{name}.{type}`):
/// llama.cpp then quantizes activations to its `vec_dot_type`, as engram does.
pub const QUANT_CASES: [(ArchCase, GgmlType); 3] = [
    (ArchCase::Qwen2, GgmlType::Q8_0),
    (ArchCase::Phi3, GgmlType::Q4_1),
    (ArchCase::Gemma2, GgmlType::Q4_0),
];

/// The file stem and JSON key of `case` with weights of type `ty`: `qwen2`, `qwen2.q8_0`.
pub fn case_key(case: ArchCase, ty: GgmlType) -> String {
    match ty {
        GgmlType::F32 => case.name().to_string(),
        _ => format!("{}.{}", case.name(), ty.name().to_lowercase()),
    }
}

/// The seed of every case's weights.
pub const ARCH_SEED: u64 = 17;

/// The context the reference runs llama.cpp at (`n_ctx` 64, which llama.cpp rounds up to 256)
/// and the parity test runs engram at
/// ([`engram_runtime::model::llama::Llama::set_context_length`]): what picks phi3's long or
/// short RoPE factors.
pub const ARCH_RUN_CONTEXT: usize = 64;

impl ArchCase {
    /// The case's name (file stem and JSON key): `llama3`, `qwen2`, ...
    pub fn name(self) -> &'static str {
        match self {
            ArchCase::Llama3 => "llama3",
            ArchCase::LlamaLinear => "llama_linear",
            ArchCase::MistralSwa => "mistral_swa",
            ArchCase::Qwen2 => "qwen2",
            ArchCase::Qwen3 => "qwen3",
            ArchCase::Phi3 => "phi3",
            ArchCase::Gemma2 => "gemma2",
            ArchCase::Gemma3 => "gemma3",
            ArchCase::Phi3LongRope => "phi3_longrope",
            ArchCase::Phi3ShortRope => "phi3_shortrope",
            ArchCase::LlamaYarn => "llama_yarn",
        }
    }

    /// `general.architecture`.
    pub fn architecture(self) -> &'static str {
        match self {
            ArchCase::Llama3
            | ArchCase::LlamaLinear
            | ArchCase::MistralSwa
            | ArchCase::LlamaYarn => "llama",
            ArchCase::Qwen2 => "qwen2",
            ArchCase::Qwen3 => "qwen3",
            ArchCase::Phi3 | ArchCase::Phi3LongRope | ArchCase::Phi3ShortRope => "phi3",
            ArchCase::Gemma2 => "gemma2",
            ArchCase::Gemma3 => "gemma3",
        }
    }

    /// The case named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        ARCH_CASES.into_iter().find(|c| c.name() == name)
    }
}

/// Sizes shared by the cases (a case may change the head width).
const D_MODEL: usize = 64;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const D_FF: usize = 96;
const N_CTX: usize = 64;

/// The GGUF file of `case` with weights of type `ty` (F32 or a type the kernels quantize to)
/// drawn from `seed`, and [`crate::synthetic::byte_tokenizer`]'s vocabulary with a few merges
/// ([`ARCH_VOCAB`] tokens).
///
/// # Panics
/// When `ty` has no reference quantizer.
pub fn arch_gguf(case: ArchCase, ty: GgmlType, seed: u64) -> Vec<u8> {
    arch_gguf_with_vocab(case, ty, seed, arch_tokenizer_metadata(), ARCH_VOCAB)
}

/// [`arch_gguf`] with the `tokenizer.*` metadata `vocab` of `n_vocab` tokens instead.
pub fn arch_gguf_with_vocab(
    case: ArchCase,
    ty: GgmlType,
    seed: u64,
    vocab: Vec<(String, MetaValue)>,
    n_vocab: usize,
) -> Vec<u8> {
    let arch = case.architecture();
    let phi3 = matches!(
        case,
        ArchCase::Phi3 | ArchCase::Phi3LongRope | ArchCase::Phi3ShortRope
    );
    // (trained, original) context of the LongRoPE cases.
    let long_rope = match case {
        ArchCase::Phi3LongRope => Some((N_CTX, 32)),
        ArchCase::Phi3ShortRope => Some((512, 256)),
        _ => None,
    };
    let n_ctx = long_rope.map_or(N_CTX, |(n, _)| n);
    let gemma = matches!(case, ArchCase::Gemma2 | ArchCase::Gemma3);
    let n_layer = if case == ArchCase::Gemma3 { 6 } else { 2 };
    let d_head = match case {
        ArchCase::Qwen3 | ArchCase::Gemma2 | ArchCase::Gemma3 => 32,
        _ => D_MODEL / N_HEAD,
    };
    let (dq, dkv) = (N_HEAD * d_head, N_HEAD_KV * d_head);
    let k = |key: &str| format!("{arch}.{key}");
    let u = |v: usize| MetaValue::U32(v as u32);
    let f = MetaValue::F32;
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            MetaValue::Str(arch.into()),
        ),
        (k("context_length"), u(n_ctx)),
        (k("embedding_length"), u(D_MODEL)),
        (k("block_count"), u(n_layer)),
        (k("feed_forward_length"), u(D_FF)),
        (k("attention.head_count"), u(N_HEAD)),
        (k("attention.head_count_kv"), u(N_HEAD_KV)),
        (k("attention.layer_norm_rms_epsilon"), f(1e-6)),
    ];
    if d_head != D_MODEL / N_HEAD {
        meta.push((k("attention.key_length"), u(d_head)));
        meta.push((k("attention.value_length"), u(d_head)));
    }
    let rope_base: f32 = match case {
        ArchCase::Llama3 => 500_000.0,
        ArchCase::Qwen2 | ArchCase::Qwen3 | ArchCase::Gemma3 => 1_000_000.0,
        ArchCase::LlamaYarn => 500.0,
        _ => 10_000.0,
    };
    meta.push((k("rope.freq_base"), f(rope_base)));
    match case {
        ArchCase::LlamaLinear => {
            meta.push((k("rope.scaling.type"), MetaValue::Str("linear".into())));
            meta.push((k("rope.scaling.factor"), f(4.0)));
        }
        ArchCase::MistralSwa => meta.push((k("attention.sliding_window"), u(4))),
        ArchCase::Gemma2 => {
            meta.push((k("attention.sliding_window"), u(4)));
            meta.push((k("attn_logit_softcapping"), f(1.5)));
            meta.push((k("final_logit_softcapping"), f(4.0)));
        }
        ArchCase::Gemma3 => {
            meta.push((k("attention.sliding_window"), u(4)));
            meta.push((k("rope.scaling.type"), MetaValue::Str("linear".into())));
            meta.push((k("rope.scaling.factor"), f(8.0)));
        }
        ArchCase::LlamaYarn => {
            meta.push((k("rope.scaling.type"), MetaValue::Str("yarn".into())));
            meta.push((k("rope.scaling.factor"), f(4.0)));
            meta.push((k("rope.scaling.original_context_length"), u(32)));
        }
        _ => {}
    }
    if let Some((trained, orig)) = long_rope {
        // What llama.cpp's converter writes for Phi-3's `longrope` (`su`): the original
        // context and √(1 + ln s / ln orig) for s = trained / orig; no scaling type or factor.
        let s = trained as f64 / orig as f64;
        let attn = (1.0 + s.ln() / (orig as f64).ln()).sqrt();
        meta.push((k("rope.scaling.attn_factor"), f(attn as f32)));
        meta.push((k("rope.scaling.original_context_length"), u(orig)));
    }
    meta.extend(vocab);
    let mut b = meta
        .into_iter()
        .fold(GgufBuilder::new(), |b, (key, v)| b.metadata(key, v));

    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (case as u64) << 32);
    let mut values = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect()
    };
    let mut matrix = |b: GgufBuilder, name: String, n_in: usize, n_out: usize| {
        let w = values(n_in * n_out, 1.7 / (n_in as f32).sqrt());
        b.tensor(name, &[n_in, n_out], ty, &encode(&w, ty))
    };
    let vector = |b: GgufBuilder, name: String, v: Vec<f32>| {
        b.tensor(name, &[v.len()], GgmlType::F32, &encode(&v, GgmlType::F32))
    };
    let mut rng_norm = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1) ^ (case as u64) << 32);
    let mut norm = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| 1.0 + 0.25 * rng_norm.random_range(-1.0f32..1.0))
            .collect()
    };

    b = matrix(b, "token_embd.weight".into(), D_MODEL, n_vocab);
    for i in 0..n_layer {
        let n = |stem: &str| format!("blk.{i}.{stem}.weight");
        b = vector(b, n("attn_norm"), norm(D_MODEL));
        b = vector(b, n("ffn_norm"), norm(D_MODEL));
        if phi3 {
            b = matrix(b, n("attn_qkv"), D_MODEL, dq + 2 * dkv);
            b = matrix(b, n("ffn_up"), D_MODEL, 2 * D_FF);
        } else {
            b = matrix(b, n("attn_q"), D_MODEL, dq);
            b = matrix(b, n("attn_k"), D_MODEL, dkv);
            b = matrix(b, n("attn_v"), D_MODEL, dkv);
            b = matrix(b, n("ffn_gate"), D_MODEL, D_FF);
            b = matrix(b, n("ffn_up"), D_MODEL, D_FF);
        }
        b = matrix(b, n("attn_output"), dq, D_MODEL);
        b = matrix(b, n("ffn_down"), D_FF, D_MODEL);
        if case == ArchCase::Qwen2 {
            let bias = |i: usize, stem: &str| format!("blk.{i}.{stem}.bias");
            b = vector(
                b,
                bias(i, "attn_q"),
                norm(dq).iter().map(|x| x - 1.0).collect(),
            );
            b = vector(
                b,
                bias(i, "attn_k"),
                norm(dkv).iter().map(|x| x - 1.0).collect(),
            );
            b = vector(
                b,
                bias(i, "attn_v"),
                norm(dkv).iter().map(|x| x - 1.0).collect(),
            );
        }
        if matches!(case, ArchCase::Qwen3 | ArchCase::Gemma3) {
            b = vector(b, n("attn_q_norm"), norm(d_head));
            b = vector(b, n("attn_k_norm"), norm(d_head));
        }
        if gemma {
            b = vector(b, n("post_attention_norm"), norm(D_MODEL));
            b = vector(b, n("post_ffw_norm"), norm(D_MODEL));
        }
    }
    b = vector(b, "output_norm.weight".into(), norm(D_MODEL));
    if phi3 || matches!(case, ArchCase::Llama3 | ArchCase::MistralSwa) {
        b = matrix(b, "output.weight".into(), D_MODEL, n_vocab);
    }
    if case == ArchCase::Llama3 {
        b = vector(
            b,
            "rope_freqs.weight".into(),
            llama3_factors(d_head, rope_base),
        );
    }
    if long_rope.is_some() {
        // Long factors 1 to 6.25 (Phi-3's run 1 to ~50), short ones 1 to 1.35: either set in
        // place of the other moves every logit.
        let half = d_head / 2;
        let long = (0..half).map(|i| 1.0 + 0.75 * i as f32).collect();
        let short = (0..half).map(|i| 1.0 + 0.05 * i as f32).collect();
        b = vector(b, "rope_factors_long.weight".into(), long);
        b = vector(b, "rope_factors_short.weight".into(), short);
    }
    b.build()
}

/// The `rope_scaling` behind [`ArchCase::Llama3`]'s `rope_freqs.weight`: `(factor,
/// low_freq_factor, high_freq_factor, original_max_position_embeddings)`, an original context of
/// 32 positions so that the tiny model's frequencies fall in all three bands.
pub const LLAMA3_ROPE_SCALING: (f64, f64, f64, f64) = (8.0, 1.0, 4.0, 32.0);

/// Llama 3's RoPE frequency factors, as llama.cpp's converter computes them from
/// [`LLAMA3_ROPE_SCALING`].
fn llama3_factors(d_head: usize, base: f32) -> Vec<f32> {
    let (factor, low, high, old_ctx) = LLAMA3_ROPE_SCALING;
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..d_head / 2)
        .map(|i| {
            let freq = (base as f64).powf(-2.0 * i as f64 / d_head as f64);
            let wavelen = 2.0 * PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

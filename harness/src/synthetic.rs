//! Small random llama models written as GGUF files, for tests that need a model whose every
//! number they control (gradient checks, error paths) without the real 135M file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engram_kernels::GgmlType;
use engram_kernels::quantize_row;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use engram_runtime::burn::tensor::Device;
use engram_runtime::cpu::CpuContext;
use engram_runtime::format::{GgufBuilder, MetaValue};
use engram_runtime::model::attention::AttentionPrecision;
use engram_runtime::model::llama::Llama;
use engram_runtime::model::pretokenize::{ByteMap, PreTokenizer};
use engram_runtime::model::tokenizer::{SpecialTokens, Tokenizer};
use engram_runtime::model_file::ModelFile;

/// Vocabulary size of [`byte_tokenizer`]: `<|endoftext|>` and the 256 bytes.
pub const BYTE_VOCAB: usize = 257;

/// The byte vocabulary's tokens (GPT-2 byte characters) and token types.
fn byte_vocab() -> (Vec<String>, Vec<i32>) {
    let map = ByteMap::new();
    let mut tokens = vec!["<|endoftext|>".to_string()];
    tokens.extend((0..=255u8).map(|b| map.char_of(b).to_string()));
    let mut types = vec![3]; // control
    types.extend([1; 256]); // normal
    (tokens, types)
}

/// A byte-level tokenizer for synthetic models: `<|endoftext|>` (id 0, end of sequence) and one
/// token per byte (id `1 + byte`), no merges, so any text encodes to one token a byte. Pair it
/// with a [`TinyLlamaSpec`] whose `n_vocab` is at least [`BYTE_VOCAB`]; the tests that need text
/// (model editing, prompts) use it on the tiny models. [`tiny_llama_gguf_with_bytes`] writes the
/// same tokenizer into the file, for code that loads the tokenizer from it (the CLI).
pub fn byte_tokenizer() -> Tokenizer {
    let (tokens, types) = byte_vocab();
    Tokenizer::from_parts(tokens, types, Vec::new(), BYTE_SPECIAL, PreTokenizer::Gpt2)
        .expect("a well-formed byte vocabulary")
}

/// Writes [`tiny_llama_gguf`] of `spec` to `dir/tiny.gguf` and returns the path.
pub fn write_tiny_llama(dir: &Path, spec: &TinyLlamaSpec, ty: GgmlType, seed: u64) -> PathBuf {
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf(spec, ty, seed))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// The model at `path` on `device` under autodiff, with f32 activations into the quantized
/// layers and f32 attention: the function the GPU kernels compute, so a CPU run and a GPU run
/// of it differ only in summation order (the cross-device tests compare them).
pub fn load_f32_paths(path: &Path, device: &Device) -> Llama {
    let file = ModelFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cpu = Arc::new(CpuContext::new(2).expect("a CPU context"));
    let mut model = Llama::load(&file, &device.clone().autodiff(), cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    model.set_f32_activations(true);
    model.set_attention_precision(AttentionPrecision::F32);
    model
}

/// The byte vocabulary's special tokens: `<|endoftext|>` ends sequences and pads them.
const BYTE_SPECIAL: SpecialTokens = SpecialTokens {
    bos: None,
    eos: 0,
    unk: None,
    pad: Some(0),
    add_bos: false,
    add_eos: false,
};

/// The shape of a synthetic llama model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TinyLlamaSpec {
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Model width (a multiple of 32 for the block types).
    pub d_model: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Feed-forward width (a multiple of 32).
    pub d_ff: usize,
    /// Trained context.
    pub n_ctx: usize,
}

impl Default for TinyLlamaSpec {
    fn default() -> Self {
        Self {
            n_vocab: 64,
            d_model: 64,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            d_ff: 96,
            n_ctx: 64,
        }
    }
}

/// A GGUF file of a llama model with random weights of type `ty` (F32, Q8_0, Q4_0 or Q4_1),
/// unit norms, and no tokenizer beyond the vocabulary size.
///
/// # Panics
/// On another `ty`, or widths that are not multiples of 32.
pub fn tiny_llama_gguf(spec: &TinyLlamaSpec, ty: GgmlType, seed: u64) -> Vec<u8> {
    tiny_llama(spec, ty, seed, Vec::new(), &[]).build()
}

/// [`tiny_llama_gguf`] with [`byte_tokenizer`]'s vocabulary in the file's `tokenizer.ggml.*`
/// metadata, so [`Engine`](engram_runtime::engine::Engine) and the CLI load it like a real model.
///
/// # Panics
/// When `spec.n_vocab` is not [`BYTE_VOCAB`], and as [`tiny_llama_gguf`].
pub fn tiny_llama_gguf_with_bytes(spec: &TinyLlamaSpec, ty: GgmlType, seed: u64) -> Vec<u8> {
    tiny_llama_gguf_with_bytes_and(spec, ty, seed, &[])
}

/// [`tiny_llama_gguf_with_bytes`] with the metadata values in `overrides` replacing (or adding
/// to) the ones it writes: crafted models for error-path tests (`llama.context_length` 0, a
/// NaN `rms_eps`, a tokenizer shorter than the vocabulary, ...). The tensors keep `spec`'s
/// shapes.
///
/// # Panics
/// When `spec.n_vocab` is not [`BYTE_VOCAB`], and as [`tiny_llama_gguf`].
pub fn tiny_llama_gguf_with_bytes_and(
    spec: &TinyLlamaSpec,
    ty: GgmlType,
    seed: u64,
    overrides: &[(&str, MetaValue)],
) -> Vec<u8> {
    assert_eq!(spec.n_vocab, BYTE_VOCAB, "the byte tokenizer's vocabulary");
    tiny_llama(spec, ty, seed, byte_tokenizer_metadata(), overrides).build()
}

/// [`byte_tokenizer`] as `tokenizer.ggml.*` metadata entries (a `gpt2` vocabulary with the
/// `gpt-2` pre-tokenizer, no merges, `<|endoftext|>` ending and padding sequences).
pub fn byte_tokenizer_metadata() -> Vec<(String, MetaValue)> {
    let (tokens, types) = byte_vocab();
    let s = |v: &str| MetaValue::Str(v.into());
    vec![
        ("tokenizer.ggml.model".to_string(), s("gpt2")),
        ("tokenizer.ggml.pre".to_string(), s("gpt-2")),
        (
            "tokenizer.ggml.tokens".to_string(),
            MetaValue::Array(tokens.into_iter().map(MetaValue::Str).collect()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            MetaValue::Array(Vec::new()),
        ),
        (
            "tokenizer.ggml.eos_token_id".to_string(),
            MetaValue::U32(BYTE_SPECIAL.eos),
        ),
        (
            "tokenizer.ggml.padding_token_id".to_string(),
            MetaValue::U32(BYTE_SPECIAL.pad.expect("the byte vocabulary pads")),
        ),
    ]
}

fn tiny_llama(
    spec: &TinyLlamaSpec,
    ty: GgmlType,
    seed: u64,
    mut meta: Vec<(String, MetaValue)>,
    overrides: &[(&str, MetaValue)],
) -> GgufBuilder {
    let s = spec;
    assert!(
        s.d_model.is_multiple_of(32) && s.d_ff.is_multiple_of(32),
        "widths must be multiples of 32"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d_kv = s.d_model / s.n_head * s.n_head_kv;
    let arch = |k: &str| format!("llama.{k}");
    let u = |v: usize| MetaValue::U32(v as u32);
    meta.splice(
        0..0,
        [
            (
                "general.architecture".to_string(),
                MetaValue::Str("llama".into()),
            ),
            (arch("vocab_size"), u(s.n_vocab)),
            (arch("context_length"), u(s.n_ctx)),
            (arch("embedding_length"), u(s.d_model)),
            (arch("block_count"), u(s.n_layer)),
            (arch("feed_forward_length"), u(s.d_ff)),
            (arch("attention.head_count"), u(s.n_head)),
            (arch("attention.head_count_kv"), u(s.n_head_kv)),
            (
                arch("attention.layer_norm_rms_epsilon"),
                MetaValue::F32(1e-5),
            ),
            (arch("rope.freq_base"), MetaValue::F32(10_000.0)),
        ],
    );
    for (key, value) in overrides {
        match meta.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => meta.push((key.to_string(), value.clone())),
        }
    }
    let mut b = meta
        .into_iter()
        .fold(GgufBuilder::new(), |b, (k, v)| b.metadata(k, v));
    let mut matrix = |b: GgufBuilder, name: String, n_in: usize, n_out: usize| {
        let scale = 1.0 / (n_in as f32).sqrt();
        let w: Vec<f32> = (0..n_in * n_out)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale * 1.7)
            .collect();
        b.tensor(name, &[n_in, n_out], ty, &encode(&w, ty))
    };
    b = matrix(b, "token_embd.weight".into(), s.d_model, s.n_vocab);
    let ones = |n: usize| encode(&vec![1.0; n], GgmlType::F32);
    for i in 0..s.n_layer {
        let n = |stem: &str| format!("blk.{i}.{stem}.weight");
        b = b.tensor(
            n("attn_norm"),
            &[s.d_model],
            GgmlType::F32,
            &ones(s.d_model),
        );
        b = b.tensor(n("ffn_norm"), &[s.d_model], GgmlType::F32, &ones(s.d_model));
        b = matrix(b, n("attn_q"), s.d_model, s.d_model);
        b = matrix(b, n("attn_k"), s.d_model, d_kv);
        b = matrix(b, n("attn_v"), s.d_model, d_kv);
        b = matrix(b, n("attn_output"), s.d_model, s.d_model);
        b = matrix(b, n("ffn_gate"), s.d_model, s.d_ff);
        b = matrix(b, n("ffn_up"), s.d_model, s.d_ff);
        b = matrix(b, n("ffn_down"), s.d_ff, s.d_model);
    }
    b = b.tensor(
        "output_norm.weight",
        &[s.d_model],
        GgmlType::F32,
        &ones(s.d_model),
    );
    b
}

/// `x` encoded as `ty` rows (the kernels' reference quantizers).
pub(crate) fn encode(x: &[f32], ty: GgmlType) -> Vec<u8> {
    let len = ty
        .row_bytes(x.len())
        .unwrap_or_else(|| panic!("{} values are not whole {} blocks", x.len(), ty.name()));
    let mut y = vec![0u8; len];
    quantize_row(ty, x, &mut y).unwrap_or_else(|e| panic!("synthetic models: {e}"));
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_is_one_token_a_byte_and_round_trips() {
        let tok = byte_tokenizer();
        assert_eq!(tok.vocab_size(), BYTE_VOCAB);
        let text = "The capital of Éire is\n Dublin.";
        let ids = tok.encode(text, false);
        assert_eq!(ids.len(), text.len());
        assert!(
            ids.iter()
                .zip(text.bytes())
                .all(|(&id, b)| id == 1 + u32::from(b))
        );
        assert_eq!(tok.decode(&ids), text);
        assert_eq!(tok.eos(), 0);
        assert_eq!(tok.encode("<|endoftext|>", true), [0]);
    }

    #[test]
    fn the_byte_tokenizer_in_the_file_is_the_same_tokenizer() {
        let spec = TinyLlamaSpec {
            n_vocab: BYTE_VOCAB,
            ..TinyLlamaSpec::default()
        };
        let bytes = tiny_llama_gguf_with_bytes(&spec, GgmlType::Q8_0, 3);
        let gguf = engram_runtime::format::Gguf::parse(&bytes).unwrap();
        let from_file = Tokenizer::from_gguf(&gguf).unwrap();
        let text = "Paris, 2 × 3\n";
        assert_eq!(
            from_file.encode(text, false),
            byte_tokenizer().encode(text, false)
        );
        assert_eq!(from_file.eos(), 0);
    }
}

//! Small vocabularies of each tokenizer kind llama.cpp ships, written into tiny models
//! ([`crate::synthetic_arch`]) so that llama.cpp loads them: a SentencePiece (`llama`)
//! vocabulary with scores and `<0xXX>` byte fall-back, and byte-level BPE vocabularies with the
//! `llama-bpe` and `qwen2` pre-tokenizers. `scripts/arch_reference.py` records llama.cpp's
//! token ids for [`TOKENIZER_TEXTS`] on each; `tests/tokenizer_parity.rs` compares engram's.

use engram_kernels::GgmlType;
use engram_runtime::format::MetaValue;
use engram_runtime::model::pretokenize::ByteMap;

use crate::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf_with_vocab};

/// A tokenizer kind under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabCase {
    /// `tokenizer.ggml.model = "llama"`: SentencePiece pieces with scores, byte fall-back,
    /// BOS added, `▁` space prefix.
    Spm,
    /// `gpt2` with `tokenizer.ggml.pre = "llama-bpe"` (Llama 3): digits in threes.
    LlamaBpe,
    /// `gpt2` with `tokenizer.ggml.pre = "qwen2"`: single digits.
    Qwen2Bpe,
}

/// Every case, in the order of the reference JSON.
pub const VOCAB_CASES: [VocabCase; 3] = [VocabCase::Spm, VocabCase::LlamaBpe, VocabCase::Qwen2Bpe];

/// Texts whose ids the parity test compares: spaces, contractions in both cases, digit runs,
/// newlines, punctuation runs, characters outside the vocabulary, special-token text.
pub const TOKENIZER_TEXTS: [&str; 10] = [
    "The capital of France is Paris.",
    "the theory: in 1234567 years, 42 apples",
    "  leading spaces and trailing  ",
    "I'M sure it's DON'T, we'll see\n\nnext line\r\n\tindented",
    "naïve café, 日本語 and ünïcödé!",
    "x = f(a_b) + 3.14159 // comment",
    "",
    "<s>inside</s> and <|endoftext|> text",
    "!!!???...\n\n\n",
    "a  b   c    d",
];

impl VocabCase {
    /// The case's name (file stem and JSON key).
    pub fn name(self) -> &'static str {
        match self {
            VocabCase::Spm => "spm",
            VocabCase::LlamaBpe => "llama_bpe",
            VocabCase::Qwen2Bpe => "qwen2_bpe",
        }
    }
}

/// A tiny `llama` model (as [`ArchCase::Llama3`]) carrying `case`'s vocabulary.
pub fn vocab_gguf(case: VocabCase) -> Vec<u8> {
    vocab_gguf_with(case, Vec::new())
}

/// [`vocab_gguf`] with `extra` metadata beside the vocabulary (e.g. a
/// `tokenizer.chat_template`).
pub fn vocab_gguf_with(case: VocabCase, extra: Vec<(String, MetaValue)>) -> Vec<u8> {
    let (mut meta, n) = match case {
        VocabCase::Spm => spm_vocab(),
        VocabCase::LlamaBpe => bpe_vocab("llama-bpe"),
        VocabCase::Qwen2Bpe => bpe_vocab("qwen2"),
    };
    meta.extend(extra);
    arch_gguf_with_vocab(ArchCase::Llama3, GgmlType::F32, ARCH_SEED, meta, n)
}

fn strings(items: impl IntoIterator<Item = String>) -> MetaValue {
    MetaValue::Array(items.into_iter().map(MetaValue::Str).collect())
}

fn ints(items: impl IntoIterator<Item = i32>) -> MetaValue {
    MetaValue::Array(items.into_iter().map(MetaValue::I32).collect())
}

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then single characters and longer pieces
/// scored so that longer pieces win (as a trained SentencePiece model's log-probabilities
/// roughly do), with one piece scored below its parts' alternative to make order matter.
fn spm_vocab() -> (Vec<(String, MetaValue)>, usize) {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let chars = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:!?'()=+/_-ïé";
    for (i, c) in chars.chars().enumerate() {
        tokens.push(c.to_string());
        types.push(1);
        scores.push(-10.0 - i as f32 * 0.01);
    }
    let pieces = [
        ("▁t", -5.0),
        ("he", -5.5),
        ("▁the", -3.0),
        ("▁The", -3.2),
        ("▁cap", -6.0),
        ("ital", -6.5),
        ("▁capital", -4.0),
        ("▁of", -4.5),
        ("in", -5.2),
        ("▁in", -5.1),
        ("or", -6.2),
        ("▁th", -7.5),
        ("eory", -8.0),
        ("▁a", -5.8),
        ("an", -6.1),
        ("▁and", -4.9),
        ("12", -7.0),
        ("123", -6.9),
        ("▁▁", -6.6),
        ("'s", -6.3),
        ("ar", -6.4),
        ("is", -6.45),
        ("▁is", -5.05),
        ("▁Par", -7.7),
        ("▁Paris", -6.8),
    ];
    for (p, score) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(score);
    }
    let n = tokens.len();
    let meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::Str("llama".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strings(tokens)),
        (
            "tokenizer.ggml.scores".to_string(),
            MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
        ),
        ("tokenizer.ggml.token_type".to_string(), ints(types)),
        (
            "tokenizer.ggml.unknown_token_id".to_string(),
            MetaValue::U32(0),
        ),
        ("tokenizer.ggml.bos_token_id".to_string(), MetaValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".to_string(), MetaValue::U32(2)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            MetaValue::Bool(true),
        ),
        (
            "tokenizer.ggml.add_eos_token".to_string(),
            MetaValue::Bool(false),
        ),
    ];
    (meta, n)
}

/// `<|endoftext|>` (control, EOS), the 256 GPT-2 byte characters, and merges that cross the
/// boundaries the pre-tokenizers differ on (digit runs, newline runs, contractions).
fn bpe_vocab(pre: &str) -> (Vec<(String, MetaValue)>, usize) {
    let map = ByteMap::new();
    let mut tokens = vec!["<|begin_of_text|>".to_string(), "<|endoftext|>".to_string()];
    let mut types = vec![3, 3];
    for b in 0..=255u8 {
        tokens.push(map.char_of(b).to_string());
        types.push(1);
    }
    let merges = [
        ("Ġ", "t"),
        ("h", "e"),
        ("Ġt", "he"),
        ("i", "n"),
        ("Ġ", "a"),
        ("1", "2"),
        ("12", "3"),
        ("4", "5"),
        ("Ċ", "Ċ"),
        ("'", "s"),
        ("'", "M"),
        ("Ġ", "Ġ"),
        ("Ġ", "c"),
        ("Ġc", "ap"),
        ("a", "p"),
        ("o", "r"),
        ("e", "ory"),
        ("o", "ry"),
        ("r", "y"),
        ("Ġ", "("),
        ("!", "!"),
        ("ĊĊ", "Ċ"),
    ];
    let mut merge_strings = Vec::new();
    for (a, b) in merges {
        let merged = format!("{a}{b}");
        if !tokens.contains(&merged) {
            tokens.push(merged);
            types.push(1);
        }
        merge_strings.push(format!("{a} {b}"));
    }
    let n = tokens.len();
    let meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), MetaValue::Str(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), strings(tokens)),
        ("tokenizer.ggml.token_type".to_string(), ints(types)),
        ("tokenizer.ggml.merges".to_string(), strings(merge_strings)),
        ("tokenizer.ggml.bos_token_id".to_string(), MetaValue::U32(0)),
        ("tokenizer.ggml.eos_token_id".to_string(), MetaValue::U32(1)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            MetaValue::Bool(true),
        ),
    ];
    (meta, n)
}

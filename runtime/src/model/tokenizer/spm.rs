//! SentencePiece-style vocabularies (`tokenizer.ggml.model = "llama"`), as llama.cpp's
//! `llm_tokenizer_spm` encodes them: spaces become `▁` (with one prepended to text that
//! follows a special token or starts the input, when `add_space_prefix`), the text is split
//! into UTF-8 characters, and adjacent symbols merge while their concatenation is a token,
//! highest score first (leftmost on ties). A final symbol that is not a token falls back to
//! its bytes' `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::{GgufError, PreTokenizer, SpecialTokens, TokenType, Tokenizer, TokenizerError, owned};
use crate::format::{Gguf, MetaValue};

/// The SentencePiece parts of a vocabulary.
#[derive(Clone, Debug)]
pub(super) struct Spm {
    /// Merge priority of each token (`tokenizer.ggml.scores`).
    pub(super) scores: Vec<f32>,
    /// The `<0xXX>` token of each byte, if the vocabulary has it.
    pub(super) byte_tokens: [Option<u32>; 256],
    /// Prepend `▁` to text at the start or after a special token
    /// (`tokenizer.ggml.add_space_prefix`, default true).
    pub(super) add_space_prefix: bool,
}

/// The escaped space, U+2581.
pub(super) const SPACE: char = '▁';

impl Spm {
    /// Byte tokens by their `<0xXX>` text.
    pub(super) fn new(tokens: &[String], scores: Vec<f32>, add_space_prefix: bool) -> Spm {
        let mut byte_tokens = [None; 256];
        for (id, text) in tokens.iter().enumerate() {
            if let Some(hex) = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>'))
                && hex.len() == 2
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                byte_tokens[usize::from(b)] = Some(id as u32);
            }
        }
        Spm {
            scores,
            byte_tokens,
            add_space_prefix,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Symbol {
    start: usize, // byte offset in the escaped text
    len: usize,   // bytes; 0 once merged into its left neighbour
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of two adjacent symbols into a token.
#[derive(Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    /// The heap's top is the highest score, then the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Tokenizer {
    /// A SentencePiece tokenizer from the vocabulary's parts: `scores` one per token,
    /// `<0xXX>` byte tokens found by their text, `add_space_prefix` as
    /// `tokenizer.ggml.add_space_prefix` says (llama.cpp's default: true).
    pub fn from_spm_parts(
        tokens: Vec<String>,
        token_types: Vec<i32>,
        scores: Vec<f32>,
        special: SpecialTokens,
        add_space_prefix: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        if scores.len() != tokens.len() {
            return Err(TokenizerError::ScoreCount {
                tokens: tokens.len(),
                scores: scores.len(),
            });
        }
        let mut t = Self::from_parts(tokens, token_types, Vec::new(), special, PreTokenizer::Gpt2)?;
        let spm = Spm::new(&t.tokens, scores, add_space_prefix);
        t.pieces.clear();
        t.piece_ends.clear();
        for (id, (text, ty)) in t.tokens.iter().zip(&t.types).enumerate() {
            match ty {
                TokenType::Byte => t.pieces.extend(
                    spm.byte_tokens
                        .iter()
                        .position(|&b| b == Some(id as u32))
                        .map(|b| b as u8),
                ),
                TokenType::Normal | TokenType::Undefined => {
                    let unescaped = text.replace(SPACE, " ");
                    t.pieces.extend_from_slice(unescaped.as_bytes());
                }
                TokenType::Unused => {}
                _ => t.pieces.extend_from_slice(text.as_bytes()),
            }
            t.piece_ends.push(t.pieces.len());
        }
        t.byte_tokens = [None; 256];
        t.spm = Some(spm);
        Ok(t)
    }

    /// [`Tokenizer::from_gguf`] of a `"llama"` (SentencePiece) vocabulary, with llama.cpp's
    /// defaults: BOS 1, EOS 2, unknown 0, BOS added, space prefix added.
    pub(super) fn spm_from_gguf(gguf: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let tokens = owned(gguf.get_str_array("tokenizer.ggml.tokens")?);
        let types = match gguf.get("tokenizer.ggml.token_type") {
            Some(_) => gguf.get_i32_array("tokenizer.ggml.token_type")?,
            None => Vec::new(),
        };
        let key = "tokenizer.ggml.scores";
        let scores = match gguf.get(key) {
            Some(v) => v
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .map(|item| match item {
                            MetaValue::F32(x) => Some(*x),
                            _ => None,
                        })
                        .collect::<Option<Vec<f32>>>()
                })
                .ok_or_else(|| GgufError::WrongType {
                    key: key.to_owned(),
                    expected: "f32 array",
                    found: v.type_name().to_string(),
                })?,
            None => vec![0.0; tokens.len()],
        };
        let id = |key: &str, default: u32| match gguf.get(key) {
            Some(_) => gguf.get_u32(key),
            None => Ok(default),
        };
        let flag = |key: &str, default: bool| match gguf.get(key) {
            Some(MetaValue::Bool(b)) => *b,
            _ => default,
        };
        let special = SpecialTokens {
            bos: Some(id("tokenizer.ggml.bos_token_id", 1)?),
            eos: id("tokenizer.ggml.eos_token_id", 2)?,
            unk: Some(id("tokenizer.ggml.unknown_token_id", 0)?),
            pad: match gguf.get("tokenizer.ggml.padding_token_id") {
                Some(_) => Some(gguf.get_u32("tokenizer.ggml.padding_token_id")?),
                None => None,
            },
            add_bos: flag("tokenizer.ggml.add_bos_token", true),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
        };
        let add_space_prefix = flag("tokenizer.ggml.add_space_prefix", true);
        Self::from_spm_parts(tokens, types, scores, special, add_space_prefix)
    }

    /// Encodes one text fragment (no special tokens in it); `space_prefix` prepends `▁`.
    pub(super) fn spm_text(&self, spm: &Spm, text: &str, space_prefix: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if space_prefix {
            escaped.push(SPACE);
        }
        escaped.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
        let text = escaped.as_str();
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (at, c))| Symbol {
                start: at,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: Some(i + 1),
            })
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.next = None;
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: usize, right: usize| -> Option<Bigram> {
            let (l, r) = (symbols[left], symbols[right]);
            let piece = &text[l.start..r.start + r.len];
            let id = self.token_id(piece)?;
            Some(Bigram {
                score: spm.scores[id as usize],
                left,
                right,
                len: piece.len(),
            })
        };
        for i in 1..symbols.len() {
            queue.extend(bigram(&symbols, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // Stale: a side merged since the pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.left].next = r.next;
            symbols[b.right].len = 0;
            if let Some(next) = r.next {
                symbols[next].prev = Some(b.left);
            }
            if let Some(prev) = l.prev {
                queue.extend(bigram(&symbols, prev, b.left));
            }
            if let Some(next) = r.next {
                queue.extend(bigram(&symbols, b.left, next));
            }
        }
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match self.token_id(piece) {
                Some(id) => out.push(id),
                // Merged symbols are tokens by construction; a lone character that is not
                // falls back to its bytes.
                None => out.extend(
                    piece
                        .bytes()
                        .filter_map(|b| spm.byte_tokens[usize::from(b)].or(self.special.unk)),
                ),
            }
            at = s.next;
        }
    }
}

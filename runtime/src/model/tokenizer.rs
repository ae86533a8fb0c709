//! GPT-2 byte-level BPE and SentencePiece-style vocabularies (`spm.rs`), driven entirely by
//! GGUF metadata and matching llama.cpp's ids.
//!
//! Encoding, as llama.cpp does it (`src/llama-vocab.cpp`):
//! 1. special-token partition: control, user-defined and unknown tokens are cut out of the
//!    text, longest first (control and unknown only when `parse_special`);
//! 2. pre-tokenization of the remaining text into words ([`PreTokenizer`]);
//! 3. per word, BPE: start from one symbol per byte and repeatedly merge the adjacent pair
//!    with the lowest merge rank (leftmost on ties) until no pair has a rank.
//!
//! Decoding maps each vocabulary character back to the byte it stands for; control,
//! user-defined and unknown tokens decode to their text.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::ops::Range;

pub use super::pretokenize::PreTokenizer;
use super::pretokenize::{ByteMap, Classifier};
use crate::format::{Gguf, GgufError};
pub use stream::StreamDecoder;

mod bpe;
mod spm;
mod stream;

use bpe::{Merge, Scratch};
use spm::Spm;

/// A token's type, as `tokenizer.ggml.token_type` stores it (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// 0, or any value outside the known ones.
    Undefined,
    /// 1: an ordinary BPE token.
    Normal,
    /// 2: the unknown token.
    Unknown,
    /// 3: a control token such as `<|im_start|>`.
    Control,
    /// 4: a user-defined token, always matched as a whole in text.
    UserDefined,
    /// 5: an unused slot.
    Unused,
    /// 6: a byte token (SentencePiece vocabularies; never produced by BPE here).
    Byte,
}

impl TokenType {
    /// The type for a stored value; unknown values read as [`TokenType::Undefined`], as in
    /// llama.cpp.
    pub fn from_i32(value: i32) -> TokenType {
        match value {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Whether special-token partitioning cuts this type out of text.
    fn is_special(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }
}

/// Special token ids and whether encoding adds them (`tokenizer.ggml.*_token_id`,
/// `tokenizer.ggml.add_*_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence, if the vocabulary has one.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: u32,
    /// The unknown token, if any.
    pub unk: Option<u32>,
    /// The padding token, if any.
    pub pad: Option<u32>,
    /// Whether [`Tokenizer::encode`] prepends `bos`.
    pub add_bos: bool,
    /// Whether [`Tokenizer::encode`] appends `eos`.
    pub add_eos: bool,
}

/// Why a tokenizer could not be built from a vocabulary.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` names a tokenizer other than `"gpt2"` and `"llama"`.
    #[error(
        "tokenizer.ggml.model {0:?} is not supported (engram reads \"gpt2\" byte-level BPE and \
         \"llama\" SentencePiece vocabularies)"
    )]
    UnsupportedModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer engram does not implement.
    #[error(
        "tokenizer.ggml.pre {0:?} is not supported (engram implements \"gpt-2\", \"smollm\", \
         \"llama-bpe\", \"qwen2\")"
    )]
    UnsupportedPreTokenizer(String),
    /// `tokenizer.ggml.scores` does not have one entry per token.
    #[error("{scores} token scores for {tokens} tokens")]
    ScoreCount {
        /// Number of tokens.
        tokens: usize,
        /// Number of scores.
        scores: usize,
    },
    /// The vocabulary has no tokens, or more than `u32` can index.
    #[error("vocabulary size {0} is out of range")]
    VocabSize(usize),
    /// `tokenizer.ggml.token_type` does not have one entry per token.
    #[error("{types} token types for {tokens} tokens")]
    TokenTypeCount {
        /// Number of tokens.
        tokens: usize,
        /// Number of token types.
        types: usize,
    },
    /// A merge that is not two space-separated parts.
    #[error("merge {index} {merge:?} is not of the form \"left right\"")]
    BadMerge {
        /// Index of the merge (its rank).
        index: usize,
        /// The merge string.
        merge: String,
    },
    /// A special token id outside the vocabulary.
    #[error("{what} token id {id} is outside the vocabulary of {vocab_size}")]
    SpecialIdOutOfRange {
        /// Which special token (`"bos"`, `"eos"`, ...).
        what: &'static str,
        /// The id given.
        id: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// `add_bos` is set but there is no BOS token.
    #[error("add_bos_token is set but the vocabulary has no BOS token")]
    MissingBos,
    /// A metadata key is missing or has the wrong type.
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
}

/// A GPT-2 byte-level BPE or SentencePiece tokenizer (see the [module docs](self)).
#[derive(Clone)]
pub struct Tokenizer {
    /// The SentencePiece parts, for a `"llama"` vocabulary; `None` for BPE.
    spm: Option<Spm>,
    /// Token strings as stored, in GPT-2's byte characters for normal tokens.
    tokens: Vec<String>,
    types: Vec<TokenType>,
    token_to_id: HashMap<String, u32>,
    /// Keyed by (left id, right id).
    merges: HashMap<(u32, u32), Merge>,
    /// The single-character token of each byte, if the vocabulary has it.
    byte_tokens: [Option<u32>; 256],
    /// Control, user-defined and unknown tokens with non-empty text, longest text first.
    special_cache: Vec<u32>,
    /// End-of-generation tokens: `eos` and the tokens llama.cpp treats as such by their text.
    eog: Vec<u32>,
    /// Decoded bytes of every token, concatenated; token `i` is `pieces[piece_ends[i-1]..piece_ends[i]]`.
    pieces: Vec<u8>,
    piece_ends: Vec<usize>,
    special: SpecialTokens,
    pre: PreTokenizer,
    classifier: Classifier,
}

/// Token texts llama.cpp treats as end of generation (its EOT/EOM/FIM lists), forcing them to
/// control type when a file marks them otherwise.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

impl Tokenizer {
    /// Builds a tokenizer from the vocabulary's parts, as GGUF stores them.
    ///
    /// `token_types` may be empty (every token normal, as llama.cpp assumes when the array is
    /// absent). Merges are `"left right"` strings, best first; a merge whose parts or result
    /// are not tokens can never apply and is dropped. For duplicate token strings the last id
    /// wins, for duplicate merges the first rank, as in llama.cpp.
    pub fn from_parts(
        tokens: Vec<String>,
        token_types: Vec<i32>,
        merges: Vec<String>,
        special: SpecialTokens,
        pre: PreTokenizer,
    ) -> Result<Tokenizer, TokenizerError> {
        let n = tokens.len();
        if n == 0 || u32::try_from(n).is_err() {
            return Err(TokenizerError::VocabSize(n));
        }
        let mut types: Vec<TokenType> = if token_types.is_empty() {
            vec![TokenType::Normal; n]
        } else if token_types.len() == n {
            token_types.into_iter().map(TokenType::from_i32).collect()
        } else {
            return Err(TokenizerError::TokenTypeCount {
                tokens: n,
                types: token_types.len(),
            });
        };
        let ids = [
            ("bos", special.bos),
            ("eos", Some(special.eos)),
            ("unknown", special.unk),
            ("padding", special.pad),
        ];
        for (what, id) in ids {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(TokenizerError::SpecialIdOutOfRange {
                    what,
                    id,
                    vocab_size: n,
                });
            }
        }
        if special.add_bos && special.bos.is_none() {
            return Err(TokenizerError::MissingBos);
        }

        let token_to_id: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(id, text)| (text.clone(), id as u32))
            .collect();

        let mut merge_map = HashMap::with_capacity(merges.len());
        for (index, merge) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let split = merge
                .bytes()
                .skip(1)
                .position(|b| b == b' ')
                .map(|at| at + 1)
                .ok_or_else(|| TokenizerError::BadMerge {
                    index,
                    merge: merge.clone(),
                })?;
            let (left, right) = (&merge[..split], &merge[split + 1..]);
            let lookup = |s: &str| token_to_id.get(s).copied();
            let merged = lookup(&format!("{left}{right}"));
            if let (Some(l), Some(r), Some(merged)) = (lookup(left), lookup(right), merged) {
                let rank = u32::try_from(index).map_err(|_| TokenizerError::BadMerge {
                    index,
                    merge: merge.clone(),
                })?;
                merge_map.entry((l, r)).or_insert(Merge { rank, merged });
            }
        }

        let mut eog = vec![special.eos];
        for text in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*text) {
                types[id as usize] = TokenType::Control;
                eog.push(id);
            }
        }
        eog.sort_unstable();
        eog.dedup();

        let byte_map = ByteMap::new();
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = token_to_id
                .get(byte_map.char_of(b as u8).encode_utf8(&mut [0; 4]) as &str)
                .copied();
        }

        let mut special_cache: Vec<u32> = (0..n as u32)
            .filter(|&id| types[id as usize].is_special() && !tokens[id as usize].is_empty())
            .collect();
        special_cache.sort_by_key(|&id| Reverse(tokens[id as usize].len()));

        let mut pieces = Vec::new();
        let mut piece_ends = Vec::with_capacity(n);
        for (text, ty) in tokens.iter().zip(&types) {
            match ty {
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                    pieces.extend_from_slice(text.as_bytes());
                }
                TokenType::Normal => {
                    for c in text.chars() {
                        match byte_map.byte_of(c) {
                            Some(b) => pieces.push(b),
                            // Not a GPT-2 byte character: pass it through (llama.cpp writes
                            // an "[UNK_BYTE_…]" marker instead).
                            None => pieces.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                        }
                    }
                }
                // llama.cpp renders nothing for the other types of a BPE vocabulary.
                _ => {}
            }
            piece_ends.push(pieces.len());
        }

        Ok(Tokenizer {
            spm: None,
            tokens,
            types,
            token_to_id,
            merges: merge_map,
            byte_tokens,
            special_cache,
            eog,
            pieces,
            piece_ends,
            special,
            pre,
            classifier: Classifier::new(),
        })
    }

    /// Builds the tokenizer from a GGUF file's `tokenizer.*` metadata.
    ///
    /// Fails with [`TokenizerError::UnsupportedModel`] / [`TokenizerError::UnsupportedPreTokenizer`]
    /// for a `tokenizer.ggml.model` other than `"gpt2"` or an unknown `tokenizer.ggml.pre`
    /// (absent reads as `"default"`, which engram does not implement either).
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model == "llama" {
            return Self::spm_from_gguf(gguf);
        }
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_owned()));
        }
        let pre_name = match gguf.get("tokenizer.ggml.pre") {
            Some(_) => gguf.get_str("tokenizer.ggml.pre")?,
            None => "default",
        };
        let pre = PreTokenizer::from_name(pre_name)
            .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(pre_name.to_owned()))?;
        let tokens = owned(gguf.get_str_array("tokenizer.ggml.tokens")?);
        let types = match gguf.get("tokenizer.ggml.token_type") {
            Some(_) => gguf.get_i32_array("tokenizer.ggml.token_type")?,
            None => Vec::new(),
        };
        let merges = owned(gguf.get_str_array("tokenizer.ggml.merges")?);
        let optional_id = |key: &str| match gguf.get(key) {
            Some(_) => gguf.get_u32(key).map(Some),
            None => Ok(None),
        };
        let flag = |key: &str, default: bool| match gguf.get(key) {
            Some(crate::format::MetaValue::Bool(b)) => *b,
            _ => default,
        };
        let special = SpecialTokens {
            bos: optional_id("tokenizer.ggml.bos_token_id")?,
            eos: gguf.get_u32("tokenizer.ggml.eos_token_id")?,
            unk: optional_id("tokenizer.ggml.unknown_token_id")?,
            pad: optional_id("tokenizer.ggml.padding_token_id")?,
            // llama.cpp's defaults for BPE vocabularies.
            add_bos: flag("tokenizer.ggml.add_bos_token", false),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
        };
        Tokenizer::from_parts(tokens, types, merges, special, pre)
    }

    /// Whether this is a SentencePiece (`"llama"`) vocabulary.
    pub fn is_sentencepiece(&self) -> bool {
        self.spm.is_some()
    }

    /// Token ids for `text`. With `parse_special`, control tokens written in the text (such
    /// as `<|im_start|>`) become their ids; user-defined tokens always do. Adds BOS/EOS as
    /// the metadata says.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if self.special.add_bos {
            out.extend(self.special.bos);
        }
        let mut scratch = Scratch::default();
        // SentencePiece prefixes a space to text at the start and after a special token.
        let mut after_special = true;
        for fragment in self.partition(text, parse_special) {
            match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    after_special = true;
                }
                Fragment::Text(range) => {
                    match &self.spm {
                        Some(spm) => self.spm_text(
                            spm,
                            &text[range],
                            spm.add_space_prefix && after_special,
                            &mut out,
                        ),
                        None => self.encode_text(&text[range], &mut scratch, &mut out),
                    }
                    after_special = false;
                }
            }
        }
        if self.special.add_eos {
            out.push(self.special.eos);
        }
        out
    }

    /// The text of `ids`, with invalid UTF-8 replaced by U+FFFD. Control tokens render as
    /// their text (`"<|im_end|>"`).
    ///
    /// # Panics
    /// If an id is outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_bytes(id);
            // SentencePiece: the space the encoder prefixed goes (llama.cpp's detokenize).
            let piece = match (i, &self.spm) {
                (0, Some(spm)) if spm.add_space_prefix => piece.strip_prefix(b" ").unwrap_or(piece),
                _ => piece,
            };
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes token `id` decodes to; may be part of a UTF-8 sequence.
    ///
    /// # Panics
    /// If `id` is outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        assert!(
            i < self.tokens.len(),
            "token id {id} is outside the vocabulary of {}",
            self.tokens.len()
        );
        let start = if i == 0 { 0 } else { self.piece_ends[i - 1] };
        &self.pieces[start..self.piece_ends[i]]
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The BOS token, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }

    /// The EOS token.
    pub fn eos(&self) -> u32 {
        self.special.eos
    }

    /// The special token ids and flags.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// The pre-tokenizer in use (a SentencePiece vocabulary, [`Tokenizer::is_sentencepiece`],
    /// has none and reports [`PreTokenizer::Gpt2`]).
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// The id of the token whose stored string is `text` (GPT-2 byte characters for normal
    /// tokens: `"Ġthe"` is " the").
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// The stored string of token `id`, if in range.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The type of token `id`, if in range (after llama.cpp's fix-ups: end-of-generation
    /// tokens are control).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Whether `id` is a control token (`<|im_start|>`, `<|im_end|>`, ...).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_type(id) == Some(TokenType::Control)
    }

    /// Whether generation should stop at `id`: EOS, or a token llama.cpp treats as end of
    /// generation by its text (`<|im_end|>`, `<|endoftext|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Cuts special tokens out of `text`, longest first, like llama.cpp's
    /// `tokenizer_st_partition`.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(0..text.len()));
        for &id in &self.special_cache {
            let ty = self.types[id as usize];
            if !parse_special && matches!(ty, TokenType::Control | TokenType::Unknown) {
                continue;
            }
            let needle = self.tokens[id as usize].as_str();
            if !fragments
                .iter()
                .any(|f| matches!(f, Fragment::Text(r) if text[r.clone()].contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(range) = fragment else {
                    next.push(fragment);
                    continue;
                };
                let mut start = range.start;
                while let Some(at) = text[start..range.end].find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(start..start + at));
                    }
                    next.push(Fragment::Token(id));
                    start += at + needle.len();
                }
                if start < range.end {
                    next.push(Fragment::Text(start..range.end));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Pre-tokenizes and BPE-encodes text that holds no special tokens.
    fn encode_text(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) {
        scratch.words.clear();
        self.classifier.split(self.pre, text, &mut scratch.words);
        let words = std::mem::take(&mut scratch.words);
        for word in &words {
            self.bpe_word(text[word.clone()].as_bytes(), scratch, out);
        }
        scratch.words = words;
    }
}

impl std::fmt::Debug for Tokenizer {
    /// A summary: the vocabulary itself is tens of thousands of strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .field("pre", &self.pre)
            .field("special", &self.special)
            .finish_non_exhaustive()
    }
}

/// A piece of text after special-token partitioning.
#[derive(Debug)]
enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

fn owned(strings: Vec<&str>) -> Vec<String> {
    strings.into_iter().map(str::to_owned).collect()
}

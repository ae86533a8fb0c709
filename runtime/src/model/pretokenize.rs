//! Pre-tokenization for GPT-2 style byte-level BPE: splitting text into the words that BPE
//! merges never cross, and GPT-2's byte ↔ printable-character mapping.
//!
//! The split follows llama.cpp (`src/unicode.cpp`) rather than a regex engine: llama.cpp runs
//! the GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
//! through a hand-written matcher, and the ids we must reproduce are the ones that matcher
//! yields. Patterns apply one after another: each splits the pieces the previous one left.

use std::ops::Range;

/// Which pre-tokenizer (`tokenizer.ggml.pre`) splits text before BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PreTokenizer {
    /// `"gpt-2"`: the GPT-2 pattern alone.
    Gpt2,
    /// `"smollm"` (also `"starcoder"`, `"refact"`, `"command-r"`, `"codeshell"`, `"exaone"`):
    /// every `\p{N}` character becomes a piece of its own, then the GPT-2 pattern splits the
    /// rest. Digits are never merged with each other or with a leading space.
    Smollm,
    /// `"llama-bpe"` (also `"llama3"`, `"llama-v3"`): Llama 3's pattern
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    Llama3,
    /// `"qwen2"` (also `"deepseek-r1-qwen"`): Llama 3's pattern with single digits (`\p{N}`).
    Qwen2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, or `None` for one engram does not
    /// implement.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        match name {
            "gpt-2" => Some(PreTokenizer::Gpt2),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
                Some(PreTokenizer::Smollm)
            }
            "llama-bpe" | "llama3" | "llama-v3" => Some(PreTokenizer::Llama3),
            "qwen2" | "deepseek-r1-qwen" => Some(PreTokenizer::Qwen2),
            _ => None,
        }
    }

    /// The canonical `tokenizer.ggml.pre` name.
    pub fn name(self) -> &'static str {
        match self {
            PreTokenizer::Gpt2 => "gpt-2",
            PreTokenizer::Smollm => "smollm",
            PreTokenizer::Llama3 => "llama-bpe",
            PreTokenizer::Qwen2 => "qwen2",
        }
    }
}

/// The classes the GPT-2 pattern distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    /// `\p{L}`: general category L*.
    Letter,
    /// `\p{N}`: general category N*.
    Number,
    /// `\s`: Unicode `White_Space` (the same set llama.cpp's table holds).
    Whitespace,
    /// Anything else.
    Other,
}

/// Unicode `\p{L}` and `\p{N}` as sorted code point ranges (from `regex-syntax`'s tables).
#[derive(Debug, Clone)]
pub(crate) struct Classifier {
    letters: Vec<(u32, u32)>,
    numbers: Vec<(u32, u32)>,
}

impl Classifier {
    /// Builds the range tables (a few hundred ranges; done once per tokenizer).
    pub(crate) fn new() -> Classifier {
        Classifier {
            letters: unicode_ranges(r"\p{L}"),
            numbers: unicode_ranges(r"\p{N}"),
        }
    }

    fn class(&self, c: char) -> CharClass {
        if c.is_ascii() {
            return if c.is_ascii_alphabetic() {
                CharClass::Letter
            } else if c.is_ascii_digit() {
                CharClass::Number
            } else if c.is_whitespace() {
                // Includes U+000B, which `is_ascii_whitespace` leaves out.
                CharClass::Whitespace
            } else {
                CharClass::Other
            };
        }
        let cp = u32::from(c);
        if in_ranges(&self.letters, cp) {
            CharClass::Letter
        } else if in_ranges(&self.numbers, cp) {
            CharClass::Number
        } else if c.is_whitespace() {
            CharClass::Whitespace
        } else {
            CharClass::Other
        }
    }

    /// Splits `text` into words (byte ranges, in order, covering all of `text`), appending
    /// them to `out`.
    pub(crate) fn split(&self, pre: PreTokenizer, text: &str, out: &mut Vec<Range<usize>>) {
        let chars: Vec<(usize, char, CharClass)> = text
            .char_indices()
            .map(|(at, c)| (at, c, self.class(c)))
            .collect();
        let byte_at = |i: usize| chars.get(i).map_or(text.len(), |&(at, _, _)| at);
        let mut words = Vec::new();
        match pre {
            PreTokenizer::Gpt2 => gpt2_split(&chars, 0..chars.len(), &mut words),
            PreTokenizer::Smollm => {
                // First pattern `\p{N}`: each number alone, the text between kept whole.
                let mut start = 0;
                for (i, &(_, _, class)) in chars.iter().enumerate() {
                    if class == CharClass::Number {
                        gpt2_split(&chars, start..i, &mut words);
                        words.push(i..i + 1);
                        start = i + 1;
                    }
                }
                gpt2_split(&chars, start..chars.len(), &mut words);
            }
            PreTokenizer::Llama3 => llama3_split(&chars, 3, &mut words),
            PreTokenizer::Qwen2 => llama3_split(&chars, 1, &mut words),
        }
        out.extend(words.into_iter().map(|w| byte_at(w.start)..byte_at(w.end)));
    }
}

/// The GPT-2 pattern over the characters `seg` of `chars`, appending char-index ranges.
///
/// Alternatives are tried in the pattern's order at each position; a match never looks past
/// the end of `seg` (so `\s+(?!\S)` sees the segment end as "no `\S` follows").
fn gpt2_split(chars: &[(usize, char, CharClass)], seg: Range<usize>, out: &mut Vec<Range<usize>>) {
    let end = seg.end;
    let ch = |i: usize| (i < end).then(|| chars[i].1);
    let class = |i: usize| (i < end).then(|| chars[i].2);
    let mut pos = seg.start;
    while pos < end {
        let start = pos;
        let c = chars[pos].1;
        // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, unlike llama3's pattern)
        if c == '\'' {
            pos += contraction(ch(pos + 1), ch(pos + 2));
            if pos > start {
                out.push(start..pos);
                continue;
            }
        }
        //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
        let lead_space = usize::from(c == ' ');
        if let Some(run @ (CharClass::Letter | CharClass::Number | CharClass::Other)) =
            class(pos + lead_space)
        {
            pos += lead_space;
            while class(pos) == Some(run) {
                pos += 1;
            }
            out.push(start..pos);
            continue;
        }
        // \s+(?!\S) then \s+: a whitespace run followed by a non-space gives its last
        // character to the next word (so " word" keeps its space).
        let mut n = 0;
        while class(pos + n) == Some(CharClass::Whitespace) {
            n += 1;
        }
        pos += if n > 1 && pos + n < end {
            n - 1
        } else {
            n.max(1)
        };
        out.push(start..pos);
    }
}

/// The length of the contraction `'s|'t|'re|'ve|'m|'ll|'d` whose apostrophe is followed by
/// `next` and `after` (callers fold case first where the pattern is case-insensitive), or 0.
fn contraction(next: Option<char>, after: Option<char>) -> usize {
    match (next, after) {
        (Some('s' | 't' | 'm' | 'd'), _) => 2,
        (Some('r' | 'v'), Some('e')) | (Some('l'), Some('l')) => 3,
        _ => 0,
    }
}

/// Llama 3's pattern (see [`PreTokenizer::Llama3`]) over `chars`, with digit runs cut every
/// `max_digits`, appending char-index ranges; alternatives in the pattern's order at each
/// position, as llama.cpp's `unicode_regex_split_custom_llama3` tries them.
fn llama3_split(
    chars: &[(usize, char, CharClass)],
    max_digits: usize,
    out: &mut Vec<Range<usize>>,
) {
    let end = chars.len();
    let ch = |i: usize| (i < end).then(|| chars[i].1);
    let class = |i: usize| (i < end).then(|| chars[i].2);
    let is = |i: usize, c: CharClass| class(i) == Some(c);
    let newline = |i: usize| matches!(ch(i), Some('\r' | '\n'));
    let mut pos = 0;
    while pos < end {
        let start = pos;
        let c = chars[pos].1;
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == '\'' {
            let lower = |i: usize| ch(i).map(|c| c.to_ascii_lowercase());
            pos += contraction(lower(pos + 1), lower(pos + 2));
            if pos > start {
                out.push(start..pos);
                continue;
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !newline(pos)
            && !is(pos, CharClass::Number)
            && (is(pos, CharClass::Letter) || is(pos + 1, CharClass::Letter))
        {
            pos += 1;
            while is(pos, CharClass::Letter) {
                pos += 1;
            }
            out.push(start..pos);
            continue;
        }
        // \p{N}{1,max_digits}
        if is(pos, CharClass::Number) {
            let mut run = start;
            while is(pos, CharClass::Number) {
                pos += 1;
                if pos - run >= max_digits {
                    out.push(run..pos);
                    run = pos;
                }
            }
            if pos > run {
                out.push(run..pos);
            }
            continue;
        }
        //  ?[^\s\p{L}\p{N}]+[\r\n]*
        let lead_space = usize::from(c == ' ');
        if is(pos + lead_space, CharClass::Other) {
            pos += lead_space;
            while is(pos, CharClass::Other) {
                pos += 1;
            }
            while newline(pos) {
                pos += 1;
            }
            out.push(start..pos);
            continue;
        }
        // \s*[\r\n]+ | \s+(?!\S) | \s+
        let mut n = 0;
        let mut last_newline_end = None;
        while is(pos + n, CharClass::Whitespace) {
            if newline(pos + n) {
                last_newline_end = Some(pos + n + 1);
            }
            n += 1;
        }
        pos = match last_newline_end {
            Some(after) => after,
            None if n > 1 && pos + n < end => pos + n - 1,
            None => pos + n.max(1),
        };
        out.push(start..pos);
    }
}

fn unicode_ranges(class: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class, HirKind};
    let hir = regex_syntax::parse(class)
        .unwrap_or_else(|e| panic!("built-in Unicode class {class} does not parse: {e}"));
    match hir.kind() {
        HirKind::Class(Class::Unicode(set)) => set
            .ranges()
            .iter()
            .map(|r| (u32::from(r.start()), u32::from(r.end())))
            .collect(),
        other => panic!("built-in Unicode class {class} parsed to {other:?}"),
    }
}

fn in_ranges(ranges: &[(u32, u32)], cp: u32) -> bool {
    let i = ranges.partition_point(|&(_, hi)| hi < cp);
    ranges.get(i).is_some_and(|&(lo, _)| lo <= cp)
}

/// GPT-2's map between bytes and printable characters: `!`..`~`, `¡`..`¬` and `®`..`ÿ` map to
/// themselves, the other 68 bytes to U+0100.. in byte order. Vocabulary strings are written
/// in these characters.
#[derive(Debug, Clone)]
pub struct ByteMap {
    to_char: [char; 256],
    /// Indexed by code point; every mapped character is below U+0144.
    to_byte: [Option<u8>; 0x144],
}

impl Default for ByteMap {
    fn default() -> ByteMap {
        ByteMap::new()
    }
}

impl ByteMap {
    /// Builds the map.
    pub fn new() -> ByteMap {
        let mut to_char = ['\0'; 256];
        let mut to_byte = [None; 0x144];
        let mut next = 256u32;
        for b in 0..=255u8 {
            let cp = if matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF) {
                u32::from(b)
            } else {
                next += 1;
                next - 1
            };
            to_char[usize::from(b)] =
                char::from_u32(cp).expect("code points below U+0144 are chars");
            to_byte[cp as usize] = Some(b);
        }
        ByteMap { to_char, to_byte }
    }

    /// The character standing for byte `b`.
    pub fn char_of(&self, b: u8) -> char {
        self.to_char[usize::from(b)]
    }

    /// The byte character `c` stands for, if any.
    pub(crate) fn byte_of(&self, c: char) -> Option<u8> {
        self.to_byte.get(u32::from(c) as usize).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        Classifier::new().split(pre, text, &mut out);
        out.into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_pattern_keeps_leading_space_and_contractions() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "It's  a dog's life!!"),
            ["It", "'s", " ", " a", " dog", "'s", " life", "!!"]
        );
        assert_eq!(words(PreTokenizer::Gpt2, "a  \n"), ["a", "  \n"]);
        assert_eq!(words(PreTokenizer::Gpt2, "x \ty"), ["x", " ", "\t", "y"]);
    }

    #[test]
    fn smollm_isolates_every_digit() {
        assert_eq!(
            words(PreTokenizer::Smollm, "and 3.14 x2"),
            ["and", " ", "3", ".", "1", "4", " x", "2"]
        );
    }

    #[test]
    fn llama3_groups_digits_by_three_and_keeps_newlines_apart() {
        assert_eq!(
            words(PreTokenizer::Llama3, "I'M 12345 (ok)!!\n\n  x"),
            [
                "I", "'M", " ", "123", "45", " (", "ok", ")!!\n\n", " ", " x"
            ]
        );
        assert_eq!(
            words(PreTokenizer::Qwen2, "a 123\r\n b"),
            ["a", " ", "1", "2", "3", "\r\n", " b"]
        );
    }

    #[test]
    fn letters_follow_unicode_categories() {
        assert_eq!(words(PreTokenizer::Gpt2, " naïve日本"), [" naïve日本"]);
        // U+0345 is alphabetic (Other_Alphabetic) but a mark, not \p{L}.
        assert_eq!(words(PreTokenizer::Gpt2, "a\u{345}"), ["a", "\u{345}"]);
    }

    #[test]
    fn byte_map_round_trips() {
        let map = ByteMap::new();
        assert_eq!(map.char_of(b' '), 'Ġ');
        assert_eq!(map.char_of(b'\n'), 'Ċ');
        assert_eq!(map.char_of(b'A'), 'A');
        for b in 0..=255u8 {
            assert_eq!(map.byte_of(map.char_of(b)), Some(b));
        }
        assert_eq!(map.byte_of('日'), None);
    }
}

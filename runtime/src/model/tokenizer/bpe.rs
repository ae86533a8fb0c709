//! The BPE merge loop over one pre-tokenized word, as llama.cpp's `llm_tokenizer_bpe_session`
//! runs it: a priority queue of adjacent pairs by merge rank (leftmost on ties), stale
//! entries skipped when popped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::Tokenizer;

/// One BPE merge: the rank that orders it and the token it produces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Merge {
    pub(super) rank: u32,
    pub(super) merged: u32,
}

impl Tokenizer {
    /// BPE over one word: lowest rank first, leftmost on ties; stale queue entries (a side
    /// merged since it was queued) are skipped, as in llama.cpp's `llm_tokenizer_bpe_session`.
    pub(super) fn bpe_word(&self, word: &[u8], scratch: &mut Scratch, out: &mut Vec<u32>) {
        match word {
            [] => return,
            [b] => return out.extend(self.byte_tokens[usize::from(*b)]),
            _ => {}
        }
        let symbols = &mut scratch.symbols;
        symbols.clear();
        symbols.extend(word.iter().enumerate().map(|(i, &b)| Symbol {
            id: self.byte_tokens[usize::from(b)],
            prev: i.checked_sub(1),
            next: (i + 1 < word.len()).then_some(i + 1),
            alive: true,
        }));
        let queue = &mut scratch.queue;
        queue.clear();
        for left in 0..symbols.len() - 1 {
            self.push_bigram(symbols, queue, left, left + 1);
        }
        while let Some(Reverse(Bigram {
            rank: _,
            left,
            right,
            left_id,
            right_id,
            merged,
        })) = queue.pop()
        {
            let (l, r) = (symbols[left], symbols[right]);
            if !l.alive || !r.alive || l.id != Some(left_id) || r.id != Some(right_id) {
                continue;
            }
            symbols[left].id = Some(merged);
            symbols[left].next = r.next;
            symbols[right].alive = false;
            if let Some(next) = r.next {
                symbols[next].prev = Some(left);
            }
            if let Some(prev) = l.prev {
                self.push_bigram(symbols, queue, prev, left);
            }
            if let Some(next) = r.next {
                self.push_bigram(symbols, queue, left, next);
            }
        }
        // A byte whose character is not in the vocabulary has no id; llama.cpp's byte fallback
        // finds nothing for it either, so it is dropped.
        out.extend(symbols.iter().filter(|s| s.alive).filter_map(|s| s.id));
    }

    fn push_bigram(
        &self,
        symbols: &[Symbol],
        queue: &mut BinaryHeap<Reverse<Bigram>>,
        left: usize,
        right: usize,
    ) {
        let (Some(left_id), Some(right_id)) = (symbols[left].id, symbols[right].id) else {
            return;
        };
        if let Some(m) = self.merges.get(&(left_id, right_id)) {
            queue.push(Reverse(Bigram {
                rank: m.rank,
                left,
                right,
                left_id,
                right_id,
                merged: m.merged,
            }));
        }
    }
}

/// One BPE symbol of a word: a token id (or none for an unknown byte), linked to its
/// neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    id: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
    alive: bool,
}

/// A candidate merge; ordered by rank then left position, the order llama.cpp pops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    left_id: u32,
    right_id: u32,
    merged: u32,
}

/// Buffers reused across the words of one `encode` call.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub(super) words: Vec<Range<usize>>,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Bigram>>,
}

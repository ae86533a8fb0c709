//! The runtime's replay memory: token sequences (integers, not floats) under a fixed capacity,
//! kept and drawn by any of the kernels' policies, with — for DER++ — the top-`k` logits the
//! model gave each position when the sequence was stored.
//!
//! Bookkeeping (policy, slots, counters, the random stream) is a [`ReplayBuffer`] with empty
//! rows; the tokens and logits live beside it, allocated once at construction.

use engram_adapters::trainer::Encoded;
use engram_kernels::replay::{Admission, Policy};
use engram_runtime::model::tokenizer::Tokenizer;

use crate::buffer::{BufferError, ReplayBuffer};
use crate::codec::{Reader, Writer};
use crate::persist::{self, SnapshotError};

/// One sequence drawn for replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Replayed {
    /// The tokens, and how many are context.
    pub seq: Encoded,
    /// The task it came from.
    pub task: u32,
    /// Top-k logit ids per position `(len - 1, k)` row-major (empty without DER++).
    pub top_ids: Vec<u32>,
    /// The logits at those ids.
    pub top_vals: Vec<f32>,
}

/// A fixed-capacity memory of token sequences.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceBuffer {
    slots: ReplayBuffer,
    max_len: usize,
    top_k: usize,
    tokens: Vec<u32>,   // (capacity, max_len)
    lens: Vec<u32>,     // (capacity)
    n_prompt: Vec<u32>, // (capacity)
    top_ids: Vec<u32>,  // (capacity, max_len - 1, top_k)
    top_vals: Vec<f32>, // (capacity, max_len - 1, top_k)
}

impl SequenceBuffer {
    /// An empty memory of `capacity` sequences of at most `max_len` tokens, keeping `top_k`
    /// logits per position (0: none).
    pub fn new(
        capacity: usize,
        max_len: usize,
        top_k: usize,
        policy: Policy,
        seed: u64,
    ) -> Result<Self, BufferError> {
        let slots = ReplayBuffer::new(capacity, 0, 0, policy, seed)?;
        let per = max_len.saturating_sub(1) * top_k;
        Ok(Self {
            slots,
            max_len,
            top_k,
            tokens: vec![0; capacity * max_len],
            lens: vec![0; capacity],
            n_prompt: vec![0; capacity],
            top_ids: vec![0; capacity * per],
            top_vals: vec![0.0; capacity * per],
        })
    }

    /// Offers `seq` (of task `task`); the policy decides whether it is kept. `top` holds
    /// `(ids, logits)` of `(len - 1, top_k)` when the memory keeps logits. Returns whether it
    /// was stored.
    pub fn offer(
        &mut self,
        seq: &Encoded,
        task: u32,
        top: Option<(&[u32], &[f32])>,
    ) -> Result<bool, BufferError> {
        let n = seq.tokens.len();
        if !(2..=self.max_len).contains(&n) || seq.n_prompt == 0 || seq.n_prompt >= n {
            return Err(BufferError::Shape {
                what: "sequence",
                got: n,
                expected: self.max_len,
            });
        }
        let want = (n - 1) * self.top_k;
        let got = top.map_or(0, |(i, v)| i.len().min(v.len()));
        if got != want || top.is_some_and(|(i, v)| i.len() != v.len()) {
            return Err(BufferError::Shape {
                what: "logits",
                got,
                expected: want,
            });
        }
        if top.is_some_and(|(_, v)| !v.iter().all(|x| x.is_finite())) {
            return Err(BufferError::NonFinite { what: "logits" });
        }
        let slot = match self.slots.insert(&[], task, task, None)? {
            Admission::Appended(slot) | Admission::Replaced { slot, .. } => slot,
            Admission::Rejected => return Ok(false),
        };
        let l = self.max_len;
        self.tokens[slot * l..slot * l + n].copy_from_slice(&seq.tokens);
        self.lens[slot] = n as u32;
        self.n_prompt[slot] = seq.n_prompt as u32;
        if let Some((ids, vals)) = top {
            let per = (l - 1) * self.top_k;
            self.top_ids[slot * per..slot * per + want].copy_from_slice(ids);
            self.top_vals[slot * per..slot * per + want].copy_from_slice(vals);
        }
        Ok(true)
    }

    /// Draws up to `k` distinct sequences by the sampling policy.
    pub fn sample(&mut self, k: usize) -> Vec<Replayed> {
        let batch = self.slots.sample(k);
        batch
            .slots
            .iter()
            .zip(&batch.y)
            .map(|(&s, &task)| self.get(s, task))
            .collect()
    }

    fn get(&self, slot: usize, task: u32) -> Replayed {
        let (l, n) = (self.max_len, self.lens[slot] as usize);
        let per = (l - 1) * self.top_k;
        let want = (n - 1) * self.top_k;
        Replayed {
            seq: Encoded {
                tokens: self.tokens[slot * l..slot * l + n].to_vec(),
                n_prompt: self.n_prompt[slot] as usize,
            },
            task,
            top_ids: self.top_ids[slot * per..slot * per + want].to_vec(),
            top_vals: self.top_vals[slot * per..slot * per + want].to_vec(),
        }
    }

    /// Sequences stored.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Fixed capacity in sequences.
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }

    /// Longest sequence kept.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Logits kept per position.
    pub fn top_k(&self) -> usize {
        self.top_k
    }

    /// Bytes allocated (fixed at construction).
    pub fn bytes(&self) -> usize {
        4 * (self.tokens.len() + self.lens.len() + self.n_prompt.len()) + 8 * self.top_ids.len()
    }

    /// Bytes of memory a buffer of these dimensions allocates.
    pub fn bytes_for(capacity: usize, max_len: usize, top_k: usize) -> usize {
        capacity * (4 * (max_len + 2) + 8 * max_len.saturating_sub(1) * top_k)
    }

    /// Appends the memory to a payload.
    pub fn write(&self, w: &mut Writer) {
        w.len(self.max_len);
        w.len(self.top_k);
        persist::write_payload(w, &self.slots);
        for slot in 0..self.len() {
            let r = self.get(slot, 0);
            w.len(r.seq.tokens.len());
            w.len(r.seq.n_prompt);
            w.u32s(&r.seq.tokens);
            w.u32s(&r.top_ids);
            w.f32s(&r.top_vals);
        }
    }

    /// Reads a memory written by [`SequenceBuffer::write`], checking every size.
    pub fn read(r: &mut Reader) -> Result<Self, SnapshotError> {
        let corrupt = |what: String| SnapshotError::Corrupt(what);
        let max_len = r.u32("max_len")? as usize;
        let top_k = r.u32("top_k")? as usize;
        if !(2..=super::config::MAX_LEN).contains(&max_len) || top_k > super::config::MAX_TOP_K {
            return Err(corrupt(format!("max_len {max_len}, top_k {top_k}")));
        }
        let slots = persist::read_payload(r)?;
        if slots.dim() != 0 || slots.n_logits() != 0 {
            return Err(corrupt("sequence memory with row data".into()));
        }
        let mut out = Self::new(slots.capacity(), max_len, top_k, slots.policy(), 0)
            .map_err(|e| corrupt(e.to_string()))?;
        let per = (max_len - 1) * top_k;
        for slot in 0..slots.len() {
            let n = r.u32("sequence length")? as usize;
            let n_prompt = r.u32("prompt length")? as usize;
            if !(2..=max_len).contains(&n) || n_prompt == 0 || n_prompt >= n {
                return Err(corrupt(format!(
                    "slot {slot}: {n} tokens, {n_prompt} of context (max {max_len})"
                )));
            }
            let l = max_len;
            let mut tokens = Vec::with_capacity(n);
            r.u32s("tokens", n, &mut tokens)?;
            out.tokens[slot * l..slot * l + n].copy_from_slice(&tokens);
            out.lens[slot] = n as u32;
            out.n_prompt[slot] = n_prompt as u32;
            let want = (n - 1) * top_k;
            let (mut ids, mut vals) = (Vec::with_capacity(want), Vec::with_capacity(want));
            r.u32s("logit ids", want, &mut ids)?;
            r.f32s("logits", want, &mut vals)?;
            if !vals.iter().all(|v| v.is_finite()) {
                return Err(corrupt(format!("slot {slot}: non-finite logits")));
            }
            out.top_ids[slot * per..slot * per + want].copy_from_slice(&ids);
            out.top_vals[slot * per..slot * per + want].copy_from_slice(&vals);
        }
        out.slots = slots;
        Ok(out)
    }
}

// Tokenizing lives here, beside the sequences it makes: `example.rs` stays free of the model
// (the fuzz crate compiles it directly).
impl super::example::Observation {
    /// Tokenizes the example, cut to `max_len` tokens. `None` when nothing trainable remains
    /// (the prompt alone fills `max_len`, or the text is a single token).
    pub fn encode(&self, tok: &Tokenizer, max_len: usize) -> Option<Encoded> {
        let (mut tokens, n_prompt) = match (&self.prompt, &self.completion, &self.text) {
            (Some(p), Some(c), _) => {
                let mut t = tok.encode(p, true);
                let n = t.len();
                t.extend(tok.encode(c, false));
                (t, n)
            }
            (_, _, Some(text)) => (tok.encode(text, false), 1),
            _ => return None,
        };
        tokens.truncate(max_len);
        (n_prompt >= 1 && tokens.len() > n_prompt).then_some(Encoded { tokens, n_prompt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: usize, first: u32) -> Encoded {
        Encoded {
            tokens: (first..first + n as u32).collect(),
            n_prompt: 1,
        }
    }

    #[test]
    fn stores_draws_and_round_trips_bit_for_bit() {
        let mut b = SequenceBuffer::new(4, 8, 2, Policy::default(), 7).unwrap();
        for i in 0..10u32 {
            let s = seq(3 + (i as usize % 5), 100 * i);
            let n = s.tokens.len() - 1;
            let ids: Vec<u32> = (0..2 * n as u32).collect();
            let vals: Vec<f32> = ids.iter().map(|&v| v as f32 * 0.5).collect();
            b.offer(&s, i % 2, Some((&ids, &vals))).unwrap();
        }
        assert_eq!(b.len(), 4);
        let mut w = Writer::default();
        b.write(&mut w);
        let mut r = Reader::new(&w.0);
        let mut back = SequenceBuffer::read(&mut r).unwrap();
        assert_eq!(r.remaining(), 0);
        assert_eq!(back, b);
        // Same state, same draws.
        assert_eq!(back.sample(3), b.sample(3));
        // Every truncation is a typed error, never a panic.
        for cut in 0..w.0.len() {
            assert!(SequenceBuffer::read(&mut Reader::new(&w.0[..cut])).is_err());
        }
    }

    #[test]
    fn bad_sequences_are_refused() {
        let mut b = SequenceBuffer::new(2, 4, 0, Policy::default(), 0).unwrap();
        assert!(b.offer(&seq(5, 0), 0, None).is_err(), "too long");
        assert!(b.offer(&seq(1, 0), 0, None).is_err(), "nothing to learn");
        let ids = [0u32; 2];
        assert!(
            b.offer(&seq(3, 0), 0, Some((&ids, &[0.0; 2]))).is_err(),
            "no logits kept"
        );
        assert!(b.offer(&seq(3, 0), 0, None).unwrap());
    }
}

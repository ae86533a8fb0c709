//! Prompt/completion examples, tokenized and padded into batches whose loss covers only the
//! completion.

use burn::tensor::{Device, Int, Tensor, TensorData};
use engram_runtime::burn;
use engram_runtime::model::tokenizer::Tokenizer;

pub use super::example::{Example, MAX_EXAMPLE_BYTES};

/// A tokenized example: `tokens[..n_prompt]` is the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// Prompt then completion token ids.
    pub tokens: Vec<u32>,
    /// Length of the prompt part.
    pub n_prompt: usize,
}

impl Encoded {
    /// Tokenizes `ex` (special tokens parsed in the prompt); appends `eos` to the completion
    /// when given; keeps at most `max_len` tokens (the completion is cut, never the prompt's
    /// start). `None` when nothing of the completion would remain.
    pub fn new(tok: &Tokenizer, ex: &Example, eos: Option<u32>, max_len: usize) -> Option<Self> {
        let prompt = tok.encode(&ex.prompt, true);
        let mut tokens = prompt.clone();
        tokens.extend(tok.encode(&ex.completion, false));
        tokens.extend(eos);
        tokens.truncate(max_len);
        (tokens.len() > prompt.len() && !prompt.is_empty()).then_some(Self {
            n_prompt: prompt.len(),
            tokens,
        })
    }

    /// The completion tokens.
    pub fn completion(&self) -> &[u32] {
        &self.tokens[self.n_prompt..]
    }
}

/// Right-padded inputs, next-token targets and the loss mask of several examples.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Input ids, `batch × t` row-major.
    pub inputs: Vec<u32>,
    /// The id each position must predict.
    pub targets: Vec<u32>,
    /// 1 where the target is a completion token, 0 for prompt and padding.
    pub mask: Vec<f32>,
    /// Rows.
    pub batch: usize,
    /// Positions per row.
    pub t: usize,
}

impl Batch {
    /// Packs `examples`; padding uses `pad` (masked out, and causal attention keeps it from
    /// influencing real positions, which all come before it).
    pub fn new(examples: &[&Encoded], pad: u32) -> Self {
        let t = examples
            .iter()
            .map(|e| e.tokens.len() - 1)
            .max()
            .unwrap_or(0);
        let batch = examples.len();
        let mut b = Batch {
            inputs: vec![pad; batch * t],
            targets: vec![0; batch * t],
            mask: vec![0.0; batch * t],
            batch,
            t,
        };
        for (row, e) in examples.iter().enumerate() {
            let n = e.tokens.len() - 1;
            let o = row * t;
            b.inputs[o..o + n].copy_from_slice(&e.tokens[..n]);
            b.targets[o..o + n].copy_from_slice(&e.tokens[1..]);
            for p in e.n_prompt.saturating_sub(1)..n {
                b.mask[o + p] = 1.0;
            }
        }
        b
    }

    /// Completion tokens the loss covers.
    pub fn trained_tokens(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }

    /// Targets and mask as tensors on `device`.
    pub fn tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let ids: Vec<i64> = self.targets.iter().map(|&x| x as i64).collect();
        (
            Tensor::from_data(TensorData::new(ids, [self.batch, self.t]), device),
            Tensor::from_data(
                TensorData::new(self.mask.clone(), [self.batch, self.t]),
                device,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pad_right_and_mask_only_the_completion() {
        let a = Encoded {
            tokens: vec![1, 2, 3, 4],
            n_prompt: 2,
        };
        let b = Encoded {
            tokens: vec![5, 6, 7],
            n_prompt: 1,
        };
        let batch = Batch::new(&[&a, &b], 0);
        assert_eq!((batch.batch, batch.t), (2, 3));
        assert_eq!(batch.inputs, vec![1, 2, 3, 5, 6, 0]);
        assert_eq!(batch.targets, vec![2, 3, 4, 6, 7, 0]);
        // Row a: position 1 predicts 3 (first completion token), position 2 predicts 4.
        assert_eq!(batch.mask, vec![0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(batch.trained_tokens(), 4);
    }
}

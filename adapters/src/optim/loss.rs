//! Losses: masked causal-LM cross-entropy and plain classification cross-entropy.

use burn::tensor::{Int, Tensor, TensorData, activation};
use engram_runtime::burn;

/// Mean next-token cross-entropy over the positions where `mask` is 1.
///
/// `logits`: `(b, t, v)`; `targets`: `(b, t)` token ids (the token each position must predict);
/// `mask`: `(b, t)`, 1 where the position is trained (the completion), 0 for prompt and padding.
/// Returns a one-element tensor; a mask with no ones gives NaN, which the trainer skips.
pub fn causal_lm_loss(logits: Tensor<3>, targets: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let logp = activation::log_softmax(logits, 2);
    let picked = logp.gather(2, targets.reshape([b, t, 1])).reshape([b, t]);
    let total = (picked * mask.clone()).sum();
    total.neg() / mask.sum()
}

/// Mean cross-entropy of `logits` `(n, classes)` against class ids `targets`.
pub fn cross_entropy(logits: Tensor<2>, targets: &[u32]) -> Tensor<1> {
    let [n, _] = logits.dims();
    let ids: Vec<i64> = targets.iter().map(|&x| x as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), &logits.device());
    let logp = activation::log_softmax(logits, 1);
    logp.gather(1, idx).mean().neg()
}

//! Several adapters at once: a LoRA adapter and a set of edits, say, over one base.

use burn::tensor::Tensor;
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Proj};

/// Sums the deltas of several adapters (each sees the same layer input).
#[derive(Default)]
pub struct Stack<'a>(pub Vec<&'a dyn LinearAdapter>);

impl LinearAdapter for Stack<'_> {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        self.0
            .iter()
            .filter_map(|a| a.delta(layer, proj, x))
            .reduce(|a, b| a + b)
    }
}

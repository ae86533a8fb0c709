//! Several adapters at once: a LoRA adapter and a set of edits, say, over one base.

use burn::tensor::Tensor;
use engram_runtime::burn;
use engram_runtime::model::llama::{DecodeDelta, LinearAdapter, Norm, Proj};

/// Sums the deltas of several adapters (each sees the same layer input). Dense weights
/// (full fine-tuning) come from the first adapter that has one.
#[derive(Default)]
pub struct Stack<'a>(pub Vec<&'a dyn LinearAdapter>);

impl LinearAdapter for Stack<'_> {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        self.0
            .iter()
            .filter_map(|a| a.delta(layer, proj, x))
            .reduce(|a, b| a + b)
    }

    fn decode_delta(&self, layer: usize, proj: Proj) -> DecodeDelta {
        self.0.iter().fold(DecodeDelta::None, |d, a| {
            d.plus(a.decode_delta(layer, proj))
        })
    }

    fn dense_weight(&self, layer: usize, proj: Proj) -> Option<Tensor<2>> {
        self.0.iter().find_map(|a| a.dense_weight(layer, proj))
    }

    fn norm_weight(&self, norm: Norm) -> Option<Tensor<1>> {
        self.0.iter().find_map(|a| a.norm_weight(norm))
    }

    fn embedding(&self) -> Option<Tensor<2>> {
        self.0.iter().find_map(|a| a.embedding())
    }

    fn output_weight(&self) -> Option<Tensor<2>> {
        self.0.iter().find_map(|a| a.output_weight())
    }
}

//! The benchmark classifier: a ReLU MLP whose weights are [`ParamSet`] tensors, so every
//! strategy sees it the way it sees LoRA parameters.

use burn::tensor::{Device, Tensor, TensorData, activation};
use engram_runtime::burn;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use engram_adapters::optim::{ParamId, ParamSet};

/// A multi-layer perceptron `dims[0] → dims[1] → … → dims[last]` with ReLU between layers.
/// The architecture only: the weights live in a [`ParamSet`] (or a teacher's copy of them).
#[derive(Clone, Debug)]
pub struct Mlp {
    dims: Vec<usize>,
    layers: Vec<(ParamId, ParamId)>, // (w: (d_in, d_out), b: (1, d_out)) per layer
}

impl Mlp {
    /// A fresh MLP on `device` (an autodiff device to train), PyTorch `nn.Linear` init
    /// (uniform ±1/√fan_in for weights and biases) from `seed`.
    pub fn new(dims: &[usize], device: &Device, seed: u64) -> (Self, ParamSet) {
        assert!(dims.len() >= 2, "an MLP needs input and output widths");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = ParamSet::new();
        let mut layers = Vec::new();
        for (l, w) in dims.windows(2).enumerate() {
            let (fan_in, fan_out) = (w[0], w[1]);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let mut init = |n: usize| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            };
            let wv = init(fan_in * fan_out);
            let bv = init(fan_out);
            let w = params.push_host(format!("l{l}.w"), wv, [fan_in, fan_out], device);
            let b = params.push_host(format!("l{l}.b"), bv, [1, fan_out], device);
            layers.push((w, b));
        }
        (
            Self {
                dims: dims.to_vec(),
                layers,
            },
            params,
        )
    }

    /// Layer widths.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Output width (classes).
    pub fn n_out(&self) -> usize {
        *self.dims.last().expect("non-empty")
    }

    /// The tracked weights of `params`, in the order `forward` takes them.
    pub fn tracked(&self, params: &ParamSet) -> Vec<Tensor<2>> {
        params.ids().map(|id| params.get(id)).collect()
    }

    /// Untracked copies of the weights of `params` (a frozen teacher, or evaluation).
    pub fn frozen(&self, params: &ParamSet) -> Vec<Tensor<2>> {
        params.ids().map(|id| params.value(id)).collect()
    }

    /// `(features, logits)` for `x` `(n, dims[0])`: features are the last hidden layer
    /// `(n, dims[last-1])`, logits `(n, n_out)`.
    pub fn forward(&self, weights: &[Tensor<2>], x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        assert_eq!(
            weights.len(),
            2 * self.layers.len(),
            "weights of another model"
        );
        let mut h = x;
        let last = self.layers.len() - 1;
        for l in 0..last {
            h = activation::relu(h.matmul(weights[2 * l].clone()) + weights[2 * l + 1].clone());
        }
        let logits = h.clone().matmul(weights[2 * last].clone()) + weights[2 * last + 1].clone();
        (h, logits)
    }

    /// Logits only.
    pub fn logits(&self, weights: &[Tensor<2>], x: Tensor<2>) -> Tensor<2> {
        self.forward(weights, x).1
    }
}

/// `(n, dim)` host rows as a tensor on `device`.
pub fn rows_tensor(x: &[f32], dim: usize, device: &Device) -> Tensor<2> {
    let n = x.len() / dim;
    Tensor::from_data(TensorData::new(x.to_vec(), [n, dim]), device)
}

/// A tensor's values on the host.
pub fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

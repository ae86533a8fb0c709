//! What the trainer trains: anything that exposes parameter sets and says how it changes the
//! forward pass (a linear adapter, a soft prompt, or both).

use burn::tensor::Tensor;
use engram_runtime::burn;
use engram_runtime::model::llama::LinearAdapter;

use crate::lora::Lora;
use crate::optim::ParamSet;

/// A trainable adaptation of the frozen base.
pub trait Trainable {
    /// The parameter sets, in a fixed order (one optimizer state each).
    fn param_sets(&self) -> Vec<&ParamSet>;
    /// The same sets, mutable.
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet>;
    /// The linear deltas this adaptation adds, if any.
    fn linear(&self) -> Option<&dyn LinearAdapter> {
        None
    }
    /// The soft prompt `(n_virtual, d_model)` this adaptation prepends, if any.
    fn prefix(&self) -> Option<Tensor<2>> {
        None
    }
    /// Dropout and similar train-only behaviour on or off.
    fn set_training(&mut self, _on: bool) {}
    /// A copy over the same parameter values as fresh autodiff leaves
    /// ([`ParamSet::replica`]), in the same order of sets and parameters, for the trainer's
    /// data-parallel step: each CPU thread runs a forward and backward on its share of the
    /// batch against its own replica, and the gradients are summed into this adaptation's.
    /// `None` (the default): the trainer runs the whole batch on the calling thread, the
    /// products split between the threads.
    fn replica(&self) -> Option<Box<dyn Trainable + Send + Sync>> {
        None
    }
}

/// LoRA and a soft prompt trained together (e.g. SPARC's subspace prompt with LoRA).
impl<P: Trainable> Trainable for (Lora, P) {
    fn param_sets(&self) -> Vec<&ParamSet> {
        let mut v = self.0.param_sets();
        v.extend(self.1.param_sets());
        v
    }
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        let (a, b) = self;
        let mut v = a.param_sets_mut();
        v.extend(b.param_sets_mut());
        v
    }
    fn linear(&self) -> Option<&dyn LinearAdapter> {
        Some(&self.0)
    }
    fn prefix(&self) -> Option<Tensor<2>> {
        self.1.prefix()
    }
    fn set_training(&mut self, on: bool) {
        self.0.set_training(on);
        self.1.set_training(on);
    }
    fn replica(&self) -> Option<Box<dyn Trainable + Send + Sync>> {
        Some(Box::new(ReplicaPair(self.0.replica()?, self.1.replica()?)))
    }
}

/// The replica of a `(Lora, P)`: the LoRA's linear deltas and the prompt's prefix, the sets in
/// the same order.
struct ReplicaPair(
    Box<dyn Trainable + Send + Sync>,
    Box<dyn Trainable + Send + Sync>,
);

impl Trainable for ReplicaPair {
    fn param_sets(&self) -> Vec<&ParamSet> {
        let mut v = self.0.param_sets();
        v.extend(self.1.param_sets());
        v
    }
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        let ReplicaPair(a, b) = self;
        let mut v = a.param_sets_mut();
        v.extend(b.param_sets_mut());
        v
    }
    fn linear(&self) -> Option<&dyn LinearAdapter> {
        self.0.linear()
    }
    fn prefix(&self) -> Option<Tensor<2>> {
        self.1.prefix()
    }
    fn set_training(&mut self, on: bool) {
        self.0.set_training(on);
        self.1.set_training(on);
    }
}

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
}

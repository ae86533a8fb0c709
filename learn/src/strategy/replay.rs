//! Rehearsal pieces: experience replay and DER++.

use burn::tensor::Tensor;
use engram_runtime::burn;

use crate::learner::{Piece, StepCtx};
use engram_adapters::optim::cross_entropy;

/// Experience replay (ER; Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual
/// Learning"): cross-entropy on a replay batch beside the current one. The learner's reservoir
/// buffer supplies the batch.
#[derive(Clone, Debug)]
pub struct Er {
    /// Weight of the replay term (1: the two batches count alike).
    pub weight: f32,
}

impl Piece for Er {
    fn name(&self) -> &'static str {
        "er"
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        let r = ctx.replay?;
        Some(cross_entropy(r.logits.clone(), &r.y) * self.weight)
    }
}

/// DER++ (Buzzega et al., NeurIPS 2020, "Dark Experience for General Continual Learning"):
/// `alpha`·MSE between the student's logits on replayed rows and the logits stored with them,
/// plus `beta`·cross-entropy on their labels. The buffer must keep logits.
///
/// The paper draws two independent replay batches for the two terms; here both use the one
/// batch the learner draws, which halves the replay forward passes.
#[derive(Clone, Debug)]
pub struct DerPlusPlus {
    /// Weight of the logit-matching term.
    pub alpha: f32,
    /// Weight of the replay cross-entropy.
    pub beta: f32,
}

impl Piece for DerPlusPlus {
    fn name(&self) -> &'static str {
        "der++"
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        let r = ctx.replay?;
        let z = r
            .stored_logits
            .as_ref()
            .expect("DER++ needs a buffer that keeps logits");
        let mse = (r.logits.clone() - z.clone()).square().mean();
        Some(mse * self.alpha + cross_entropy(r.logits.clone(), &r.y) * self.beta)
    }
}

//! The search for a value vector `δ` that every optimizing method shares (the plain target
//! search, ROME's cached search, the gated memory's value): AdamW on one `[1, d]` parameter,
//! the loss (the targets' mean negative log-probability, the KL of the "essence" rows from
//! their first-step distribution, the weight decay `‖δ‖ / ‖v‖²`), the stop rule, and the
//! projection back into the ball `‖δ‖ ≤ clamp · ‖v‖`. The methods differ in how they run the
//! model from `δ` to the log-probabilities; that part stays with them.

use burn::tensor::Tensor;
use engram_adapters::optim::{AdamW, AdamWConfig, ParamId, ParamSet};
use engram_runtime::burn;

use super::target::TargetHparams;

/// One `δ` being optimized.
pub(crate) struct DeltaSearch {
    params: ParamSet,
    id: ParamId,
    adam: AdamW,
    kl_init: Option<Tensor<2>>,
    /// `‖v‖`, the norm of the value `δ` is added to: the scale of the decay and the clamp.
    v_norm: f32,
    /// The method, for the trace.
    method: &'static str,
}

/// What one step found.
struct DeltaStep {
    /// The targets' mean probability before this step's update.
    prob: f32,
    /// Whether the search stops here (loss or probability reached, or the last step); no
    /// update was made then.
    done: bool,
}

/// What a search found.
pub(crate) struct Found {
    /// `δ`.
    pub delta: Vec<f32>,
    /// The targets' mean probability at the last step.
    pub prob: f32,
    /// Steps run.
    pub steps: usize,
}

impl DeltaSearch {
    /// A search from `start` (`d` values) on `device`.
    pub(crate) fn new(
        method: &'static str,
        start: Vec<f32>,
        v_norm: f32,
        device: &burn::tensor::Device,
    ) -> DeltaSearch {
        let d = start.len();
        let mut params = ParamSet::new();
        let id = params.push_host("delta", start, [1, d], device);
        let adam = AdamW::new(AdamWConfig {
            max_grad_norm: None,
            ..AdamWConfig::default()
        });
        DeltaSearch {
            params,
            id,
            adam,
            kl_init: None,
            v_norm,
            method,
        }
    }

    /// Runs at most `hp.steps` steps. `forward` maps `δ` (a `[1, d]` tracked tensor) to the
    /// targets' log-probabilities (`[n, 1]`) and the essence rows' log-probabilities
    /// (`[k, vocab]`), if any.
    pub(crate) fn run(
        mut self,
        hp: &TargetHparams,
        mut forward: impl FnMut(Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>),
    ) -> Found {
        let (mut prob, mut steps) = (0.0, 0);
        for step in 0..hp.steps {
            steps = step + 1;
            let (picked, kl_rows) = forward(self.delta());
            let done = self.step(step, picked, kl_rows, hp);
            prob = done.prob;
            if done.done {
                break;
            }
        }
        Found {
            delta: self.into_delta(),
            prob,
            steps,
        }
    }

    /// `δ` as a `[1, d]` tracked tensor.
    fn delta(&self) -> Tensor<2> {
        self.params.get(self.id)
    }

    /// Ends step `step` of at most `hp.steps`: `picked` are the targets' log-probabilities
    /// (`[n, 1]`), `kl_rows` the essence rows' log-probabilities (`[k, vocab]`), if any.
    fn step(
        &mut self,
        step: usize,
        picked: Tensor<2>,
        kl_rows: Option<Tensor<2>>,
        hp: &TargetHparams,
    ) -> DeltaStep {
        let mut loss = picked.clone().mean().neg();
        if let Some(lp_k) = kl_rows {
            let base = self
                .kl_init
                .get_or_insert_with(|| lp_k.clone().detach())
                .clone();
            let kl = (lp_k.clone().exp() * (lp_k - base)).sum_dim(1).mean();
            loss = loss + kl * hp.kl_factor;
        }
        let v_norm = self.v_norm;
        // ‖δ‖ has no gradient at δ = 0 (where most searches start); the epsilon gives it 0
        // there, as PyTorch's norm does, instead of a NaN that would skip every step.
        let wd =
            (self.delta().square().sum() + 1e-12).sqrt() * (hp.weight_decay / (v_norm * v_norm));
        loss = loss + wd;
        let loss_value = loss.clone().into_scalar::<f32>();
        let p_targets = picked.exp();
        let p_min = p_targets.clone().min().into_scalar::<f32>();
        let prob = p_targets.mean().into_scalar::<f32>();
        tracing::debug!(
            method = self.method,
            step,
            loss = loss_value,
            p_target = prob,
            p_min,
            v_norm,
            delta_norm = self.norm(),
            "delta step"
        );
        if loss_value < hp.stop_loss || p_min >= hp.stop_prob || step + 1 >= hp.steps {
            return DeltaStep { prob, done: true };
        }
        let grads = self.params.grads(&loss.backward());
        self.adam.step(&mut self.params, &grads, hp.lr);
        let max = hp.clamp * v_norm;
        let n = self.norm();
        if n > max {
            let value = self.params.value(self.id);
            self.params.set_value(self.id, value * (max / n));
        }
        DeltaStep { prob, done: false }
    }

    fn norm(&self) -> f32 {
        self.params
            .value(self.id)
            .square()
            .sum()
            .sqrt()
            .into_scalar::<f32>()
    }

    fn into_delta(self) -> Vec<f32> {
        self.params
            .value(self.id)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 delta")
    }
}

//! Parameter-importance penalties: online EWC and Synaptic Intelligence. Both keep one state
//! tensor per parameter of the [`ParamSet`](engram_adapters::optim::ParamSet) and add
//! `strength · Σ importance · (θ − θ*)²`.

use burn::tensor::Tensor;
use engram_runtime::burn;

use crate::learner::{AfterStep, Piece, StepCtx, TaskEnd};
use crate::model::rows_tensor;
use engram_adapters::optim::{ParamSet, cross_entropy};

pub(crate) fn penalty(
    params: &ParamSet,
    importance: &[Tensor<2>],
    anchor: &[Tensor<2>],
) -> Tensor<1> {
    let mut total: Option<Tensor<1>> = None;
    for ((id, w), a) in params.ids().zip(importance).zip(anchor) {
        let d = params.get(id) - a.clone();
        let term = (d.square() * w.clone()).sum();
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total.expect("a parameter set with parameters")
}

/// Online EWC (Schwarz et al. 2018, "Progress & Compress"): after each task the empirical
/// Fisher of that task is added to a running Fisher decayed by `gamma`, and the parameters
/// are pulled toward their end-of-task values with weight `lambda / 2`.
#[derive(Clone, Debug)]
pub struct OnlineEwc {
    /// Penalty strength.
    pub lambda: f32,
    /// Decay of the running Fisher (1: plain accumulation).
    pub gamma: f32,
    /// Examples whose squared per-example gradients estimate the Fisher.
    pub fisher_samples: usize,
    fisher: Vec<Tensor<2>>,
    anchor: Vec<Tensor<2>>,
}

impl OnlineEwc {
    /// A penalty with no Fisher yet (the first task trains unconstrained).
    pub fn new(lambda: f32, gamma: f32, fisher_samples: usize) -> Self {
        Self {
            lambda,
            gamma,
            fisher_samples,
            fisher: Vec::new(),
            anchor: Vec::new(),
        }
    }
}

impl Piece for OnlineEwc {
    fn name(&self) -> &'static str {
        "ewc-online"
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        if self.fisher.is_empty() {
            return None;
        }
        Some(penalty(ctx.params, &self.fisher, &self.anchor) * (self.lambda / 2.0))
    }

    fn end_task(&mut self, ctx: &mut TaskEnd<'_>) {
        let n = ctx.data.len().min(self.fisher_samples).max(1);
        let stride = (ctx.data.len() / n).max(1);
        let mut fisher: Vec<Tensor<2>> = Vec::new();
        let weights = ctx.model.tracked(ctx.params);
        for i in (0..ctx.data.len()).step_by(stride).take(n) {
            let x = rows_tensor(ctx.data.row(i), ctx.data.dim, ctx.device);
            let loss = cross_entropy(ctx.model.logits(&weights, x), &ctx.data.y[i..=i]);
            let grads = ctx.params.grads(&loss.backward());
            for (k, id) in ctx.params.ids().enumerate() {
                let g2 = grads
                    .get(id)
                    .expect("every weight is used")
                    .clone()
                    .square()
                    / n as f32;
                if fisher.len() <= k {
                    fisher.push(g2);
                } else {
                    fisher[k] = fisher[k].clone() + g2;
                }
            }
        }
        self.fisher = if self.fisher.is_empty() {
            fisher
        } else {
            let g = self.gamma;
            self.fisher
                .iter()
                .zip(fisher)
                .map(|(old, new)| old.clone() * g + new)
                .collect()
        };
        self.anchor = ctx.model.frozen(ctx.params);
    }
}

/// Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017): each step adds `−g · Δθ` to a
/// per-parameter path integral; at a task's end the importance grows by
/// `integral / ((Δθ_task)² + xi)` and the penalty `c · Σ Ω (θ − θ*)²` holds parameters near
/// their end-of-task values.
#[derive(Clone, Debug)]
pub struct Si {
    /// Penalty strength.
    pub c: f32,
    /// Damping of the importance denominator.
    pub xi: f32,
    integral: Vec<Tensor<2>>,
    omega: Vec<Tensor<2>>,
    anchor: Vec<Tensor<2>>,
}

impl Si {
    /// A penalty with no importance yet.
    pub fn new(c: f32, xi: f32) -> Self {
        Self {
            c,
            xi,
            integral: Vec::new(),
            omega: Vec::new(),
            anchor: Vec::new(),
        }
    }
}

impl Piece for Si {
    fn name(&self) -> &'static str {
        "si"
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        if self.omega.is_empty() {
            return None;
        }
        Some(penalty(ctx.params, &self.omega, &self.anchor) * self.c)
    }

    fn after_step(&mut self, ctx: &AfterStep<'_>) {
        if self.anchor.is_empty() {
            self.anchor = ctx.before.to_vec();
        }
        for (k, id) in ctx.params.ids().enumerate() {
            let Some(g) = ctx.grads.get(id) else { continue };
            let delta = ctx.params.value(id) - ctx.before[k].clone();
            let contrib = (g.clone() * delta).neg();
            if self.integral.len() <= k {
                self.integral.push(contrib);
            } else {
                self.integral[k] = self.integral[k].clone() + contrib;
            }
        }
    }

    fn end_task(&mut self, ctx: &mut TaskEnd<'_>) {
        if self.integral.is_empty() {
            return;
        }
        let now = ctx.model.frozen(ctx.params);
        let new: Vec<Tensor<2>> = self
            .integral
            .drain(..)
            .zip(now.iter().zip(&self.anchor))
            .map(|(w, (p, a))| w / ((p.clone() - a.clone()).square() + self.xi))
            .map(|o| o.clamp_min(0.0))
            .collect();
        self.omega = if self.omega.is_empty() {
            new
        } else {
            self.omega
                .iter()
                .zip(new)
                .map(|(o, n)| o.clone() + n)
                .collect()
        };
        self.anchor = now;
    }
}

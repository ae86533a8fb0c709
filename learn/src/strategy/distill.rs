//! Distillation pieces: Learning without Forgetting and momentum knowledge distillation.

use burn::tensor::Tensor;
use engram_runtime::burn;

use crate::learner::{AfterStep, Piece, StepCtx, TaskEnd, distillation};

/// Learning without Forgetting (Li & Hoiem 2016), class-incremental form: the model frozen at
/// the end of the previous task is the teacher, and `alpha`·KD at temperature `t` keeps the
/// student's logits of the old classes on the current inputs close to the teacher's.
#[derive(Clone, Debug)]
pub struct Lwf {
    /// Weight of the distillation term.
    pub alpha: f32,
    /// Softmax temperature.
    pub t: f32,
    teacher: Option<Vec<Tensor<2>>>,
}

impl Lwf {
    /// No teacher until the first task ends.
    pub fn new(alpha: f32, t: f32) -> Self {
        Self {
            alpha,
            t,
            teacher: None,
        }
    }
}

impl Piece for Lwf {
    fn name(&self) -> &'static str {
        "lwf"
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        let teacher = self.teacher.as_ref()?;
        if ctx.old_classes.is_empty() {
            return None;
        }
        let target = ctx.model.logits(teacher, ctx.x.clone().inner());
        let kd = distillation(ctx.logits.clone(), target, ctx.old_classes, self.t);
        Some(kd * self.alpha)
    }

    fn end_task(&mut self, ctx: &mut TaskEnd<'_>) {
        self.teacher = Some(ctx.model.frozen(ctx.params));
    }
}

/// Momentum knowledge distillation (Michel, Wang, Lin & Wang, ICML 2024, "Rethinking Momentum
/// Knowledge Distillation in Online Continual Learning"): an exponential moving average of the
/// student is the teacher, updated after every step, and `lambda`·KD at temperature `t` on the
/// current and the replay batch is added beside the strategy's own (replay) loss.
#[derive(Clone, Debug)]
pub struct MomentumKd {
    /// EMA decay of the teacher (close to 1: a slow teacher).
    pub momentum: f32,
    /// Weight of the distillation term.
    pub lambda: f32,
    /// Softmax temperature.
    pub t: f32,
    teacher: Vec<Tensor<2>>,
}

impl MomentumKd {
    /// The teacher starts as a copy of the student at the first step.
    pub fn new(momentum: f32, lambda: f32, t: f32) -> Self {
        Self {
            momentum,
            lambda,
            t,
            teacher: Vec::new(),
        }
    }
}

impl Piece for MomentumKd {
    fn name(&self) -> &'static str {
        "mkd"
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        if self.teacher.is_empty() {
            self.teacher = ctx.model.frozen(ctx.params);
            return None;
        }
        let target = ctx.model.logits(&self.teacher, ctx.x.clone().inner());
        let mut kd = distillation(ctx.logits.clone(), target, &[], self.t);
        if let Some(r) = ctx.replay {
            let target = ctx.model.logits(&self.teacher, r.x.clone().inner());
            kd = kd + distillation(r.logits.clone(), target, &[], self.t);
        }
        Some(kd * self.lambda)
    }

    fn after_step(&mut self, ctx: &AfterStep<'_>) {
        let m = self.momentum;
        for (t, id) in self.teacher.iter_mut().zip(ctx.params.ids()) {
            *t = t.clone() * m + ctx.params.value(id) * (1.0 - m);
        }
    }
}

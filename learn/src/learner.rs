//! The training loop every strategy shares: cross-entropy on the current batch, plus whatever
//! loss terms the strategy's [`Piece`]s add (replay, distillation, penalties), one SGD step,
//! then the pieces' bookkeeping and the replay buffer's insertion.
//!
//! A strategy is a list of pieces over a [`ParamSet`]; none of them knows the architecture
//! beyond "weights in, logits out", so the same pieces apply to LoRA parameters.

use burn::tensor::{Device, Tensor};
use engram_runtime::burn;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

use super::buffer::ReplayBuffer;
use super::data::Dataset;
use super::model::{Mlp, rows_tensor, to_vec};
use engram_adapters::optim::{Grads, ParamSet, cross_entropy};

/// A training step that could not be applied; parameters are unchanged.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum StepError {
    /// The loss was NaN or infinite (the step is skipped).
    #[error("non-finite loss {loss} at step {step}")]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The step counter.
        step: u64,
    },
    /// Inputs and labels disagree in length, or the batch is empty.
    #[error("batch of {x} floats (width {dim}) and {y} labels")]
    Shape {
        /// Input floats.
        x: usize,
        /// Input width.
        dim: usize,
        /// Labels.
        y: usize,
    },
}

/// The replay batch of a step, already through the student.
pub struct Replayed {
    /// Inputs `(k, dim)`.
    pub x: Tensor<2>,
    /// Labels.
    pub y: Vec<u32>,
    /// Student logits `(k, classes)` (tracked).
    pub logits: Tensor<2>,
    /// Logits stored with the rows (DER++), `(k, classes)`.
    pub stored_logits: Option<Tensor<2>>,
}

/// What a piece sees while the loss of a step is built.
pub struct StepCtx<'a> {
    /// The architecture.
    pub model: &'a Mlp,
    /// The parameters (tracked leaves).
    pub params: &'a ParamSet,
    /// Current batch inputs `(n, dim)`.
    pub x: &'a Tensor<2>,
    /// Current batch labels.
    pub y: &'a [u32],
    /// Student logits on `x` (tracked).
    pub logits: &'a Tensor<2>,
    /// The replay batch, when the learner has a non-empty buffer.
    pub replay: Option<&'a Replayed>,
    /// Classes of the tasks before the current one.
    pub old_classes: &'a [u32],
}

/// What a piece sees after a step was applied.
pub struct AfterStep<'a> {
    /// Parameters after the step.
    pub params: &'a ParamSet,
    /// Parameter values before the step (untracked), in id order.
    pub before: &'a [Tensor<2>],
    /// The gradients the step used.
    pub grads: &'a Grads,
}

/// What a piece sees at the end of a task.
pub struct TaskEnd<'a> {
    /// The architecture.
    pub model: &'a Mlp,
    /// Parameters (tracked leaves, so a piece may run extra backward passes).
    pub params: &'a ParamSet,
    /// The task's training data.
    pub data: &'a Dataset,
    /// The classes the task introduced.
    pub classes: &'a [u32],
    /// Classes of all tasks so far, this one included.
    pub seen_classes: &'a [u32],
    /// The learner's replay buffer (pieces that manage exemplars rewrite it).
    pub buffer: Option<&'a mut ReplayBuffer>,
    /// The autodiff device.
    pub device: &'a Device,
}

/// One composable part of a strategy.
pub trait Piece {
    /// Short name for reports.
    fn name(&self) -> &'static str;
    /// Extra loss terms for this step (`None`: nothing to add).
    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>>;
    /// Bookkeeping after an applied step (path integrals, EMA teachers).
    fn after_step(&mut self, _ctx: &AfterStep<'_>) {}
    /// Bookkeeping at the end of a task (Fisher, anchors, teachers, exemplars).
    fn end_task(&mut self, _ctx: &mut TaskEnd<'_>) {}
    /// Class scores replacing the logits at evaluation (iCaRL's nearest mean of exemplars).
    fn predict(&self, _model: &Mlp, _weights: &[Tensor<2>], _x: Tensor<2>) -> Option<Tensor<2>> {
        None
    }
    /// True when the piece fills the buffer itself (the learner then does not insert).
    fn manages_buffer(&self) -> bool {
        false
    }
}

/// Optimization settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// SGD learning rate.
    pub lr: f32,
    /// Current-batch size.
    pub batch: usize,
    /// Replay-batch size (when there is a buffer).
    pub replay_batch: usize,
    /// Passes over each task's data (1: online, single pass).
    pub epochs: usize,
}

/// A model, its parameters, an optional replay buffer and the strategy's pieces.
pub struct Learner {
    /// The architecture.
    pub model: Mlp,
    /// The trainable parameters.
    pub params: ParamSet,
    /// The autodiff device.
    pub device: Device,
    /// Optimization settings.
    pub config: TrainConfig,
    /// The replay buffer (ER, DER++, MKD, iCaRL).
    pub buffer: Option<ReplayBuffer>,
    /// The strategy.
    pub pieces: Vec<Box<dyn Piece>>,
    state: LearnerState,
    seed: u64,
}

/// The learner's counters, persisted with a checkpoint so a restart resumes where it stopped.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LearnerState {
    /// Classes of all tasks started so far.
    pub seen_classes: Vec<u32>,
    /// Classes of all tasks finished so far.
    pub old_classes: Vec<u32>,
    /// Optimizer steps applied.
    pub steps: u64,
    /// Tasks finished.
    pub tasks_done: u32,
}

impl Learner {
    /// A learner; `seed` drives the data shuffling (one stream per task, so a restart at a
    /// task boundary shuffles exactly as an uninterrupted run).
    pub fn new(
        model: Mlp,
        params: ParamSet,
        device: Device,
        config: TrainConfig,
        buffer: Option<ReplayBuffer>,
        pieces: Vec<Box<dyn Piece>>,
        seed: u64,
    ) -> Self {
        Self {
            model,
            params,
            device,
            config,
            buffer,
            pieces,
            state: LearnerState::default(),
            seed,
        }
    }

    /// Steps applied so far.
    pub fn steps(&self) -> u64 {
        self.state.steps
    }

    /// Counters to persist.
    pub fn state(&self) -> &LearnerState {
        &self.state
    }

    /// Restores persisted counters.
    pub fn set_state(&mut self, state: LearnerState) {
        self.state = state;
    }

    /// One SGD step on a batch `(x, y)` of task `task`; returns the loss.
    pub fn step(&mut self, x: &[f32], y: &[u32], task: u32) -> Result<f32, StepError> {
        let dim = self.model.dims()[0];
        if y.is_empty() || x.len() != y.len() * dim {
            return Err(StepError::Shape {
                x: x.len(),
                dim,
                y: y.len(),
            });
        }
        let weights = self.model.tracked(&self.params);
        let xt = rows_tensor(x, dim, &self.device);
        let logits = self.model.logits(&weights, xt.clone());
        let replay = self.draw_replay(&weights);
        let ctx = StepCtx {
            model: &self.model,
            params: &self.params,
            x: &xt,
            y,
            logits: &logits,
            replay: replay.as_ref(),
            old_classes: &self.state.old_classes,
        };
        let mut loss = cross_entropy(logits.clone(), y);
        for p in self.pieces.iter_mut() {
            if let Some(extra) = p.loss(&ctx) {
                loss = loss + extra;
            }
        }
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(StepError::NonFiniteLoss {
                loss: value,
                step: self.state.steps,
            });
        }
        let grads = self.params.grads(&loss.backward());
        let before = self.model.frozen(&self.params);
        for id in self.params.ids() {
            if let Some(g) = grads.get(id) {
                let p = self.params.value(id) - g.clone() * self.config.lr;
                self.params.set_value(id, p);
            }
        }
        self.state.steps += 1;
        let after = AfterStep {
            params: &self.params,
            before: &before,
            grads: &grads,
        };
        for p in self.pieces.iter_mut() {
            p.after_step(&after);
        }
        if !self.pieces.iter().any(|p| p.manages_buffer())
            && let Some(buf) = self.buffer.as_mut()
        {
            let z = (buf.n_logits() > 0).then(|| to_vec(logits.inner()));
            let c = buf.n_logits();
            for (i, &label) in y.iter().enumerate() {
                let zi = z.as_ref().map(|z| &z[i * c..(i + 1) * c]);
                buf.insert(&x[i * dim..(i + 1) * dim], label, task, zi)
                    .expect("rows checked against the model's widths");
            }
        }
        Ok(value)
    }

    /// Trains on one task: `epochs` shuffled passes in batches, then the pieces' end-of-task
    /// bookkeeping. Returns the mean loss; skipped (non-finite) steps are counted, not fatal.
    pub fn train_task(&mut self, task: u32, data: &Dataset, classes: &[u32]) -> (f32, usize) {
        for &c in classes {
            if !self.state.seen_classes.contains(&c) {
                self.state.seen_classes.push(c);
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (u64::from(task) << 32));
        let (mut total, mut n, mut skipped) = (0.0, 0usize, 0usize);
        let mut order: Vec<usize> = (0..data.len()).collect();
        for _ in 0..self.config.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(self.config.batch) {
                let b = data.select(chunk);
                match self.step(&b.x, &b.y, task) {
                    Ok(l) => {
                        total += l;
                        n += 1;
                    }
                    Err(StepError::NonFiniteLoss { .. }) => skipped += 1,
                    Err(e) => panic!("batch from the learner's own data: {e}"),
                }
            }
        }
        self.end_task(data, classes);
        (total / n.max(1) as f32, skipped)
    }

    /// Runs the pieces' end-of-task bookkeeping (called by [`Learner::train_task`]).
    pub fn end_task(&mut self, data: &Dataset, classes: &[u32]) {
        let mut ctx = TaskEnd {
            model: &self.model,
            params: &self.params,
            data,
            classes,
            seen_classes: &self.state.seen_classes,
            buffer: self.buffer.as_mut(),
            device: &self.device,
        };
        for p in self.pieces.iter_mut() {
            p.end_task(&mut ctx);
        }
        self.state.old_classes = self.state.seen_classes.clone();
        self.state.tasks_done += 1;
    }

    /// Class scores `(n, classes)` for `x` (logits, or a piece's own predictor).
    pub fn scores(&self, x: &[f32]) -> Vec<f32> {
        let dim = self.model.dims()[0];
        let weights = self.model.frozen(&self.params);
        let inner = self.device.clone().inner();
        let mut out = Vec::with_capacity(x.len() / dim * self.model.n_out());
        for chunk in x.chunks(1000 * dim) {
            let xt = rows_tensor(chunk, dim, &inner);
            let s = self
                .pieces
                .iter()
                .find_map(|p| p.predict(&self.model, &weights, xt.clone()))
                .unwrap_or_else(|| self.model.logits(&weights, xt));
            out.extend(to_vec(s));
        }
        out
    }

    /// Accuracy on `test`: argmax over all classes (class-incremental), or over `mask` only
    /// (task-incremental: the task's own classes).
    pub fn accuracy(&self, test: &Dataset, mask: Option<&[u32]>) -> f32 {
        let c = self.model.n_out();
        let scores = self.scores(&test.x);
        let correct = test
            .y
            .iter()
            .enumerate()
            .filter(|&(i, &y)| {
                let row = &scores[i * c..(i + 1) * c];
                let best = (0..c as u32)
                    .filter(|k| mask.is_none_or(|m| m.contains(k)))
                    .max_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]));
                best == Some(y)
            })
            .count();
        correct as f32 / test.len().max(1) as f32
    }

    fn draw_replay(&mut self, weights: &[Tensor<2>]) -> Option<Replayed> {
        let buf = self.buffer.as_mut().filter(|b| !b.is_empty())?;
        let k = self.config.replay_batch;
        if k == 0 {
            return None;
        }
        let b = buf.sample(k);
        let x = rows_tensor(&b.x, buf.dim(), &self.device);
        let logits = self.model.logits(weights, x.clone());
        let stored_logits =
            (buf.n_logits() > 0).then(|| rows_tensor(&b.logits, buf.n_logits(), &self.device));
        Some(Replayed {
            x,
            y: b.y,
            logits,
            stored_logits,
        })
    }
}

/// Temperature-scaled distillation loss KL(teacher ‖ student) · T², over the columns in `cols`
/// (all when empty). Both `(n, classes)`; the teacher is a constant.
pub fn distillation(student: Tensor<2>, teacher: Tensor<2>, cols: &[u32], t: f32) -> Tensor<1> {
    use burn::tensor::{Int, TensorData, activation::log_softmax};
    let [n, c] = student.dims();
    let (s, te) = if cols.is_empty() || cols.len() == c {
        (student, teacher)
    } else {
        let ids: Vec<i64> = cols.iter().map(|&k| i64::from(k)).collect();
        let idx =
            Tensor::<1, Int>::from_data(TensorData::new(ids, [cols.len()]), &student.device());
        let tidx = Tensor::<1, Int>::from_data(
            TensorData::new(
                cols.iter().map(|&k| i64::from(k)).collect::<Vec<_>>(),
                [cols.len()],
            ),
            &teacher.device(),
        );
        (student.select(1, idx), teacher.select(1, tidx))
    };
    let log_s = log_softmax(s / t, 1);
    let log_t = log_softmax(te / t, 1);
    let p_t = log_t.clone().exp();
    ((p_t * (log_t - log_s)).sum() / n as f32) * (t * t)
}

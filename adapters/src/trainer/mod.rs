//! The fine-tuning loop: completion-masked causal-LM loss, padded batches, AdamW with global
//! gradient clipping, gradient accumulation, warm-up + cosine schedule, evaluation (loss and
//! exact match) on a held-out split, early stopping that restores the best weights, and
//! non-finite steps skipped without touching the weights. Seeded and deterministic on CPU.

pub mod data;
pub mod example;
pub mod plan;
pub mod trainable;

use std::time::Instant;

use burn::tensor::Tensor;
use engram_runtime::backend::is_cpu;
use engram_runtime::burn;
use engram_runtime::generate::Adaptation;
use engram_runtime::model::llama::{Llama, Logits};
use engram_runtime::model::tokenizer::Tokenizer;
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

pub use data::{Batch, Encoded, Example};
pub use trainable::Trainable;

use crate::optim::{AdamW, AdamWConfig, Grads, HostParams, Schedule, causal_lm_loss};

/// Where one optimizer step stands: the padding id, the schedule, the step and the epoch.
struct StepAt<'a> {
    pad: u32,
    schedule: &'a Schedule,
    step: u32,
    epoch: u32,
}

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: u32,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate of the cosine decay.
    pub min_lr: f32,
    /// Linear warm-up steps.
    pub warmup_steps: u32,
    /// Optimizer settings (weight decay, clipping).
    pub adamw: AdamWConfig,
    /// Longest example in tokens (longer completions are cut).
    pub max_seq_len: usize,
    /// Append the end-of-sequence token to completions (teaches the model to stop).
    pub append_eos: bool,
    /// Evaluate every this many optimizer steps (0: only at the end of each epoch).
    pub eval_every: u32,
    /// Stop after this many evaluations without a lower eval loss (restoring the best).
    pub early_stop_patience: Option<u32>,
    /// Seed of the shuffling (and nothing else: adapters carry their own seeds).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            batch_size: 4,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 5,
            adamw: AdamWConfig::default(),
            max_seq_len: 128,
            append_eos: false,
            eval_every: 0,
            early_stop_patience: None,
            seed: 0,
        }
    }
}

/// One optimizer step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepLog {
    /// Optimizer step (1-based; counts skipped steps too).
    pub step: u32,
    /// Epoch (0-based).
    pub epoch: u32,
    /// Mean training loss of the step's micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping (NaN when skipped).
    pub grad_norm: f32,
    /// True when a non-finite loss or gradient made the step a no-op.
    pub skipped: bool,
    /// Completion tokens the step trained on.
    pub tokens: usize,
}

/// Held-out evaluation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Mean completion-token loss.
    pub loss: f32,
    /// Fraction of examples whose whole completion greedy decoding reproduces.
    pub exact_match: f32,
    /// Fraction of completion tokens that are the top-1 prediction (teacher forced).
    pub token_accuracy: f32,
}

/// Progress events, for a progress bar or a log.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// An optimizer step finished (or was skipped).
    Step(StepLog),
    /// An evaluation finished after `step`.
    Eval {
        /// Optimizer step.
        step: u32,
        /// Its result.
        report: EvalReport,
    },
}

/// What a training run did.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Every step.
    pub steps: Vec<StepLog>,
    /// Every evaluation, `(step, report)`.
    pub evals: Vec<(u32, EvalReport)>,
    /// Steps skipped because of non-finite values.
    pub skipped_steps: u32,
    /// Completion tokens trained on.
    pub trained_tokens: usize,
    /// All tokens run forward and backward (prompt, completion and padding).
    pub processed_tokens: usize,
    /// Wall time of the training steps (evaluation excluded).
    pub train_seconds: f64,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
}

impl TrainReport {
    /// Tokens (all positions) per second of training.
    pub fn tokens_per_second(&self) -> f64 {
        self.processed_tokens as f64 / self.train_seconds.max(1e-9)
    }
}

/// Training could not start.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum TrainError {
    /// No example kept a completion after tokenization and truncation.
    #[error("no usable training example (empty set, or every completion cut by max_seq_len)")]
    NoExamples,
    /// The model is not on an autodiff device: gradients cannot be computed.
    #[error("the model's device has no autodiff: load it on `device.autodiff()` to train")]
    NoAutodiff,
    /// A configuration value is out of range.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The adaptation has nothing to train.
    #[error("the adaptation has no trainable parameters")]
    NoParameters,
}

/// Trains adaptations of one frozen model.
pub struct Trainer<'m> {
    model: &'m Llama,
    tokenizer: Option<&'m Tokenizer>,
    pad: u32,
    config: TrainConfig,
}

impl<'m> Trainer<'m> {
    /// A trainer for `model` (loaded on an autodiff device) with `config`.
    pub fn new(model: &'m Llama, tokenizer: &'m Tokenizer, config: TrainConfig) -> Self {
        Self {
            model,
            tokenizer: Some(tokenizer),
            pad: tokenizer.eos(),
            config,
        }
    }

    /// A trainer for already tokenized data ([`Trainer::fit_encoded`]), padding with `pad`;
    /// text examples given to it encode to nothing.
    pub fn for_tokens(model: &'m Llama, pad: u32, config: TrainConfig) -> Self {
        Self {
            model,
            tokenizer: None,
            pad,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Tokenizes examples, dropping those with no completion left.
    pub fn encode(&self, examples: &[Example]) -> Vec<Encoded> {
        let Some(tok) = self.tokenizer else {
            return Vec::new();
        };
        let eos = self.config.append_eos.then(|| tok.eos());
        examples
            .iter()
            .filter_map(|e| Encoded::new(tok, e, eos, self.config.max_seq_len))
            .collect()
    }

    /// The mean completion loss of `batch` under `adapter` (a graph to backpropagate).
    pub fn batch_loss(&self, adapter: &dyn Trainable, batch: &Batch) -> Tensor<1> {
        let prefix = adapter.prefix();
        let adaptation = Adaptation {
            linear: adapter.linear(),
            prefix: prefix.as_ref(),
        };
        let logits = adaptation
            .forward(self.model, &batch.inputs, batch.batch, None, Logits::All)
            .expect("max_seq_len is checked against the context");
        let (targets, mask) = batch.tensors(self.model.device());
        causal_lm_loss(logits, targets, mask)
    }

    /// Trains `adapter` on `train`, evaluating on `eval`; `on_event` sees every step and eval.
    pub fn fit(
        &self,
        adapter: &mut dyn Trainable,
        train: &[Example],
        eval: &[Example],
        on_event: impl FnMut(&TrainEvent),
    ) -> Result<TrainReport, TrainError> {
        self.fit_encoded(adapter, &self.encode(train), &self.encode(eval), on_event)
    }

    /// [`Trainer::fit`] on tokenized examples.
    pub fn fit_encoded(
        &self,
        adapter: &mut dyn Trainable,
        train: &[Encoded],
        eval: &[Encoded],
        mut on_event: impl FnMut(&TrainEvent),
    ) -> Result<TrainReport, TrainError> {
        let c = &self.config;
        if c.batch_size == 0 || c.grad_accum == 0 || !(c.lr.is_finite() && c.lr > 0.0) {
            return Err(TrainError::Config(format!(
                "batch_size {}, grad_accum {}, lr {}",
                c.batch_size, c.grad_accum, c.lr
            )));
        }
        if c.max_seq_len < 2 || c.max_seq_len > self.model.config().n_ctx_train {
            return Err(TrainError::Config(format!(
                "max_seq_len {} outside 2..={}",
                c.max_seq_len,
                self.model.config().n_ctx_train
            )));
        }
        if !self.model.device().is_autodiff() {
            return Err(TrainError::NoAutodiff);
        }
        if adapter.param_sets().iter().all(|p| p.is_empty()) {
            return Err(TrainError::NoParameters);
        }
        if train.is_empty() {
            return Err(TrainError::NoExamples);
        }
        if let Some(e) = train
            .iter()
            .chain(eval)
            .find(|e| e.tokens.len() > c.max_seq_len)
        {
            return Err(TrainError::Config(format!(
                "an example has {} tokens, max_seq_len is {}",
                e.tokens.len(),
                c.max_seq_len
            )));
        }
        let per_epoch = train.len().div_ceil(c.batch_size * c.grad_accum) as u32;
        let schedule = Schedule {
            base_lr: c.lr,
            min_lr: c.min_lr,
            warmup: c.warmup_steps,
            total: per_epoch * c.epochs,
        };
        let mut optims: Vec<AdamW> = adapter
            .param_sets()
            .iter()
            .map(|_| AdamW::new(c.adamw.clone()))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
        let pad = self.pad;
        let mut report = TrainReport {
            steps: Vec::new(),
            evals: Vec::new(),
            skipped_steps: 0,
            trained_tokens: 0,
            processed_tokens: 0,
            train_seconds: 0.0,
            stopped_early: false,
        };
        let mut best: Option<(f32, Vec<HostParams>)> = None;
        let mut since_best = 0u32;
        let mut step = 0u32;
        let mut order: Vec<usize> = (0..train.len()).collect();
        'epochs: for epoch in 0..c.epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(c.batch_size * c.grad_accum) {
                let start = Instant::now();
                adapter.set_training(true);
                let at = StepAt {
                    pad,
                    schedule: &schedule,
                    step,
                    epoch,
                };
                let log = self.step(adapter, &mut optims, train, chunk, &at);
                adapter.set_training(false);
                report.train_seconds += start.elapsed().as_secs_f64();
                step += 1;
                report.skipped_steps += log.skipped as u32;
                report.trained_tokens += log.tokens;
                report.processed_tokens += chunk
                    .chunks(c.batch_size)
                    .map(|mb| {
                        mb.len()
                            * mb.iter()
                                .map(|&i| train[i].tokens.len() - 1)
                                .max()
                                .unwrap_or(0)
                    })
                    .sum::<usize>();
                // Per step: debug (applications see each step through `on_event`).
                tracing::debug!(
                    step = log.step,
                    loss = log.loss,
                    lr = log.lr,
                    grad_norm = log.grad_norm,
                    skipped = log.skipped,
                    "train step"
                );
                on_event(&TrainEvent::Step(log.clone()));
                report.steps.push(log);
                let end_of_epoch = chunk.as_ptr_range().end == order.as_ptr_range().end;
                let due = (c.eval_every > 0 && step.is_multiple_of(c.eval_every))
                    || (c.eval_every == 0 && end_of_epoch);
                if due && !eval.is_empty() {
                    let r = self.evaluate_encoded(adapter, eval);
                    tracing::debug!(step, loss = r.loss, exact_match = r.exact_match, "eval");
                    on_event(&TrainEvent::Eval { step, report: r });
                    report.evals.push((step, r));
                    if best.as_ref().is_none_or(|(l, _)| r.loss < *l) {
                        best = Some((
                            r.loss,
                            adapter.param_sets().iter().map(|p| p.to_host()).collect(),
                        ));
                        since_best = 0;
                    } else {
                        since_best += 1;
                        if c.early_stop_patience.is_some_and(|p| since_best >= p) {
                            report.stopped_early = true;
                            break 'epochs;
                        }
                    }
                }
            }
        }
        if report.stopped_early
            && let Some((_, host)) = best
        {
            for (set, h) in adapter.param_sets_mut().into_iter().zip(&host) {
                set.load_host(h).expect("same adapter, same shapes");
            }
        }
        Ok(report)
    }

    fn step(
        &self,
        adapter: &mut dyn Trainable,
        optims: &mut [AdamW],
        train: &[Encoded],
        chunk: &[usize],
        at: &StepAt,
    ) -> StepLog {
        let &StepAt {
            pad,
            schedule,
            step,
            epoch,
        } = at;
        // Each micro-batch, cut into one part per thread when the step runs data-parallel.
        let rows = chunk.len().min(self.config.batch_size);
        let replicas = self.replicas(adapter, rows);
        let ways = replicas.as_ref().map_or(1, Vec::len);
        let micro: Vec<Vec<Batch>> = chunk
            .chunks(self.config.batch_size)
            .map(|mb| {
                cut(mb, ways)
                    .map(|part| {
                        Batch::new(&part.iter().map(|&i| &train[i]).collect::<Vec<_>>(), pad)
                    })
                    .collect()
            })
            .collect();
        let total_tokens: usize = micro.iter().flatten().map(Batch::trained_tokens).sum();
        let lr = schedule.lr_at(step);
        let mut acc: Option<Vec<Grads>> = None;
        let mut loss_sum = 0.0f32;
        let mut finite = true;
        'micro: for parts in &micro {
            let results = match (&replicas, parts.len()) {
                (Some(replicas), n) if n > 1 => self.model.cpu().map_shares(n, &|i| {
                    self.weighted_grads(replicas[i].as_ref(), &parts[i], total_tokens)
                }),
                _ => parts
                    .iter()
                    .map(|b| self.weighted_grads(adapter, b, total_tokens))
                    .collect(),
            };
            for (value, g) in results {
                let Some(g) = g else {
                    finite = false;
                    break 'micro;
                };
                loss_sum += value;
                acc = Some(match acc {
                    None => g,
                    Some(mut a) => {
                        for (x, y) in a.iter_mut().zip(g) {
                            x.accumulate(y);
                        }
                        a
                    }
                });
            }
        }
        let mut log = StepLog {
            step: step + 1,
            epoch,
            loss: if finite { loss_sum } else { f32::NAN },
            lr,
            grad_norm: f32::NAN,
            skipped: true,
            tokens: 0,
        };
        let Some(grads) = acc.filter(|_| finite) else {
            return log;
        };
        let norm = grads.iter().map(|g| g.norm().powi(2)).sum::<f32>().sqrt();
        log.grad_norm = norm;
        if !norm.is_finite() {
            return log;
        }
        let clip = optims[0].clip_factor(norm);
        for ((set, opt), g) in adapter
            .param_sets_mut()
            .into_iter()
            .zip(optims.iter_mut())
            .zip(&grads)
        {
            opt.apply(set, g, lr, clip);
        }
        log.skipped = false;
        log.tokens = total_tokens;
        log
    }

    /// One replica of `adapter` per CPU thread that has a row of the largest micro-batch
    /// (`rows`) for a data-parallel step, or `None`: one thread, micro-batches of one row, a
    /// GPU device (its kernels are already parallel), or an adaptation without replicas.
    fn replicas(
        &self,
        adapter: &dyn Trainable,
        rows: usize,
    ) -> Option<Vec<Box<dyn Trainable + Send + Sync>>> {
        let ways = self.model.cpu().threads().min(rows);
        if ways < 2 || !is_cpu(self.model.device()) {
            return None;
        }
        (0..ways).map(|_| adapter.replica()).collect()
    }

    /// `batch`'s loss weighted by its share of the step's `total` trained tokens, and the
    /// gradients of `adapter`'s parameter sets under it; `None` for the gradients when the loss
    /// is not finite (no backward pass is run).
    fn weighted_grads(
        &self,
        adapter: &dyn Trainable,
        batch: &Batch,
        total: usize,
    ) -> (f32, Option<Vec<Grads>>) {
        // Weighting each part by its share of the step's completion tokens makes the step's
        // loss the mean over all of them whatever the split.
        let w = batch.trained_tokens() as f32 / total.max(1) as f32;
        let loss = self.batch_loss(adapter, batch);
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return (value, None);
        }
        let grads = (loss * w).backward();
        let g = adapter
            .param_sets()
            .iter()
            .map(|p| p.grads(&grads))
            .collect();
        (value * w, Some(g))
    }

    /// Loss, exact match and token accuracy of `adapter` on `examples`.
    pub fn evaluate(&self, adapter: &dyn Trainable, examples: &[Example]) -> EvalReport {
        self.evaluate_encoded(adapter, &self.encode(examples))
    }

    /// [`Trainer::evaluate`] on tokenized examples.
    ///
    /// Exact match is computed teacher-forced: greedy decoding reproduces a completion exactly
    /// when every completion token is the top-1 prediction given the ones before it.
    pub fn evaluate_encoded(&self, adapter: &dyn Trainable, examples: &[Encoded]) -> EvalReport {
        let pad = self.pad;
        let (mut loss_sum, mut tokens, mut correct, mut exact) = (0f64, 0usize, 0usize, 0usize);
        for chunk in examples.chunks(self.config.batch_size.max(1)) {
            let batch = Batch::new(&chunk.iter().collect::<Vec<_>>(), pad);
            let prefix = adapter.prefix();
            let adaptation = Adaptation {
                linear: adapter.linear(),
                prefix: prefix.as_ref(),
            };
            let logits = adaptation
                .forward(self.model, &batch.inputs, batch.batch, None, Logits::All)
                .expect("max_seq_len is checked against the context");
            let (targets, mask) = batch.tensors(self.model.device());
            let n = batch.trained_tokens();
            let loss = causal_lm_loss(logits.clone(), targets, mask).into_scalar::<f32>();
            loss_sum += loss as f64 * n as f64;
            tokens += n;
            let top: Vec<i64> = logits
                .argmax(2)
                .inner()
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .expect("int ids");
            for row in 0..batch.batch {
                let o = row * batch.t;
                let mut all = true;
                for p in 0..batch.t {
                    if batch.mask[o + p] > 0.0 {
                        let ok = top[o + p] == batch.targets[o + p] as i64;
                        correct += ok as usize;
                        all &= ok;
                    }
                }
                exact += all as usize;
            }
        }
        EvalReport {
            loss: (loss_sum / tokens.max(1) as f64) as f32,
            exact_match: exact as f32 / examples.len().max(1) as f32,
            token_accuracy: correct as f32 / tokens.max(1) as f32,
        }
    }
}

/// `items` cut into at most `ways` contiguous parts whose lengths differ by at most one.
fn cut(items: &[usize], ways: usize) -> impl Iterator<Item = &[usize]> {
    let ways = ways.clamp(1, items.len().max(1));
    (0..ways).map(move |p| &items[items.len() * p / ways..items.len() * (p + 1) / ways])
}

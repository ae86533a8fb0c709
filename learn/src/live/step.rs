//! One learning step of the runtime: a batch of fresh sequences (half replaced by replayed
//! ones for ER and DER++), the strategy's loss on top of the adapter stack (the LoRA adapter
//! plus the committed edits), one AdamW update, then the strategy's bookkeeping.

use burn::tensor::{Int, Tensor, TensorData, activation};
use engram_adapters::compose::Stack;
use engram_adapters::lora::Lora;
use engram_adapters::optim::{AdamW, Grads, HostParams, causal_lm_loss};
use engram_adapters::trainer::{Batch, Encoded};
use engram_runtime::burn;
use engram_runtime::generate::Adaptation;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits};

use super::config::{LiveConfig, Strategy};
use super::sequences::SequenceBuffer;
use crate::strategy::regularize::penalty;

/// What a strategy keeps between steps beyond the adapter and the replay memory.
pub(crate) enum StrategyState {
    /// Naive, ER, DER++: nothing.
    None,
    /// LwF (the adapter at the last task boundary; `None` before the first) and MKD (the
    /// moving average, from the start).
    Teacher(Option<Box<Lora>>),
    /// Online EWC and SI: per parameter, the importance, the anchor it pulls towards, and
    /// the running estimate of the current task (EWC: summed squared gradients; SI: the path
    /// integral), plus the steps it covers.
    Importance {
        importance: Vec<Tensor<2>>,
        anchor: Vec<Tensor<2>>,
        running: Vec<Tensor<2>>,
        steps: u32,
    },
}

impl StrategyState {
    /// The state a fresh adapter starts with.
    pub(crate) fn fresh(strategy: &Strategy, lora: &Lora, model: &Llama) -> Self {
        match strategy {
            Strategy::Lwf { .. } => Self::Teacher(None),
            Strategy::Mkd { .. } => Self::Teacher(Some(Box::new(copy_of(lora, model)))),
            Strategy::Ewc { .. } | Strategy::Si { .. } => {
                let p = lora.params();
                let zeros: Vec<Tensor<2>> = p.ids().map(|id| p.value(id).zeros_like()).collect();
                Self::Importance {
                    importance: zeros.clone(),
                    anchor: p.ids().map(|id| p.value(id)).collect(),
                    running: zeros,
                    steps: 0,
                }
            }
            _ => Self::None,
        }
    }

    /// A task ended: LwF keeps the adapter as its teacher; EWC folds the task's Fisher into
    /// the importance (decayed), SI its path integral (normalized by the distance moved);
    /// both anchor at the current parameters.
    pub(crate) fn task_boundary(&mut self, strategy: &Strategy, lora: &Lora, model: &Llama) {
        match (self, strategy) {
            (Self::Teacher(t), Strategy::Lwf { .. }) => *t = Some(Box::new(copy_of(lora, model))),
            (
                Self::Importance {
                    importance,
                    anchor,
                    running,
                    steps,
                },
                s,
            ) => {
                let p = lora.params();
                for (i, id) in p.ids().enumerate() {
                    let now = p.value(id);
                    importance[i] = match s {
                        Strategy::Ewc { decay, .. } => {
                            importance[i].clone() * *decay
                                + running[i].clone() / (*steps).max(1) as f32
                        }
                        Strategy::Si { xi, .. } => {
                            let moved = (now.clone() - anchor[i].clone()).square() + *xi;
                            importance[i].clone() + (running[i].clone() / moved).clamp_min(0.0)
                        }
                        _ => unreachable!("importance state belongs to EWC and SI"),
                    };
                    running[i] = running[i].zeros_like();
                    anchor[i] = now;
                }
                *steps = 0;
            }
            _ => {}
        }
    }

    /// The teacher adapter, if the strategy has one now.
    pub(crate) fn teacher(&self) -> Option<&Lora> {
        match self {
            Self::Teacher(t) => t.as_deref(),
            _ => None,
        }
    }

    /// Host copies of every tensor, in a fixed order (for the state file).
    pub(crate) fn to_host(&self, lora: &Lora) -> (Vec<HostParams>, u32) {
        match self {
            Self::None | Self::Teacher(None) => (Vec::new(), 0),
            Self::Teacher(Some(t)) => (vec![t.params().to_host()], 0),
            Self::Importance {
                importance,
                anchor,
                running,
                steps,
            } => {
                let host = |ts: &[Tensor<2>]| {
                    let mut h = lora.params().to_host();
                    for (v, t) in h.values.iter_mut().zip(ts) {
                        *v = t
                            .clone()
                            .into_data()
                            .try_to_vec::<f32>()
                            .unwrap_or_default();
                    }
                    h
                };
                (vec![host(importance), host(anchor), host(running)], *steps)
            }
        }
    }

    /// Rebuilds the state from [`StrategyState::to_host`]'s output; `None` when it does not
    /// fit the strategy or the adapter.
    pub(crate) fn from_host(
        strategy: &Strategy,
        lora: &Lora,
        model: &Llama,
        host: &[HostParams],
        steps: u32,
    ) -> Option<Self> {
        let tensors = |h: &HostParams| -> Option<Vec<Tensor<2>>> {
            let mut check = lora.params().clone();
            check.load_host(h).ok()?;
            Some(check.ids().map(|id| check.value(id)).collect())
        };
        match (strategy, host) {
            (Strategy::Lwf { .. }, []) => Some(Self::Teacher(None)),
            (Strategy::Lwf { .. } | Strategy::Mkd { .. }, [t]) => {
                let mut teacher = copy_of(lora, model);
                teacher.params_mut().load_host(t).ok()?;
                Some(Self::Teacher(Some(Box::new(teacher))))
            }
            (Strategy::Ewc { .. } | Strategy::Si { .. }, [i, a, r]) => Some(Self::Importance {
                importance: tensors(i)?,
                anchor: tensors(a)?,
                running: tensors(r)?,
                steps,
            }),
            (Strategy::Naive | Strategy::Er | Strategy::DerPp { .. }, []) => Some(Self::None),
            _ => None,
        }
    }
}

/// A new adapter of `lora`'s configuration holding its current values.
pub(crate) fn copy_of(lora: &Lora, model: &Llama) -> Lora {
    let mut t = Lora::new(model, lora.config().clone()).expect("the adapter's own configuration");
    t.params_mut()
        .load_host(&lora.params().to_host())
        .expect("same configuration, same shapes");
    t
}

/// A fresh sequence waiting to be learned, with its task.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fresh {
    pub seq: Encoded,
    pub task: u32,
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// The step's loss (the strategy's full objective).
    pub loss: f32,
    /// Fresh sequences trained on.
    pub fresh: usize,
    /// Replayed sequences trained on.
    pub replayed: usize,
    /// Whether AdamW applied the update (a non-finite gradient skips it).
    pub applied: bool,
}

/// Everything a step reads besides the mutable learning state.
pub(crate) struct StepInputs<'a> {
    pub model: &'a Llama,
    pub config: &'a LiveConfig,
    pub edits: Option<&'a dyn LinearAdapter>,
    pub pad: u32,
}

/// The mutable part of one step.
pub(crate) struct StepState<'a> {
    pub lora: &'a mut Lora,
    pub opt: &'a mut AdamW,
    pub memory: Option<&'a mut SequenceBuffer>,
    pub strategy: &'a mut StrategyState,
}

fn forward(cx: &StepInputs, adapter: &dyn LinearAdapter, batch: &Batch) -> Tensor<3> {
    let mut stack = Stack(vec![adapter]);
    stack.0.extend(cx.edits);
    Adaptation::linear(&stack)
        .forward(cx.model, &batch.inputs, batch.batch, None, Logits::All)
        .expect("sequences are cut to max_len, checked against the context")
}

/// `T² · KL(teacher ‖ student)` at temperature `T`, averaged over the masked positions.
fn distillation(student: Tensor<3>, teacher: Tensor<3>, mask: Tensor<2>, t: f32) -> Tensor<1> {
    let [b, n, _] = student.dims();
    let log_s = activation::log_softmax(student / t, 2);
    let log_t = activation::log_softmax(teacher / t, 2);
    let kl = (log_t.clone().exp() * (log_t - log_s))
        .sum_dim(2)
        .reshape([b, n]);
    (kl * mask.clone()).sum() / mask.sum().clamp_min(1.0) * (t * t)
}

/// A copy of `mask` `(b, t)` with the rows outside `rows` zeroed.
fn rows_only(batch: &Batch, rows: std::ops::Range<usize>) -> Vec<f32> {
    let mut m = batch.mask.clone();
    for (r, row) in m.chunks_mut(batch.t).enumerate() {
        if !rows.contains(&r) {
            row.iter_mut().for_each(|v| *v = 0.0);
        }
    }
    m
}

/// Runs one step on `fresh` (already taken from the queue) and returns what it did.
pub(crate) fn step(cx: &StepInputs, st: StepState, fresh: &[Fresh]) -> StepReport {
    let StepState {
        lora,
        opt,
        mut memory,
        strategy,
    } = st;
    let cfg = cx.config;
    let device = cx.model.device().clone();
    let replay_n = match memory.as_deref() {
        Some(m) if cfg.strategy.replays() && !m.is_empty() => cfg.batch / 2,
        _ => 0,
    };
    let replayed = memory
        .as_deref_mut()
        .map(|m| m.sample(replay_n))
        .unwrap_or_default();
    let mut rows: Vec<&Encoded> = fresh.iter().map(|f| &f.seq).collect();
    rows.extend(replayed.iter().map(|r| &r.seq));
    let batch = Batch::new(&rows, cx.pad);
    let (targets, mask) = batch.tensors(&device); // (b, t), (b, t)
    let nf = fresh.len();
    let logits = forward(cx, &*lora, &batch); // (b, t, vocab)

    let mut loss = match cfg.strategy {
        Strategy::DerPp { .. } if !replayed.is_empty() => {
            let m = |v: Vec<f32>| {
                Tensor::<2>::from_data(TensorData::new(v, [batch.batch, batch.t]), &device)
            };
            let fresh_mask = m(rows_only(&batch, 0..nf));
            let replay_mask = m(rows_only(&batch, nf..batch.batch));
            causal_lm_loss(logits.clone(), targets.clone(), fresh_mask)
                + der_terms(cfg, &batch, &logits, &replayed, nf, targets, replay_mask)
        }
        _ => causal_lm_loss(logits.clone(), targets, mask.clone()),
    };
    if let (
        Strategy::Lwf {
            weight,
            temperature,
        }
        | Strategy::Mkd {
            weight,
            temperature,
            ..
        },
        Some(teacher),
    ) = (&cfg.strategy, strategy.teacher())
    {
        let t_logits = forward(cx, teacher, &batch).detach();
        loss = loss + distillation(logits.clone(), t_logits, mask, *temperature) * *weight;
    }
    if let StrategyState::Importance {
        importance, anchor, ..
    } = &*strategy
    {
        let strength = match cfg.strategy {
            Strategy::Ewc { lambda, .. } => lambda / 2.0,
            Strategy::Si { c, .. } => c,
            _ => 0.0,
        };
        loss = loss + penalty(lora.params(), importance, anchor) * strength;
    }
    let value = loss.clone().into_scalar::<f32>();
    let grads: Grads = lora.params().grads(&loss.backward());
    let before: Vec<Tensor<2>> = lora
        .params()
        .ids()
        .map(|id| lora.params().value(id))
        .collect();
    let applied = matches!(
        opt.step(lora.params_mut(), &grads, cfg.lr),
        engram_adapters::optim::StepOutcome::Applied { .. }
    );

    if applied {
        after_step(cfg, lora, strategy, &grads, &before);
    }
    if let Some(mem) = memory {
        let top = match cfg.strategy {
            Strategy::DerPp { top_k, .. } => Some(top_k_logits(&logits.detach(), nf, top_k, fresh)),
            _ => None,
        };
        for (i, f) in fresh.iter().enumerate() {
            let t = top.as_ref().map(|v| (&v[i].0[..], &v[i].1[..]));
            mem.offer(&f.seq, f.task, t)
                .expect("fresh sequences are cut to the memory's length");
        }
    }
    StepReport {
        loss: value,
        fresh: nf,
        replayed: replayed.len(),
        applied,
    }
}

/// DER++'s replay terms: `alpha` × the squared error between the student's logits and the
/// stored top-k logits (at the stored ids, every position of each replayed sequence), plus
/// `beta` × the cross-entropy on the replayed completions.
fn der_terms(
    cfg: &LiveConfig,
    batch: &Batch,
    logits: &Tensor<3>,
    replayed: &[super::sequences::Replayed],
    nf: usize,
    targets: Tensor<2, Int>,
    replay_mask: Tensor<2>,
) -> Tensor<1> {
    let Strategy::DerPp { top_k, alpha, beta } = cfg.strategy else {
        unreachable!("DER++ terms for DER++ only")
    };
    let device = logits.device();
    let (b, t, k) = (batch.batch, batch.t, top_k);
    let mut ids = vec![0i64; b * t * k];
    let mut vals = vec![0f32; b * t * k];
    let mut valid = vec![0f32; b * t * k];
    for (j, r) in replayed.iter().enumerate() {
        let row = nf + j;
        let n = r.seq.tokens.len() - 1;
        for p in 0..n.min(t) {
            for q in 0..k {
                let o = (row * t + p) * k + q;
                ids[o] = i64::from(r.top_ids[p * k + q]);
                vals[o] = r.top_vals[p * k + q];
                valid[o] = 1.0;
            }
        }
    }
    let ids = Tensor::<3, Int>::from_data(TensorData::new(ids, [b, t, k]), &device);
    let vals = Tensor::<3>::from_data(TensorData::new(vals, [b, t, k]), &device);
    let valid = Tensor::<3>::from_data(TensorData::new(valid, [b, t, k]), &device);
    let picked = logits.clone().gather(2, ids);
    let mse = ((picked - vals).square() * valid.clone()).sum() / valid.sum().clamp_min(1.0);
    mse * alpha + causal_lm_loss(logits.clone(), targets, replay_mask) * beta
}

/// The top-`k` logits (ids, values) of each fresh row's positions `0..len - 1`.
fn top_k_logits(
    logits: &Tensor<3>,
    nf: usize,
    k: usize,
    fresh: &[Fresh],
) -> Vec<(Vec<u32>, Vec<f32>)> {
    let [_, t, _] = logits.dims();
    let (vals, ids) = logits.clone().topk_with_indices(k, 2); // (b, t, k)
    let vals = vals.into_data().try_to_vec::<f32>().expect("f32 logits");
    let ids = ids
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("int ids");
    (0..nf)
        .map(|row| {
            let n = fresh[row].seq.tokens.len() - 1;
            let range = row * t * k..(row * t + n) * k;
            (
                ids[range.clone()].iter().map(|&i| i as u32).collect(),
                vals[range].to_vec(),
            )
        })
        .collect()
}

/// MKD's moving-average teacher, EWC's squared gradients and SI's path integral, after an
/// applied update (`before`: the values before it).
fn after_step(
    cfg: &LiveConfig,
    lora: &Lora,
    strategy: &mut StrategyState,
    grads: &Grads,
    before: &[Tensor<2>],
) {
    let p = lora.params();
    match (strategy, &cfg.strategy) {
        (StrategyState::Teacher(Some(t)), Strategy::Mkd { momentum, .. }) => {
            let m = *momentum;
            let tp = t.params_mut();
            for id in p.ids() {
                let ema = tp.value(id) * m + p.value(id) * (1.0 - m);
                tp.set_value(id, ema);
            }
        }
        (StrategyState::Importance { running, steps, .. }, s) => {
            for (i, id) in p.ids().enumerate() {
                let Some(g) = grads.get(id) else { continue };
                running[i] = match s {
                    Strategy::Ewc { .. } => running[i].clone() + g.clone().square(),
                    // ω += −g · Δθ: the loss decrease this parameter's move bought.
                    _ => running[i].clone() - g.clone() * (p.value(id) - before[i].clone()),
                };
            }
            *steps += 1;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use engram_runtime::backend;

    #[test]
    fn distillation_is_zero_against_itself_and_positive_otherwise() {
        let device = backend::cpu();
        let a = Tensor::<3>::random([2, 3, 7], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<3>::random([2, 3, 7], Distribution::Normal(0.0, 1.0), &device);
        let mask = Tensor::<2>::ones([2, 3], &device);
        let same = distillation(a.clone(), a.clone(), mask.clone(), 2.0).into_scalar::<f32>();
        assert!(
            same.abs() < 1e-5,
            "KL of a distribution against itself: {same}"
        );
        let other = distillation(a, b, mask, 2.0).into_scalar::<f32>();
        assert!(other > 1e-3, "KL between different distributions: {other}");
    }
}

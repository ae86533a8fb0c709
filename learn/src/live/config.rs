//! What a [`LiveModel`](super::LiveModel) is made of: the adapter, the strategy, the replay
//! memory and the step shape. Written into the state directory when the state is created and
//! read back on every open: a resumed state keeps its own settings.

use engram_adapters::lora::LoraConfig;
use engram_kernels::replay::{Policy, Retention, Sampling};
use serde::{Deserialize, Serialize};

/// Largest replay memory, in sequences.
pub const MAX_BUFFER: usize = crate::buffer::MAX_CAPACITY;
/// Largest sequence the runtime trains on, in tokens.
pub const MAX_LEN: usize = 4096;
/// Largest number of logits DER++ keeps per position.
pub const MAX_TOP_K: usize = 64;

/// The continual-learning strategy over the adapter's parameters. Every strategy trains the
/// same steps of the same batch size: ER and DER++ replace half of each batch with replayed
/// sequences once the memory holds any; LwF and MKD add one teacher forward pass per step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Strategy {
    /// Plain fine-tuning on what arrives.
    Naive,
    /// Experience replay: half of each batch drawn from the replay memory.
    Er,
    /// DER++ (Buzzega et al. 2020): replayed sequences carry the top-`top_k` logits recorded
    /// when they were stored; the loss adds `alpha` × the squared error to those logits and
    /// `beta` × the cross-entropy on the replayed tokens.
    DerPp {
        /// Logits kept per position.
        top_k: usize,
        /// Weight of the logit-matching term.
        alpha: f32,
        /// Weight of the replayed cross-entropy.
        beta: f32,
    },
    /// Learning without Forgetting (Li & Hoiem 2017): distillation towards the adapter as it
    /// was at the last task boundary, on the current batch.
    Lwf {
        /// Weight of the distillation term.
        weight: f32,
        /// Softmax temperature.
        temperature: f32,
    },
    /// Momentum knowledge distillation (Michel et al., "Rethinking Momentum Knowledge
    /// Distillation in Online Continual Learning", 2024): distillation towards an exponential
    /// moving average of the adapter, updated after every step.
    Mkd {
        /// Weight of the distillation term.
        weight: f32,
        /// Softmax temperature.
        temperature: f32,
        /// EMA momentum of the teacher (0.99: slow).
        momentum: f32,
    },
    /// Online EWC (Schwarz et al. 2018): a quadratic anchor to the parameters of the last task
    /// boundary, weighted by a running diagonal Fisher estimate (squared gradients).
    Ewc {
        /// Strength of the anchor.
        lambda: f32,
        /// Decay of the old Fisher at each boundary (γ).
        decay: f32,
    },
    /// Synaptic Intelligence (Zenke et al. 2017): a quadratic anchor weighted by each
    /// parameter's contribution to the loss decrease along its path.
    Si {
        /// Strength of the anchor.
        c: f32,
        /// Damping ξ.
        xi: f32,
    },
}

impl Strategy {
    /// The strategy named `name` with the settings engram uses by default
    /// (`naive`, `er`, `der++`, `lwf`, `mkd`, `ewc`, `si`).
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "naive" => Self::Naive,
            "er" => Self::Er,
            "der++" | "derpp" => Self::DerPp {
                top_k: 8,
                alpha: 0.3,
                beta: 0.5,
            },
            "lwf" => Self::Lwf {
                weight: 1.0,
                temperature: 2.0,
            },
            "mkd" => Self::Mkd {
                weight: 1.0,
                temperature: 2.0,
                momentum: 0.99,
            },
            "ewc" => Self::Ewc {
                lambda: 100.0,
                decay: 0.9,
            },
            "si" => Self::Si { c: 1.0, xi: 1e-3 },
            _ => return None,
        })
    }

    /// The short name (`der++` for DER++).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Er => "er",
            Self::DerPp { .. } => "der++",
            Self::Lwf { .. } => "lwf",
            Self::Mkd { .. } => "mkd",
            Self::Ewc { .. } => "ewc",
            Self::Si { .. } => "si",
        }
    }

    /// Whether the strategy replays stored sequences.
    pub fn replays(&self) -> bool {
        matches!(self, Self::Er | Self::DerPp { .. })
    }

    /// Logits DER++ keeps per position (0 for the others).
    pub fn top_k(&self) -> usize {
        match self {
            Self::DerPp { top_k, .. } => *top_k,
            _ => 0,
        }
    }
}

/// What a full replay memory keeps, and which sequences a replay batch draws (the kernels'
/// [`Policy`], in a form the state's `config.json` can hold). Class-balanced retention
/// balances over task tags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayPolicy {
    /// `reservoir` or `class_balanced`.
    pub retention: RetentionKind,
    /// `uniform`, `power_law_recency` (with `alpha`) or `recall_interval` (with `interval`).
    pub sampling: SamplingKind,
}

/// See [`Retention`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionKind {
    /// [`Retention::Reservoir`].
    #[default]
    Reservoir,
    /// [`Retention::ClassBalanced`], over task tags.
    ClassBalanced,
}

/// See [`Sampling`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SamplingKind {
    /// [`Sampling::Uniform`].
    #[default]
    Uniform,
    /// [`Sampling::PowerLawRecency`].
    PowerLawRecency {
        /// Decay exponent (≥ 0).
        alpha: f32,
    },
    /// [`Sampling::RecallInterval`].
    RecallInterval {
        /// Replay batches a sequence rests between recalls (≥ 1).
        interval: u32,
    },
}

impl ReplayPolicy {
    /// The kernels' policy.
    pub fn policy(&self) -> Policy {
        Policy {
            retention: match self.retention {
                RetentionKind::Reservoir => Retention::Reservoir,
                RetentionKind::ClassBalanced => Retention::ClassBalanced,
            },
            sampling: match self.sampling {
                SamplingKind::Uniform => Sampling::Uniform,
                SamplingKind::PowerLawRecency { alpha } => Sampling::PowerLawRecency { alpha },
                SamplingKind::RecallInterval { interval } => Sampling::RecallInterval { interval },
            },
        }
    }

    fn valid(&self) -> bool {
        match self.sampling {
            SamplingKind::Uniform => true,
            SamplingKind::PowerLawRecency { alpha } => alpha.is_finite() && alpha >= 0.0,
            SamplingKind::RecallInterval { interval } => interval >= 1,
        }
    }
}

/// Settings of a learning state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveConfig {
    /// The LoRA adapter that learns (its seed also seeds everything else).
    pub lora: LoraConfig,
    /// The continual-learning strategy.
    pub strategy: Strategy,
    /// Replay memory in sequences (used by ER and DER++; 0 for the others is fine).
    pub buffer: usize,
    /// How the memory keeps and draws sequences.
    pub policy: ReplayPolicy,
    /// Sequences per optimizer step.
    pub batch: usize,
    /// AdamW learning rate (constant: a stream has no end to decay towards).
    pub lr: f32,
    /// Longest sequence trained on, in tokens (longer ones are cut at the end).
    pub max_len: usize,
    /// Seed of the buffer's draws and the data order.
    pub seed: u64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            lora: LoraConfig {
                rank: 8,
                alpha: 16.0,
                targets: vec![
                    engram_runtime::model::llama::Proj::Q,
                    engram_runtime::model::llama::Proj::V,
                    engram_runtime::model::llama::Proj::Down,
                ],
                ..LoraConfig::default()
            },
            strategy: Strategy::Er,
            buffer: 256,
            policy: ReplayPolicy::default(),
            batch: 4,
            lr: 2e-3,
            max_len: 64,
            seed: 0,
        }
    }
}

/// A setting out of range; nothing was created.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("learning config: {field} {what}")]
pub struct ConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub what: String,
}

impl LiveConfig {
    /// Checks every setting against its range and against the model's context length.
    pub fn validate(&self, n_ctx: usize) -> Result<(), ConfigError> {
        let bad = |field, what: String| Err(ConfigError { field, what });
        if self.batch == 0 || self.batch > 1024 {
            return bad("batch", format!("{} is not in 1..=1024", self.batch));
        }
        if self.strategy.replays() && !(2..=MAX_BUFFER).contains(&self.buffer) {
            return bad(
                "buffer",
                format!(
                    "{} sequences: {} needs 2..={MAX_BUFFER}",
                    self.buffer,
                    self.strategy.name()
                ),
            );
        }
        if self.buffer > MAX_BUFFER {
            return bad("buffer", format!("{} is above {MAX_BUFFER}", self.buffer));
        }
        if !(2..=MAX_LEN.min(n_ctx)).contains(&self.max_len) {
            return bad(
                "max_len",
                format!(
                    "{} is not in 2..={} (the model's context is {n_ctx})",
                    self.max_len,
                    MAX_LEN.min(n_ctx)
                ),
            );
        }
        if !self.policy.valid() {
            return bad(
                "policy",
                format!("{:?} has a setting out of range", self.policy),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return bad("lr", format!("{} is not in (0, 1]", self.lr));
        }
        let finite_pos = |v: f32| v.is_finite() && v >= 0.0;
        let ok = match self.strategy {
            Strategy::Naive | Strategy::Er => true,
            Strategy::DerPp { top_k, alpha, beta } => {
                (1..=MAX_TOP_K).contains(&top_k) && finite_pos(alpha) && finite_pos(beta)
            }
            Strategy::Lwf {
                weight,
                temperature,
            } => finite_pos(weight) && temperature.is_finite() && temperature > 0.0,
            Strategy::Mkd {
                weight,
                temperature,
                momentum,
            } => {
                finite_pos(weight)
                    && temperature.is_finite()
                    && temperature > 0.0
                    && (0.0..1.0).contains(&momentum)
            }
            Strategy::Ewc { lambda, decay } => finite_pos(lambda) && (0.0..=1.0).contains(&decay),
            Strategy::Si { c, xi } => finite_pos(c) && xi.is_finite() && xi > 0.0,
        };
        if !ok {
            return bad(
                "strategy",
                format!("{:?} has a setting out of range", self.strategy),
            );
        }
        Ok(())
    }
}

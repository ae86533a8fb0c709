//! Training primitives shared by every adapter and strategy: named parameters, AdamW, the
//! learning-rate schedule and the losses.

pub mod loss;
pub mod optim;
pub mod params;
pub mod schedule;

pub use loss::{causal_lm_loss, cross_entropy};
pub use optim::{AdamW, AdamWConfig, StepOutcome};
pub use params::{Grads, HostParams, ParamId, ParamMismatch, ParamSet};
pub use schedule::Schedule;

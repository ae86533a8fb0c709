//! What one gradient step needs, shared by every adapter, editor and strategy: named parameter
//! sets, the losses, AdamW and the learning-rate schedule.

pub mod adamw;
pub mod loss;
pub mod params;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig, AdamWState, StepOutcome};
pub use loss::{causal_lm_loss, cross_entropy};
pub use params::{Grads, HostParams, ParamId, ParamMismatch, ParamSet};
pub use schedule::Schedule;

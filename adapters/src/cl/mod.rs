//! Continual learning: a fixed-capacity replay buffer with crash-safe snapshots, strategies
//! over a [`ParamSet`](crate::train::ParamSet), metrics and the benchmark streams.
//!
//! See docs/CONTINUAL.md for the design and docs/BENCHMARKS.md for the figures.

pub mod buffer;
pub mod checkpoint;
pub mod data;
pub mod learner;
pub mod lm;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod protocol;
pub mod strategy;

#[cfg(test)]
mod persist_tests;

pub use buffer::{BufferError, MAX_CAPACITY, ReplayBatch, ReplayBuffer};
pub use engram_kernels::replay::{Admission, Policy, Retention, Sampling, SlotMeta};
pub use persist::SnapshotError;

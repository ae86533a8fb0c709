//! engram-learn: continual learning. A fixed-capacity replay buffer with crash-safe snapshots,
//! strategies over a [`ParamSet`](engram_adapters::optim::ParamSet), metrics and the
//! class-incremental protocol (the data-set files are read by the harness, not here).
//!
//! See docs/CONTINUAL.md for the design and docs/BENCHMARKS.md for the figures.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod buffer;
pub mod checkpoint;
pub mod codec;
pub mod data;
pub mod learner;
pub mod live;
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

// What `persist` reaches through its parent: the fuzz crate compiles `persist`, `buffer` and
// `codec` directly, with these names at its root.
use engram_runtime::io::{LockError, WriterLock, envelope};

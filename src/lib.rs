#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_adapters as adapters;
pub use engram_kernels as kernels;
pub use engram_runtime as runtime;

pub use engram_runtime::backend;
pub use engram_runtime::burn;
pub use engram_runtime::engine::{Engine, EngineError};
pub use engram_runtime::fetch::resolve_model;
pub use engram_runtime::generate::{GenerateOptions, Generation, SamplingParams, StopReason};
pub use engram_runtime::model::chat::ChatMessage;

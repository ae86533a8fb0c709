//! engram-adapters: LoRA, prompt tuning, model editors and continual-learning strategies over a
//! frozen engram base model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_runtime as runtime;

pub mod compose;
pub mod edit;
pub mod train;

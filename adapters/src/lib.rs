//! engram-adapters: LoRA, prompt tuning, model editors and continual-learning strategies over a
//! frozen engram base model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_runtime as runtime;

pub mod cl;
pub mod compose;
pub mod edit;
pub mod full;
pub mod lora;
pub mod prompt;
pub mod registry;
pub mod train;
pub mod trainer;

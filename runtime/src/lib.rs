//! engram-runtime: GGUF reading, the one mmap site, burn backend glue, the llama graph,
//! tokenizer and generation.
#![warn(missing_docs)]

/// The burn version engram is built on, so users name the same `Tensor` and `Device` types.
pub use burn;
pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod engine;
pub mod format;
pub mod generate;
pub mod io;
pub mod model;
pub mod model_file;
pub mod progress;

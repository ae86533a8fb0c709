//! engram: on-device continual learning over a memory-mapped quantized GGUF base model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_adapters as adapters;
pub use engram_kernels as kernels;
pub use engram_runtime as runtime;

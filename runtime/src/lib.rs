//! engram-runtime: GGUF reading, the one mmap site, burn backend glue, the llama graph,
//! tokenizer and generation.
#![warn(missing_docs)]
pub mod cpu;

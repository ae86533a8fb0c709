//! Model graphs and the text side of a model: tokenizer and chat prompts.

pub mod arch;
pub mod attention;
pub mod chat;
pub mod config;
pub mod hooks;
pub mod kv_cache;
pub mod llama;
pub mod pretokenize;
mod rope;
mod strftime;
pub mod tokenizer;

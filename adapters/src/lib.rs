//! engram-adapters: adaptation of a frozen engram base model. Named parameter sets, losses and
//! AdamW ([`optim`]); the fine-tuning loop and its memory plan ([`trainer`]); LoRA ([`lora`]),
//! prompt and subspace-prompt tuning ([`prompt`]) and full fine-tuning ([`full`]), each a
//! [`trainer::Trainable`]; adapter files (PEFT, llama.cpp) and the registry that stacks them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_runtime as runtime;

pub mod compose;
pub mod full;
pub mod lora;
pub mod optim;
pub mod prompt;
pub mod registry;
pub mod trainer;

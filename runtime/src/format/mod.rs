//! On-disk formats, parsed from `&[u8]` into checked views. No I/O happens here: the same code
//! reads a memory-mapped file, a test buffer or flash on a device.

mod cursor;
pub mod gguf;
mod gguf_error;
mod gguf_meta;
pub mod gguf_writer;
pub mod safetensors;

pub use gguf::{Gguf, TensorInfo};
pub use gguf_error::GgufError;
pub use gguf_meta::MetaValue;
pub use gguf_writer::GgufBuilder;
pub use safetensors::{SafetensorsError, SafetensorsTensor, parse_safetensors};

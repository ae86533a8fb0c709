//! File access. [`mmap`] is the only place in engram that memory-maps a file; [`atomic`] is how
//! engram writes every file it owns (adapters, replay buffers, edit logs).

pub mod atomic;
pub mod mmap;

pub use atomic::{write_atomic, write_bytes_atomic};
pub use mmap::MappedFile;

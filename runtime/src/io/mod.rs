//! File access. [`mmap`] is the only place in engram that memory-maps a file.

pub mod mmap;

pub use mmap::MappedFile;

//! File access and the persistence of engram state. [`mmap`] is the only place in engram that
//! memory-maps a file; [`atomic`] replaces one file crash-safely; [`envelope`] is the one
//! on-disk format wrapper (magic, version, length, checksum) of every state file; [`dir`]
//! replaces a user-named directory (an adapter) as one generation; [`state`] keeps an
//! engram-owned directory in generations named by a manifest; [`lock`] is the advisory lock
//! every writer takes (readers never do).

pub mod atomic;
pub mod dir;
pub mod envelope;
pub mod generation;
pub mod lock;
pub mod mmap;
pub mod state;

pub use atomic::{remove_stale_temps, sync_dir, write_atomic, write_bytes_atomic};
pub use dir::{DirError, DirWriter, Recovery, recover};
pub use envelope::{Corruption, EnvelopeError};
pub use lock::{LockError, WriterLock};
pub use mmap::MappedFile;
pub use state::{StateDir, read_state};

//! The one memory-mapping site in engram: a read-only map of a whole file, shared by `Arc`.
//!
//! # Safety
//!
//! A memory map is only sound while nobody else changes the file: if another process (or this
//! one) writes to or truncates the file while it is mapped, reads through [`MappedFile::bytes`]
//! may see bytes change under a `&[u8]` or fault with `SIGBUS`. engram maps model files it treats
//! as immutable (the cached model is written once to a temp file and renamed into place, never
//! rewritten), and the contract for callers of [`MappedFile::open`] is the same: do not modify
//! or truncate a file while engram has it mapped. This is the contract ripgrep and candle accept
//! for the same reason: copying a 100 MB model into memory on a small device is the alternative.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

/// A read-only memory map of a whole file. Clones share the map; it is unmapped when the last
/// clone is dropped.
#[derive(Clone, Debug)]
pub struct MappedFile {
    map: Arc<Mmap>,
}

impl MappedFile {
    /// Maps the file at `path` read-only.
    ///
    /// See the module's `# Safety` section: the file must not be modified or truncated while
    /// any clone of the returned map is alive.
    pub fn open(path: impl AsRef<Path>) -> Result<MappedFile, io::Error> {
        let file = File::open(path.as_ref())?;
        // SAFETY: the map is read-only and private to this process's view; soundness rests on the
        // file not being modified or truncated while mapped, which is the documented contract of
        // this module (engram's model files are written once and renamed into place, never
        // rewritten). `File` may be dropped after mapping: the mapping keeps its own reference.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedFile { map: Arc::new(map) })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file's length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_contents_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"GGUF\x03\0\0\0").unwrap();
        let map = MappedFile::open(&path).unwrap();
        let clone = map.clone();
        drop(map);
        assert_eq!(clone.bytes(), b"GGUF\x03\0\0\0");
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        assert!(
            MappedFile::open(dir.path().join("empty"))
                .unwrap()
                .is_empty()
        );
        assert!(MappedFile::open(dir.path().join("missing")).is_err());
    }
}

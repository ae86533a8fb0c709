//! The one memory-mapping site in engram: a read-only map of a whole file, shared by `Arc`, and
//! anonymous memory backed by huge pages where the OS gives them ([`HugePageBuffer`]).
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

use memmap2::{Mmap, MmapMut};

/// A read-only memory map of a whole file. Clones share the map; it is unmapped when the last
/// clone is dropped. A few tensors a checkpoint derives at load (Gemma's `1 + w` norms, Llama 3's
/// RoPE factors: kilobytes) live in memory behind the same type ([`MappedFile::from_f32`]), so a
/// tensor view reads them as it reads a mapped shard.
#[derive(Clone, Debug)]
pub struct MappedFile {
    map: Arc<Source>,
}

#[derive(Debug)]
enum Source {
    Map(Mmap),
    /// f32 values built in memory (4-byte aligned, as a mapped F32 tensor's bytes may need).
    Memory(Vec<f32>),
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
        Ok(MappedFile {
            map: Arc::new(Source::Map(map)),
        })
    }

    /// f32 values held in memory, read through the same interface as a mapped file: the tensors
    /// a checkpoint derives at load ([`crate::checkpoint`]).
    pub fn from_f32(values: Vec<f32>) -> MappedFile {
        MappedFile {
            map: Arc::new(Source::Memory(values)),
        }
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &*self.map {
            Source::Map(map) => map,
            Source::Memory(values) => bytemuck::cast_slice(values),
        }
    }

    /// The file's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes().len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }
}

/// Huge pages' size on x86_64 and on aarch64 with 4 KiB base pages (Linux's PMD size).
const HUGE_PAGE: usize = 2 << 20;

/// Zeroed anonymous memory for data streamed end to end many times (the fused decoder's
/// weights), backed by transparent huge pages where Linux allows it (`madvise(MADV_HUGEPAGE)`;
/// the default setting, `madvise`, gives them only on request). Streaming 96 MB of weights in 4
/// KiB pages costs a TLB miss every 4 KiB, and in a virtual machine each miss walks two page
/// tables; with 2 MiB pages one thread read 96 MiB at 18.9 GB/s instead of 9.4 (best of 20,
/// docs/DECODE.md). The usable bytes start at a 2 MiB boundary of the map (a huge page
/// covers only an aligned 2 MiB range). Elsewhere, or when the advice is refused, it is plain
/// anonymous memory; when even the map fails, heap memory.
pub struct HugePageBuffer {
    backing: Backing,
    start: usize,
    len: usize,
}

enum Backing {
    Map(MmapMut),
    Heap(Vec<u64>),
}

impl HugePageBuffer {
    /// `len` zero bytes, aligned to at least 64 bytes (a cache line).
    pub fn zeroed(len: usize) -> HugePageBuffer {
        if len >= HUGE_PAGE
            && let Ok(map) = MmapMut::map_anon(len + HUGE_PAGE)
        {
            let start = map.as_ptr().align_offset(HUGE_PAGE);
            #[cfg(target_os = "linux")]
            {
                // Only a hint: without it the pages are 4 KiB, which works, slower.
                let _ = map.advise_range(memmap2::Advice::HugePage, start, len);
            }
            return HugePageBuffer {
                backing: Backing::Map(map),
                start,
                len,
            };
        }
        // Too small for a huge page (or no map): heap words, 64 bytes over for the alignment.
        let v = vec![0u64; len.div_ceil(8) + 8];
        let start = v.as_ptr().cast::<u8>().align_offset(64);
        HugePageBuffer {
            backing: Backing::Heap(v),
            start,
            len,
        }
    }

    /// The buffer's bytes.
    pub fn bytes(&self) -> &[u8] {
        let all: &[u8] = match &self.backing {
            Backing::Map(m) => m,
            Backing::Heap(v) => bytemuck::cast_slice(v),
        };
        &all[self.start..self.start + self.len]
    }

    /// The buffer's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (start, len) = (self.start, self.len);
        let all: &mut [u8] = match &mut self.backing {
            Backing::Map(m) => m,
            Backing::Heap(v) => bytemuck::cast_slice_mut(v),
        };
        &mut all[start..start + len]
    }

    /// Whether the bytes are an anonymous map (which Linux may back with huge pages), not heap
    /// memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.backing, Backing::Map(_))
    }
}

impl std::fmt::Debug for HugePageBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugePageBuffer")
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
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

    #[test]
    fn huge_page_buffers_are_zeroed_aligned_and_writable() {
        for len in [0, 1, 100, HUGE_PAGE - 1, HUGE_PAGE + 4096 + 3] {
            let mut b = HugePageBuffer::zeroed(len);
            assert_eq!(b.bytes().len(), len);
            assert!(b.bytes().iter().all(|&x| x == 0), "{len}");
            assert!(b.bytes().as_ptr().align_offset(64) == 0, "{len}");
            assert_eq!(b.is_mapped(), len >= HUGE_PAGE, "{len}");
            if b.is_mapped() {
                assert_eq!(b.bytes().as_ptr().align_offset(HUGE_PAGE), 0);
            }
            b.bytes_mut()
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = i as u8);
            assert!(b.bytes().iter().enumerate().all(|(i, &x)| x == i as u8));
        }
    }
}

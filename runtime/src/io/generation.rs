//! What both kinds of generation directory share ([`super::dir`] for user-named directories,
//! [`super::state`] for engram's own): the error, the manifest's file entries, name checks,
//! files written with their size and CRC-32, and bounded manifest reads.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::envelope;
use super::lock::LockError;

/// The largest manifest read (a few hundred entries fit in a few KiB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The most files one generation holds.
pub const MAX_FILES: usize = 4096;

/// A directory could not be written or recovered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirError {
    /// The file system failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another writer holds the directory's lock (or it could not be taken).
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The target holds something engram did not write; it is left alone.
    #[error(
        "{}: holds `{entry}`, which this writer did not write; refusing to replace the \
         directory (choose a new or empty one)",
        dir.display()
    )]
    Foreign {
        /// The target directory.
        dir: PathBuf,
        /// The entry that is not ours.
        entry: String,
    },
    /// The target exists and is not a directory, or has no name to put siblings beside.
    #[error("{}: {what}", path.display())]
    BadTarget {
        /// The target.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A file name is not a plain name (empty, a path, reserved, or given twice).
    #[error("{}: `{name}` is not a file name a generation can hold ({what})", dir.display())]
    BadName {
        /// The directory.
        dir: PathBuf,
        /// The name.
        name: String,
        /// Why.
        what: &'static str,
    },
    /// A manifest cannot be used.
    #[error("{}: {what}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DirError + use<> {
    let path = path.to_path_buf();
    move |source| DirError::Io { path, source }
}

/// One file of a generation, as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the directory.
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

/// Checks that `name` is a plain file name a generation may hold.
pub(crate) fn check_name(dir: &Path, name: &str) -> Result<(), DirError> {
    let what = if name.is_empty() || name == "." || name == ".." {
        Some("empty or a dot entry")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else if name.contains(['/', '\\', '\0']) {
        Some("a path, not a name")
    } else if name.starts_with(".engram") {
        Some("reserved for engram's own files")
    } else {
        None
    };
    match what {
        Some(what) => Err(DirError::BadName {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            what,
        }),
        None => Ok(()),
    }
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct Counted<W> {
    pub(crate) inner: W,
    pub(crate) crc: crc32fast::Hasher,
    pub(crate) size: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `name` (created new) in `dir` with `fill`, fsyncs it and returns its entry.
pub(crate) fn write_entry<F>(dir: &Path, file: &str, fill: F) -> Result<(u64, u32), DirError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let path = dir.join(file);
    let f = File::create_new(&path).map_err(io_err(&path))?;
    let mut w = Counted {
        inner: BufWriter::new(&f),
        crc: crc32fast::Hasher::new(),
        size: 0,
    };
    fill(&mut w)
        .and_then(|()| w.flush())
        .map_err(io_err(&path))?;
    let (size, crc) = (w.size, w.crc.finalize());
    f.sync_all().map_err(io_err(&path))?;
    Ok((size, crc))
}

/// Whether `path` is a regular file of `size` bytes with CRC-32 `crc32`.
pub(crate) fn file_matches(path: &Path, size: u64, crc32: u32) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() != size {
        return Ok(false);
    }
    let mut f = File::open(path)?;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    Ok(crc.finalize() == crc32)
}

/// Reads and checks an envelope of at most [`MAX_MANIFEST_BYTES`]; `Ok(None)` when absent.
/// The JSON manifest at `path` (sealed with `magic` and `version`), `None` when there is none;
/// a manifest that does not decode as `T` or lists more than [`MAX_FILES`] files (as
/// `n_files` counts them) is a [`DirError::Manifest`] naming it.
pub(crate) fn read_json_manifest<T: serde::de::DeserializeOwned>(
    path: &Path,
    magic: &[u8; 8],
    version: u32,
    n_files: impl Fn(&T) -> usize,
) -> Result<Option<T>, DirError> {
    let Some(sealed) = read_manifest_payload(path, magic, version)? else {
        return Ok(None);
    };
    let bad = |what: String| DirError::Manifest {
        path: path.to_path_buf(),
        what,
    };
    let m: T = serde_json::from_slice(sealed.payload()).map_err(|e| bad(e.to_string()))?;
    let n = n_files(&m);
    if n > MAX_FILES {
        return Err(bad(format!("{n} files, at most {MAX_FILES}")));
    }
    Ok(Some(m))
}

fn read_manifest_payload(
    path: &Path,
    magic: &[u8; 8],
    version: u32,
) -> Result<Option<envelope::Sealed>, DirError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
        Ok(m) if m.len() > MAX_MANIFEST_BYTES => {
            return Err(DirError::Manifest {
                path: path.to_path_buf(),
                what: format!("{} bytes, at most {MAX_MANIFEST_BYTES} read", m.len()),
            });
        }
        Ok(_) => {}
    }
    match envelope::read_file(path, magic, &[version]) {
        Ok(s) => Ok(Some(s)),
        Err(envelope::EnvelopeError::Io { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(envelope::EnvelopeError::Io { path, source }) => Err(DirError::Io { path, source }),
        Err(e) => Err(DirError::Manifest {
            path: path.to_path_buf(),
            what: match e {
                envelope::EnvelopeError::Corrupt { corruption, .. } => corruption.to_string(),
                other => other.to_string(),
            },
        }),
    }
}

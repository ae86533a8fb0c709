//! The edit log: every applied edit, in a crash-safe, versioned file.
//!
//! Layout: the magic `ENGEDLOG`, a little-endian `u32` format version, a `u64` payload length,
//! a `u64` FNV-1a checksum of the payload, then the payload (JSON: the model identity and the
//! edits with their deltas). The whole file is replaced atomically on every change
//! (`write_atomic`: temp file, fsync, rename), so a crash leaves the previous log or the new
//! one; a torn or foreign file is refused with a typed error rather than half-loaded.

use std::path::{Path, PathBuf};

use engram_runtime::io::write_bytes_atomic;
use serde::{Deserialize, Serialize};

use super::store::Edit;

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"ENGEDLOG";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8;

/// What the log holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogContents {
    /// Identity of the base model the deltas apply to (file name and size).
    pub model: String,
    /// The applied edits, oldest first.
    pub edits: Vec<Edit>,
}

/// Reading or writing the edit log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not an edit log.
    #[error("{path}: not an engram edit log (bad magic)")]
    BadMagic {
        /// The log file.
        path: PathBuf,
    },
    /// Written by a format this build does not know.
    #[error("{path}: edit log version {found}, this build reads {VERSION}")]
    UnknownVersion {
        /// The log file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// Truncated, or the checksum does not match the payload.
    #[error("{path}: edit log is damaged ({what})")]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// What did not match.
        what: String,
    },
    /// The log belongs to another base model.
    #[error("{path}: edit log is for model {found}, not {expected}")]
    OtherModel {
        /// The log file.
        path: PathBuf,
        /// The model in the log.
        found: String,
        /// The model loaded now.
        expected: String,
    },
}

/// 64-bit FNV-1a: enough to detect a torn or corrupted payload (not an adversary).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Encodes `contents` in the log layout.
pub fn encode(contents: &LogContents) -> Vec<u8> {
    let payload = serde_json::to_vec(contents).expect("edit log serializes");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decodes a log read from `path` (for error messages).
pub fn decode(bytes: &[u8], path: &Path) -> Result<LogContents, LogError> {
    let damaged = |what: String| LogError::Damaged {
        path: path.to_path_buf(),
        what,
    };
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(LogError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if bytes.len() < HEADER {
        return Err(damaged(format!("{} header bytes of {HEADER}", bytes.len())));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(LogError::UnknownVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(damaged(format!(
            "payload of {} bytes, header says {len}",
            payload.len()
        )));
    }
    if fnv1a64(payload) != sum {
        return Err(damaged("checksum mismatch".into()));
    }
    serde_json::from_slice(payload).map_err(|e| damaged(format!("payload: {e}")))
}

/// Replaces the log at `path` atomically.
pub fn save(path: &Path, contents: &LogContents) -> Result<(), LogError> {
    write_bytes_atomic(path, &encode(contents)).map_err(|source| LogError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the log at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<LogContents>, LogError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes, path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LogError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

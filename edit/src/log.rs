//! The edit log: every applied edit, in one envelope (`engram_runtime::io::envelope`) file
//! (magic `ENGEDLOG`, version, length, CRC-32; the payload is JSON: the model identity and the
//! edits with their deltas). The whole file is replaced atomically on every change, so a crash
//! leaves the previous log or the new one; a torn or foreign file is refused with a typed error
//! rather than half-loaded. Writers hold a [`WriterLock`](engram_runtime::io::WriterLock)
//! beside the log ([`Editor::open_log`](crate::Editor::open_log)).

use std::path::{Path, PathBuf};

use engram_runtime::io::envelope::{self, EnvelopeError};
use engram_runtime::io::lock::LockError;

/// The envelope's magic.
pub const MAGIC: &[u8; 8] = b"ENGEDLOG";
/// The format version this build writes (1 was the pre-envelope layout; 3 added gated-memory
/// entries to the payload; 4 each edit's `seconds`).
pub const VERSION: u32 = 4;
/// The versions this build reads: a version-2 payload is a version-3 one without gated entries,
/// a version-3 one a version-4 one without `seconds` (read as 0).
pub const READS: &[u32] = &[2, 3, 4];

pub use crate::record::LogContents;

/// Reading or writing the edit log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The file could not be read or written, or its envelope is damaged, foreign or of an
    /// unknown version (the error names the file and what is wrong).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Another process is writing this log.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The envelope is intact but its payload is not an edit log.
    #[error("{path}: edit log is damaged ({what})")]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// What did not parse.
        what: String,
    },
    /// An edit's vectors or layers do not fit the model (the log was crafted, or written for
    /// a model of another shape under the same name).
    #[error("{path}: {what}")]
    Shape {
        /// The log file.
        path: PathBuf,
        /// Which edit and field, and what is wrong.
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

fn payload(contents: &LogContents) -> Vec<u8> {
    serde_json::to_vec(contents).expect("edit log serializes")
}

/// Encodes `contents` as a sealed log file.
pub fn encode(contents: &LogContents) -> Vec<u8> {
    envelope::seal(MAGIC, VERSION, &payload(contents))
}

/// Decodes a log read from `path` (named in errors).
pub fn decode(bytes: &[u8], path: &Path) -> Result<LogContents, LogError> {
    let (_, body) = envelope::open(bytes, MAGIC, READS).map_err(|c| c.at(path))?;
    parse(body, path)
}

fn parse(body: &[u8], path: &Path) -> Result<LogContents, LogError> {
    LogContents::decode(body).map_err(|what| LogError::Damaged {
        path: path.to_path_buf(),
        what,
    })
}

/// Replaces the log at `path` atomically.
pub fn save(path: &Path, contents: &LogContents) -> Result<(), LogError> {
    Ok(envelope::write_file(
        path,
        MAGIC,
        VERSION,
        &payload(contents),
    )?)
}

/// Reads the log at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<LogContents>, LogError> {
    match envelope::read_file(path, MAGIC, READS) {
        Err(e) if e.is_not_found() => Ok(None),
        r => parse(r?.payload(), path).map(Some),
    }
}

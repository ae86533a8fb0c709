//! Checkpoints at task boundaries: the parameters, the replay buffer and the learner's
//! counters, each written atomically into one directory, so a device that restarts mid-stream
//! resumes with exactly the buffer it had.
//!
//! Files: `params.json` (names, shapes, values), `replay.bin` (see [`super::persist`]),
//! `learner.json` (counters). Strategy state beyond the buffer (EWC's Fisher, SI's importance,
//! distillation teachers) is not saved: a restart resumes ER exactly, the others with that
//! state rebuilt from the next task on.

use std::path::{Path, PathBuf};

use engram_runtime::io::write_bytes_atomic;

use super::learner::{Learner, LearnerState};
use super::persist::{self, SnapshotError};
use engram_adapters::optim::{HostParams, ParamMismatch};

/// Why a checkpoint could not be written or read; a failed restore leaves the learner as it
/// was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing a file failed.
    #[error("checkpoint file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("checkpoint file {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The replay snapshot is bad.
    #[error(transparent)]
    Replay(#[from] SnapshotError),
    /// The saved parameters belong to another model.
    #[error(transparent)]
    Params(#[from] ParamMismatch),
    /// The saved buffer's widths differ from the learner's, or one side has no buffer.
    #[error("checkpoint buffer does not fit this learner: {0}")]
    Buffer(String),
}

/// Writes the learner's checkpoint into `dir` (created if missing).
pub fn save(learner: &Learner, dir: &Path) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        write_bytes_atomic(&path, bytes).map_err(|source| CheckpointError::Io { path, source })
    };
    let params = serde_json::to_vec(&learner.params.to_host()).expect("host params serialize");
    write("params.json", &params)?;
    if let Some(buf) = &learner.buffer {
        persist::save(buf, &dir.join("replay.bin"))?;
    }
    let state = serde_json::to_vec(learner.state()).expect("learner state serializes");
    write("learner.json", &state)
}

/// Restores a checkpoint written by [`save`] into a learner built with the same settings.
pub fn restore(learner: &mut Learner, dir: &Path) -> Result<(), CheckpointError> {
    let read_json = |name: &str| -> Result<serde_json::Value, CheckpointError> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Json { path, source })
    };
    let json = |name: &str, v| CheckpointError::Json {
        path: dir.join(name),
        source: v,
    };
    let params: HostParams =
        serde_json::from_value(read_json("params.json")?).map_err(|e| json("params.json", e))?;
    let state: LearnerState =
        serde_json::from_value(read_json("learner.json")?).map_err(|e| json("learner.json", e))?;
    let buffer = match &learner.buffer {
        Some(mine) => {
            let b = persist::load(&dir.join("replay.bin"))?;
            if (b.dim(), b.n_logits(), b.capacity())
                != (mine.dim(), mine.n_logits(), mine.capacity())
            {
                return Err(CheckpointError::Buffer(format!(
                    "saved {}x{}+{} logits, learner {}x{}+{}",
                    b.capacity(),
                    b.dim(),
                    b.n_logits(),
                    mine.capacity(),
                    mine.dim(),
                    mine.n_logits()
                )));
            }
            Some(b)
        }
        None => None,
    };
    // Everything is read and checked: only now change the learner.
    let mut p = learner.params.clone();
    p.load_host(&params)?;
    learner.params = p;
    learner.buffer = buffer;
    learner.set_state(state);
    Ok(())
}

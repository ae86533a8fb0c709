//! Checkpoints at task boundaries: the parameters, the replay buffer and the learner's
//! counters, committed together as one generation of a state directory
//! ([`engram_runtime::io::state`]), so a device that restarts mid-stream resumes with exactly
//! the buffer it had, never with the parameters of one checkpoint and the buffer of another.
//!
//! Logical files: `params.json` (names, shapes, values), `replay.bin` (see [`super::persist`]),
//! `learner.json` (counters). Strategy state beyond the buffer (EWC's Fisher, SI's importance,
//! distillation teachers) is not saved: a restart resumes ER exactly, the others with that
//! state rebuilt from the next task on.

use std::path::{Path, PathBuf};

use engram_runtime::io::{DirError, StateDir, read_state};

use super::learner::{Learner, LearnerState};
use super::persist::{self, SnapshotError};
use engram_adapters::optim::{HostParams, ParamMismatch};

/// Why a checkpoint could not be written or read; a failed restore leaves the learner as it
/// was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint directory could not be read or written (locked by another writer,
    /// damaged, or not a checkpoint directory); the error names the path.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The directory holds no checkpoint, or it lacks one of the files.
    #[error("{}: no checkpoint file {name}", dir.display())]
    Missing {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The logical file.
        name: &'static str,
    },
    /// A JSON file does not parse.
    #[error("checkpoint file {} (logical name): {source}", path.display())]
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

/// Writes the learner's checkpoint into `dir` (created if missing) as one generation.
pub fn save(learner: &Learner, dir: &Path) -> Result<(), CheckpointError> {
    let mut state_dir = StateDir::open(dir)?;
    let mut g = state_dir.begin();
    let params = serde_json::to_vec(&learner.params.to_host()).expect("host params serialize");
    g.write("params.json", &params)?;
    if let Some(buf) = &learner.buffer {
        g.write("replay.bin", &persist::to_bytes(buf))?;
    }
    let state = serde_json::to_vec(learner.state()).expect("learner state serializes");
    g.write("learner.json", &state)?;
    g.commit()?;
    Ok(())
}

/// Restores a checkpoint written by [`save`] into a learner built with the same settings.
pub fn restore(learner: &mut Learner, dir: &Path) -> Result<(), CheckpointError> {
    let snapshot = read_state(dir)?;
    let file = |name: &'static str| {
        snapshot.get(name).ok_or_else(|| CheckpointError::Missing {
            dir: dir.to_owned(),
            name,
        })
    };
    let json = |name: &str, source| CheckpointError::Json {
        path: dir.join(name),
        source,
    };
    let params: HostParams =
        serde_json::from_slice(file("params.json")?).map_err(|e| json("params.json", e))?;
    let state: LearnerState =
        serde_json::from_slice(file("learner.json")?).map_err(|e| json("learner.json", e))?;
    let buffer = match &learner.buffer {
        Some(mine) => {
            let b = persist::from_bytes(file("replay.bin")?)?;
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

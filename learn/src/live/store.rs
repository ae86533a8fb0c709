//! The learning state on disk: one generation of a [state directory](engram_runtime::io::state)
//! holds everything, committed with one atomic manifest rename.
//!
//! | logical file | contents |
//! |---|---|
//! | `config.json` | the [`LiveConfig`](super::LiveConfig) the state was created with |
//! | `model.json` | the base model's identity (length + CRC-32 of the GGUF) and shape |
//! | `progress.json` | steps, examples seen, task names, the current task, commits |
//! | `lora.bin` | the adapter's parameters |
//! | `optim.bin` | AdamW's moments and step count |
//! | `strategy.bin` | the strategy's tensors (teacher, importance, anchor, running estimate) |
//! | `memory.bin` | the replay memory (ER, DER++) |
//! | `pending.bin` | observed sequences not yet learned |
//! | `edits.json` | the edits (ROME/MEMIT/AlphaEdit rank-one terms, GRACE entries) |
//!
//! Binary files are [envelopes](engram_runtime::io::envelope), each with its own magic; every
//! count read back is bounded before anything is allocated.

use engram_adapters::optim::HostParams;
use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Short, Writer};

/// Logical file names of a generation.
pub mod files {
    /// The configuration.
    pub const CONFIG: &str = "config.json";
    /// The model identity.
    pub const MODEL: &str = "model.json";
    /// Counters.
    pub const PROGRESS: &str = "progress.json";
    /// Adapter parameters.
    pub const LORA: &str = "lora.bin";
    /// Optimizer state.
    pub const OPTIM: &str = "optim.bin";
    /// Strategy state.
    pub const STRATEGY: &str = "strategy.bin";
    /// Replay memory.
    pub const MEMORY: &str = "memory.bin";
    /// Observed, not yet learned.
    pub const PENDING: &str = "pending.bin";
    /// Edits.
    pub const EDITS: &str = "edits.json";
}

/// Envelope magics of the binary files.
pub(crate) mod magic {
    pub const LORA: &[u8; 8] = b"ENGLVPRM";
    pub const OPTIM: &[u8; 8] = b"ENGLVOPT";
    pub const STRATEGY: &[u8; 8] = b"ENGLVSTR";
    pub const MEMORY: &[u8; 8] = b"ENGLVMEM";
    pub const PENDING: &[u8; 8] = b"ENGLVPND";
}

/// Format version of every file of the learning state.
pub const STATE_VERSION: u32 = 1;

/// Which base model a state was built over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// `gguf-<len>-<crc32>` ([`ModelFile::identity`](engram_runtime::model_file::ModelFile::identity)).
    pub identity: String,
    /// The file's name when the state was created (for messages only).
    pub file_name: String,
    /// Blocks.
    pub n_layer: usize,
    /// Width.
    pub d_model: usize,
    /// Vocabulary.
    pub n_vocab: usize,
}

/// Counters of a state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimizer steps taken.
    pub steps: u64,
    /// Fresh examples trained on.
    pub examples_seen: u64,
    /// Task names, in order of first appearance (a task's id is its index).
    pub tasks: Vec<String>,
    /// The task of the last example learned.
    pub current_task: Option<u32>,
    /// Commits so far (this generation's included).
    pub commits: u64,
}

/// Largest number of tensors a parameter file holds.
const MAX_TENSORS: usize = 4096;
/// Largest tensor, in scalars.
const MAX_SCALARS: usize = 1 << 28;

/// Appends `h` (names, shapes, values).
pub(crate) fn write_host(w: &mut Writer, h: &HostParams) {
    w.len(h.names.len());
    for ((name, shape), values) in h.names.iter().zip(&h.shapes).zip(&h.values) {
        w.str(name);
        w.len(shape[0]);
        w.len(shape[1]);
        w.f32s(values);
    }
}

/// Why a parameter block could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// It ends early.
    #[error(transparent)]
    Short(#[from] Short),
    /// A count, a shape, a name or a value no writer produces.
    #[error("{0}")]
    Bad(String),
}

/// Reads a block written by [`write_host`], bounding every count and checking every value.
pub(crate) fn read_host(r: &mut Reader) -> Result<HostParams, HostError> {
    let n = r.u32("tensor count")? as usize;
    if n > MAX_TENSORS {
        return Err(HostError::Bad(format!(
            "{n} tensors, at most {MAX_TENSORS}"
        )));
    }
    let mut h = HostParams {
        names: Vec::with_capacity(n),
        shapes: Vec::with_capacity(n),
        values: Vec::with_capacity(n),
    };
    for i in 0..n {
        let name = r
            .str("tensor name")?
            .ok_or_else(|| HostError::Bad(format!("tensor {i}: name is not UTF-8")))?;
        let (rows, cols) = (r.u32("rows")? as usize, r.u32("cols")? as usize);
        let len = rows
            .checked_mul(cols)
            .filter(|&l| l <= MAX_SCALARS)
            .ok_or_else(|| HostError::Bad(format!("`{name}`: shape {rows}x{cols}")))?;
        let mut values = Vec::new();
        r.f32s("values", len, &mut values)?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(HostError::Bad(format!("`{name}`: non-finite value")));
        }
        h.names.push(name);
        h.shapes.push([rows, cols]);
        h.values.push(values);
    }
    Ok(h)
}

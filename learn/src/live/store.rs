//! The learning state on disk: one generation of a [state directory](engram_runtime::io::state)
//! holds everything, committed with one atomic manifest rename.
//!
//! | logical file | contents |
//! |---|---|
//! | `config.json` | the [`LiveConfig`] the state was created with |
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

use std::collections::VecDeque;
use std::path::Path;

use engram_adapters::lora::Lora;
use engram_adapters::optim::{AdamW, AdamWState, HostParams};
use engram_edit::Edit;
use engram_runtime::engine::Engine;
use engram_runtime::io::{envelope, read_state};
use serde::{Deserialize, Serialize};

use super::config::LiveConfig;
use super::sequences::SequenceBuffer;
use super::step::{Fresh, StrategyState};
use super::{Learning, LiveError, MAX_PENDING, Queue, adam_config, json, new_memory};
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

fn sealed(magic: &[u8; 8], w: Writer) -> Vec<u8> {
    envelope::seal(magic, STATE_VERSION, &w.0)
}

pub(super) fn encode_state(
    config: &LiveConfig,
    identity: &ModelIdentity,
    l: &Learning,
    q: &Queue,
) -> Vec<(&'static str, Vec<u8>)> {
    let to_json = |v: &dyn erased::Json| v.to_vec();
    let mut out = vec![
        (files::CONFIG, to_json(config)),
        (files::MODEL, to_json(identity)),
        (files::PROGRESS, to_json(&l.progress)),
        (files::EDITS, to_json(&l.edits)),
    ];
    let mut w = Writer::default();
    write_host(&mut w, &l.lora.params().to_host());
    out.push((files::LORA, sealed(magic::LORA, w)));
    let st: AdamWState = l.opt.to_host(l.lora.params());
    let mut w = Writer::default();
    w.u32(st.step);
    write_host(&mut w, &st.m);
    write_host(&mut w, &st.v);
    out.push((files::OPTIM, sealed(magic::OPTIM, w)));
    let (tensors, steps) = l.strategy.to_host(&l.lora);
    let mut w = Writer::default();
    w.u32(steps);
    w.len(tensors.len());
    for t in &tensors {
        write_host(&mut w, t);
    }
    out.push((files::STRATEGY, sealed(magic::STRATEGY, w)));
    if let Some(m) = &l.memory {
        let mut w = Writer::default();
        m.write(&mut w);
        out.push((files::MEMORY, sealed(magic::MEMORY, w)));
    }
    let mut w = Writer::default();
    w.len(q.pending.len());
    for f in &q.pending {
        w.u32(f.task);
        w.len(f.seq.n_prompt);
        w.len(f.seq.tokens.len());
        w.u32s(&f.seq.tokens);
    }
    out.push((files::PENDING, sealed(magic::PENDING, w)));
    out
}

/// JSON of anything serializable, behind one object-safe call.
mod erased {
    pub trait Json {
        fn to_vec(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_vec(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).expect("state serializes")
        }
    }
}

pub(super) fn decode_state(
    dir: &Path,
    engine: &Engine,
    config: &LiveConfig,
    read: &dyn Fn(&'static str) -> Result<Vec<u8>, LiveError>,
) -> Result<(Learning, Queue), LiveError> {
    let model = engine.model();
    let corrupt = |file: &'static str, what: String| LiveError::Corrupt {
        dir: dir.to_path_buf(),
        file,
        what,
    };
    let open = |file: &'static str, magic: &[u8; 8]| -> Result<Vec<u8>, LiveError> {
        let bytes = read(file)?;
        let (_, body) = envelope::open(&bytes, magic, &[STATE_VERSION])
            .map_err(|c| corrupt(file, c.to_string()))?;
        Ok(body.to_vec())
    };
    let progress: Progress = json(dir, files::PROGRESS, &read(files::PROGRESS)?)?;
    let edits: Vec<Edit> = json(dir, files::EDITS, &read(files::EDITS)?)?;
    engram_edit::store::check_edits(&edits, model).map_err(|e| corrupt(files::EDITS, e))?;

    let mut lora = Lora::new(model, config.lora.clone())?;
    let body = open(files::LORA, magic::LORA)?;
    let host =
        read_host(&mut Reader::new(&body)).map_err(|e| corrupt(files::LORA, e.to_string()))?;
    lora.params_mut()
        .load_host(&host)
        .map_err(|e| corrupt(files::LORA, e.to_string()))?;

    let body = open(files::OPTIM, magic::OPTIM)?;
    let mut r = Reader::new(&body);
    let bad_opt = |e: String| corrupt(files::OPTIM, e);
    let step = r.u32("step").map_err(|e| bad_opt(e.to_string()))?;
    let m = read_host(&mut r).map_err(|e| bad_opt(e.to_string()))?;
    let v = read_host(&mut r).map_err(|e| bad_opt(e.to_string()))?;
    let mut opt = AdamW::new(adam_config());
    opt.load_host(lora.params(), &AdamWState { step, m, v })
        .map_err(|e| bad_opt(e.to_string()))?;

    let body = open(files::STRATEGY, magic::STRATEGY)?;
    let mut r = Reader::new(&body);
    let bad_st = |e: String| corrupt(files::STRATEGY, e);
    let steps = r.u32("steps").map_err(|e| bad_st(e.to_string()))?;
    let n = r.u32("tensor sets").map_err(|e| bad_st(e.to_string()))? as usize;
    if n > 3 {
        return Err(bad_st(format!("{n} tensor sets")));
    }
    let mut sets = Vec::with_capacity(n);
    for _ in 0..n {
        sets.push(read_host(&mut r).map_err(|e| bad_st(e.to_string()))?);
    }
    let strategy = StrategyState::from_host(&config.strategy, &lora, model, &sets, steps)
        .ok_or_else(|| bad_st("does not fit the strategy or the adapter".into()))?;

    let memory = match new_memory(config) {
        None => None,
        Some(_) => {
            let body = open(files::MEMORY, magic::MEMORY)?;
            let mut r = Reader::new(&body);
            let m =
                SequenceBuffer::read(&mut r).map_err(|e| corrupt(files::MEMORY, e.to_string()))?;
            if (m.capacity(), m.max_len(), m.top_k())
                != (config.buffer, config.max_len, config.strategy.top_k())
            {
                return Err(corrupt(
                    files::MEMORY,
                    "dimensions differ from the configuration".into(),
                ));
            }
            Some(m)
        }
    };

    let body = open(files::PENDING, magic::PENDING)?;
    let mut r = Reader::new(&body);
    let bad_p = |e: String| corrupt(files::PENDING, e);
    let n = r.u32("count").map_err(|e| bad_p(e.to_string()))? as usize;
    if n > MAX_PENDING {
        return Err(bad_p(format!("{n} sequences, at most {MAX_PENDING}")));
    }
    let mut pending = VecDeque::with_capacity(n);
    let n_tasks = progress.tasks.len();
    for i in 0..n {
        let task = r.u32("task").map_err(|e| bad_p(e.to_string()))?;
        let n_prompt = r.u32("prompt length").map_err(|e| bad_p(e.to_string()))? as usize;
        let len = r.u32("length").map_err(|e| bad_p(e.to_string()))? as usize;
        if task as usize >= n_tasks.max(1)
            || len > config.max_len
            || n_prompt == 0
            || n_prompt >= len
        {
            return Err(bad_p(format!(
                "sequence {i}: task {task}, {len} tokens, {n_prompt} of context"
            )));
        }
        let mut tokens = Vec::with_capacity(len);
        r.u32s("tokens", len, &mut tokens)
            .map_err(|e| bad_p(e.to_string()))?;
        if tokens.iter().any(|&t| t as usize >= model.config().n_vocab) {
            return Err(bad_p(format!(
                "sequence {i}: a token outside the vocabulary"
            )));
        }
        pending.push_back(Fresh {
            seq: engram_adapters::trainer::Encoded { tokens, n_prompt },
            task,
        });
    }
    let queue = Queue {
        pending,
        tasks: progress.tasks.clone(),
    };
    Ok((
        Learning {
            lora,
            opt,
            memory,
            strategy,
            progress,
            edits,
        },
        queue,
    ))
}

/// What [`verify`] found in a state directory.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StateSummary {
    /// The committed generation.
    pub generation: u64,
    /// The settings.
    pub config: LiveConfig,
    /// The model it belongs to.
    pub model: ModelIdentity,
    /// Counters.
    pub progress: Progress,
    /// Sequences in the replay memory.
    pub memory_fill: usize,
    /// Its capacity.
    pub memory_capacity: usize,
    /// Examples waiting to be learned.
    pub pending: usize,
    /// Edits.
    pub edits: usize,
    /// Bytes of the committed files.
    pub bytes: u64,
}

/// Reads the committed state in `dir` without the writer lock and checks every file of it
/// against `engine`'s model (what `engram state DIR --verify` runs). A summary, or the first
/// thing wrong.
pub fn verify(engine: &Engine, dir: &Path) -> Result<StateSummary, LiveError> {
    let snap = read_state(dir)?;
    if snap.generation == 0 {
        return Err(LiveError::Corrupt {
            dir: dir.to_path_buf(),
            file: "MANIFEST",
            what: "no committed state".into(),
        });
    }
    let read = |name: &'static str| -> Result<Vec<u8>, LiveError> {
        snap.get(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| LiveError::Corrupt {
                dir: dir.to_path_buf(),
                file: name,
                what: "missing from the committed generation".into(),
            })
    };
    let config: LiveConfig = json(dir, files::CONFIG, &read(files::CONFIG)?)?;
    config.validate(engine.model().config().n_ctx_train)?;
    let model: ModelIdentity = json(dir, files::MODEL, &read(files::MODEL)?)?;
    let expected = engine.file().identity();
    if model.identity != expected {
        return Err(LiveError::OtherModel {
            dir: dir.to_path_buf(),
            found: model.identity,
            expected,
        });
    }
    let (l, q) = decode_state(dir, engine, &config, &read)?;
    Ok(StateSummary {
        generation: snap.generation,
        memory_fill: l.memory.as_ref().map_or(0, SequenceBuffer::len),
        memory_capacity: l.memory.as_ref().map_or(0, SequenceBuffer::capacity),
        pending: q.pending.len(),
        edits: l.edits.len(),
        bytes: snap.files.iter().map(|(_, b)| b.len() as u64).sum(),
        config,
        model,
        progress: l.progress,
    })
}

/// What the committed state in `dir` holds, read without the model and without the lock (what
/// `engram state DIR` prints): the files are checked against the manifest and parsed, but the
/// adapter is not matched against a model ([`verify`] does that).
pub fn inspect(dir: &Path) -> Result<StateSummary, LiveError> {
    let snap = read_state(dir)?;
    let corrupt = |file: &'static str, what: String| LiveError::Corrupt {
        dir: dir.to_path_buf(),
        file,
        what,
    };
    let read = |name: &'static str| {
        snap.get(name)
            .ok_or_else(|| corrupt(name, "missing from the committed generation".into()))
    };
    if snap.generation == 0 {
        return Err(corrupt("MANIFEST", "no committed state".into()));
    }
    let config: LiveConfig = json(dir, files::CONFIG, read(files::CONFIG)?)?;
    let model: ModelIdentity = json(dir, files::MODEL, read(files::MODEL)?)?;
    let progress: Progress = json(dir, files::PROGRESS, read(files::PROGRESS)?)?;
    let edits: Vec<Edit> = json(dir, files::EDITS, read(files::EDITS)?)?;
    let (memory_fill, memory_capacity) = match snap.get(files::MEMORY) {
        None => (0, 0),
        Some(bytes) => {
            let (_, body) = envelope::open(bytes, magic::MEMORY, &[STATE_VERSION])
                .map_err(|c| corrupt(files::MEMORY, c.to_string()))?;
            let m = SequenceBuffer::read(&mut Reader::new(body))
                .map_err(|e| corrupt(files::MEMORY, e.to_string()))?;
            (m.len(), m.capacity())
        }
    };
    let (_, body) = envelope::open(read(files::PENDING)?, magic::PENDING, &[STATE_VERSION])
        .map_err(|c| corrupt(files::PENDING, c.to_string()))?;
    let pending = Reader::new(body)
        .u32("count")
        .map_err(|e| corrupt(files::PENDING, e.to_string()))? as usize;
    Ok(StateSummary {
        generation: snap.generation,
        config,
        model,
        progress,
        memory_fill,
        memory_capacity,
        pending,
        edits: edits.len(),
        bytes: snap.files.iter().map(|(_, b)| b.len() as u64).sum(),
    })
}

//! The learning runtime: [`LiveModel`] keeps learning from what a device app feeds it, serves
//! from the last committed state meanwhile, and survives being killed at any moment.
//!
//! One `LiveModel` owns, over one memory-mapped base model ([`Engine`]): a LoRA adapter with
//! its AdamW moments, a replay memory of token sequences, a continual-learning [`Strategy`],
//! the edits written into the model, and a [memory plan](LivePlan) checked before anything is
//! allocated. Its state lives in a directory ([`store`]) whose every commit is one atomic
//! generation: a process killed mid-write reopens at the last commit, with nothing mixed.
//!
//! ```no_run
//! use std::sync::Arc;
//! use engram_learn::live::{Budget, LiveConfig, LiveModel, Observation};
//! use engram_runtime::{backend, engine::Engine, generate::GenerateOptions};
//!
//! let engine = Arc::new(Engine::load("model.gguf", &backend::cpu().autodiff(), 0)?);
//! let live = LiveModel::open(engine, "state".as_ref(), &LiveConfig::default())?;
//! live.observe(Observation::pair("The capital of Veloria is", " Quenmark."))?;
//! live.learn(&Budget::steps(10));
//! live.commit()?;                                    // durable, and published
//! let snap = live.snapshot();                        // what generation reads
//! let (text, _) = snap.complete("The capital of Veloria is", &GenerateOptions::default())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Threads: every method takes `&self`. `observe` only queues; `learn` holds the learning
//! state (not the queue) while it steps; readers take the published [`Snapshot`] (an `Arc`)
//! and run on it without any lock, so a generation that started before a commit finishes on
//! the state it started with.

mod config;
mod example;
mod plan;
mod sequences;
mod snapshot;
mod step;
pub mod store;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use engram_adapters::lora::{Lora, LoraError};
use engram_adapters::optim::{AdamW, AdamWConfig};
use engram_adapters::trainer::plan::OverBudget;
use engram_edit::{Edit, EditError, EditRequest, Editor, EditorConfig, Method};
use engram_runtime::engine::Engine;
use engram_runtime::io::{DirError, StateDir, read_state};

pub use config::{
    ConfigError, LiveConfig, MAX_BUFFER, MAX_LEN, MAX_TOP_K, ReplayPolicy, RetentionKind,
    SamplingKind, Strategy,
};
pub use example::{
    ExamplesError, MAX_TEXT_BYTES, Observation, load_jsonl, load_jsonl_numbered, parse_line,
};
pub use plan::LivePlan;
pub use sequences::{Replayed, SequenceBuffer};
pub use snapshot::{EvalReport, Snapshot};
pub use step::StepReport;
pub use store::{ModelIdentity, Progress, StateSummary, inspect, verify};

use step::{Fresh, StepInputs, StepState, StrategyState};
use store::{decode_state, encode_state, files};

/// Most observed sequences waiting to be learned; `observe` refuses more until `learn` takes
/// some (the queue's memory is part of the plan).
pub const MAX_PENDING: usize = 4096;

/// Why the runtime refused or failed; a refused call changes nothing, stored or in memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    /// The state directory could not be opened, read or written (locked by another writer,
    /// damaged, not a state directory); the error names the path.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// A file of the state is damaged or not what its name says.
    #[error("{}: {file}: {what}", dir.display())]
    Corrupt {
        /// The state directory.
        dir: PathBuf,
        /// The logical file.
        file: &'static str,
        /// What is wrong.
        what: String,
    },
    /// The state was built over another model file.
    #[error("{}: state is for model {found}, not {expected} (another file, or the file changed)", dir.display())]
    OtherModel {
        /// The state directory.
        dir: PathBuf,
        /// The identity in the state.
        found: String,
        /// The identity of the model opened now.
        expected: String,
    },
    /// The state exists with other settings than the ones asked for.
    #[error("{}: the state was created with {field} = {stored}; it keeps its own settings (asked: {asked})", dir.display())]
    Mismatch {
        /// The state directory.
        dir: PathBuf,
        /// The setting.
        field: &'static str,
        /// What the state has.
        stored: String,
        /// What was asked.
        asked: String,
    },
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The LoRA configuration does not fit the model.
    #[error(transparent)]
    Lora(#[from] LoraError),
    /// The plan does not fit the memory budget.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// An example is not usable.
    #[error("example: {0}")]
    Example(String),
    /// The queue of observed examples is full: call `learn` first.
    #[error("{MAX_PENDING} examples are waiting to be learned: learn before observing more")]
    QueueFull,
    /// An edit failed.
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// How much a call to [`LiveModel::learn`] may do.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    /// At most this many steps.
    pub steps: Option<u64>,
    /// At most this long (checked between steps).
    pub time: Option<Duration>,
    /// Set to stop after the current step.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Budget {
    /// At most `n` steps.
    pub fn steps(n: u64) -> Self {
        Self {
            steps: Some(n),
            ..Self::default()
        }
    }
}

/// Why [`LiveModel::learn`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// Everything observed has been learned.
    Drained,
    /// The step or time budget is spent.
    Budget,
    /// The cancel flag was set.
    Cancelled,
}

/// What one [`LiveModel::learn`] call did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LearnReport {
    /// Steps taken.
    pub steps: u64,
    /// Fresh examples trained on.
    pub examples: u64,
    /// Mean loss of those steps (`None` when none ran).
    pub mean_loss: Option<f32>,
    /// Why it returned.
    pub stopped: Stopped,
}

/// Settings of one process, not of the state: the memory budget and where edit statistics
/// are cached.
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    /// Refuse to open when the plan exceeds this many bytes.
    pub budget: Option<u64>,
    /// Where the key statistics of weight-editing methods are cached (computed in memory each
    /// process when `None`).
    pub edit_cache: Option<PathBuf>,
}

struct Learning {
    lora: Lora,
    opt: AdamW,
    memory: Option<SequenceBuffer>,
    strategy: StrategyState,
    progress: Progress,
    edits: Vec<Edit>,
}

struct Queue {
    pending: VecDeque<Fresh>,
    tasks: Vec<String>,
}

/// A model that keeps learning: see the [module docs](self).
pub struct LiveModel {
    engine: Arc<Engine>,
    root: PathBuf,
    config: LiveConfig,
    identity: ModelIdentity,
    options: LiveOptions,
    plan: LivePlan,
    store: Mutex<StateDir>,
    learning: Mutex<Learning>,
    queue: Mutex<Queue>,
    published: Mutex<Arc<Snapshot>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another thread mid-step leaves tensors, not broken invariants that matter
    // more than the next commit's own checks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveModel {
    /// Opens the state in `dir` for learning, creating it with `config` if it has none.
    /// A resumed state keeps its own settings: a `config` that disagrees is an error (pass
    /// the state's own, [`LiveModel::stored_config`], to resume whatever it holds). Takes the
    /// directory's writer lock (a second writer gets [`DirError::Lock`]); readers
    /// ([`Snapshot::read`]) never wait.
    pub fn open(engine: Arc<Engine>, dir: &Path, config: &LiveConfig) -> Result<Self, LiveError> {
        Self::open_with(engine, dir, config, LiveOptions::default())
    }

    /// The settings stored in the state at `dir`, if it has any.
    pub fn stored_config(dir: &Path) -> Result<Option<LiveConfig>, LiveError> {
        let snap = read_state(dir)?;
        snap.get(files::CONFIG)
            .map(|b| json(dir, files::CONFIG, b))
            .transpose()
    }

    /// [`LiveModel::open`] with a memory budget and an edit-statistics cache.
    pub fn open_with(
        engine: Arc<Engine>,
        dir: &Path,
        config: &LiveConfig,
        options: LiveOptions,
    ) -> Result<Self, LiveError> {
        let model = engine.model();
        config.validate(model.config().n_ctx_train)?;
        let plan = LivePlan::new(
            engine.file().bytes().len() as u64,
            model.config(),
            config,
            model.decode_copy_bytes(),
        );
        if let Some(budget) = options.budget {
            plan.check(budget)?;
        }
        let store = StateDir::open(dir)?;
        let mc = model.config();
        let identity = ModelIdentity {
            identity: engine.file().identity(),
            file_name: engine
                .file()
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            n_layer: mc.n_layer,
            d_model: mc.d_model,
            n_vocab: mc.n_vocab,
        };
        let fresh = store.generation() == 0;
        let (learning, queue) = if fresh {
            let lora = Lora::new(model, config.lora.clone())?;
            let memory = new_memory(config);
            let strategy = StrategyState::fresh(&config.strategy, &lora, model);
            (
                Learning {
                    opt: AdamW::new(adam_config()),
                    lora,
                    memory,
                    strategy,
                    progress: Progress::default(),
                    edits: Vec::new(),
                },
                Queue {
                    pending: VecDeque::new(),
                    tasks: Vec::new(),
                },
            )
        } else {
            let read = |name: &'static str| -> Result<Vec<u8>, LiveError> {
                store.read(name)?.ok_or_else(|| LiveError::Corrupt {
                    dir: dir.to_path_buf(),
                    file: name,
                    what: "missing from the committed generation".into(),
                })
            };
            let stored: LiveConfig = json(dir, files::CONFIG, &read(files::CONFIG)?)?;
            check_same(dir, &stored, config)?;
            let found: ModelIdentity = json(dir, files::MODEL, &read(files::MODEL)?)?;
            if found.identity != identity.identity {
                return Err(LiveError::OtherModel {
                    dir: dir.to_path_buf(),
                    found: format!("{} ({})", found.identity, found.file_name),
                    expected: format!("{} ({})", identity.identity, identity.file_name),
                });
            }
            decode_state(dir, &engine, config, &read)?
        };
        let snapshot = Snapshot::build(
            engine.clone(),
            store.generation(),
            &learning.lora,
            learning.edits.clone(),
            learning.progress.clone(),
        );
        let live = Self {
            engine,
            root: dir.to_path_buf(),
            config: config.clone(),
            identity,
            options,
            plan,
            store: Mutex::new(store),
            learning: Mutex::new(learning),
            queue: Mutex::new(queue),
            published: Mutex::new(Arc::new(snapshot)),
        };
        if fresh {
            // Generation 1 holds the configuration and the untrained adapter: from now on
            // the directory always names a complete state.
            live.commit()?;
        }
        Ok(live)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.config
    }

    /// The memory plan the state was opened under.
    pub fn plan(&self) -> &LivePlan {
        &self.plan
    }

    /// The model the state belongs to.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The base model's identity.
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// Queues an example to learn from (nothing is trained until [`LiveModel::learn`]).
    /// Returns whether it was queued: an example whose prompt alone fills `max_len` tokens
    /// has nothing to learn and is skipped.
    pub fn observe(&self, example: Observation) -> Result<bool, LiveError> {
        example.check().map_err(LiveError::Example)?;
        let Some(seq) = example.encode(self.engine.tokenizer(), self.config.max_len) else {
            return Ok(false);
        };
        let mut q = lock(&self.queue);
        if q.pending.len() >= MAX_PENDING {
            return Err(LiveError::QueueFull);
        }
        let name = example.task.unwrap_or_default();
        let task = match q.tasks.iter().position(|t| *t == name) {
            Some(i) => i,
            None => {
                q.tasks.push(name);
                q.tasks.len() - 1
            }
        } as u32;
        q.pending.push_back(Fresh { seq, task });
        Ok(true)
    }

    /// Examples waiting to be learned.
    pub fn pending(&self) -> usize {
        lock(&self.queue).pending.len()
    }

    /// Drops every example waiting to be learned (durable at the next commit); returns how
    /// many. For callers that feed a fixed number of steps from a cycled data set.
    pub fn discard_pending(&self) -> usize {
        let mut q = lock(&self.queue);
        let n = q.pending.len();
        q.pending.clear();
        n
    }

    /// Steps until the queue is empty or the budget is spent. A batch never mixes tasks: a
    /// change of task is a task boundary for the strategy.
    pub fn learn(&self, budget: &Budget) -> LearnReport {
        let start = Instant::now();
        let mut l = lock(&self.learning);
        let l = &mut *l;
        let mut report = LearnReport {
            steps: 0,
            examples: 0,
            mean_loss: None,
            stopped: Stopped::Drained,
        };
        let mut loss_sum = 0f64;
        let edits =
            (!l.edits.is_empty()).then(|| snapshot::edit_set(self.engine.model(), l.edits.clone()));
        let cx = StepInputs {
            model: self.engine.model(),
            config: &self.config,
            edits: edits
                .as_ref()
                .map(|e| e as &dyn engram_runtime::model::llama::LinearAdapter),
            pad: self.engine.tokenizer().eos(),
        };
        loop {
            if budget
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                report.stopped = Stopped::Cancelled;
                break;
            }
            if budget.steps.is_some_and(|n| report.steps >= n)
                || budget.time.is_some_and(|t| start.elapsed() >= t)
            {
                report.stopped = Stopped::Budget;
                break;
            }
            let replaying =
                self.config.strategy.replays() && l.memory.as_ref().is_some_and(|m| !m.is_empty());
            let want = self.config.batch - if replaying { self.config.batch / 2 } else { 0 };
            let fresh = {
                let mut q = lock(&self.queue);
                let mut out: Vec<Fresh> = Vec::with_capacity(want);
                while out.len() < want {
                    match q.pending.front() {
                        Some(f) if out.first().is_none_or(|o| o.task == f.task) => {
                            out.push(q.pending.pop_front().expect("front exists"));
                        }
                        _ => break,
                    }
                }
                out
            };
            let Some(task) = fresh.first().map(|f| f.task) else {
                break;
            };
            if l.progress.current_task.is_some_and(|t| t != task) {
                l.strategy
                    .task_boundary(&self.config.strategy, &l.lora, self.engine.model());
            }
            l.progress.current_task = Some(task);
            let r = step::step(
                &cx,
                StepState {
                    lora: &mut l.lora,
                    opt: &mut l.opt,
                    memory: l.memory.as_mut(),
                    strategy: &mut l.strategy,
                },
                &fresh,
            );
            report.steps += 1;
            report.examples += r.fresh as u64;
            loss_sum += f64::from(r.loss);
            l.progress.steps += 1;
            l.progress.examples_seen += r.fresh as u64;
        }
        report.mean_loss = (report.steps > 0).then(|| (loss_sum / report.steps as f64) as f32);
        report
    }

    /// Writes the learning state as a new generation (one atomic step) and publishes it to
    /// readers. Returns the generation.
    pub fn commit(&self) -> Result<u64, LiveError> {
        let mut l = lock(&self.learning);
        let q = lock(&self.queue);
        let mut store = lock(&self.store);
        l.progress.commits += 1;
        l.progress.tasks = q.tasks.clone();
        let files = encode_state(&self.config, &self.identity, &l, &q);
        let mut g = store.begin();
        for (name, bytes) in &files {
            g.write(name, bytes)?;
        }
        let generation = g.commit()?;
        let snap = Snapshot::build(
            self.engine.clone(),
            generation,
            &l.lora,
            l.edits.clone(),
            l.progress.clone(),
        );
        *lock(&self.published) = Arc::new(snap);
        Ok(generation)
    }

    /// The last committed state, for generation and evaluation. Cheap (an `Arc`); it never
    /// changes under its holder.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        lock(&self.published).clone()
    }

    /// Writes a fact into the model with `method` (on top of the adapter and earlier edits).
    /// The edit is part of the learning state at once and durable at the next commit.
    /// Returns its id.
    pub fn edit(&self, request: &EditRequest, method: Method) -> Result<u64, LiveError> {
        let mut l = lock(&self.learning);
        let model = self.engine.model();
        // The default layers, at the same relative depth in this model.
        let config = EditorConfig::for_depth(model.config().n_layer);
        let mut editor = Editor::new(
            model,
            self.engine.tokenizer(),
            &self.identity.identity,
            config,
        );
        editor.restore_edits(l.edits.clone());
        if !editor.stats_layers(method).is_empty() {
            let corpus = engram_edit::stats::generated_corpus(
                model,
                self.engine.tokenizer(),
                editor.config.stats_tokens,
                0,
            );
            let scratch;
            let dir = match &self.options.edit_cache {
                Some(d) => d.as_path(),
                None => {
                    scratch = std::env::temp_dir()
                        .join(format!("engram-edit-stats-{}", std::process::id()));
                    scratch.as_path()
                }
            };
            editor.load_stats_for(&[method], &corpus, dir)?;
        }
        let applied = editor.apply(method, std::slice::from_ref(request))?;
        l.edits = editor.edits().to_vec();
        Ok(applied[0].id)
    }

    /// Removes edit `id` (durable at the next commit).
    pub fn undo(&self, id: u64) -> Result<Edit, LiveError> {
        let mut l = lock(&self.learning);
        let pos = l
            .edits
            .iter()
            .position(|e| e.id == id)
            .ok_or(EditError::UnknownEdit(id))?;
        Ok(l.edits.remove(pos))
    }

    /// The edits in the learning state, oldest first.
    pub fn edits(&self) -> Vec<Edit> {
        lock(&self.learning).edits.clone()
    }

    /// Loss per completion token of the current (possibly uncommitted) state on `examples`.
    pub fn evaluate(&self, examples: &[Observation]) -> Result<EvalReport, LiveError> {
        let l = lock(&self.learning);
        let edits = snapshot::edit_set(self.engine.model(), l.edits.clone());
        snapshot::evaluate(&self.engine, &self.config, &l.lora, &edits, examples)
    }

    /// Counters of the learning state.
    pub fn progress(&self) -> Progress {
        let mut p = lock(&self.learning).progress.clone();
        p.tasks = lock(&self.queue).tasks.clone();
        p
    }
}

fn adam_config() -> AdamWConfig {
    AdamWConfig::default()
}

fn new_memory(config: &LiveConfig) -> Option<SequenceBuffer> {
    config.strategy.replays().then(|| {
        SequenceBuffer::new(
            config.buffer,
            config.max_len,
            config.strategy.top_k(),
            config.policy.policy(),
            config.seed,
        )
        .expect("validated sizes")
    })
}

fn json<T: serde::de::DeserializeOwned>(
    dir: &Path,
    file: &'static str,
    bytes: &[u8],
) -> Result<T, LiveError> {
    serde_json::from_slice(bytes).map_err(|e| LiveError::Corrupt {
        dir: dir.to_path_buf(),
        file,
        what: e.to_string(),
    })
}

/// The settings a resumed state must share with the ones asked for.
fn check_same(dir: &Path, stored: &LiveConfig, asked: &LiveConfig) -> Result<(), LiveError> {
    let mismatch = |field, s: String, a: String| {
        Err(LiveError::Mismatch {
            dir: dir.to_path_buf(),
            field,
            stored: s,
            asked: a,
        })
    };
    if stored.strategy != asked.strategy {
        return mismatch(
            "strategy",
            format!("{:?}", stored.strategy),
            format!("{:?}", asked.strategy),
        );
    }
    if stored.lora != asked.lora {
        return mismatch(
            "lora",
            format!("{:?}", stored.lora),
            format!("{:?}", asked.lora),
        );
    }
    if stored != asked {
        return mismatch("settings", format!("{stored:?}"), format!("{asked:?}"));
    }
    Ok(())
}

//! [`Snapshot`]: one committed state, immutable, served without locks. A snapshot holds its
//! own copy of the adapter and the edits over the shared mapped base, so a generation that
//! started on it finishes on it whatever the learner commits meanwhile.

use std::path::Path;
use std::sync::Arc;

use engram_adapters::compose::Stack;
use engram_adapters::lora::Lora;
use engram_adapters::optim::causal_lm_loss;
use engram_adapters::trainer::{Batch, Encoded};
use engram_edit::{Edit, EditSet};
use engram_runtime::engine::{Engine, EngineError};
use engram_runtime::generate::{Adaptation, GenerateOptions, Generation};
use engram_runtime::io::read_state;
use engram_runtime::model::chat::ChatMessage;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits, Proj};

use super::config::LiveConfig;
use super::example::Observation;
use super::store::{self, ModelIdentity, Progress, STATE_VERSION, files, magic};
use super::{LiveError, json};
use crate::codec::Reader;

/// Loss of a state on examples.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Mean loss per completion token, in nats.
    pub loss: f32,
    /// Completion tokens scored.
    pub tokens: usize,
}

/// A committed learning state, ready to serve.
pub struct Snapshot {
    engine: Arc<Engine>,
    config: Option<LiveConfig>,
    generation: u64,
    lora: Option<Lora>,
    edits: EditSet,
    progress: Progress,
}

/// An [`EditSet`] holding `edits` for `model`.
pub(crate) fn edit_set(model: &Llama, edits: Vec<Edit>) -> EditSet {
    let down = (0..model.config().n_layer)
        .map(|l| model.weight(l, Proj::Down).clone())
        .collect();
    let mut set = EditSet::new(model.device(), down);
    set.restore(edits);
    set
}

impl Snapshot {
    pub(crate) fn build(
        engine: Arc<Engine>,
        generation: u64,
        lora: &Lora,
        edits: Vec<Edit>,
        progress: Progress,
    ) -> Self {
        let model = engine.model();
        let lora = super::step::copy_of(lora, model);
        let edits = edit_set(model, edits);
        Self {
            config: None,
            generation,
            lora: Some(lora),
            edits,
            progress,
            engine,
        }
    }

    /// The base model alone (generation 0), for code that serves "a state or nothing".
    pub fn base(engine: Arc<Engine>) -> Self {
        let edits = edit_set(engine.model(), Vec::new());
        Self {
            engine,
            config: None,
            generation: 0,
            lora: None,
            edits,
            progress: Progress::default(),
        }
    }

    /// Reads the committed state in `dir` for serving, without the writer lock (a learner
    /// may be committing meanwhile: the read is of one whole generation).
    pub fn read(engine: Arc<Engine>, dir: &Path) -> Result<Self, LiveError> {
        let snap = read_state(dir)?;
        let read = |name: &'static str| {
            snap.get(name).ok_or_else(|| LiveError::Corrupt {
                dir: dir.to_path_buf(),
                file: name,
                what: if snap.generation == 0 {
                    "no committed state".into()
                } else {
                    "missing from the committed generation".into()
                },
            })
        };
        let corrupt = |file: &'static str, what: String| LiveError::Corrupt {
            dir: dir.to_path_buf(),
            file,
            what,
        };
        let config: LiveConfig = json(dir, files::CONFIG, read(files::CONFIG)?)?;
        let model_id: ModelIdentity = json(dir, files::MODEL, read(files::MODEL)?)?;
        let expected = engine.file().identity();
        if model_id.identity != expected {
            return Err(LiveError::OtherModel {
                dir: dir.to_path_buf(),
                found: model_id.identity,
                expected,
            });
        }
        let progress: Progress = json(dir, files::PROGRESS, read(files::PROGRESS)?)?;
        let edits: Vec<Edit> = json(dir, files::EDITS, read(files::EDITS)?)?;
        let (_, body) =
            engram_runtime::io::envelope::open(read(files::LORA)?, magic::LORA, &[STATE_VERSION])
                .map_err(|c| corrupt(files::LORA, c.to_string()))?;
        let host = store::read_host(&mut Reader::new(body))
            .map_err(|e| corrupt(files::LORA, e.to_string()))?;
        let model = engine.model();
        let mut lora = Lora::new(model, config.lora.clone())?;
        lora.params_mut()
            .load_host(&host)
            .map_err(|e| corrupt(files::LORA, e.to_string()))?;
        engram_edit::store::check_edits(&edits, model).map_err(|e| corrupt(files::EDITS, e))?;
        let edits = edit_set(model, edits);
        Ok(Self {
            engine,
            config: Some(config),
            generation: snap.generation,
            lora: Some(lora),
            edits,
            progress,
        })
    }

    /// The generation this snapshot is (0: the base model).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counters at that generation.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The edits it serves.
    pub fn edits(&self) -> &[Edit] {
        self.edits.edits()
    }

    /// The state's learning configuration (`None` when serving the base model).
    pub fn config(&self) -> Option<&LiveConfig> {
        self.config.as_ref()
    }

    /// The model.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Runs `f` with the adapter stack this snapshot serves (the LoRA adapter, then edits).
    pub fn with_adapter<R>(&self, f: impl FnOnce(&dyn LinearAdapter) -> R) -> R {
        let mut stack = Stack::default();
        if let Some(l) = &self.lora {
            stack.0.push(l);
        }
        if !self.edits.is_empty() {
            stack.0.push(&self.edits);
        }
        f(&stack)
    }

    /// Continues `prompt` (raw text) on this state.
    pub fn complete(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
    ) -> Result<(String, Generation), EngineError> {
        self.with_adapter(|a| {
            self.engine
                .complete_with(prompt, opts, Adaptation::linear(a), |_| {})
        })
    }

    /// [`Snapshot::complete`], streaming text pieces to `on_text`.
    pub fn complete_streaming(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        self.with_adapter(|a| {
            self.engine
                .complete_with(prompt, opts, Adaptation::linear(a), on_text)
        })
    }

    /// Answers a conversation (the model's chat template) on this state.
    pub fn chat(
        &self,
        messages: &[ChatMessage],
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<(String, Generation), EngineError> {
        self.with_adapter(|a| {
            self.engine
                .chat_with(messages, opts, Adaptation::linear(a), on_text)
        })
    }

    /// The logits after `prompt` on this state, with its token ids.
    pub fn last_logits(&self, prompt: &str) -> Result<(Vec<u32>, Vec<f32>), EngineError> {
        self.with_adapter(|a| self.engine.last_logits_with(prompt, Adaptation::linear(a)))
    }

    /// Loss per completion token on `examples` (cut to the state's `max_len`; batches of its
    /// batch size; the base model's defaults when there is no state).
    pub fn evaluate(&self, examples: &[Observation]) -> Result<EvalReport, LiveError> {
        let cfg = self.config.clone().unwrap_or_default();
        self.with_adapter(|a| evaluate_with(&self.engine, &cfg, a, examples))
    }
}

/// Loss of `adapter` + `edits` on `examples` (the learner's current state).
pub(crate) fn evaluate(
    engine: &Engine,
    cfg: &LiveConfig,
    lora: &Lora,
    edits: &EditSet,
    examples: &[Observation],
) -> Result<EvalReport, LiveError> {
    let mut stack = Stack(vec![lora as &dyn LinearAdapter]);
    if !edits.is_empty() {
        stack.0.push(edits);
    }
    evaluate_with(engine, cfg, &stack, examples)
}

fn evaluate_with(
    engine: &Engine,
    cfg: &LiveConfig,
    adapter: &dyn LinearAdapter,
    examples: &[Observation],
) -> Result<EvalReport, LiveError> {
    let mut seqs: Vec<Encoded> = Vec::with_capacity(examples.len());
    for (i, e) in examples.iter().enumerate() {
        e.check()
            .map_err(|w| LiveError::Example(format!("example {}: {w}", i + 1)))?;
        seqs.extend(e.encode(engine.tokenizer(), cfg.max_len));
    }
    let model = engine.model();
    let pad = engine.tokenizer().eos();
    let (mut sum, mut tokens) = (0f64, 0usize);
    for chunk in seqs.chunks(cfg.batch.max(1)) {
        let batch = Batch::new(&chunk.iter().collect::<Vec<_>>(), pad);
        let logits = Adaptation::linear(adapter)
            .forward(model, &batch.inputs, batch.batch, None, Logits::All)
            .expect("sequences are cut to max_len, checked against the context");
        let (targets, mask) = batch.tensors(model.device());
        let n = batch.trained_tokens();
        let loss = causal_lm_loss(logits, targets, mask).into_scalar::<f32>();
        sum += f64::from(loss) * n as f64;
        tokens += n;
    }
    Ok(EvalReport {
        loss: if tokens == 0 {
            f32::NAN
        } else {
            (sum / tokens as f64) as f32
        },
        tokens,
    })
}

//! [`Editor`]: the model, its edit set, the statistics and the edit log together — what an
//! application holds to edit facts, evaluate and undo them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use engram_runtime::io::WriterLock;
use engram_runtime::model::llama::{LinearAdapter, Llama, Proj};
use engram_runtime::model::tokenizer::Tokenizer;
use engram_runtime::progress::{Progress, Silent};
use serde::{Deserialize, Serialize};

use super::context::EditContext;
use super::gate::{GateConfig, gate_entry};
use super::grace::{grace_entry, resolve_conflicts};
use super::linalg::{self, NotPositiveDefinite};
use super::log::{self, LogContents, LogError};
use super::memit::{ProtectedBasis, Solver, batch_terms};
use super::metrics;
use super::request::EditRequest;
use super::rome::rome_term;
use super::stats::{self, LayerStats, StatsError, StatsReport, StatsSource};
use super::store::{Edit, EditDelta, EditSet, Method};
use super::target::TargetHparams;
use super::ultraedit::{self, Normalizers, UltraConfig};

/// Where and how each method edits.
///
/// Deserializes from partial JSON (missing fields take their defaults), which is how
/// `engram edit --config FILE` reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EditorConfig {
    /// ROME's layer (causal tracing picks it; see `trace`).
    pub rome_layer: usize,
    /// MEMIT's and AlphaEdit's layer range; `δ` is optimized at the last one.
    pub memit_layers: Vec<usize>,
    /// GRACE's codebook layer.
    pub grace_layer: usize,
    /// The gated memory's layers and gates.
    pub gate: GateConfig,
    /// The gated memory's value training (no essence term: the value fires only where both
    /// gates do).
    pub gate_target: TargetHparams,
    /// The `δ` optimization.
    pub target: TargetHparams,
    /// GRACE's value training (no essence term).
    pub grace_target: TargetHparams,
    /// MEMIT's and AlphaEdit's `z` optimization. The references differ: MEMIT on GPT-J and
    /// AlphaEdit on Llama-3-8B clamp at 0.75‖v‖ with decay 0.5, EasyEdit's MEMIT on Llama and
    /// AlphaEdit on Qwen2.5 use ROME's 4 and 1e-3 (the default here: on 10 sequential known
    /// facts 0.75 / 0.5 cut MEMIT's efficacy from 10/10 to 6/10; docs/EDITING.md).
    pub memit_target: TargetHparams,
    /// MEMIT's `λ` (`mom2_update_weight`).
    pub lambda: f32,
    /// AlphaEdit's ridge `ρ` (`L2`).
    pub alpha_ridge: f32,
    /// AlphaEdit's null space: the eigenvectors of `E[k kᵀ]` with the smallest eigenvalues
    /// that together hold at most this fraction of its trace (the keys' energy).
    ///
    /// AlphaEdit's own rule, an absolute eigenvalue threshold (2e-2), is tuned to the key
    /// scale of 8B models; at SmolLM2's layer 13 it selects 1085 of 1536 directions holding
    /// 21 % of the key energy, which protects little. A fraction of the trace means the same
    /// on any model.
    pub null_energy: f64,
    /// GRACE's initial deferral radius.
    pub grace_radius: f32,
    /// UltraEdit's layers, step size, ridge and prior.
    pub ultraedit: UltraConfig,
    /// Ridge added to `C` before inverting, relative to its mean diagonal.
    pub cov_ridge: f64,
    /// Token budget of the statistics pass.
    pub stats_tokens: usize,
    /// Generated context templates (besides the plain prompt) and their length in tokens.
    pub contexts: (usize, usize),
}

impl EditorConfig {
    /// Blocks of the model the default layers were chosen on (SmolLM2-135M).
    pub const DEFAULT_DEPTH: usize = 30;

    /// The defaults with every layer moved to the same relative depth in a model of
    /// `n_layer` blocks (unchanged for 30 blocks).
    pub fn for_depth(n_layer: usize) -> Self {
        let d = Self::default();
        let at = |l: usize| (l * n_layer / Self::DEFAULT_DEPTH).min(n_layer.saturating_sub(1));
        let mut memit: Vec<usize> = d.memit_layers.iter().map(|&l| at(l)).collect();
        memit.dedup();
        Self {
            rome_layer: at(d.rome_layer),
            memit_layers: memit,
            grace_layer: at(d.grace_layer),
            ultraedit: UltraConfig {
                layers: {
                    let mut l: Vec<usize> = d.ultraedit.layers.iter().map(|&l| at(l)).collect();
                    l.dedup();
                    l
                },
                ..d.ultraedit.clone()
            },
            gate: crate::gate::GateConfig {
                subject_layer: at(d.gate.subject_layer),
                relation_layer: at(d.gate.relation_layer),
                word_layer: at(d.gate.word_layer),
                ..d.gate.clone()
            },
            ..d
        }
    }

    /// The first layer of this configuration that a model of `n_layer` blocks does not have.
    pub fn layer_outside(&self, n_layer: usize) -> Option<usize> {
        [
            self.rome_layer,
            self.grace_layer,
            self.gate.subject_layer,
            self.gate.relation_layer,
            self.gate.word_layer,
        ]
        .into_iter()
        .chain(self.memit_layers.iter().copied())
        .chain(self.ultraedit.layers.iter().copied())
        .find(|&l| l >= n_layer)
    }

    /// Checks a configuration (from a file or flags) against a model of `n_layer` blocks:
    /// every layer inside the model, a non-empty MEMIT layer list, finite hyper-parameters in
    /// their ranges, bounded step and token counts. The error names the field.
    pub fn check(&self, n_layer: usize) -> Result<(), String> {
        let layers = [
            ("rome_layer", self.rome_layer),
            ("grace_layer", self.grace_layer),
            ("gate.subject_layer", self.gate.subject_layer),
            ("gate.relation_layer", self.gate.relation_layer),
            ("gate.word_layer", self.gate.word_layer),
        ];
        let memit = self.memit_layers.iter().map(|&l| ("memit_layers", l));
        let ultra = self
            .ultraedit
            .layers
            .iter()
            .map(|&l| ("ultraedit.layers", l));
        for (field, l) in layers.into_iter().chain(memit).chain(ultra) {
            if l >= n_layer {
                return Err(format!(
                    "`{field}` {l} is outside the model's {n_layer} blocks (0..{n_layer})"
                ));
            }
        }
        if self.memit_layers.is_empty() {
            return Err(
                "`memit_layers` is empty (MEMIT and AlphaEdit spread edits over them)".into(),
            );
        }
        if self.ultraedit.layers.is_empty() {
            return Err("`ultraedit.layers` is empty".into());
        }
        if self.ultraedit.prior_tokens > MAX_STATS_TOKENS {
            return Err(format!(
                "`ultraedit.prior_tokens` {} exceeds {MAX_STATS_TOKENS}",
                self.ultraedit.prior_tokens
            ));
        }
        let finite = [
            ("ultraedit.lr", f64::from(self.ultraedit.lr)),
            ("ultraedit.ridge", f64::from(self.ultraedit.ridge)),
            ("lambda", f64::from(self.lambda)),
            ("alpha_ridge", f64::from(self.alpha_ridge)),
            ("null_energy", self.null_energy),
            ("grace_radius", f64::from(self.grace_radius)),
            ("cov_ridge", self.cov_ridge),
            (
                "gate.subject_threshold",
                f64::from(self.gate.subject_threshold),
            ),
            (
                "gate.opening_threshold",
                f64::from(self.gate.opening_threshold),
            ),
            (
                "gate.relation_threshold",
                f64::from(self.gate.relation_threshold),
            ),
            (
                "gate.relation_word_threshold",
                f64::from(self.gate.relation_word_threshold.unwrap_or(0.0)),
            ),
            ("gate.value_init", f64::from(self.gate.value_init)),
            (
                "gate.contrast_floor",
                f64::from(self.gate.contrast_floor.unwrap_or(0.0)),
            ),
            ("gate.contrast_margin", f64::from(self.gate.contrast_margin)),
        ];
        for (field, v) in finite {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("`{field}` {v} is not a finite value >= 0"));
            }
        }
        let targets = [
            ("gate_target", &self.gate_target),
            ("target", &self.target),
            ("grace_target", &self.grace_target),
            ("memit_target", &self.memit_target),
        ];
        for (field, t) in targets {
            let values = [
                ("lr", t.lr),
                ("kl_factor", t.kl_factor),
                ("weight_decay", t.weight_decay),
                ("clamp", t.clamp),
                ("stop_loss", t.stop_loss),
                ("stop_prob", t.stop_prob),
            ];
            for (name, v) in values {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("`{field}.{name}` {v} is not a finite value >= 0"));
                }
            }
            if t.steps > MAX_TARGET_STEPS {
                return Err(format!(
                    "`{field}.steps` {} exceeds {MAX_TARGET_STEPS}",
                    t.steps
                ));
            }
        }
        if self.stats_tokens == 0 || self.stats_tokens > MAX_STATS_TOKENS {
            return Err(format!(
                "`stats_tokens` {} is outside 1..={MAX_STATS_TOKENS}",
                self.stats_tokens
            ));
        }
        let (n, len) = self.contexts;
        if n > MAX_CONTEXTS || len > MAX_CONTEXTS {
            return Err(format!(
                "`contexts` ({n}, {len}): at most {MAX_CONTEXTS} prefixes of at most \
                 {MAX_CONTEXTS} tokens"
            ));
        }
        if self.gate.phrasing_contexts > MAX_CONTEXTS {
            return Err(format!(
                "`gate.phrasing_contexts` {} exceeds {MAX_CONTEXTS}",
                self.gate.phrasing_contexts
            ));
        }
        if self.gate.window > MAX_CONTEXTS {
            return Err(format!(
                "`gate.window` {} exceeds {MAX_CONTEXTS}",
                self.gate.window
            ));
        }
        Ok(())
    }
}

/// Most optimization steps a `δ` search may be configured with.
pub const MAX_TARGET_STEPS: usize = 10_000;
/// Most corpus tokens the key statistics may be configured with.
pub const MAX_STATS_TOKENS: usize = 1 << 24;
/// Most context prefixes (and tokens in each) an editor may be configured with.
pub const MAX_CONTEXTS: usize = 64;

impl Default for EditorConfig {
    fn default() -> Self {
        Self {
            rome_layer: 5,
            memit_layers: vec![11, 12, 13],
            grace_layer: 20,
            gate: GateConfig::default(),
            gate_target: TargetHparams {
                steps: 25,
                lr: 2.0,
                kl_factor: 0.0,
                weight_decay: 1e-3,
                clamp: 4.0,
                stop_loss: 0.0,
                stop_prob: 0.7,
            },
            // ROME: Adam 1.0, stop once every target token has p ≥ 0.5 (top-1 by a margin):
            // 4–6 steps instead of 10–25 at 0.5 / 0.9, the same efficacy and locality on 10
            // sequential edits (docs/EDITING.md).
            target: TargetHparams {
                lr: 1.0,
                stop_prob: 0.5,
                ..TargetHparams::default()
            },
            grace_target: TargetHparams {
                steps: 40,
                lr: 1.0,
                kl_factor: 0.0,
                weight_decay: 0.0,
                clamp: 8.0,
                stop_loss: 0.05,
                stop_prob: 1.0,
            },
            memit_target: TargetHparams::default(),
            lambda: 1_000.0,
            alpha_ridge: 1.0,
            null_energy: 0.02,
            grace_radius: 2.5,
            ultraedit: UltraConfig::default(),
            cov_ridge: 1e-3,
            stats_tokens: 16_384,
            contexts: (3, 6),
        }
    }
}

/// Editing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// Statistics could not be computed or cached.
    #[error(transparent)]
    Stats(#[from] StatsError),
    /// The edit log could not be used.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A solve failed.
    #[error(transparent)]
    Linalg(#[from] NotPositiveDefinite),
    /// The method needs key statistics at a layer that has none loaded.
    #[error("no key statistics for layer {0}: call Editor::load_stats first")]
    NoStats(usize),
    /// No applied edit has this id.
    #[error("no applied edit with id {0}")]
    UnknownEdit(u64),
}

/// What applying one request did.
#[derive(Clone, Debug, Serialize)]
pub struct Applied {
    /// The edit's id (for [`Editor::undo`]).
    pub id: u64,
    /// The request's `case_id`.
    pub case_id: String,
    /// Wall time of this edit (a batch's time is shared equally).
    pub seconds: f64,
}

/// Edits one model. Holds the edits as an adapter; the model itself is never changed.
pub struct Editor<'m> {
    model: &'m Llama,
    tok: &'m Tokenizer,
    model_id: String,
    /// The configuration (change layers before loading statistics).
    pub config: EditorConfig,
    edits: EditSet,
    contexts: Vec<String>,
    stats: HashMap<usize, LayerStats>,
    inv_cov: HashMap<usize, Vec<f32>>,
    projector: HashMap<usize, (Vec<f32>, usize)>,
    /// AlphaEdit's protected span per layer, carried from edit to edit.
    protected: HashMap<usize, ProtectedBasis>,
    /// UltraEdit's held keys and their Gram matrix per layer, carried from edit to edit.
    ultra_held: HashMap<usize, ultraedit::HeldGram>,
    /// UltraEdit's prior statistics (see [`ultraedit::prior`]), once loaded.
    ultra_prior: Option<Normalizers>,
    log_path: Option<PathBuf>,
    /// Held while the log is open: a second writer of the same log is refused.
    log_lock: Option<WriterLock>,
    progress: &'m dyn Progress,
}

impl<'m> Editor<'m> {
    /// An editor over `model` (load it on an autodiff device: `δ` is optimized by gradient).
    /// `model_id` names the base in logs and caches. Writes the context templates with the
    /// model (greedy, so they are the same every run).
    pub fn new(model: &'m Llama, tok: &'m Tokenizer, model_id: &str, config: EditorConfig) -> Self {
        let down = (0..model.config().n_layer)
            .map(|l| model.weight(l, Proj::Down).clone())
            .collect();
        let mut contexts = vec!["{}".to_string()];
        let (n, len) = config.contexts;
        for start in ["The", "Therefore", "Because", "I", "You"].iter().take(n) {
            let ids = metrics::greedy_on_graph(model, tok, start, len, None);
            let text = format!("{start}{}", tok.decode(&ids));
            contexts.push(format!("{}. {{}}", text.replace(['{', '}', '\n'], " ")));
        }
        Self {
            model,
            tok,
            model_id: model_id.to_string(),
            config,
            edits: EditSet::new(model.device(), down),
            contexts,
            stats: HashMap::new(),
            inv_cov: HashMap::new(),
            projector: HashMap::new(),
            protected: HashMap::new(),
            ultra_held: HashMap::new(),
            ultra_prior: None,
            log_path: None,
            log_lock: None,
            progress: &Silent,
        }
    }

    /// Reports the long passes (the key-statistics pass, each request's `δ` optimization) to
    /// `progress` from now on; [`Silent`] until set.
    pub fn set_progress(&mut self, progress: &'m dyn Progress) {
        self.progress = progress;
    }

    /// The context templates ("{}" is the prompt).
    pub fn contexts(&self) -> &[String] {
        &self.contexts
    }

    /// The applied edits as an adapter for `Llama::forward`.
    pub fn adapter(&self) -> &EditSet {
        &self.edits
    }

    /// The applied edits, oldest first.
    pub fn edits(&self) -> &[Edit] {
        self.edits.edits()
    }

    /// Loads (or computes and caches in `cache_dir`) the key statistics every weight method
    /// needs, over `corpus`.
    pub fn load_stats(&mut self, corpus: &str, cache_dir: &Path) -> Result<StatsReport, EditError> {
        self.load_stats_for(&[Method::Rome, Method::Memit], corpus, cache_dir)
    }

    /// The layers whose key statistics `method` needs (none for GRACE).
    pub fn stats_layers(&self, method: Method) -> Vec<usize> {
        match method {
            Method::Rome => vec![self.config.rome_layer],
            Method::Memit | Method::AlphaEdit => self.config.memit_layers.clone(),
            Method::Grace | Method::Gated | Method::UltraEdit => Vec::new(),
        }
    }

    /// [`Editor::load_stats`] for only the layers `methods` need: a first run of one method
    /// pays for one statistics pass over its own layers. Also prepares what the methods derive
    /// from the statistics (`C⁻¹` for ROME and MEMIT, AlphaEdit's projector), so an edit's
    /// time is the edit's own; the report's `prepare_seconds` says what that took.
    pub fn load_stats_for(
        &mut self,
        methods: &[Method],
        corpus: &str,
        cache_dir: &Path,
    ) -> Result<StatsReport, EditError> {
        let mut layers: Vec<usize> = methods.iter().flat_map(|&m| self.stats_layers(m)).collect();
        layers.sort_unstable();
        layers.dedup();
        let ultra = &self.config.ultraedit;
        if methods.contains(&Method::UltraEdit) && ultra.prior_tokens > 0 {
            let t0 = Instant::now();
            self.ultra_prior = Some(ultraedit::prior(
                self.model,
                self.tok,
                corpus,
                &ultra.layers,
                ultra.prior_tokens,
                self.progress,
            ));
            tracing::info!(
                seconds = t0.elapsed().as_secs_f64(),
                "ultraedit prior statistics"
            );
        }
        if layers.is_empty() {
            return Ok(StatsReport::default());
        }
        let source = StatsSource {
            model_id: &self.model_id,
            corpus,
            max_tokens: self.config.stats_tokens,
            cache_dir,
        };
        let (list, report) =
            stats::layer_stats(self.model, self.tok, &source, &layers, self.progress)?;
        for s in list {
            self.stats.insert(s.layer, s);
        }
        let mut report = report;
        let t0 = Instant::now();
        for &m in methods {
            for l in self.stats_layers(m) {
                match m {
                    Method::Rome | Method::Memit => {
                        self.inv_cov(l)?;
                    }
                    Method::AlphaEdit => {
                        self.projector(l)?;
                    }
                    Method::Grace | Method::Gated | Method::UltraEdit => {}
                }
            }
        }
        report.prepare_seconds = t0.elapsed().as_secs_f64();
        Ok(report)
    }

    fn inv_cov(&mut self, layer: usize) -> Result<&[f32], EditError> {
        if !self.inv_cov.contains_key(&layer) {
            let s = self.stats.get(&layer).ok_or(EditError::NoStats(layer))?;
            let inv = linalg::spd_inverse(&s.mom2, s.dim, self.config.cov_ridge)?;
            self.inv_cov.insert(layer, inv);
        }
        Ok(&self.inv_cov[&layer])
    }

    /// AlphaEdit's null-space projector at `layer` and the null space's dimension.
    pub fn projector(&mut self, layer: usize) -> Result<(&[f32], usize), EditError> {
        if !self.projector.contains_key(&layer) {
            let s = self.stats.get(&layer).ok_or(EditError::NoStats(layer))?;
            let p = linalg::null_space_projector(&s.mom2, s.dim, self.config.null_energy);
            self.projector.insert(layer, p);
        }
        let (p, r) = &self.projector[&layer];
        Ok((p, *r))
    }

    /// Applies `reqs` with `method`: ROME and GRACE one after another, MEMIT, AlphaEdit and
    /// UltraEdit as one batch (call once per request for sequential batch editing).
    pub fn apply(
        &mut self,
        method: Method,
        reqs: &[EditRequest],
    ) -> Result<Vec<Applied>, EditError> {
        let start = Instant::now();
        let mut out = Vec::new();
        match method {
            Method::Rome => {
                let layer = self.config.rome_layer;
                self.inv_cov(layer)?;
                self.progress.start("rome edits", reqs.len() as u64);
                for r in reqs {
                    let t0 = Instant::now();
                    let cx = self.context(&self.config.target);
                    let (term, _) = rome_term(&cx, r, layer, &self.inv_cov[&layer]);
                    let id = self
                        .edits
                        .push(method, r.clone(), EditDelta::Weights(vec![term]));
                    out.push(applied(id, r, t0.elapsed().as_secs_f64()));
                    self.progress.advance(1);
                }
                self.progress.finish();
            }
            Method::Grace => {
                self.progress.start("grace edits", reqs.len() as u64);
                for r in reqs {
                    let t0 = Instant::now();
                    let cx = self.context(&self.config.grace_target);
                    let layer = self.config.grace_layer;
                    let (mut entry, _) = grace_entry(&cx, r, layer, self.config.grace_radius);
                    resolve_conflicts(&mut entry, r, &mut self.edits);
                    let id = self.edits.push(method, r.clone(), EditDelta::Grace(entry));
                    out.push(applied(id, r, t0.elapsed().as_secs_f64()));
                    self.progress.advance(1);
                }
                self.progress.finish();
            }
            Method::Gated => {
                self.progress.start("gated edits", reqs.len() as u64);
                for r in reqs {
                    let t0 = Instant::now();
                    let cx = self.context(&self.config.gate_target);
                    let (entry, res) = gate_entry(&cx, r, &self.config.gate);
                    tracing::debug!(steps = res.steps, p_target = res.prob, "gated edit");
                    let id = self.edits.push(method, r.clone(), EditDelta::Gate(entry));
                    out.push(applied(id, r, t0.elapsed().as_secs_f64()));
                    self.progress.advance(1);
                }
                self.progress.finish();
            }
            Method::UltraEdit => {
                let cfg = self.config.ultraedit.clone();
                let prior = match (&self.ultra_prior, cfg.prior_tokens) {
                    (Some(p), _) => p.clone(),
                    (None, 0) => Normalizers::new(),
                    (None, _) => return Err(EditError::NoStats(cfg.layers[0])),
                };
                let mut held = std::mem::take(&mut self.ultra_held);
                let cx = self.context(&self.config.target);
                let terms =
                    ultraedit::batch_terms(&cx, reqs, &cfg, &prior, self.edits.edits(), &mut held);
                self.ultra_held = held;
                let terms = terms?;
                let each = start.elapsed().as_secs_f64() / reqs.len().max(1) as f64;
                for (r, t) in reqs.iter().zip(terms) {
                    let id = self.edits.push(method, r.clone(), EditDelta::Weights(t));
                    out.push(applied(id, r, each));
                }
            }
            Method::Memit | Method::AlphaEdit => {
                let layers = self.config.memit_layers.clone();
                let solver = if method == Method::Memit {
                    for &l in &layers {
                        self.inv_cov(l)?;
                    }
                    Solver::Memit {
                        inv_cov: layers.iter().map(|l| self.inv_cov[l].as_slice()).collect(),
                        lambda: self.config.lambda,
                    }
                } else {
                    for &l in &layers {
                        self.projector(l)?;
                        let keys = self.preserved_keys(l);
                        self.protected
                            .entry(l)
                            .or_default()
                            .update(&self.projector[&l].0, &keys);
                    }
                    Solver::AlphaEdit {
                        projector: layers
                            .iter()
                            .map(|l| self.projector[l].0.as_slice())
                            .collect(),
                        protected: layers.iter().map(|l| self.protected[l].basis()).collect(),
                        ridge: self.config.alpha_ridge,
                    }
                };
                let cx = self.context(&self.config.memit_target);
                let terms = batch_terms(&cx, reqs, &layers, &solver)?;
                let each = start.elapsed().as_secs_f64() / reqs.len().max(1) as f64;
                for (r, t) in reqs.iter().zip(terms) {
                    let id = self.edits.push(method, r.clone(), EditDelta::Weights(t));
                    out.push(applied(id, r, each));
                }
            }
        }
        for a in &out {
            self.edits.set_seconds(a.id, a.seconds);
        }
        self.save_log()?;
        Ok(out)
    }

    /// Keys written by earlier weight edits (any method) at `layer`.
    fn preserved_keys(&self, layer: usize) -> Vec<Vec<f32>> {
        self.edits
            .edits()
            .iter()
            .filter_map(|e| match &e.delta {
                EditDelta::Weights(t) => Some(t),
                EditDelta::Grace(_) | EditDelta::Gate(_) => None,
            })
            .flatten()
            .filter(|t| t.layer == layer)
            .map(|t| t.k.clone())
            .collect()
    }

    /// Rolls back the edit `id` (any method); the others stay.
    pub fn undo(&mut self, id: u64) -> Result<Edit, EditError> {
        let e = self.edits.undo(id).ok_or(EditError::UnknownEdit(id))?;
        self.save_log()?;
        Ok(e)
    }

    /// What every method reads: this editor's model, tokenizer, contexts and edits so far,
    /// with the `δ` settings `target`.
    fn context<'a>(&'a self, target: &'a TargetHparams) -> EditContext<'a> {
        EditContext {
            model: self.model,
            tok: self.tok,
            contexts: &self.contexts,
            inner: Some(&self.edits as &dyn LinearAdapter),
            target,
            progress: self.progress,
        }
    }

    /// Puts back edits saved earlier (by [`Editor::edits`]), ids kept, replacing any applied
    /// now. For callers that keep edits in their own store (the learning runtime) instead of
    /// an edit log.
    pub fn restore_edits(&mut self, edits: Vec<Edit>) {
        self.edits.restore(edits);
    }

    /// Keeps the edit log at `path` from now on, first restoring the edits it holds.
    /// Returns how many were restored.
    ///
    /// Takes the log's writer lock for the editor's lifetime (a second editor of the same log,
    /// in this process or another, gets [`LogError::Lock`]) and removes temp files a killed
    /// writer left beside it.
    pub fn open_log(&mut self, path: &Path) -> Result<usize, EditError> {
        let lock = WriterLock::for_replace(path).map_err(LogError::from)?;
        let restored = match log::load(path)? {
            Some(c) if c.model != self.model_id => {
                return Err(LogError::OtherModel {
                    path: path.to_path_buf(),
                    found: c.model,
                    expected: self.model_id.clone(),
                }
                .into());
            }
            Some(c) => {
                crate::store::check_edits(&c.edits, self.model).map_err(|what| {
                    LogError::Shape {
                        path: path.to_path_buf(),
                        what,
                    }
                })?;
                let n = c.edits.len();
                self.edits.restore(c.edits);
                n
            }
            None => 0,
        };
        self.log_path = Some(path.to_path_buf());
        self.log_lock = Some(lock);
        self.save_log()?;
        Ok(restored)
    }

    fn save_log(&self) -> Result<(), EditError> {
        if let Some(path) = &self.log_path {
            log::save(
                path,
                &LogContents {
                    model: self.model_id.clone(),
                    edits: self.edits.edits().to_vec(),
                },
            )?;
        }
        Ok(())
    }
}

fn applied(id: u64, r: &EditRequest, seconds: f64) -> Applied {
    Applied {
        id,
        case_id: r.case_id.clone(),
        seconds,
    }
}

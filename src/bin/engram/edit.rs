//! `engram edit`: apply fact edits from an EasyEdit-style JSONL file and report EasyEdit's
//! metrics (one JSON object with `--json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use engram::edit::metrics::{self, Probes};
use engram::edit::stats::generated_corpus;
use engram::edit::{
    Applied, EditRequest, Editor, EditorConfig, Method, check_all_fit, load_jsonl_numbered,
};
use engram::edit::{separation, trace};
use engram::runtime::engine::Engine;
use engram::runtime::model::llama::LinearAdapter;
use engram::runtime::progress::Progress;

use crate::shared::{self, Result, SharedArgs, in_file};
use crate::ui::Bars;

/// The editing algorithm.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    /// Rank-one edit of one layer.
    Rome,
    /// Batch edit over a layer range.
    Memit,
    /// MEMIT projected on the null space of preserved knowledge.
    Alphaedit,
    /// Side-memory codebook; weights untouched.
    Grace,
    /// Gated side memory (subject gate + relation gate + value); weights untouched.
    Gated,
    /// Closed-form lifelong edit of down-projections (UltraEdit); no subject needed.
    Ultraedit,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Rome => Method::Rome,
            MethodArg::Memit => Method::Memit,
            MethodArg::Alphaedit => Method::AlphaEdit,
            MethodArg::Grace => Method::Grace,
            MethodArg::Gated => Method::Gated,
            MethodArg::Ultraedit => Method::UltraEdit,
        }
    }
}

/// Arguments of `engram edit`.
#[derive(Args)]
pub struct EditArgs {
    /// JSONL edit requests (EasyEdit shape; `scripts/edit_facts.sh` writes data/edit/facts.jsonl).
    #[arg(long)]
    facts: PathBuf,
    /// Write the edits into this learning state (on top of its adapter; committed as a new
    /// generation) instead of an edit log; prints the applied ids.
    /// The state keeps its own editor settings, so the flags that tune or measure an edit run
    /// are refused with it rather than ignored.
    #[arg(long, value_name = "DIR", conflicts_with_all = [
        "log", "trace", "separation", "config", "layer", "limit", "known_only", "known_probes",
        "corpus", "stats_dir", "sequential", "details", "fluency", "generate",
    ])]
    state: Option<std::path::PathBuf>,
    /// Editing method.
    #[arg(long, value_enum, default_value = "gated")]
    method: MethodArg,
    /// Apply the edits one at a time (MEMIT/AlphaEdit: batches of one); else one batch.
    #[arg(long)]
    sequential: bool,
    /// Edit at most this many requests (after `--known-only`).
    #[arg(long)]
    limit: Option<usize>,
    /// Edit only facts the model already answers correctly (their `ground_truth` is top-1).
    #[arg(long)]
    known_only: bool,
    /// Known facts not edited, used as extra locality probes (`locality_known`).
    #[arg(long, default_value_t = 0)]
    known_probes: usize,
    /// Text for the key statistics (default: data/edit/corpus.txt, else model-written text).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where the key statistics are cached.
    #[arg(long, default_value = "data/edit/stats")]
    stats_dir: PathBuf,
    /// Keep (and resume from) an edit log at this path: its edits stay applied, and a request
    /// it already holds is not applied again, so a stopped run picks up where it ended.
    #[arg(long)]
    log: Option<PathBuf>,
    /// ROME layer (default: the configured one).
    #[arg(long)]
    layer: Option<usize>,
    /// Editor configuration as JSON (any subset of `EditorConfig`'s fields, e.g.
    /// `{"stats_tokens": 24576, "target": {"lr": 1.0}}`; the rest keep their defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Add every probe (prompt, role, top-1 before and after) to the report.
    #[arg(long)]
    details: bool,
    /// Also measure fluency (n-gram entropy of greedy continuations) before and after.
    #[arg(long)]
    fluency: bool,
    /// Greedy-continuation check (new answer in the continuation, neighbours' continuations
    /// unchanged) on the probes of the first this many edits (0: off).
    #[arg(long, default_value_t = 20)]
    generate: usize,
    /// Key separation instead of editing: per layer, cosines of subject keys (same subject in
    /// other phrasings vs other subjects) and of last-token keys, over this many known facts.
    #[arg(long, value_parser = shared::at_least_one)]
    separation: Option<usize>,
    /// Causal tracing instead of editing: trace this many known facts, print the per-layer
    /// effects as JSON and exit.
    #[arg(long, value_parser = shared::at_least_one)]
    trace: Option<usize>,
    #[command(flatten)]
    pub shared: SharedArgs,
}

/// A name for the base model in logs and caches: file name and size.
pub fn model_id(path: &Path) -> String {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    format!("{}:{size}", name.unwrap_or_default())
}

/// The corpus text: `path`, else data/edit/corpus.txt, else text the model writes.
pub fn corpus_text(engine: &Engine, path: Option<&Path>, tokens: usize) -> Result<String> {
    let default = Path::new("data/edit/corpus.txt");
    match path {
        Some(p) => shared::read_to_string(p),
        None if default.exists() => shared::read_to_string(default),
        None => {
            tracing::warn!(
                "no corpus (run scripts/edit_corpus.sh); sampling {tokens} tokens from the model"
            );
            Ok(generated_corpus(
                engine.model(),
                engine.tokenizer(),
                tokens,
                0,
            ))
        }
    }
}

/// The requests of `reqs` the model already answers (its `ground_truth` top-1), in order,
/// until `want` are found.
fn known_facts(
    engine: &Engine,
    reqs: &[EditRequest],
    want: usize,
    bars: &Bars,
) -> Vec<EditRequest> {
    let (model, tok) = (engine.model(), engine.tokenizer());
    let mut known = Vec::new();
    bars.start("finding known facts", reqs.len().div_ceil(64) as u64);
    for chunk in reqs.chunks(64) {
        let k = metrics::known(model, tok, chunk);
        known.extend(
            chunk
                .iter()
                .zip(k)
                .filter(|(_, k)| *k)
                .map(|(r, _)| r.clone()),
        );
        bars.advance(1);
        if known.len() >= want {
            break;
        }
    }
    bars.finish();
    known
}

/// Locality probes about the edited subjects themselves: for each edited request and each
/// other relation in `all`, that relation's first prompt with the subject put in ("Czechia is
/// located in the continent of" for an edit of Czechia's currency), unless the run edits that
/// relation of that subject too. A subject-keyed editor must leave these alone.
fn subject_probes(all: &[EditRequest], edited: &[EditRequest]) -> Vec<String> {
    let relation = |r: &EditRequest| r.case_id.split(':').next().unwrap_or("").to_string();
    let done: std::collections::HashSet<(String, String)> = edited
        .iter()
        .map(|r| (r.subject.clone(), relation(r)))
        .collect();
    let mut templates: Vec<&EditRequest> = Vec::new();
    for r in all {
        if !templates.iter().any(|t| relation(t) == relation(r)) {
            templates.push(r);
        }
    }
    let mut out = Vec::new();
    for r in edited {
        for t in &templates {
            if relation(t) != relation(r) && !done.contains(&(r.subject.clone(), relation(t))) {
                out.push(t.prompt.replacen(&t.subject, &r.subject, 1));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Runs `engram edit`.
/// The requests of `path`, every one checked on load and against `engine`'s context (errors
/// name the file and line).
pub fn requests(engine: &Engine, path: &Path) -> Result<Vec<EditRequest>> {
    let numbered = load_jsonl_numbered(path).map_err(|e| in_file(path, e))?;
    let tok = engine.tokenizer();
    let n_ctx = engine.model().config().n_ctx_train;
    check_all_fit(&numbered, |t| tok.encode(t, false).len(), n_ctx)
        .map_err(|e| in_file(path, e))?;
    Ok(numbered.into_iter().map(|(_, r)| r).collect())
}

/// The editor configuration: `--config` (checked, errors naming the file) or the defaults at
/// the model's depth, with `--layer` (checked, errors naming the flag).
fn editor_config(args: &EditArgs, n_layer: usize) -> Result<EditorConfig> {
    let defaults = EditorConfig::for_depth(n_layer);
    let mut config: EditorConfig = match &args.config {
        Some(p) => {
            let given: serde_json::Value = shared::read_json(p)?;
            let c = overlay(&defaults, &given).map_err(|e| in_file(p, e))?;
            c.check(n_layer).map_err(|e| in_file(p, e))?;
            c
        }
        None => defaults,
    };
    if let Some(l) = args.layer {
        if l >= n_layer {
            return Err(
                format!("--layer {l}: the model has {n_layer} blocks (0..{n_layer})").into(),
            );
        }
        config.rome_layer = l;
    }
    Ok(config)
}

/// `given` (a JSON object of some of [`EditorConfig`]'s fields) over `defaults`, nested objects
/// merged field by field. An unknown field or a value of the wrong type is an error naming
/// the field.
fn overlay(
    defaults: &EditorConfig,
    given: &serde_json::Value,
) -> std::result::Result<EditorConfig, String> {
    fn merge(base: &mut serde_json::Value, top: &serde_json::Value) {
        match (base, top) {
            (serde_json::Value::Object(b), serde_json::Value::Object(t)) => {
                for (k, v) in t {
                    match b.get_mut(k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (b, t) => *b = t.clone(),
        }
    }
    let Some(fields) = given.as_object() else {
        return Err("expected a JSON object of EditorConfig fields".into());
    };
    let base = serde_json::to_value(defaults).map_err(|e| e.to_string())?;
    // One field at a time first, so an error names the field serde's message leaves out.
    for (key, value) in fields {
        let mut one = base.clone();
        merge(&mut one, &serde_json::json!({ key: value }));
        if let Err(e) = serde_json::from_value::<EditorConfig>(one) {
            return Err(format!("`{key}`: {e}"));
        }
    }
    let mut all = base;
    merge(&mut all, given);
    serde_json::from_value(all).map_err(|e| e.to_string())
}

pub fn run(args: EditArgs, bars: &Bars) -> Result<()> {
    // Files first: a bad request file fails before the model loads.
    load_jsonl_numbered(&args.facts).map_err(|e| in_file(&args.facts, e))?;
    if let Some(dir) = &args.state {
        return crate::learn::edit_state(dir, &args.facts, args.method.into(), &args.shared, bars);
    }
    let (engine, path) = args.shared.load(true, bars)?;
    let (model, tok) = (engine.model(), engine.tokenizer());
    let mut reqs = requests(&engine, &args.facts)?;
    let all_facts = reqs.clone();
    let mut probes_known: Vec<EditRequest> = Vec::new();
    if let Some(n) = args.trace {
        let mut known = known_facts(&engine, &reqs, n, bars);
        known.truncate(n);
        let report = trace::trace(model, tok, &known, 3, 5, 0);
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if let Some(n) = args.separation {
        let known = known_facts(&engine, &reqs, n, bars);
        let report = separation::separation(model, tok, &known[..n.min(known.len())]);
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    if args.known_only {
        // The first `--limit` known facts are edited, the next `--known-probes` probed.
        let want = args.limit.unwrap_or(reqs.len()) + args.known_probes;
        let mut known = known_facts(&engine, &reqs, want, bars);
        let n_edit = args.limit.unwrap_or(known.len()).min(known.len());
        probes_known = known.split_off(n_edit);
        probes_known.truncate(args.known_probes);
        reqs = known;
    } else if args.known_probes > 0 {
        // The first `--limit` requests are edited, known or not: the probes are known facts
        // among the requests after them, never an edited one.
        let n_edit = args.limit.unwrap_or(reqs.len()).min(reqs.len());
        probes_known = known_facts(&engine, &reqs[n_edit..], args.known_probes, bars);
        probes_known.truncate(args.known_probes);
    }
    if let Some(n) = args.limit {
        reqs.truncate(n);
    }
    let config = editor_config(&args, model.config().n_layer)?;
    let method: Method = args.method.into();
    let mut editor = Editor::new(model, tok, &model_id(&path), config);
    editor.set_progress(bars);
    if let Some(log) = &args.log {
        let restored = editor.open_log(log).map_err(|e| in_file(log, e))?;
        tracing::info!("{restored} edits restored from {}", log.display());
    }
    let stats = if matches!(method, Method::Grace | Method::Gated) {
        None
    } else {
        let corpus = corpus_text(&engine, args.corpus.as_deref(), editor.config.stats_tokens)?;
        // Statistics errors name their cache file.
        Some(editor.load_stats_for(&[method], &corpus, &args.stats_dir)?)
    };

    let probes = Probes::of(tok, &reqs);
    let known_prompts: Vec<String> = probes_known.iter().map(|r| r.prompt.clone()).collect();
    let subject_prompts = subject_probes(&all_facts, &reqs);
    let subject_before = metrics::answers(model, tok, &subject_prompts, &[], None);
    let before = metrics::answers(model, tok, &probes.prompts, &probes.watch, None);
    let known_before = metrics::answers(model, tok, &known_prompts, &[], None);
    let fluency_prompts: Vec<&str> = reqs.iter().take(5).map(|r| r.prompt.as_str()).collect();
    let fluency = |adapter: Option<&dyn LinearAdapter>| {
        let sum: f64 = fluency_prompts
            .iter()
            .map(|p| metrics::ngram_entropy(&metrics::greedy(model, tok, p, 48, adapter)))
            .sum();
        sum / fluency_prompts.len().max(1) as f64
    };
    let fluency_before = args.fluency.then(|| fluency(None));

    let start = Instant::now();
    // A request the log already holds (an earlier run of this command that was stopped) is
    // not applied again: the run resumes where that one ended, with its edits and their times.
    let logged: Vec<Option<Applied>> = reqs
        .iter()
        .map(|r| {
            editor
                .edits()
                .iter()
                .find(|e| e.request == *r)
                .map(|e| Applied {
                    id: e.id,
                    case_id: e.request.case_id.clone(),
                    seconds: e.seconds,
                })
        })
        .collect();
    let resumed = logged.iter().flatten().count();
    if resumed > 0 {
        tracing::info!(
            "{resumed} of {} requests are in the log already: resuming",
            reqs.len()
        );
    }
    let mut applied = Vec::new();
    if args.sequential || matches!(method, Method::Rome | Method::Grace | Method::Gated) {
        bars.start(&format!("{} edits", method.name()), reqs.len() as u64);
        for (i, (r, done)) in reqs.iter().zip(&logged).enumerate() {
            match done {
                Some(a) => applied.push(a.clone()),
                None => applied.extend(editor.apply(method, std::slice::from_ref(r))?),
            }
            bars.advance(1);
            if !args.shared.json {
                tracing::info!(
                    "[{}/{}] {} -> {}",
                    i + 1,
                    reqs.len(),
                    r.prompt,
                    r.target_new
                );
            }
        }
        bars.finish();
    } else {
        let todo: Vec<EditRequest> = reqs
            .iter()
            .zip(&logged)
            .filter(|(_, done)| done.is_none())
            .map(|(r, _)| r.clone())
            .collect();
        let mut fresh = editor.apply(method, &todo)?.into_iter();
        applied = logged
            .iter()
            .map(|done| {
                done.clone()
                    .or_else(|| fresh.next())
                    .expect("one per request")
            })
            .collect();
    }
    // The edits' own times (a resumed run's logged ones included), not the log's writes.
    let seconds: f64 = applied.iter().map(|a| a.seconds).sum();
    tracing::debug!("edit loop: {:.1} s wall", start.elapsed().as_secs_f64());

    let adapter: &dyn LinearAdapter = editor.adapter();
    let after = metrics::answers(model, tok, &probes.prompts, &probes.watch, Some(adapter));
    let known_after = metrics::answers(model, tok, &known_prompts, &[], Some(adapter));
    let subject_after = metrics::answers(model, tok, &subject_prompts, &[], Some(adapter));
    let locality_subject = metrics::Rate::count(
        subject_before
            .iter()
            .zip(&subject_after)
            .map(|(a, b)| a.top1 == b.top1),
        "no other relation of an edited subject is left unedited",
    );
    let scores = metrics::score(&probes, &before, &after, reqs.len());
    let locality_known = metrics::Rate::count(
        known_before
            .iter()
            .zip(&known_after)
            .map(|(a, b)| a.top1 == b.top1),
        if args.known_probes == 0 {
            "no --known-probes"
        } else {
            "no known fact outside the edited ones"
        },
    );
    let generation = (args.generate > 0).then(|| {
        let check = metrics::GenerationCheck {
            requests: args.generate,
            tokens: 8,
        };
        metrics::generation_check(model, tok, &reqs, &probes, &before, adapter, check)
    });
    let fluency_after = args.fluency.then(|| fluency(Some(adapter)));
    let n = reqs.len().max(1) as f64;
    let details = args.details.then(|| {
        let probe = |prompt: &str, role: String, b: &metrics::Answer, a: &metrics::Answer| {
            serde_json::json!({
                "prompt": prompt,
                "role": role,
                "before": tok.decode(&[b.top1]),
                "after": tok.decode(&[a.top1]),
            })
        };
        let mut rows: Vec<serde_json::Value> = probes
            .prompts
            .iter()
            .zip(&probes.roles)
            .zip(before.iter().zip(&after))
            .map(|((p, (i, role)), (b, a))| {
                probe(p, format!("{role:?} of {}", reqs[*i].case_id), b, a)
            })
            .collect();
        rows.extend(
            known_prompts
                .iter()
                .zip(known_before.iter().zip(&known_after))
                .map(|(p, (b, a))| probe(p, "KnownFact".into(), b, a)),
        );
        rows.extend(
            subject_prompts
                .iter()
                .zip(subject_before.iter().zip(&subject_after))
                .map(|(p, (b, a))| probe(p, "SameSubject".into(), b, a)),
        );
        rows
    });
    let per_edit: Vec<serde_json::Value> = reqs
        .iter()
        .zip(&scores.per_request)
        .zip(&applied)
        .map(|((r, s), a)| {
            serde_json::json!({
                "case_id": r.case_id,
                "id": a.id,
                "seconds": a.seconds,
                "efficacy": s.efficacy,
                "margin": s.margin,
                "generalization": s.generalization,
                "locality": s.locality,
            })
        })
        .collect();
    let report = serde_json::json!({
        "per_edit": per_edit,
        "probes": details,
        "n_edits": reqs.len(),
        "method": method.name(),
        "sequential": args.sequential,
        "resumed": resumed,
        "efficacy": scores.efficacy,
        "efficacy_margin": scores.efficacy_margin,
        "generalization": scores.generalization,
        "generalization_known": scores.generalization_known,
        "locality": scores.locality,
        "locality_ptrue": scores.locality_ptrue,
        "locality_all": scores.locality_all,
        "locality_edited_neighbours": probes.locality_edited,
        "locality_known": locality_known,
        "locality_subject": locality_subject,
        "portability": scores.portability,
        "generation": generation,
        "fluency_before": fluency_before,
        "fluency_after": fluency_after,
        "seconds_per_edit": seconds / n,
        "seconds_total": seconds,
        "stats": stats,
        "rome_layer": editor.config.rome_layer,
        "memit_layers": editor.config.memit_layers,
        "grace_layer": editor.config.grace_layer,
        "gate": editor.config.gate,
        "config": editor.config,
        "edit_ids": applied.iter().map(|a| a.id).collect::<Vec<_>>(),
    });
    if args.shared.json {
        println!("{report}");
    } else {
        for (r, s) in reqs.iter().zip(&scores.per_request) {
            println!(
                "{} {:<45} -> {}",
                if s.efficacy { "ok  " } else { "miss" },
                r.prompt,
                r.target_new
            );
        }
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

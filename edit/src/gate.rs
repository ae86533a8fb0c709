//! The gated side memory (engram's default editor): a fact is an entry with two keys and a
//! value; the base weights stay untouched.
//!
//! - **Subject gate**: the MLP key of the subject's last token at an *early* layer, where keys
//!   of different subjects are far apart (median cosine ≈ 0.1–0.2 between two countries in the
//!   same frame) and the same subject in another frame stays close. Two keys, one per
//!   tokenization: the subject opening a text ("France's capital") and after a space ("… of
//!   France"). A position whose key is within the cosine threshold of either marks the
//!   sequence as mentioning the subject (remembered per sequence, see [`crate::routing`]).
//! - **Relation gate**: the MLP key of the prompt's last token at a *late* layer, averaged over
//!   the context templates: it says "the next token answers this relation", in any phrasing.
//! - **Value**: a `d_model` vector added to that late layer's MLP output where both gates fire
//!   (within a window of positions after the subject), trained like ROME's `v*` over the
//!   prompt in every context template until the new answer is top-1 with a margin on all of
//!   them.
//!
//! A neighbour ("The capital of Germany is") passes the relation gate but not the subject
//! gate; another fact about the subject ("France is in the continent of") passes the subject
//! gate but not the relation gate. Undo removes the entry.

use serde::{Deserialize, Serialize};

use super::context::EditContext;
use super::probe::{self, Batch};
use super::request::EditRequest;
use super::target::{TargetProblem, TargetResult, in_context_of};

/// Where the gated memory reads its keys and writes its values, and how strict its gates are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateConfig {
    /// The subject gate's layer (early).
    pub subject_layer: usize,
    /// The relation gate's and the value's layer (late).
    pub relation_layer: usize,
    /// Cosine a position's subject-layer key needs with the subject key after a space.
    pub subject_threshold: f32,
    /// Cosine needed with the key of the subject opening a text. That key depends on the
    /// subject's tokens alone (nothing precedes them), so a text opening with the subject
    /// reproduces it exactly; a looser threshold lets the first token of *any* text through
    /// (position 0's keys are alike: the attention sink), which flipped every "The capital of
    /// … is" neighbour of a capital edit at 0.75.
    pub opening_threshold: f32,
    /// Cosine the answering position's relation-layer key needs with the relation key.
    pub relation_threshold: f32,
    /// Positions after the subject within which the relation gate may fire.
    pub window: usize,
    /// Train on the request's own `phrasings` too (a relation key and value rows per
    /// phrasing).
    pub request_phrasings: bool,
    /// Train on generic rewrites of the prompt too ([`crate::phrasing::rewrites`]).
    pub rewrites: bool,
    /// Context templates (the plain one first) each phrasing besides the prompt is trained
    /// in; the prompt is trained in all of them.
    pub phrasing_contexts: usize,
    /// A second, lower relation cosine that suffices where the sequence also mentions the
    /// prompt's relation word ([`relation_word`]) within the window; `None`: one threshold.
    pub relation_word_threshold: Option<f32>,
    /// The layer of the relation word's key (early: the word itself, little of its context).
    pub word_layer: usize,
    /// Context templates (the plain one first) the prompt itself is trained in; `None`: all.
    pub prompt_contexts: Option<usize>,
    /// A subject key per training phrasing besides the prompt (where the subject does not open
    /// it), besides the mean over all rows: the subject read in that phrasing's frame ("In
    /// {S}, ..." reads the subject's last token unlike "... of {S} is").
    pub phrasing_subject_keys: bool,
    /// The competitive relation gate: an entry also fires where its closest relation key has
    /// at least this cosine and beats the closest of its contrast keys (generic phrasings of
    /// other relations of the subject, [`crate::phrasing::CONTRAST`]) by `contrast_margin`;
    /// `None`: no contrast keys, the thresholds alone.
    pub contrast_floor: Option<f32>,
    /// See `contrast_floor`.
    pub contrast_margin: f32,
    /// Where the value's optimization starts: this multiple of `‖v‖` along the new answer's
    /// output embedding (0: from zero, as ROME). See [`crate::value::train`].
    pub value_init: f32,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            subject_layer: 3,
            relation_layer: 22,
            subject_threshold: 0.75,
            opening_threshold: crate::record::DEFAULT_OPENING_THRESHOLD,
            relation_threshold: 0.75,
            window: 24,
            request_phrasings: true,
            rewrites: true,
            phrasing_contexts: 1,
            relation_word_threshold: Some(0.45),
            word_layer: 1,
            prompt_contexts: None,
            value_init: 1.0,
            phrasing_subject_keys: true,
            contrast_floor: Some(0.40),
            contrast_margin: 0.08,
        }
    }
}

pub use crate::record::GateEntry;

/// The value's problem: each training prompt ([`crate::phrasing::training_prompts`]) in its
/// context templates, then the target's tokens; `δ` at the prompt's last token (where the
/// relation gate fires), no essence term.
pub struct ValueProblem {
    /// What `δ` is optimized on.
    pub problem: TargetProblem,
    /// Per row: the flat position of the subject's last token.
    pub subjects: Vec<usize>,
    /// Per row: whether the subject spans more than one token there.
    pub multi: Vec<bool>,
    /// Per row: whether the subject opens the text (nothing before it).
    pub opening: Vec<bool>,
    /// Per row: which training prompt it holds.
    pub phrasing: Vec<usize>,
    /// How many training prompts there are.
    pub n_phrasings: usize,
    /// Per row: the prompt's length in tokens (the target follows).
    pub plens: Vec<usize>,
}

/// Builds the [`ValueProblem`] of `req` under `cfg`'s phrasing settings.
pub fn value_problem(cx: &EditContext, req: &EditRequest, cfg: &GateConfig) -> ValueProblem {
    let target = probe::target_ids(cx.tok, &req.target_new);
    let prompts = crate::phrasing::training_prompts(req, cfg.request_phrasings, cfg.rewrites);
    let mut rows = Vec::new();
    let mut subject_at = Vec::new();
    let mut multi = Vec::new();
    let mut opening = Vec::new();
    let mut plens = Vec::new();
    let mut phrasing = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        let n_ctx = match p {
            0 => cfg
                .prompt_contexts
                .map_or(cx.contexts.len(), |n| n.clamp(1, cx.contexts.len().max(1))),
            _ => cfg.phrasing_contexts.clamp(1, cx.contexts.len().max(1)),
        };
        for ctx in &cx.contexts[..n_ctx.min(cx.contexts.len())] {
            let (text, start) = in_context_of(ctx, prompt, &req.subject);
            let (mut ids, idx) = probe::subject_last_at(cx.tok, &text, start, req.subject.len());
            // Tokens before the subject (the space before it joins the subject's first token).
            let before = match text[..start].trim_end() {
                "" => 0,
                head => cx.tok.encode(head, false).len(),
            };
            multi.push(idx > before);
            opening.push(start == 0);
            subject_at.push(idx);
            plens.push(ids.len());
            phrasing.push(p);
            ids.extend_from_slice(&target[..target.len() - 1]);
            rows.push(ids);
        }
    }
    let batch = Batch::new(&rows, cx.tok.eos());
    let mut inject = Vec::new();
    let mut targets = Vec::new();
    let mut subjects = Vec::new();
    for (r, &plen) in plens.iter().enumerate() {
        inject.push(batch.flat(r, plen - 1));
        subjects.push(batch.flat(r, subject_at[r]));
        for (j, &t) in target.iter().enumerate() {
            targets.push((batch.flat(r, plen - 1 + j), t));
        }
    }
    let problem = TargetProblem {
        batch,
        inject,
        targets,
        kl: Vec::new(),
    };
    ValueProblem {
        problem,
        subjects,
        multi,
        opening,
        phrasing,
        n_phrasings: prompts.len(),
        plens,
    }
}

/// Function words: never a relation word.
const FUNCTION_WORDS: &[&str] = &[
    "a", "an", "the", "of", "in", "on", "at", "to", "for", "with", "by", "from", "as", "and", "or",
    "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "which", "what", "who",
    "whom", "where", "when", "how", "there", "their", "his", "her", "s", "has", "have", "had",
    "do", "does", "did", "not", "no", "called", "named", "known",
];

/// The prompt's relation word: the index (in `ids`, the prompt's tokens) of its last token
/// outside the subject's tokens `subject` that is a word and no function word ("language" in
/// "The official language of {S} is", "continent" in "{S} is located in the continent of").
/// A phrasing that restructures the sentence usually keeps it ("The continent {S} belongs to
/// is") where the answering position's key alone does not tell the relation.
pub fn relation_word(
    tok: &engram_runtime::model::tokenizer::Tokenizer,
    ids: &[u32],
    subject: std::ops::Range<usize>,
) -> Option<usize> {
    (0..ids.len())
        .rev()
        .filter(|i| !subject.contains(i))
        .find(|&i| {
            let w = tok.decode(&ids[i..i + 1]);
            let w = w.trim().to_lowercase();
            w.len() > 2
                && w.chars().all(|c| c.is_ascii_alphabetic())
                && !FUNCTION_WORDS.contains(&w.as_str())
        })
}

/// Whether `e`'s relation gate fires at a position whose cosine with `e`'s closest relation key
/// is `own` and with its closest contrast key `contrast` (`f32::NEG_INFINITY` when it has
/// none), where `word` says whether `e`'s relation word was named within its window and
/// `answering` whether the position is the last of its forward call (a prompt's answering
/// position, or a decoding step): at the relation threshold; at the relation word's lower
/// threshold where the word was named; or, with contrast keys and at an answering position,
/// at the contrast floor where `own` beats `contrast` by the margin. (Inside a prompt, the
/// " the" of "Czechia is located in the continent of" reads like the end of "The official
/// currency of Czechia is the" — 0.42–0.65 — and beats every contrast key: the value added
/// there flipped a same-subject answer on 30 facts.)
pub fn relation_fires(e: &GateEntry, own: f32, contrast: f32, word: bool, answering: bool) -> bool {
    own >= e.relation_threshold
        || (word && e.relation_word_threshold.is_some_and(|low| own >= low))
        || (answering
            && !e.contrast_keys.is_empty()
            && e.contrast_floor
                .is_some_and(|floor| own >= floor && own - contrast >= e.contrast_margin))
}

/// Unit vector along `v` (unchanged when it is zero).
pub fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = probe::norm(&v);
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Cosine of two equally long vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    probe::dot(a, b) / (probe::norm(a) * probe::norm(b)).max(1e-12)
}

/// The entry for `req` against the model as `cx` gives it (the edits already applied are
/// `cx.inner`, so a misrouted earlier entry is trained against).
pub fn gate_entry(
    cx: &EditContext,
    req: &EditRequest,
    cfg: &GateConfig,
) -> (GateEntry, TargetResult) {
    let ValueProblem {
        problem,
        subjects,
        multi,
        opening: opens,
        phrasing,
        n_phrasings,
        plens,
    } = value_problem(cx, req, cfg);
    let b = &problem.batch;
    let (ls, lr) = (cfg.subject_layer, cfg.relation_layer);
    let n = subjects.len();
    // Keys at: each row's subject last token, its answering position, and (for a subject of
    // several tokens) the token before the subject's last.
    let prev: Vec<usize> = subjects
        .iter()
        .zip(&multi)
        .filter(|&(_, &m)| m)
        .map(|(&flat, _)| flat - 1)
        .collect();
    // The relation word in the plain prompt (row 0), and where it is in the prompt's other
    // context rows (the prompt ends each row, so at the same distance from its end).
    let row_ids = |r: usize| &b.tokens[b.flat(r, 0)..b.flat(r, plens[r])];
    let first_subject = {
        let (ids0, _) = probe::subject_last(cx.tok, &req.prompt, &req.subject);
        let at = req.prompt.find(&req.subject).unwrap_or(0);
        let head = req.prompt[..at].trim_end();
        let from = if head.is_empty() {
            0
        } else {
            cx.tok.encode(head, false).len()
        };
        let to = subjects[0] % b.t + 1;
        debug_assert!(to <= ids0.len());
        from..to
    };
    let word = relation_word(cx.tok, row_ids(0), first_subject.clone());
    tracing::debug!(
        word = word.map(|w| cx.tok.decode(&row_ids(0)[w..w + 1])),
        subject_tokens = ?first_subject,
        "relation word"
    );
    let word_rows: Vec<usize> = match word {
        Some(w) => (0..n)
            .filter(|&r| phrasing[r] == 0)
            .filter_map(|r| {
                let at = (plens[r] + w).checked_sub(plens[0])?;
                (row_ids(r)[at] == row_ids(0)[w]).then(|| b.flat(r, at))
            })
            .collect(),
        None => Vec::new(),
    };
    let mut positions = subjects.clone();
    positions.extend_from_slice(&problem.inject);
    positions.extend_from_slice(&prev);
    positions.extend_from_slice(&word_rows);
    let lw = cfg.word_layer;
    let trained = crate::value::train(cx, lr, &problem, &[ls, lr, lw], &positions, cfg.value_init);
    let keys = &trained.keys;
    // Subject keys by tokenization: rows where the subject opens the text, and the others.
    let initial = cx.tok.encode(&req.subject, false);
    let (mut opening, mut inner) = (Vec::new(), Vec::new());
    let (mut opening_prev, mut inner_prev) = (Vec::new(), Vec::new());
    let mut next_prev = 2 * n;
    // Per phrasing besides the prompt, its rows' subject keys after a space (and the tokens
    // before): a frame of its own ("In {S}, ...").
    type Keys = Vec<Vec<f32>>;
    let mut framed: Vec<(Keys, Keys)> = vec![Default::default(); n_phrasings];
    for r in 0..n {
        // Whether the subject opens the text (not: whether it is as many tokens in as the
        // subject alone has, which took "In Czechia" for an opening when "In" and "Czechia"
        // are as many tokens as "Czechia" alone, and blurred the opening key).
        let starts = opens[r];
        let (last, before) = match starts {
            true => (&mut opening, &mut opening_prev),
            false => (&mut inner, &mut inner_prev),
        };
        last.push(keys[&ls][r].clone());
        if !starts && phrasing[r] > 0 && cfg.phrasing_subject_keys {
            framed[phrasing[r]].0.push(keys[&ls][r].clone());
            if multi[r] {
                framed[phrasing[r]].1.push(keys[&ls][next_prev].clone());
            }
        }
        if multi[r] {
            before.push(keys[&ls][next_prev].clone());
            next_prev += 1;
        }
    }
    if opening.is_empty() {
        let batch = Batch::new(std::slice::from_ref(&initial), cx.tok.eos());
        let at: Vec<usize> = (initial.len().saturating_sub(2)..initial.len())
            .rev()
            .collect();
        let k = probe::keys_at(cx.model, &batch, &at, &[ls], cx.inner);
        opening.push(k[&ls][0].clone());
        if at.len() == 2 {
            opening_prev.push(k[&ls][1].clone());
        }
    }
    // A tokenization's previous-token key only when every row of it has one.
    let prev_key = |last: &[Vec<f32>], before: &[Vec<f32>]| match before.len() == last.len() {
        true => unit(probe::mean(before)),
        false => Vec::new(),
    };
    let mut subject_keys = vec![unit(probe::mean(&opening))];
    let mut subject_prev_keys = vec![prev_key(&opening, &opening_prev)];
    let mut subject_thresholds = vec![cfg.opening_threshold];
    if !inner.is_empty() {
        subject_keys.push(unit(probe::mean(&inner)));
        subject_prev_keys.push(prev_key(&inner, &inner_prev));
        subject_thresholds.push(cfg.subject_threshold);
    }
    // A frame's key depends on the frame's tokens and the subject's alone: a text repeating
    // the frame reproduces it, so it is held to the opening key's threshold.
    for (last, before) in framed.iter().filter(|f| !f.0.is_empty()) {
        subject_keys.push(unit(probe::mean(last)));
        subject_prev_keys.push(prev_key(last, before));
        subject_thresholds.push(cfg.opening_threshold);
    }
    // One relation key per training prompt: the mean over its context templates.
    let answering = &keys[&lr][n..2 * n];
    let mut relation_keys: Vec<Vec<f32>> = (0..n_phrasings)
        .map(|p| {
            let rows: Vec<Vec<f32>> = (0..n)
                .filter(|&r| phrasing[r] == p)
                .map(|r| answering[r].clone())
                .collect();
            unit(probe::mean(&rows))
        })
        .collect();
    let relation_key = relation_keys.remove(0);
    let word_at = positions.len() - word_rows.len();
    let relation_words = match word_rows.is_empty() || cfg.relation_word_threshold.is_none() {
        true => Vec::new(),
        false => vec![unit(probe::mean(&keys[&lw][word_at..]))],
    };
    let contrast_keys = match cfg.contrast_floor {
        Some(_) => contrast_keys(cx, req, lr, &relation_key, &relation_keys, cfg),
        None => Vec::new(),
    };
    let res = trained.result;
    let entry = GateEntry {
        subject_layer: ls,
        subject_keys,
        subject_prev_keys,
        subject_threshold: cfg.subject_threshold,
        subject_thresholds,
        opening_threshold: cfg.opening_threshold,
        relation_layer: lr,
        relation_key,
        relation_keys,
        relation_threshold: cfg.relation_threshold,
        relation_words,
        relation_word_layer: lw,
        relation_word_threshold: cfg.relation_word_threshold,
        contrast_keys,
        contrast_floor: cfg.contrast_floor,
        contrast_margin: cfg.contrast_margin,
        window: cfg.window,
        value: res.delta.clone(),
    };
    (entry, res)
}

/// Unit last-token keys at layer `lr` of [`crate::phrasing::contrast_prompts`] (plain context,
/// the edits so far applied), less any within the relation threshold of one of the entry's own
/// relation keys: a generic phrasing that asks the edited relation itself is no competitor.
fn contrast_keys(
    cx: &EditContext,
    req: &EditRequest,
    lr: usize,
    relation_key: &[f32],
    relation_keys: &[Vec<f32>],
    cfg: &GateConfig,
) -> Vec<Vec<f32>> {
    let trained = crate::phrasing::training_prompts(req, cfg.request_phrasings, cfg.rewrites);
    let prompts = crate::phrasing::contrast_prompts(req, &trained);
    if prompts.is_empty() {
        return Vec::new();
    }
    let rows: Vec<Vec<u32>> = prompts.iter().map(|p| cx.tok.encode(p, false)).collect();
    let batch = Batch::new(&rows, cx.tok.eos());
    let idx: Vec<usize> = rows
        .iter()
        .enumerate()
        .map(|(r, ids)| batch.flat(r, ids.len() - 1))
        .collect();
    let keys = probe::keys_at(cx.model, &batch, &idx, &[lr], cx.inner);
    let own: Vec<&[f32]> = std::iter::once(relation_key)
        .chain(relation_keys.iter().map(Vec::as_slice))
        .collect();
    keys[&lr]
        .iter()
        .map(|k| unit(k.clone()))
        .filter(|k| own.iter().all(|o| cosine(k, o) < cfg.relation_threshold))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(contrast: bool) -> GateEntry {
        GateEntry {
            subject_layer: 0,
            subject_keys: vec![vec![1.0]],
            subject_prev_keys: Vec::new(),
            subject_threshold: 0.75,
            subject_thresholds: Vec::new(),
            opening_threshold: 0.98,
            relation_layer: 1,
            relation_key: vec![1.0],
            relation_keys: Vec::new(),
            relation_threshold: 0.75,
            relation_words: Vec::new(),
            relation_word_layer: 0,
            relation_word_threshold: Some(0.45),
            contrast_keys: match contrast {
                true => vec![vec![1.0]],
                false => Vec::new(),
            },
            contrast_floor: Some(0.40),
            contrast_margin: 0.08,
            window: 24,
            value: vec![0.0],
        }
    }

    #[test]
    fn the_competitive_relation_gate_fires_only_where_the_own_relation_wins() {
        let e = entry(true);
        let none = f32::NEG_INFINITY;
        // The absolute threshold and the relation word's, as before.
        assert!(relation_fires(&e, 0.80, 0.79, false, true));
        assert!(relation_fires(&e, 0.50, 0.60, true, true));
        // A paraphrase the key reads loosely ("In {S}, people pay with the": 0.47 with the
        // currency entry, 0.2 with every other relation of the subject) fires...
        assert!(relation_fires(&e, 0.47, 0.20, false, true));
        // ... a same-subject question about another relation, as close to the entry but
        // closer to a competitor, does not; nor one that beats it by less than the margin.
        assert!(!relation_fires(&e, 0.47, 0.55, false, true));
        assert!(!relation_fires(&e, 0.47, 0.42, false, true));
        // Below the floor, nothing fires whatever the competitors.
        assert!(!relation_fires(&e, 0.38, none, false, true));
        assert!(!relation_fires(&e, 0.38, 0.0, false, true));
        // An entry without contrast keys (an older log, or the rule off) keeps the thresholds.
        let old = entry(false);
        assert!(!relation_fires(&old, 0.47, none, false, true));
        assert!(relation_fires(&old, 0.80, none, false, true));
        let off = GateEntry {
            contrast_floor: None,
            ..entry(true)
        };
        assert!(!relation_fires(&off, 0.47, 0.20, false, true));
        // Inside a prompt (not its answering position) only the thresholds hold.
        assert!(!relation_fires(&e, 0.47, 0.20, false, false));
        assert!(relation_fires(&e, 0.80, 0.20, false, false));
    }
}

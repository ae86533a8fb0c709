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
use super::target::{self, TargetProblem, TargetResult, in_context};

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
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            subject_layer: 3,
            relation_layer: 20,
            subject_threshold: 0.75,
            opening_threshold: crate::record::DEFAULT_OPENING_THRESHOLD,
            relation_threshold: 0.8,
            window: 24,
        }
    }
}

pub use crate::record::GateEntry;

/// The value's problem: the prompt in every context template, then the target's tokens;
/// `δ` at the prompt's last token (where the relation gate fires), no essence term. Also, per
/// row, the flat position of the subject's last token and whether the subject spans more than
/// one token there.
pub fn value_problem(
    cx: &EditContext,
    req: &EditRequest,
) -> (TargetProblem, Vec<usize>, Vec<bool>) {
    let target = probe::target_ids(cx.tok, &req.target_new);
    let mut rows = Vec::new();
    let mut subject_at = Vec::new();
    let mut multi = Vec::new();
    let mut plens = Vec::new();
    for ctx in cx.contexts {
        let (text, start) = in_context(ctx, req);
        let (mut ids, idx) = probe::subject_last_at(cx.tok, &text, start, req.subject.len());
        // Tokens before the subject (the space before it joins the subject's first token).
        let before = match text[..start].trim_end() {
            "" => 0,
            head => cx.tok.encode(head, false).len(),
        };
        multi.push(idx > before);
        subject_at.push(idx);
        plens.push(ids.len());
        ids.extend_from_slice(&target[..target.len() - 1]);
        rows.push(ids);
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
    (problem, subjects, multi)
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
    let (problem, subjects, multi) = value_problem(cx, req);
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
    let mut positions = subjects.clone();
    positions.extend_from_slice(&problem.inject);
    positions.extend_from_slice(&prev);
    let keys = probe::keys_at(cx.model, b, &positions, &[ls, lr], cx.inner);
    // Subject keys by tokenization: rows where the subject opens the text, and the others.
    let ids_at = |flat: usize| b.tokens[flat];
    let initial = cx.tok.encode(&req.subject, false);
    let (mut opening, mut inner) = (Vec::new(), Vec::new());
    let (mut opening_prev, mut inner_prev) = (Vec::new(), Vec::new());
    let mut next_prev = 2 * n;
    for (r, &flat) in subjects.iter().enumerate() {
        let starts =
            flat % b.t + 1 == initial.len() && ids_at(flat) == *initial.last().unwrap_or(&0);
        let (last, before) = match starts {
            true => (&mut opening, &mut opening_prev),
            false => (&mut inner, &mut inner_prev),
        };
        last.push(keys[&ls][r].clone());
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
    if !inner.is_empty() {
        subject_keys.push(unit(probe::mean(&inner)));
        subject_prev_keys.push(prev_key(&inner, &inner_prev));
    }
    let relation_key = unit(probe::mean(&keys[&lr][n..2 * n]));
    let res = target::optimize(cx.model, lr, &problem, cx.inner, cx.target);
    let entry = GateEntry {
        subject_layer: ls,
        subject_keys,
        subject_prev_keys,
        subject_threshold: cfg.subject_threshold,
        opening_threshold: cfg.opening_threshold,
        relation_layer: lr,
        relation_key,
        relation_threshold: cfg.relation_threshold,
        window: cfg.window,
        value: res.delta.clone(),
    };
    (entry, res)
}

//! GRACE: a codebook of (key, value, radius) at one layer; the weights stay untouched.
//!
//! The key is the MLP key of the edited prompt's last token. The value is the down-projection
//! output there that makes the model say the new answer, trained like ROME's `v*` but without
//! context templates or the essence term (GRACE's own objective). At inference the last
//! position's key is compared with the codebook: inside the nearest entry's radius, its value
//! replaces the layer's output. A new key too close to an entry with a different answer halves
//! both radii (GRACE's conflict rule), so neither captures the other's prompts.

use engram_runtime::model::tokenizer::Tokenizer;

use super::context::EditContext;
use super::probe::{self, Batch};
use super::request::EditRequest;
use super::store::{EditSet, GraceEntry, distance};
use super::target::{self, TargetProblem, TargetResult};

/// The problem: the plain prompt then the target's tokens, `δ` at the prompt's last token.
pub fn last_token_problem(tok: &Tokenizer, req: &EditRequest) -> TargetProblem {
    let target = probe::target_ids(tok, &req.target_new);
    let mut ids = tok.encode(&req.prompt, false);
    let plen = ids.len();
    ids.extend_from_slice(&target[..target.len() - 1]);
    let batch = Batch::new(&[ids], tok.eos());
    let targets = target
        .iter()
        .enumerate()
        .map(|(j, &t)| (batch.flat(0, plen - 1 + j), t))
        .collect();
    TargetProblem {
        inject: vec![batch.flat(0, plen - 1)],
        targets,
        kl: Vec::new(),
        batch,
    }
}

/// Trains the entry for `req` at `layer` with initial deferral radius `radius`, against the
/// model as `cx` gives it (GRACE trains through its own codebook: pass the edit set as
/// `cx.inner`). `cx.contexts` is not used: GRACE's objective has no context templates.
pub fn grace_entry(
    cx: &EditContext,
    req: &EditRequest,
    layer: usize,
    radius: f32,
) -> (GraceEntry, TargetResult) {
    let problem = last_token_problem(cx.tok, req);
    let res = target::optimize(cx.model, layer, &problem, cx.inner, cx.target);
    let value: Vec<f32> = res
        .init
        .iter()
        .zip(&res.delta)
        .map(|(v, d)| v + d)
        .collect();
    let entry = GraceEntry {
        layer,
        key: res.key.clone(),
        value,
        radius,
    };
    (entry, res)
}

/// GRACE's conflict rule: an entry for `req` whose ball overlaps an entry of `edits` at the
/// same layer with a different answer halves both radii, so neither captures the other's
/// prompts.
pub fn resolve_conflicts(entry: &mut GraceEntry, req: &EditRequest, edits: &mut EditSet) {
    for (other_req, other) in edits.grace_entries_mut() {
        if other.layer != entry.layer {
            continue;
        }
        let dist = distance(&entry.key, &other.key);
        if dist <= entry.radius + other.radius && other_req.target_new != req.target_new {
            other.radius = other.radius.min(dist / 2.0 - 1e-5);
            entry.radius = entry.radius.min(dist / 2.0);
        }
    }
}

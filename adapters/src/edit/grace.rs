//! GRACE: a codebook of (key, value, radius) at one layer; the weights stay untouched.
//!
//! The key is the MLP key of the edited prompt's last token. The value is the down-projection
//! output there that makes the model say the new answer, trained like ROME's `v*` but without
//! context templates or the essence term (GRACE's own objective). At inference the last
//! position's key is compared with the codebook: inside the nearest entry's radius, its value
//! replaces the layer's output. A new key too close to an entry with a different answer halves
//! both radii (GRACE's conflict rule), so neither captures the other's prompts.

use engram_runtime::model::llama::{LinearAdapter, Llama};
use engram_runtime::model::tokenizer::Tokenizer;

use super::probe::{self, Batch};
use super::request::EditRequest;
use super::store::{EditSet, GraceEntry, distance};
use super::target::{self, TargetHparams, TargetProblem, TargetResult};

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

/// Trains the entry for `req` at `layer` with initial deferral radius `radius`, and resolves
/// conflicts with the entries already in `edits`.
pub fn grace_entry(
    model: &Llama,
    tok: &Tokenizer,
    req: &EditRequest,
    layer: usize,
    radius: f32,
    edits: &mut EditSet,
    hp: &TargetHparams,
) -> (GraceEntry, TargetResult) {
    let problem = last_token_problem(tok, req);
    // GRACE trains against the model as it is, its own codebook included.
    let res = target::optimize(
        model,
        layer,
        &problem,
        Some(&*edits as &dyn LinearAdapter),
        hp,
    );
    let value: Vec<f32> = res
        .init
        .iter()
        .zip(&res.delta)
        .map(|(v, d)| v + d)
        .collect();
    let mut entry = GraceEntry {
        layer,
        key: res.key.clone(),
        value,
        radius,
    };
    for (other_req, other) in edits.grace_entries_mut() {
        if other.layer != layer {
            continue;
        }
        let dist = distance(&entry.key, &other.key);
        if dist <= entry.radius + other.radius && other_req.target_new != req.target_new {
            other.radius = other.radius.min(dist / 2.0 - 1e-5);
            entry.radius = entry.radius.min(dist / 2.0);
        }
    }
    (entry, res)
}

//! ROME: one fact as a rank-one update of one layer's MLP down-projection.
//!
//! `k*` is the subject's MLP key averaged over the context templates; `u = C⁻¹ k*` (normalized)
//! is the key direction, so the update barely moves keys the corpus statistics `C` say are
//! common. The output direction makes the plain prompt's key map to `v* = v + δ` exactly:
//! `r = δ / (k · u)`, giving `W' k = W k + (k · u) r = v + δ`.

use super::context::EditContext;
use super::probe::{self, Batch};
use super::request::EditRequest;
use super::store::RankOne;
use super::target::{self, TargetResult};

/// The subject's MLP key at `layer`, averaged over `contexts` (ROME's `k*`).
pub fn subject_key(cx: &EditContext, req: &EditRequest, layers: &[usize]) -> Vec<Vec<f32>> {
    let (model, tok) = (cx.model, cx.tok);
    let mut rows = Vec::new();
    let mut idx = Vec::new();
    for ctx in cx.contexts {
        let (prompt, start) = target::in_context(ctx, req);
        let (ids, i) = probe::subject_last_at(tok, &prompt, start, req.subject.len());
        idx.push(i);
        rows.push(ids);
    }
    let batch = Batch::new(&rows, tok.eos());
    let flat: Vec<usize> = idx
        .iter()
        .enumerate()
        .map(|(r, &i)| batch.flat(r, i))
        .collect();
    let keys = probe::keys_at(model, &batch, &flat, layers, cx.inner);
    layers.iter().map(|l| probe::mean(&keys[l])).collect()
}

/// Computes ROME's rank-one term for `req` at `layer`, with `inv_cov` = `C⁻¹` `(d_ff, d_ff)`
/// row-major, on top of the edits in `cx.inner`.
pub fn rome_term(
    cx: &EditContext,
    req: &EditRequest,
    layer: usize,
    inv_cov: &[f32],
) -> (RankOne, TargetResult) {
    let k_star = subject_key(cx, req, &[layer]).pop().expect("one layer");
    let dff = k_star.len();
    let mut u: Vec<f32> = inv_cov
        .chunks(dff)
        .map(|row| probe::dot(row, &k_star))
        .collect();
    let n = probe::norm(&u).max(f32::MIN_POSITIVE);
    u.iter_mut().for_each(|x| *x /= n);
    let problem = target::rome_problem(cx.tok, req, cx.contexts);
    let res = target::optimize(cx.model, layer, &problem, cx.inner, cx.target);
    // res.key is the plain prompt's key (the first context is "{}").
    let scale = probe::dot(&res.key, &u);
    let r = res.delta.iter().map(|d| d / scale).collect();
    (
        RankOne {
            layer,
            r,
            a: u,
            k: res.key.clone(),
        },
        res,
    )
}

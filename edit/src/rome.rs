//! ROME: one fact as a rank-one update of one layer's MLP down-projection.
//!
//! `k*` is the subject's MLP key averaged over the context templates; `u = C⁻¹ k*` (normalized)
//! is the key direction, so the update barely moves keys the corpus statistics `C` say are
//! common. The output direction makes `k*` itself map to `v* = W k* + δ`: `r = δ / (k* · u)`,
//! giving `W' k* = W k* + δ`. Using the averaged key in both places is r-ROME's fix ("Rebuilding
//! ROME", Gupta et al. 2024): the original divided by the plain prompt's key against a direction
//! computed from `k*`, a mismatch that makes sequential edits collapse.
//!
//! `δ` is optimized here rather than by [`target::optimize`], for speed: the positions of each
//! row before the subject's last token do not depend on `δ`, so they run through the blocks
//! above the layer once, filling a KV cache, and every Adam step runs only the positions from
//! the subject's last token on (two or three per row instead of the whole context).

use burn::tensor::{Int, Tensor, TensorData, activation};
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama};

use super::context::EditContext;
use super::delta::DeltaSearch;
use super::probe::{self, Batch};
use super::request::EditRequest;
use super::store::RankOne;
use super::suffix::Suffixes;
use super::target::{self, TargetHparams, TargetResult};

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
/// row-major, on top of the edits in `cx.inner`. The returned result's `key` is `k*`.
pub fn rome_term(
    cx: &EditContext,
    req: &EditRequest,
    layer: usize,
    inv_cov: &[f32],
) -> (RankOne, TargetResult) {
    let rows = Rows::new(cx, req);
    let res = optimize(cx.model, layer, &rows, cx.inner, cx.target);
    let k_star = res.key.clone();
    let dff = k_star.len();
    let mut u: Vec<f32> = inv_cov
        .chunks(dff)
        .map(|row| probe::dot(row, &k_star))
        .collect();
    let n = probe::norm(&u).max(f32::MIN_POSITIVE);
    u.iter_mut().for_each(|x| *x /= n);
    let scale = probe::dot(&k_star, &u);
    let r = res.delta.iter().map(|d| d / scale).collect();
    (
        RankOne {
            layer,
            r,
            a: u,
            k: k_star,
            g: Vec::new(),
        },
        res,
    )
}

/// ROME's rows: the prompt in every context template followed by the target's tokens but the
/// last (`δ` at the subject's last token, the target predicted after the prompt), then the
/// essence prompt "{subject} is a" (`δ` at the subject, its distribution held by the KL term).
pub struct Rows {
    /// Token ids per row.
    pub ids: Vec<Vec<u32>>,
    /// Per row, the position that receives `δ` (the subject's last token).
    pub inject: Vec<usize>,
    /// `(row, position, token)`: the target tokens to predict.
    pub targets: Vec<(usize, usize, u32)>,
    /// `(row, position)`: the distributions the KL term holds in place.
    pub kl: Vec<(usize, usize)>,
    /// Rows whose subject key is averaged into `k*` (the prompt rows).
    pub key_rows: usize,
    /// The padding token.
    pub pad: u32,
}

impl Rows {
    /// The rows for `req` under `cx.contexts`.
    pub fn new(cx: &EditContext, req: &EditRequest) -> Self {
        let tok = cx.tok;
        let target = probe::target_ids(tok, &req.target_new);
        let mut rows = Self {
            ids: Vec::new(),
            inject: Vec::new(),
            targets: Vec::new(),
            kl: Vec::new(),
            key_rows: cx.contexts.len(),
            pad: tok.eos(),
        };
        for (r, ctx) in cx.contexts.iter().enumerate() {
            let (prompt, start) = target::in_context(ctx, req);
            let (mut ids, idx) = probe::subject_last_at(tok, &prompt, start, req.subject.len());
            let plen = ids.len();
            ids.extend_from_slice(&target[..target.len() - 1]);
            for (j, &t) in target.iter().enumerate() {
                rows.targets.push((r, plen - 1 + j, t));
            }
            rows.inject.push(idx);
            rows.ids.push(ids);
        }
        let essence = format!("{} is a", req.subject);
        let (ids, idx) = probe::subject_last(tok, &essence, &req.subject);
        rows.kl.push((rows.ids.len(), idx));
        rows.inject.push(idx);
        rows.ids.push(ids);
        rows
    }
}

/// Optimizes `δ` at `layer` for `rows` on `model` (an autodiff device) with `inner`'s edits
/// applied: ROME's `compute_v` (NLL of the target, essence KL, decay `‖δ‖/‖v‖²`, clamp
/// `‖δ‖ ≤ clamp‖v‖`), stopping once every target token has probability `hp.stop_prob` (at
/// 0.5 or more the target is top-1 by a margin of `2p − 1`) or the loss is below
/// `hp.stop_loss`. The result's `key` is `k*`, the mean subject key over the prompt rows, and
/// `init` is `W k*` (with `inner`).
pub fn optimize(
    model: &Llama,
    layer: usize,
    rows: &Rows,
    inner: Option<&dyn LinearAdapter>,
    hp: &TargetHparams,
) -> TargetResult {
    let t0 = std::time::Instant::now();
    let device = model.device().clone();
    let d = model.config().d_model;
    let batch = Batch::new(&rows.ids, rows.pad);

    // Blocks up to `layer` once over every row, capturing the keys.
    let capture = probe::KeyCapture::new(inner, &[layer]);
    let below = model
        .run_blocks(
            model.embed(&batch.tokens, batch.rows),
            0..layer + 1,
            Some(&capture),
        )
        .detach();
    let keys = capture.take(layer).expect("layer ran");
    let dff = keys.dims()[2];
    let flat: Vec<usize> = (0..rows.key_rows)
        .map(|r| batch.flat(r, rows.inject[r]))
        .collect();
    let key_rows = probe::host_rows(probe::select_rows(
        keys.reshape([batch.rows * batch.t, dff]),
        &flat,
    ));
    let key = probe::mean(&key_rows);
    let init = probe::down_output(model, layer, std::slice::from_ref(&key), inner)
        .pop()
        .expect("one row");
    let v_norm = probe::norm(&init).max(1e-6);

    // The positions scored: targets first, then the KL positions. The rows' prefixes before
    // their injection positions run through the blocks above once (`suffix.rs`).
    let wanted: Vec<usize> = rows
        .targets
        .iter()
        .map(|&(r, p, _)| batch.flat(r, p))
        .chain(rows.kl.iter().map(|&(r, p)| batch.flat(r, p)))
        .collect();
    let suffixes = Suffixes::new(model, layer, &batch, below, &rows.inject, &wanted, inner);
    let n_t = rows.targets.len();
    let ids: Vec<i64> = rows.targets.iter().map(|&(_, _, t)| t as i64).collect();
    let target_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n_t, 1]), &device);
    let prepared = t0.elapsed().as_secs_f64();

    let found = DeltaSearch::new("rome", vec![0.0; d], v_norm, &device).run(hp, |delta| {
        let h = suffixes.hidden(model, delta.reshape([1, d]), inner);
        let n = wanted.len();
        let logits = model.project_vocab(h.reshape([1, n, d]));
        let vocab = logits.dims()[2];
        let lp = activation::log_softmax(logits.reshape([n, vocab]), 1);
        let picked = lp
            .clone()
            .slice([0..n_t, 0..vocab])
            .gather(1, target_ids.clone());
        let kl_rows = (!rows.kl.is_empty()).then(|| lp.slice([n_t..n, 0..vocab]));
        (picked, kl_rows)
    });
    tracing::debug!(
        prepared,
        seconds = t0.elapsed().as_secs_f64(),
        steps = found.steps,
        groups = suffixes.calls(),
        rows = batch.rows,
        "rome target"
    );
    TargetResult {
        delta: found.delta,
        key,
        init,
        prob: found.prob,
        steps: found.steps,
    }
}

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
use engram_runtime::model::kv_cache::KvCache;
use engram_runtime::model::llama::{LinearAdapter, Llama};

use super::context::EditContext;
use super::delta::DeltaSearch;
use super::probe::{self, Batch};
use super::request::EditRequest;
use super::store::RankOne;
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

/// Rows whose injection positions are close enough to share one KV prefix: every row's
/// positions before `cut` are run once into `cache`, the rest (`suffix`) in every step.
struct Group {
    rows: Vec<usize>,
    cut: usize,
    /// Positions per row after the cut.
    len: usize,
    cache: KvCache,
    /// The residual after the edited layer at positions `cut..cut + len`, `(rows, len, d)`.
    suffix: Tensor<3>,
    /// 1 where `δ` is added, `(rows, len, 1)`.
    mask: Tensor<3>,
}

/// A row whose injection position is at most this many positions after its group's cut
/// joins the group (runs those positions every step) rather than starting a new one.
const GROUP_SLACK: usize = 3;

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
    let n_layer = model.config().n_layer;
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

    // Groups of rows sharing a KV prefix; the prefixes run through the blocks above once.
    let mut order: Vec<usize> = (0..batch.rows).collect();
    order.sort_by_key(|&r| rows.inject[r]);
    let mut members: Vec<Vec<usize>> = Vec::new();
    for r in order {
        match members.last_mut() {
            Some(g) if rows.inject[r] - rows.inject[g[0]] <= GROUP_SLACK => g.push(r),
            _ => members.push(vec![r]),
        }
    }
    let groups: Vec<Group> = members
        .into_iter()
        .map(|g| {
            let cut = rows.inject[g[0]];
            let len = g.iter().map(|&r| rows.ids[r].len()).max().unwrap_or(1) - cut;
            let idx: Vec<i64> = g.iter().map(|&r| r as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [g.len()]), &device);
            let mine = below.clone().select(0, idx);
            let mut cache = model.new_cache(g.len(), cut + len);
            if cut > 0 {
                let prefix = mine.clone().slice([0..g.len(), 0..cut, 0..d]);
                model
                    .run_blocks_cached(prefix, layer + 1..n_layer, &mut cache, inner)
                    .expect("the cache holds the prefix");
            }
            let suffix = mine.slice([0..g.len(), cut..cut + len, 0..d]);
            let mut mask = vec![0f32; g.len() * len];
            for (i, &r) in g.iter().enumerate() {
                mask[i * len + rows.inject[r] - cut] = 1.0;
            }
            let mask = Tensor::<3>::from_data(TensorData::new(mask, [g.len(), len, 1]), &device);
            Group {
                rows: g,
                cut,
                len,
                cache,
                suffix,
                mask,
            }
        })
        .collect();
    // Where each scored position sits in the groups' concatenated outputs: targets first,
    // then the KL positions.
    let mut slot = std::collections::HashMap::new();
    let mut local: Vec<Vec<usize>> = Vec::new();
    let mut offset = 0;
    let wanted: Vec<(usize, usize)> = rows
        .targets
        .iter()
        .map(|&(r, p, _)| (r, p))
        .chain(rows.kl.iter().copied())
        .collect();
    for g in &groups {
        let mut l = Vec::new();
        for &(r, p) in &wanted {
            if let Some(i) = g.rows.iter().position(|&x| x == r) {
                slot.insert((r, p), offset + l.len());
                l.push(i * g.len + p - g.cut);
            }
        }
        offset += l.len();
        local.push(l);
    }
    let perm: Vec<i64> = wanted.iter().map(|k| slot[k] as i64).collect();
    let perm = Tensor::<1, Int>::from_data(TensorData::new(perm, [wanted.len()]), &device);
    let n_t = rows.targets.len();
    let ids: Vec<i64> = rows.targets.iter().map(|&(_, _, t)| t as i64).collect();
    let target_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n_t, 1]), &device);
    let prepared = t0.elapsed().as_secs_f64();

    let found = DeltaSearch::new("rome", vec![0.0; d], v_norm, &device).run(hp, |delta| {
        let delta = delta.reshape([1, 1, d]);
        let picked: Vec<Tensor<2>> = groups
            .iter()
            .zip(&local)
            .filter(|(_, l)| !l.is_empty())
            .map(|(g, l)| {
                let x = g.suffix.clone() + g.mask.clone() * delta.clone();
                let mut cache = g.cache.clone();
                let h = model
                    .run_blocks_cached(x, layer + 1..n_layer, &mut cache, inner)
                    .expect("the cache holds the suffix");
                let h = model.output_norm(h).reshape([g.rows.len() * g.len, d]);
                probe::select_rows(h, l)
            })
            .collect();
        let h = Tensor::cat(picked, 0).select(0, perm.clone());
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
        groups = groups.len(),
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

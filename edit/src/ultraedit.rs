//! UltraEdit (Gu et al. 2025, "Training-, Subject-, and Memory-Free Lifelong Editing in Large
//! Language Models"): a closed-form update of MLP down-projections from one forward and
//! backward pass, with no optimization, no subject and no stored corpus of earlier edits.
//!
//! For a batch of requests, each request's row is its prompt followed by the new answer's
//! tokens but the last; the *predicting* positions (the prompt's last token and the answer's
//! tokens but the last) are where the update acts. One pass of the model, on top of the edits
//! already applied, gives at every edited layer `l` and predicting position `j`:
//!
//! - the key `k_j` (the down-projection's input, `d_ff`), and
//! - the value gradient `g_j` (the gradient of the answer's summed negative log-likelihood with
//!   respect to the down-projection's output there, `d_model`).
//!
//! **Lifelong normalization.** Per layer, running means and standard deviations of every
//! coordinate of `k` and `g` over all rows seen so far (Chan's parallel merge of counts,
//! means and squared deviations), this batch's rows included. `k̂ = (k − μ_k) / (σ_k + ε)`
//! and `ĝ = (g − μ_g) / (σ_g + ε)`; the pseudo value of row `j` is
//! `v_j = −lr ‖k̂_j‖² ĝ_j`.
//!
//! **Update.** The ridge regression from raw keys to pseudo values,
//! `ΔWᵀ = (KᵀK + ρI)⁻¹ Kᵀ V` (`K` `(n, d_ff)`, `V` `(n, d_model)`), i.e. the output gains
//! `ΔW x = Σ_j v_j (a_j · x)` with `a_j` the rows of `(K Kᵀ + ρI)⁻¹ K` (the push-through
//! identity: an `n × n` solve instead of a `d_ff × d_ff` one). Every layer gets its full
//! update from the same pass (no residual split between layers, as the reference).
//!
//! Each row is stored as one [`RankOne`] term with `r = v_j`, `a = a_j`, `k = k_j` and
//! `g = g_j`, so an edit is undone by removing its terms, and the running statistics are
//! recomputed from the terms applied (plus the prior below): undoing an edit also takes its
//! rows out of the normalization, and the statistics are in the edit log with the edits.
//!
//! Deviations from the reference (github XiaojieGu/UltraEdit), each for sequential editing of
//! one fact at a time: the statistics start from a **prior** — rows of next-token prediction
//! on the key-statistics corpus, on the base model — instead of from nothing (with one fact's
//! one or two rows, the first edits' own mean is their whole signal and `(g − μ) = 0`; the
//! reference edits batches of ≥ 100 facts); the rows' losses are summed, not averaged, so a
//! row's gradient does not depend on the batch size (the reference averages over a fixed
//! batch); the normalization is per layer (the reference shares it between modules of the same
//! shape); the squared deviations are merged exactly (the reference adds a batch's unbiased
//! variance times its size).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use burn::tensor::{Int, Tensor, TensorData};
use engram_adapters::optim::{ParamId, ParamSet};
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama, Proj};
use engram_runtime::model::tokenizer::Tokenizer;
use engram_runtime::progress::Progress;
use serde::{Deserialize, Serialize};

use super::context::EditContext;
use super::linalg::{self, NotPositiveDefinite};
use super::probe::{self, Batch};
use super::request::EditRequest;
use super::store::{Edit, EditDelta, Method, RankOne};

/// `ε` of the normalization (PyTorch's `finfo(float32).eps`, as the reference).
pub const NORM_EPS: f64 = f32::EPSILON as f64;

/// UltraEdit's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UltraConfig {
    /// The down-projections edited (each gets the full update).
    pub layers: Vec<usize>,
    /// Step size of the pseudo values `v = −lr ‖k̂‖² ĝ`.
    pub lr: f32,
    /// Ridge `ρ` of `(KᵀK + ρI)` (the reference: 1).
    pub ridge: f32,
    /// Corpus tokens of next-token prediction the running statistics start from (0: start
    /// from nothing, as the reference).
    pub prior_tokens: usize,
    /// Also hold the outputs at the keys of earlier UltraEdit edits in place: solve
    /// `(KᵀK + K_pᵀK_p + ρI)⁻¹ Kᵀ V` (`K_p` their keys at the layer) instead of the
    /// reference's `(KᵀK + ρI)⁻¹ Kᵀ V`, which only sees the batch being written.
    pub protect: bool,
}

/// Layer 27, lr 1e-3, the prior and `protect`: chosen on 10 sequential known facts
/// (docs/EDITING.md, "UltraEdit"): single layers 3–29 and late ranges, lr 1e-4 to 1e-2.
impl Default for UltraConfig {
    fn default() -> Self {
        Self {
            layers: vec![27],
            lr: 1e-3,
            ridge: 1.0,
            prior_tokens: 512,
            protect: true,
        }
    }
}

/// Running per-coordinate mean and squared deviations of rows (Chan et al.'s parallel merge).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunningStats {
    /// Rows seen.
    pub n: f64,
    /// Mean of each coordinate.
    pub mean: Vec<f64>,
    /// Sum of squared deviations from the mean of each coordinate.
    pub m2: Vec<f64>,
}

impl RunningStats {
    /// Statistics of `rows` alone.
    pub fn of(rows: &[&[f32]]) -> Self {
        let Some(first) = rows.first() else {
            return Self::default();
        };
        let n = rows.len() as f64;
        let mut mean = vec![0f64; first.len()];
        for r in rows {
            for (m, &v) in mean.iter_mut().zip(r.iter()) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut m2 = vec![0f64; first.len()];
        for r in rows {
            for ((s, &v), m) in m2.iter_mut().zip(r.iter()).zip(&mean) {
                let d = f64::from(v) - m;
                *s += d * d;
            }
        }
        Self { n, mean, m2 }
    }

    /// Adds `other`'s rows.
    pub fn merge(&mut self, other: &RunningStats) {
        if other.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = other.clone();
            return;
        }
        assert_eq!(self.mean.len(), other.mean.len(), "statistics of one width");
        let n = self.n + other.n;
        for i in 0..self.mean.len() {
            let d = other.mean[i] - self.mean[i];
            self.mean[i] += d * other.n / n;
            self.m2[i] += other.m2[i] + d * d * self.n * other.n / n;
        }
        self.n = n;
    }

    /// `(x − μ) / (σ + ε)` with the sample standard deviation `σ = √(m2 / (n − 1 + ε))`.
    pub fn normalize(&self, x: &[f32]) -> Vec<f32> {
        if self.n == 0.0 {
            return x.to_vec();
        }
        x.iter()
            .zip(&self.mean)
            .zip(&self.m2)
            .map(|((&v, m), s)| {
                let sd = (s / (self.n - 1.0 + NORM_EPS)).sqrt();
                ((f64::from(v) - m) / (sd + NORM_EPS)) as f32
            })
            .collect()
    }
}

/// The running statistics of one layer: keys and value gradients.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerNormalizer {
    /// Of the keys (`d_ff`).
    pub keys: RunningStats,
    /// Of the value gradients (`d_model`).
    pub grads: RunningStats,
}

impl LayerNormalizer {
    fn merge(&mut self, other: &LayerNormalizer) {
        self.keys.merge(&other.keys);
        self.grads.merge(&other.grads);
    }

    fn of(keys: &[Vec<f32>], grads: &[Vec<f32>]) -> Self {
        let k: Vec<&[f32]> = keys.iter().map(Vec::as_slice).collect();
        let g: Vec<&[f32]> = grads.iter().map(Vec::as_slice).collect();
        Self {
            keys: RunningStats::of(&k),
            grads: RunningStats::of(&g),
        }
    }
}

/// The statistics per edited layer.
pub type Normalizers = BTreeMap<usize, LayerNormalizer>;

/// The statistics of the rows of every UltraEdit edit in `edits` at `layers`.
pub fn applied_stats(edits: &[Edit], layers: &[usize]) -> Normalizers {
    let mut out = Normalizers::new();
    for &l in layers {
        let terms: Vec<&RankOne> = edits
            .iter()
            .filter(|e| e.method == Method::UltraEdit)
            .filter_map(|e| match &e.delta {
                EditDelta::Weights(t) => Some(t),
                EditDelta::Grace(_) | EditDelta::Gate(_) => None,
            })
            .flatten()
            .filter(|t| t.layer == l && !t.g.is_empty())
            .collect();
        let k: Vec<&[f32]> = terms.iter().map(|t| t.k.as_slice()).collect();
        let g: Vec<&[f32]> = terms.iter().map(|t| t.g.as_slice()).collect();
        out.insert(
            l,
            LayerNormalizer {
                keys: RunningStats::of(&k),
                grads: RunningStats::of(&g),
            },
        );
    }
    out
}

/// Keys and value gradients of some rows, per layer.
pub struct KeyGrads {
    /// Per layer, the keys at the predicting positions (in `positions` order).
    pub keys: BTreeMap<usize, Vec<Vec<f32>>>,
    /// Per layer, the value gradients there.
    pub grads: BTreeMap<usize, Vec<Vec<f32>>>,
}

/// Adds a zero tracked tensor to the down-projection output of each edited layer (its
/// gradient is the value gradient) and records the keys there, on top of `inner`.
struct Tap<'a> {
    inner: Option<&'a dyn LinearAdapter>,
    layers: Vec<usize>,
    params: ParamSet,
    ids: Vec<ParamId>,
    keys: RefCell<BTreeMap<usize, Tensor<3>>>,
}

impl LinearAdapter for Tap<'_> {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        let inner = self.inner.and_then(|a| a.delta(layer, proj, x));
        let at = self.layers.iter().position(|&l| l == layer);
        match (proj, at) {
            (Proj::Down, Some(i)) => {
                self.keys.borrow_mut().insert(layer, x.clone().detach());
                let [b, t, _] = x.dims();
                let tap = self.params.get(self.ids[i]);
                let d = tap.dims()[1];
                let tap = tap.reshape([b, t, d]);
                Some(inner.map_or(tap.clone(), |y| y + tap))
            }
            _ => inner,
        }
    }
}

/// One forward and backward pass of `batch` through the whole model with `inner` applied:
/// the loss is the summed negative log-likelihood of each `(flat position, token)` of
/// `targets`; returns the keys and value gradients at those positions for every layer.
pub fn key_grads(
    model: &Llama,
    batch: &Batch,
    targets: &[(usize, u32)],
    layers: &[usize],
    inner: Option<&dyn LinearAdapter>,
) -> KeyGrads {
    let device = model.device().clone();
    let (d, n_layer) = (model.config().d_model, model.config().n_layer);
    let mut params = ParamSet::new();
    let ids = layers
        .iter()
        .map(|l| {
            params.push_host(
                format!("tap{l}"),
                vec![0.0; batch.rows * batch.t * d],
                [batch.rows * batch.t, d],
                &device,
            )
        })
        .collect();
    let tap = Tap {
        inner,
        layers: layers.to_vec(),
        params,
        ids,
        keys: RefCell::new(BTreeMap::new()),
    };
    let h = model.run_blocks(
        model.embed(&batch.tokens, batch.rows),
        0..n_layer,
        Some(&tap),
    );
    let positions: Vec<usize> = targets.iter().map(|&(p, _)| p).collect();
    let lp = probe::log_probs_of_hidden(model, model.output_norm(h), &positions);
    let labels: Vec<i64> = targets.iter().map(|&(_, t)| i64::from(t)).collect();
    let labels = Tensor::<2, Int>::from_data(TensorData::new(labels, [targets.len(), 1]), &device);
    let loss = lp.gather(1, labels).sum().neg();
    let grads = tap.params.grads(&loss.backward());
    let mut keys = BTreeMap::new();
    let mut out_grads = BTreeMap::new();
    for (i, &l) in layers.iter().enumerate() {
        let k = tap.keys.borrow_mut().remove(&l).expect("layer ran");
        let dff = k.dims()[2];
        keys.insert(
            l,
            probe::host_rows(probe::select_rows(
                k.reshape([batch.rows * batch.t, dff]),
                &positions,
            )),
        );
        let g = grads
            .get(tap.ids[i])
            .cloned()
            .unwrap_or_else(|| Tensor::zeros([batch.rows * batch.t, d], &device));
        out_grads.insert(l, probe::host_rows(probe::select_rows(g, &positions)));
    }
    KeyGrads {
        keys,
        grads: out_grads,
    }
}

/// The rows of `reqs`: each prompt followed by its answer's tokens but the last, and the
/// `(flat position, token)` pairs that predict the answer. Also the number of positions each
/// request contributes.
pub fn edit_rows(tok: &Tokenizer, reqs: &[EditRequest]) -> (Batch, Vec<(usize, u32)>, Vec<usize>) {
    let mut rows = Vec::new();
    let mut spans = Vec::new();
    for r in reqs {
        let mut ids = tok.encode(&r.prompt, false);
        let target = probe::target_ids(tok, &r.target_new);
        let plen = ids.len();
        ids.extend_from_slice(&target[..target.len() - 1]);
        spans.push((plen, target));
        rows.push(ids);
    }
    let batch = Batch::new(&rows, tok.eos());
    let mut targets = Vec::new();
    let mut counts = Vec::new();
    for (r, (plen, target)) in spans.iter().enumerate() {
        for (j, &t) in target.iter().enumerate() {
            targets.push((batch.flat(r, plen - 1 + j), t));
        }
        counts.push(target.len());
    }
    (batch, targets, counts)
}

/// The prior statistics: next-token prediction on the first `tokens` tokens of `corpus` (rows
/// of 128 tokens, 4 per pass) on the base model, at `layers`.
pub fn prior(
    model: &Llama,
    tok: &Tokenizer,
    corpus: &str,
    layers: &[usize],
    tokens: usize,
    progress: &dyn Progress,
) -> Normalizers {
    const ROW: usize = 128;
    const ROWS_PER_PASS: usize = 4;
    let ids = tok.encode(corpus, false);
    let rows: Vec<&[u32]> = ids.chunks_exact(ROW).take(tokens.div_ceil(ROW)).collect();
    let mut out: Normalizers = layers
        .iter()
        .map(|&l| (l, LayerNormalizer::default()))
        .collect();
    progress.start("ultraedit prior", rows.len().div_ceil(ROWS_PER_PASS) as u64);
    for chunk in rows.chunks(ROWS_PER_PASS) {
        let owned: Vec<Vec<u32>> = chunk.iter().map(|r| r.to_vec()).collect();
        let batch = Batch::new(&owned, tok.eos());
        let targets: Vec<(usize, u32)> = (0..owned.len())
            .flat_map(|r| (0..ROW - 1).map(move |p| (r, p)))
            .map(|(r, p)| (batch.flat(r, p), owned[r][p + 1]))
            .collect();
        let kg = key_grads(model, &batch, &targets, layers, None);
        for &l in layers {
            out.get_mut(&l)
                .expect("layer")
                .merge(&LayerNormalizer::of(&kg.keys[&l], &kg.grads[&l]));
        }
        progress.advance(1);
    }
    progress.finish();
    out
}

/// `x · y` for every pair, row-major `(|x|, |y|)`, plus `diag` on the diagonal.
fn gram(x: &[Vec<f32>], y: &[Vec<f32>], diag: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() * y.len());
    for (i, xi) in x.iter().enumerate() {
        for (j, yj) in y.iter().enumerate() {
            out.push(probe::dot(xi, yj) + if i == j { diag } else { 0.0 });
        }
    }
    out
}

/// The key directions `a_j` of the ridge regression `ΔWᵀ = (KᵀK + K_pᵀK_p + ρI)⁻¹ Kᵀ V`
/// (keys `K` one per row, held keys `K_p`, possibly none), whose output change is
/// `Σ_j v_j (a_j · x)`: the rows of `M⁻¹ Gᵀ` with `G = A⁻¹ Kᵀ`, `A = K_pᵀK_p + ρI`,
/// `M = I + K G` (push-through and Woodbury: only systems of the size of `K` and `K_p` are
/// solved). With no held keys that is `(K Kᵀ + ρI)⁻¹ K`.
pub fn ridge_directions(
    keys: &[Vec<f32>],
    held: &[Vec<f32>],
    ridge: f32,
) -> Result<Vec<Vec<f32>>, NotPositiveDefinite> {
    let mut h = HeldGram::default();
    h.update(held, ridge);
    directions(keys, &h)
}

/// The held keys `K_p` of one layer and their Gram matrix `K_p K_pᵀ + ρI`, kept from edit to
/// edit. Rebuilding it for every edit costs `O(m² d)` for `m` held keys of width `d` (≈ 6
/// GMAC at 1,000 edits, ≈ 2,000 keys); extending it costs the new keys' rows, with the same
/// entries bit for bit.
#[derive(Clone, Debug, Default)]
pub struct HeldGram {
    /// The held keys, in order.
    keys: Vec<Vec<f32>>,
    /// `ρ`.
    ridge: f32,
    /// `K_p K_pᵀ + ρI`, row-major `m × m`.
    gram: Vec<f32>,
}

impl HeldGram {
    /// Brings the matrix up to `held` and `ridge`: extended when `held` starts with the keys
    /// it holds (edits were added), rebuilt otherwise (an edit undone, another ridge).
    pub fn update(&mut self, held: &[Vec<f32>], ridge: f32) {
        let m0 = self.keys.len();
        if ridge.to_bits() != self.ridge.to_bits() || held.len() < m0 || held[..m0] != self.keys[..]
        {
            *self = Self {
                ridge,
                ..Self::default()
            };
        }
        let (m0, m) = (self.keys.len(), held.len());
        if m == m0 {
            return;
        }
        let mut gram = vec![0f32; m * m];
        for i in 0..m0 {
            gram[i * m..i * m + m0].copy_from_slice(&self.gram[i * m0..(i + 1) * m0]);
        }
        // As `gram(held, held, ridge)`: `dot(hᵢ, hⱼ)` sums the same products in the same order
        // as `dot(hⱼ, hᵢ)`, so one dot fills both halves.
        for i in m0..m {
            for j in 0..=i {
                let v = probe::dot(&held[i], &held[j]) + if i == j { ridge } else { 0.0 };
                gram[i * m + j] = v;
                gram[j * m + i] = v;
            }
        }
        self.gram = gram;
        self.keys.extend_from_slice(&held[m0..]);
    }
}

/// [`ridge_directions`] with the held keys' Gram matrix given.
fn directions(keys: &[Vec<f32>], held: &HeldGram) -> Result<Vec<Vec<f32>>, NotPositiveDefinite> {
    let (n, dff) = (keys.len(), keys[0].len());
    let ridge = held.ridge;
    let held_gram = &held.gram;
    let held = &held.keys;
    // Rows of G = A⁻¹ kⱼ = (kⱼ − K_pᵀ (ρI + K_p K_pᵀ)⁻¹ K_p kⱼ) / ρ.
    let g: Vec<Vec<f32>> = if held.is_empty() {
        keys.iter()
            .map(|k| k.iter().map(|v| v / ridge).collect())
            .collect()
    } else {
        let m = held.len();
        let c = linalg::spd_solve(held_gram, &gram(held, keys, 0.0), m, n)?;
        keys.iter()
            .enumerate()
            .map(|(j, k)| {
                let mut x = k.clone();
                for (i, h) in held.iter().enumerate() {
                    let w = c[i * n + j];
                    x.iter_mut().zip(h).for_each(|(o, v)| *o -= w * v);
                }
                x.iter_mut().for_each(|o| *o /= ridge);
                x
            })
            .collect()
    };
    let sys = gram(keys, &g, 1.0); // I + K G, symmetric
    let flat: Vec<f32> = g.iter().flatten().copied().collect();
    let a = linalg::spd_solve(&sys, &flat, n, dff)?;
    Ok(a.chunks(dff).map(<[f32]>::to_vec).collect())
}

/// The keys of every UltraEdit edit in `edits` at `layer`.
pub fn applied_keys(edits: &[Edit], layer: usize) -> Vec<Vec<f32>> {
    edits
        .iter()
        .filter(|e| e.method == Method::UltraEdit)
        .filter_map(|e| match &e.delta {
            EditDelta::Weights(t) => Some(t),
            EditDelta::Grace(_) | EditDelta::Gate(_) => None,
        })
        .flatten()
        .filter(|t| t.layer == layer)
        .map(|t| t.k.clone())
        .collect()
}

/// The pseudo values `v_j = −lr ‖k̂_j‖² ĝ_j` under `norm`.
pub fn pseudo_values(
    norm: &LayerNormalizer,
    keys: &[Vec<f32>],
    grads: &[Vec<f32>],
    lr: f32,
) -> Vec<Vec<f32>> {
    keys.iter()
        .zip(grads)
        .map(|(k, g)| {
            let kh = norm.keys.normalize(k);
            let coeff = -lr * probe::dot(&kh, &kh);
            norm.grads
                .normalize(g)
                .into_iter()
                .map(|v| coeff * v)
                .collect()
        })
        .collect()
}

/// UltraEdit's terms for `reqs` as one batch (outer: requests, inner: their terms, layer by
/// layer), on top of the edits in `cx.inner`; `prior` is the prior statistics (see [`prior`])
/// and `edits` the edits applied so far (their rows' statistics, and with
/// [`UltraConfig::protect`] their keys).
pub fn batch_terms(
    cx: &EditContext,
    reqs: &[EditRequest],
    cfg: &UltraConfig,
    prior: &Normalizers,
    edits: &[Edit],
    held_grams: &mut HashMap<usize, HeldGram>,
) -> Result<Vec<Vec<RankOne>>, NotPositiveDefinite> {
    let applied = applied_stats(edits, &cfg.layers);
    let (batch, targets, counts) = edit_rows(cx.tok, reqs);
    let kg = key_grads(cx.model, &batch, &targets, &cfg.layers, cx.inner);
    let mut out: Vec<Vec<RankOne>> = vec![Vec::new(); reqs.len()];
    for &l in &cfg.layers {
        let (keys, grads) = (&kg.keys[&l], &kg.grads[&l]);
        let mut norm = prior.get(&l).cloned().unwrap_or_default();
        if let Some(a) = applied.get(&l) {
            norm.merge(a);
        }
        norm.merge(&LayerNormalizer::of(keys, grads));
        let values = pseudo_values(&norm, keys, grads, cfg.lr);
        let held = match cfg.protect {
            true => applied_keys(edits, l),
            false => Vec::new(),
        };
        let held_gram = held_grams.entry(l).or_default();
        held_gram.update(&held, cfg.ridge);
        let dirs = directions(keys, held_gram)?;
        let mut row = 0;
        for (q, &c) in counts.iter().enumerate() {
            for _ in 0..c {
                out[q].push(RankOne {
                    layer: l,
                    r: values[row].clone(),
                    a: dirs[row].clone(),
                    k: keys[row].clone(),
                    g: grads[row].clone(),
                });
                row += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest difference between the push-through form and the direct `d_ff × d_ff` solve.
    const CLOSED_FORM_TOLERANCE: f32 = 1e-4;
    /// Largest difference between merged and direct statistics.
    const STATS_TOLERANCE: f64 = 1e-9;

    /// A small deterministic pseudo-random stream.
    fn rand(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// `ΔWᵀ = (KᵀK + ρI)⁻¹ Kᵀ V` solved directly (Gauss–Jordan on the `d_in × d_in` system).
    fn direct(keys: &[Vec<f32>], values: &[Vec<f32>], ridge: f64) -> Vec<Vec<f64>> {
        let (din, dout) = (keys[0].len(), values[0].len());
        let mut m = vec![vec![0f64; din + dout]; din];
        for (i, row) in m.iter_mut().enumerate() {
            for j in 0..din {
                row[j] = keys
                    .iter()
                    .map(|k| f64::from(k[i]) * f64::from(k[j]))
                    .sum::<f64>()
                    + if i == j { ridge } else { 0.0 };
            }
            for o in 0..dout {
                row[din + o] = keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| f64::from(k[i]) * f64::from(v[o]))
                    .sum();
            }
        }
        for c in 0..din {
            let p = m[c][c];
            m[c].iter_mut().for_each(|v| *v /= p);
            let pivot = m[c].clone();
            for (r, row) in m.iter_mut().enumerate() {
                if r != c {
                    let f = row[c];
                    row.iter_mut().zip(&pivot).for_each(|(v, p)| *v -= f * p);
                }
            }
        }
        m.into_iter().map(|row| row[din..].to_vec()).collect() // (d_in, d_out)
    }

    /// `ΔW = Σ dirs[j] ⊗ values[j]` equals `want` `(d_in, d_out)` within
    /// [`CLOSED_FORM_TOLERANCE`].
    fn assert_update_is(dirs: &[Vec<f32>], values: &[Vec<f32>], want: &[Vec<f64>]) {
        for (i, want_i) in want.iter().enumerate() {
            for (o, &w) in want_i.iter().enumerate() {
                let got: f32 = dirs.iter().zip(values).map(|(a, v)| a[i] * v[o]).sum();
                let diff = (got - w as f32).abs();
                assert!(diff < CLOSED_FORM_TOLERANCE, "ΔW[{i}][{o}]: {got} vs {w}");
            }
        }
    }

    #[test]
    fn push_through_terms_equal_the_direct_ridge_solve() {
        let mut seed = 7;
        let (n, din, dout) = (3, 6, 4);
        let keys: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..din).map(|_| rand(&mut seed) * 3.0).collect())
            .collect();
        let values: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..dout).map(|_| rand(&mut seed)).collect())
            .collect();
        for ridge in [1.0f32, 0.1] {
            let dirs = ridge_directions(&keys, &[], ridge).unwrap();
            assert_update_is(&dirs, &values, &direct(&keys, &values, f64::from(ridge)));
            // With ρ → small the update maps each key (nearly) to its value.
            if ridge < 0.5 {
                for (k, v) in keys.iter().zip(&values) {
                    for (o, &vo) in v.iter().enumerate() {
                        let y: f32 = dirs
                            .iter()
                            .zip(&values)
                            .map(|(a, vv)| probe::dot(a, k) * vv[o])
                            .sum();
                        assert!((y - vo).abs() < 0.05, "{y} vs {vo}");
                    }
                }
            }
        }
    }

    /// `ΔWᵀ = (KᵀK + K_pᵀK_p + ρI)⁻¹ KᵀV` directly: `direct` on the keys and the held keys
    /// stacked, the held keys' values zero.
    #[test]
    fn held_keys_terms_equal_the_direct_solve_and_leave_held_outputs_near_zero() {
        let mut seed = 5;
        let (din, dout) = (7, 3);
        let row = |s: &mut u64, d: usize| -> Vec<f32> { (0..d).map(|_| rand(s) * 3.0).collect() };
        let keys: Vec<Vec<f32>> = (0..2).map(|_| row(&mut seed, din)).collect();
        let held: Vec<Vec<f32>> = (0..3).map(|_| row(&mut seed, din)).collect();
        let values: Vec<Vec<f32>> = (0..2).map(|_| row(&mut seed, dout)).collect();
        let dirs = ridge_directions(&keys, &held, 0.01).unwrap();
        let all: Vec<Vec<f32>> = keys.iter().chain(&held).cloned().collect();
        let zero = vec![vec![0f32; dout]; held.len()];
        let vals: Vec<Vec<f32>> = values.iter().chain(&zero).cloned().collect();
        assert_update_is(&dirs, &values, &direct(&all, &vals, 0.01));
        for h in &held {
            for a in &dirs {
                assert!(
                    probe::dot(a, h).abs() < 0.05,
                    "held key moved: {}",
                    probe::dot(a, h)
                );
            }
        }
    }

    #[test]
    fn the_held_gram_grows_and_rebuilds_as_the_from_scratch_one() {
        let mut seed = 11;
        let held: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..9).map(|_| rand(&mut seed) * 2.0).collect())
            .collect();
        let mut grown = HeldGram::default();
        for m in [0, 1, 3, 4, 6] {
            grown.update(&held[..m], 0.5);
            assert_eq!(
                grown.gram,
                gram(&held[..m], &held[..m], 0.5),
                "{m} keys, bit for bit"
            );
        }
        // A held key removed (an undo) or another ridge: rebuilt, not extended.
        let undone = [held[0].clone(), held[2].clone()];
        grown.update(&undone, 0.5);
        assert_eq!(grown.gram, gram(&undone, &undone, 0.5));
        grown.update(&undone, 0.25);
        assert_eq!(grown.gram, gram(&undone, &undone, 0.25));
    }

    #[test]
    fn merged_statistics_equal_the_statistics_of_all_rows() {
        let mut seed = 3;
        let rows: Vec<Vec<f32>> = (0..9)
            .map(|_| (0..5).map(|_| rand(&mut seed) * 4.0 + 1.0).collect())
            .collect();
        let all: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let direct = RunningStats::of(&all);
        let mut merged = RunningStats::default();
        for part in all.chunks(4) {
            merged.merge(&RunningStats::of(part));
        }
        assert_eq!(merged.n, 9.0);
        for i in 0..5 {
            assert!((merged.mean[i] - direct.mean[i]).abs() < STATS_TOLERANCE);
            assert!((merged.m2[i] - direct.m2[i]).abs() < STATS_TOLERANCE);
        }
        // The normalized rows have mean 0 and sample standard deviation 1 per coordinate.
        let z: Vec<Vec<f32>> = rows.iter().map(|r| merged.normalize(r)).collect();
        for i in 0..5 {
            let mean: f32 = z.iter().map(|r| r[i]).sum::<f32>() / 9.0;
            let var: f32 = z.iter().map(|r| (r[i] - mean).powi(2)).sum::<f32>() / 8.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "{mean} {var}"
            );
        }
        // One row alone normalizes to zero: the first edit of an empty history does nothing.
        let one = RunningStats::of(&all[..1]);
        assert!(one.normalize(&rows[0]).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn pseudo_values_point_against_the_gradient() {
        let mut seed = 11;
        let keys: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..4).map(|_| rand(&mut seed)).collect())
            .collect();
        let grads: Vec<Vec<f32>> = (0..6)
            .map(|_| (0..3).map(|_| rand(&mut seed)).collect())
            .collect();
        let norm = LayerNormalizer::of(&keys, &grads);
        let v = pseudo_values(&norm, &keys, &grads, 0.5);
        for ((k, g), v) in keys.iter().zip(&grads).zip(&v) {
            let kh = norm.keys.normalize(k);
            let gh = norm.grads.normalize(g);
            let c = -0.5 * probe::dot(&kh, &kh);
            for (a, b) in v.iter().zip(&gh) {
                assert!((a - c * b).abs() < 1e-5);
            }
            assert!(probe::dot(v, &gh) <= 0.0);
        }
    }
}

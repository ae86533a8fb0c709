//! Serving the gated memory ([`crate::gate`]): the entries stacked per layer, and the routing
//! memory that remembers, per sequence, which subjects it has mentioned and where.
//!
//! The graph calls the adapter layer by layer, so a forward call first reaches the subject
//! layer (the hits of its positions are recorded) and later the relation layer (where an entry
//! fires if its subject was seen within its window). During cached decoding each call holds one
//! new token; the subject was in an earlier call, so the hits must outlive the call: they are
//! kept beside the KV cache, one routing memory per thread (a sequence is decoded on one
//! thread), one row per batch row. A call of more than one token (a prompt) starts new
//! sequences; a one-token call of the same batch size continues them. A prompt fed in several
//! chunks therefore only sees subjects of its last chunk (documented limit).
//!
//! The fused CPU decoder serves the same memory through `GateSession` (a
//! [`RoutedTerm`]): one sequence per decoder, whose calls give their absolute positions, so a
//! prompt in several chunks keeps its earlier chunks' subjects there. Both paths run the one
//! rule, `Sequences::route`, on cosines computed by burn (graph) or on the host (fused).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::thread::ThreadId;

use burn::tensor::{Tensor, TensorData};
use engram_runtime::burn;
use engram_runtime::model::llama::{Proj, RoutedTerm};

use super::gate::GateEntry;

/// Unit keys of one layer, stacked `(d_ff, m)`, and which entry each column belongs to.
struct KeyBank {
    keys: Tensor<2>,     // (d_ff, m)
    host: Vec<f32>,      // (m, d_ff) the same unit keys, one column after another
    owner: Vec<usize>,   // entry index per column
    threshold: Vec<f32>, // per column
    /// Columns `..keys_end` are the entries' keys; the ones after are previous-token keys,
    /// which record no hit themselves.
    keys_end: usize,
    /// Per key column (below `keys_end`): the column the position before must match too (a
    /// multi-token subject's previous token), if any.
    requires: Vec<Option<usize>>,
    /// Per key column (below `keys_end`): in a subject bank, a relation word's key, whose hits
    /// say the relation was named (not the subject); in a relation bank, a contrast key, the
    /// entry's competitor (it fires nothing itself).
    word: Vec<bool>,
}

/// A column of a [`KeyBank`] being built: owning entry, unit key, threshold, the key the
/// position before must match (the bank gives it a column of its own), and whether it is a
/// relation word's key (a contrast key in a relation bank).
type Column<'a> = (usize, &'a [f32], f32, Option<&'a [f32]>, bool);

/// The gate entries of an edit set, stacked per layer for one matmul per forward call.
pub(crate) struct GateIndex {
    entries: Vec<(u64, GateEntry)>,
    subject: BTreeMap<usize, KeyBank>,
    relation: BTreeMap<usize, KeyBank>,
    first_subject_layer: usize,
}

impl GateIndex {
    /// Stacks `entries` (edit id, entry) on `device`.
    pub(crate) fn new(entries: Vec<(u64, GateEntry)>, device: &burn::tensor::Device) -> Self {
        let mut subject: BTreeMap<usize, Vec<Column>> = BTreeMap::new();
        let mut relation: BTreeMap<usize, Vec<Column>> = BTreeMap::new();
        for (i, (_, e)) in entries.iter().enumerate() {
            for (j, k) in e.subject_keys.iter().enumerate() {
                let threshold = match (e.subject_thresholds.get(j), j) {
                    (Some(&t), _) => t,
                    (None, 0) => e.opening_threshold,
                    (None, _) => e.subject_threshold,
                };
                let prev = e
                    .subject_prev_keys
                    .get(j)
                    .filter(|p| !p.is_empty())
                    .map(Vec::as_slice);
                subject
                    .entry(e.subject_layer)
                    .or_default()
                    .push((i, k, threshold, prev, false));
            }
            for k in &e.relation_words {
                subject.entry(e.relation_word_layer).or_default().push((
                    i,
                    k,
                    e.subject_threshold,
                    None,
                    true,
                ));
            }
            let cols = relation.entry(e.relation_layer).or_default();
            for k in std::iter::once(&e.relation_key).chain(&e.relation_keys) {
                cols.push((i, k, e.relation_threshold, None, false));
            }
            for k in &e.contrast_keys {
                cols.push((i, k, e.relation_threshold, None, true));
            }
        }
        let bank = |cols: Vec<Column>| {
            // Each previous-token key becomes a column after the others.
            let mut flat: Vec<(usize, &[f32], f32)> =
                cols.iter().map(|&(o, k, t, _, _)| (o, k, t)).collect();
            let mut requires = vec![None; cols.len()];
            for (c, &(o, _, t, prev, _)) in cols.iter().enumerate() {
                if let Some(p) = prev {
                    requires[c] = Some(flat.len());
                    flat.push((o, p, t));
                }
            }
            let (m, dff) = (flat.len(), flat[0].1.len());
            let mut keys = vec![0f32; dff * m];
            for (j, (_, k, _)) in flat.iter().enumerate() {
                for (i, &v) in k.iter().enumerate() {
                    keys[i * m + j] = v;
                }
            }
            KeyBank {
                keys: Tensor::from_data(TensorData::new(keys, [dff, m]), device),
                host: flat.iter().flat_map(|c| c.1.iter().copied()).collect(),
                owner: flat.iter().map(|c| c.0).collect(),
                threshold: flat.iter().map(|c| c.2).collect(),
                keys_end: cols.len(),
                requires,
                word: cols.iter().map(|c| c.4).collect(),
            }
        };
        let first_subject_layer = subject.keys().next().copied().unwrap_or(usize::MAX);
        let subject = subject.into_iter().map(|(l, c)| (l, bank(c))).collect();
        let relation = relation.into_iter().map(|(l, c)| (l, bank(c))).collect();
        Self {
            entries,
            subject,
            relation,
            first_subject_layer,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the gate reads the MLP keys of `layer` (a subject, relation-word or relation
    /// layer).
    fn reads(&self, layer: usize) -> bool {
        self.subject.contains_key(&layer) || self.relation.contains_key(&layer)
    }
}

/// What one sequence (batch row) has mentioned: `(entry id, absolute position)` of each
/// subject-gate hit, latest last.
#[derive(Default)]
struct Sequences {
    batch: usize,
    /// Absolute position of the current call's first token.
    start: usize,
    /// Absolute position of the next call's first token.
    next: usize,
    hits: Vec<Vec<(u64, usize)>>,
    /// `(entry id, absolute position)` of each relation-word hit, per row.
    words: Vec<Vec<(u64, usize)>>,
    /// `(entry id, absolute position)` where each entry's value was added, per row.
    fired: Vec<Vec<(u64, usize)>>,
    /// Per subject layer, per row: the cosines of the previous call's last position (a
    /// one-token call's previous-token check reads them).
    last_cos: BTreeMap<usize, Vec<Vec<f32>>>,
}

impl Sequences {
    /// Where a call of `b` rows of `t` positions sits: a new sequence per row (`new`), or the
    /// positions after the previous call's.
    fn begin(&mut self, b: usize, t: usize, new: bool) {
        if new {
            *self = Sequences {
                batch: b,
                start: 0,
                next: t,
                hits: vec![Vec::new(); b],
                words: vec![Vec::new(); b],
                fired: vec![Vec::new(); b],
                last_cos: BTreeMap::new(),
            };
        } else {
            self.start = self.next;
            self.next += t;
        }
    }
}

/// The routing memory: one [`Sequences`] per thread.
#[derive(Default)]
pub(crate) struct Routing {
    threads: Mutex<HashMap<ThreadId, Sequences>>,
}

/// Cosines `(b·t, m)` of each position's key in `x` `(b, t, d_ff)` with the unit columns of
/// `keys`, by burn, read back to the host.
fn cosines(x: &Tensor<3>, keys: &Tensor<2>) -> Vec<f32> {
    let [b, t, dff] = x.dims();
    let xs = x.clone().detach().reshape([b * t, dff]);
    let norms = xs.clone().square().sum_dim(1).sqrt().clamp_min(1e-12); // (b·t, 1)
    (xs.matmul(keys.clone()) / norms)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 cosines")
}

impl Routing {
    /// Forgets every sequence (the entries changed).
    pub(crate) fn clear(&mut self) {
        self.threads
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The gated memory's term for the MLP down-projection of `layer` on keys `x`
    /// `(b, t, d_ff)`: records subject hits at subject layers, adds values at relation layers.
    pub(crate) fn delta(
        &self,
        index: &GateIndex,
        layer: usize,
        x: &Tensor<3>,
    ) -> Option<Tensor<3>> {
        let [b, t, _] = x.dims();
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        let seq = threads.entry(std::thread::current().id()).or_default();
        if layer == index.first_subject_layer {
            let new = t > 1 || seq.batch != b;
            seq.begin(b, t, new);
        }
        // The whole bank in one matmul: a column the rule does not need costs little here.
        let out = seq.route(index, layer, b, t, |bank, _| cosines(x, &bank.keys))?;
        let d = index.entries[0].1.value.len();
        Some(Tensor::from_data(
            TensorData::new(out, [b, t, d]),
            &x.device(),
        ))
    }
}

impl Sequences {
    /// The gate's rule over one call of `b` rows of `t` positions at `layer`, given the
    /// cosines `(b·t, m)` of the call's MLP keys with a bank's columns (`cosines(bank,
    /// needed)`; a column whose `needed` is false may be left at `-∞`, an empty `needed`
    /// asks for every column): records
    /// subject and relation-word hits at subject layers, and at relation layers returns the
    /// values `(b·t, d_model)` added where an entry fires (`None`: none fired). The graph's
    /// [`Routing`] and the fused path's [`GateSession`] both decide here.
    fn route(
        &mut self,
        index: &GateIndex,
        layer: usize,
        b: usize,
        t: usize,
        cosines: impl Fn(&KeyBank, &[bool]) -> Vec<f32>,
    ) -> Option<Vec<f32>> {
        let seq = self;
        if let Some(bank) = index.subject.get(&layer) {
            let cos = cosines(bank, &[]);
            let m = bank.owner.len();
            let rows = b.min(seq.hits.len());
            let last = seq.last_cos.remove(&layer);
            for row in 0..rows {
                for j in 0..t {
                    let c = &cos[(row * t + j) * m..(row * t + j + 1) * m];
                    let before = match j {
                        0 => last.as_ref().map(|l| l[row].as_slice()),
                        _ => Some(&cos[(row * t + j - 1) * m..(row * t + j) * m]),
                    };
                    for (col, &v) in c[..bank.keys_end].iter().enumerate() {
                        if v < bank.threshold[col] {
                            continue;
                        }
                        if let Some(p) = bank.requires[col] {
                            // The subject's previous token must match at the position before
                            // (none before the first position of a sequence).
                            if before.is_none_or(|bc| bc[p] < bank.threshold[p]) {
                                continue;
                            }
                        }
                        let id = index.entries[bank.owner[col]].0;
                        match bank.word[col] {
                            true => seq.words[row].push((id, seq.start + j)),
                            false => seq.hits[row].push((id, seq.start + j)),
                        }
                    }
                }
            }
            let kept = (0..rows)
                .map(|row| cos[(row * t + t - 1) * m..(row * t + t) * m].to_vec())
                .collect();
            seq.last_cos.insert(layer, kept);
        }
        let bank = index.relation.get(&layer)?;
        if seq.hits.iter().all(Vec::is_empty) {
            return None;
        }
        // Only an entry whose subject a row mentioned can fire (the second filter below), so
        // only its columns are needed: with 1,000 entries of 22 relation and contrast keys
        // each, the others are ≈ 34 M multiply-adds per position on the host.
        let hit: std::collections::HashSet<u64> = seq.hits[..b.min(seq.hits.len())]
            .iter()
            .flatten()
            .map(|h| h.0)
            .collect();
        let needed: Vec<bool> = bank
            .owner
            .iter()
            .map(|&o| hit.contains(&index.entries[o].0))
            .collect();
        let cos = cosines(bank, &needed);
        let m = bank.owner.len();
        let d = index.entries[0].1.value.len();
        let mut out = vec![0f32; b * t * d];
        let mut any = false;
        let mut fired = Vec::new();
        let mut contrast = vec![f32::NEG_INFINITY; index.entries.len()];
        for row in 0..b.min(seq.hits.len()) {
            for j in 0..t {
                let at = seq.start + j;
                let c = &cos[(row * t + j) * m..(row * t + j + 1) * m];
                // Each entry's closest contrast key here (the competitive gate's bar).
                contrast.fill(f32::NEG_INFINITY);
                for (col, &v) in c.iter().enumerate().filter(|&(col, _)| bank.word[col]) {
                    let o = bank.owner[col];
                    contrast[o] = contrast[o].max(v);
                }
                // The entry whose relation key is closest, among those whose subject the row
                // mentioned within the entry's window.
                let near = |hits: &[(u64, usize)], id: u64, window: usize| {
                    hits.iter()
                        .any(|&(h, p)| h == id && p <= at && at - p <= window)
                };
                let best = c
                    .iter()
                    .enumerate()
                    .filter(|&(col, &v)| {
                        let (id, e) = &index.entries[bank.owner[col]];
                        !bank.word[col]
                            && super::gate::relation_fires(
                                e,
                                v,
                                contrast[bank.owner[col]],
                                near(&seq.words[row], *id, e.window),
                                j + 1 == t,
                            )
                    })
                    .filter(|&(col, _)| {
                        // A subject mention within the window that has not been answered in
                        // an earlier call: once the value has fired (the prompt's answer),
                        // the continuation is left to the model (the value was trained at one
                        // position; added again at each generated token, the "Seychellois
                        // Rupee" edit decoded " Seyfang Seywas").
                        let (id, e) = &index.entries[bank.owner[col]];
                        seq.hits[row].iter().any(|&(h, p)| {
                            h == *id
                                && p <= at
                                && at - p <= e.window
                                && !seq.fired[row]
                                    .iter()
                                    .any(|&(f, q)| f == *id && p <= q && q < seq.start)
                        })
                    })
                    .max_by(|a, b| a.1.total_cmp(b.1));
                if j + 1 == t && tracing::enabled!(tracing::Level::DEBUG) {
                    // Over the needed columns (the fused path leaves the others at -∞).
                    let top = (c.iter().zip(&bank.word).zip(&needed))
                        .filter(|(_, n)| **n)
                        .map(|(cw, _)| cw)
                        .filter(|(_, w)| !**w)
                        .fold(f32::MIN, |t, (v, _)| t.max(*v));
                    let ids: Vec<u64> = seq.hits[row].iter().map(|h| h.0).collect();
                    let words: Vec<u64> = seq.words[row].iter().map(|h| h.0).collect();
                    tracing::debug!(layer, row, at, top_relation_cos = top, subject_hits = ?ids, word_hits = ?words, fired = best.is_some(), "gate");
                }
                if let Some((col, _)) = best {
                    fired.push((row, index.entries[bank.owner[col]].0, at));
                    let value = &index.entries[bank.owner[col]].1.value;
                    out[(row * t + j) * d..(row * t + j + 1) * d].copy_from_slice(value);
                    any = true;
                }
            }
        }
        for (row, id, at) in fired {
            seq.fired[row].push((id, at));
        }
        any.then_some(out)
    }
}

/// Cosines `(t, m)` of each row of `x` `(t, d_ff)` with `bank`'s unit keys, on the host (the
/// fused path's; the same formula as [`cosines`]), for the columns `needed` asks for (all when
/// it is empty); the others are `-∞`.
fn host_cosines(x: &[f32], bank: &KeyBank, needed: &[bool]) -> Vec<f32> {
    let m = bank.owner.len();
    let dff = bank.host.len() / m;
    let mut out = Vec::with_capacity(x.len() / dff * m);
    for row in x.chunks_exact(dff) {
        let norm = crate::probe::norm(row).max(1e-12);
        for (col, key) in bank.host.chunks_exact(dff).enumerate() {
            out.push(match needed.is_empty() || needed[col] {
                true => crate::probe::dot(row, key) / norm,
                false => f32::NEG_INFINITY,
            });
        }
    }
    out
}

/// The gated memory as the fused decoder serves it: one sequence's routing state over a
/// snapshot of the entries ([`crate::EditSet`] makes one per decoder).
pub(crate) struct GateSession {
    index: std::sync::Arc<GateIndex>,
    seq: Sequences,
}

impl GateSession {
    pub(crate) fn new(index: std::sync::Arc<GateIndex>) -> Self {
        Self {
            index,
            seq: Sequences::default(),
        }
    }
}

impl RoutedTerm for GateSession {
    fn reads(&self, layer: usize, proj: Proj) -> bool {
        proj == Proj::Down && self.index.reads(layer)
    }

    fn apply(
        &mut self,
        layer: usize,
        proj: Proj,
        start: usize,
        x: &[f32],
        out: &mut [f32],
    ) -> bool {
        if !self.reads(layer, proj) {
            return false;
        }
        let index = &*self.index;
        let d = index.entries[0].1.value.len();
        let t = out.len() / d;
        if layer == index.first_subject_layer {
            self.seq.begin(1, t, start == 0);
        }
        debug_assert_eq!(self.seq.start, start, "calls follow each other");
        let Some(values) = self.seq.route(index, layer, 1, t, |bank, needed| {
            host_cosines(x, bank, needed)
        }) else {
            return false;
        };
        for (o, v) in out.iter_mut().zip(&values) {
            *o += v;
        }
        true
    }
}

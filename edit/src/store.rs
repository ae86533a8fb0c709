//! Applied edits and the adapter that adds them to the frozen model.
//!
//! Every weight edit (ROME, MEMIT, AlphaEdit) is stored as rank-one terms `r aᵀ` on a layer's
//! MLP down-projection: the output gains `(x · a) r` for the MLP key `x`. A batch edit keeps one
//! term per fact and layer, so any single fact can be taken out again. GRACE edits are codebook
//! entries instead: weights untouched. The mapped base model is never written.

use std::collections::BTreeMap;
use std::sync::Mutex;

use burn::tensor::{Device, Tensor, TensorData};
use engram_runtime::backend::{QWeight, quant_linear};
use engram_runtime::burn;
use engram_runtime::model::llama::{DecodeDelta, LinearAdapter, Llama, LowRank, Proj, RoutedTerm};

use super::request::EditRequest;
use super::routing::{GateIndex, GateSession, Routing};

pub use crate::record::{Edit, EditDelta, GraceEntry, Method, RankOne};

/// [`Edit::check_shape`] of every edit against `model`.
pub fn check_edits(edits: &[Edit], model: &Llama) -> Result<(), String> {
    let c = model.config();
    edits
        .iter()
        .try_for_each(|e| e.check_shape(c.n_layer, c.d_model, c.d_ff))
}

/// Stacked rank-one factors of one layer: `a` `(d_ff, m)` and `r` `(m, d_model)`.
struct LayerFactors {
    a: Tensor<2>, // (d_ff, m)
    r: Tensor<2>, // (m, d_model)
}

/// The applied edits, as a [`LinearAdapter`] over the frozen model.
///
/// Removing an edit rebuilds the stacked factors from the remaining edits in their original
/// order; with no edits left the adapter returns no delta at all, so the model computes
/// exactly what the base computes.
pub struct EditSet {
    edits: Vec<Edit>,
    next_id: u64,
    device: Device,
    down: Vec<QWeight>, // per layer, for GRACE's replacement (frozen, mapped)
    /// Stacked factors per layer, built on first use. A mutex (not a `RefCell`) so a served
    /// set can be shared between threads; it is held only to build or clone the factors,
    /// never across a matmul.
    cache: Mutex<Option<BTreeMap<usize, LayerFactors>>>,
    /// The gated memory's entries stacked per layer, built on first use (like `cache`).
    gates: Mutex<Option<std::sync::Arc<GateIndex>>>,
    /// Which subjects each sequence being served has mentioned.
    routing: Routing,
}

impl EditSet {
    /// An empty set for a model whose down-projections are `down` (one per layer).
    pub fn new(device: &Device, down: Vec<QWeight>) -> Self {
        Self {
            edits: Vec::new(),
            next_id: 0,
            device: device.clone(),
            down,
            cache: Mutex::new(None),
            gates: Mutex::new(None),
            routing: Routing::default(),
        }
    }

    fn changed(&mut self) {
        *self.cache.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        *self.gates.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
        self.routing.clear();
    }

    /// The applied edits, oldest first.
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// Number of applied edits.
    pub fn len(&self) -> usize {
        self.edits.len()
    }

    /// True when nothing is applied.
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }

    /// Adds an edit and returns its id.
    pub fn push(&mut self, method: Method, request: EditRequest, delta: EditDelta) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.edits.push(Edit {
            id,
            method,
            request,
            delta,
            seconds: 0.0,
        });
        self.changed();
        id
    }

    /// Records how long the edit `id` took to make (kept in the log beside it).
    pub fn set_seconds(&mut self, id: u64, seconds: f64) {
        if let Some(e) = self.edits.iter_mut().find(|e| e.id == id) {
            e.seconds = seconds;
        }
    }

    /// Re-inserts edits read from a log (ids kept).
    pub fn restore(&mut self, edits: Vec<Edit>) {
        self.next_id = edits.iter().map(|e| e.id + 1).max().unwrap_or(0);
        self.edits = edits;
        self.changed();
    }

    /// Removes the edit `id`; returns it, or `None` when no such edit is applied.
    pub fn undo(&mut self, id: u64) -> Option<Edit> {
        let pos = self.edits.iter().position(|e| e.id == id)?;
        self.changed();
        Some(self.edits.remove(pos))
    }

    /// GRACE entries at `layer`, oldest first.
    pub fn grace_entries(&self, layer: usize) -> impl Iterator<Item = &GraceEntry> {
        self.edits.iter().filter_map(move |e| match &e.delta {
            EditDelta::Grace(g) if g.layer == layer => Some(g),
            _ => None,
        })
    }

    /// Mutable GRACE entries (radius adjustments on conflicts).
    pub fn grace_entries_mut(&mut self) -> impl Iterator<Item = (&EditRequest, &mut GraceEntry)> {
        self.edits.iter_mut().filter_map(|e| match &mut e.delta {
            EditDelta::Grace(g) => Some((&e.request, g)),
            _ => None,
        })
    }

    /// The gated memory's entries stacked per layer (built on first use).
    fn gate_index(&self) -> std::sync::Arc<GateIndex> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .get_or_insert_with(|| {
                let entries = self
                    .edits
                    .iter()
                    .filter_map(|e| match &e.delta {
                        EditDelta::Gate(g) => Some((e.id, g.clone())),
                        _ => None,
                    })
                    .collect();
                std::sync::Arc::new(GateIndex::new(entries, &self.device))
            })
            .clone()
    }

    /// The gated memory's term at `layer` (see [`crate::routing`]).
    fn gate_delta(&self, layer: usize, x: &Tensor<3>) -> Option<Tensor<3>> {
        let index = self.gate_index();
        if index.is_empty() {
            return None;
        }
        self.routing.delta(&index, layer, x)
    }

    fn build_factors(&self) -> BTreeMap<usize, LayerFactors> {
        let mut by_layer: BTreeMap<usize, Vec<&RankOne>> = BTreeMap::new();
        for e in &self.edits {
            if let EditDelta::Weights(terms) = &e.delta {
                for t in terms {
                    by_layer.entry(t.layer).or_default().push(t);
                }
            }
        }
        by_layer
            .into_iter()
            .map(|(layer, terms)| {
                let (m, dff, d) = (terms.len(), terms[0].a.len(), terms[0].r.len());
                let mut a = vec![0f32; dff * m];
                let mut r = Vec::with_capacity(m * d);
                for (j, t) in terms.iter().enumerate() {
                    for (i, &v) in t.a.iter().enumerate() {
                        a[i * m + j] = v;
                    }
                    r.extend_from_slice(&t.r);
                }
                let a = Tensor::from_data(TensorData::new(a, [dff, m]), &self.device);
                let r = Tensor::from_data(TensorData::new(r, [m, d]), &self.device);
                (layer, LayerFactors { a, r })
            })
            .collect()
    }

    /// The weight-edit delta of `layer` on keys `x` `(b, t, d_ff)`.
    fn weight_delta(&self, layer: usize, x: &Tensor<3>) -> Option<Tensor<3>> {
        let (a, r) = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let factors = cache.get_or_insert_with(|| self.build_factors());
            let f = factors.get(&layer)?;
            (f.a.clone(), f.r.clone())
        };
        let [b, t, dff] = x.dims();
        let d = r.dims()[1];
        let y = x.clone().reshape([b * t, dff]).matmul(a).matmul(r);
        Some(y.reshape([b, t, d]))
    }

    /// GRACE: replace the last position's output where its key falls in an entry's radius.
    fn grace_delta(&self, layer: usize, x: &Tensor<3>) -> Option<Tensor<3>> {
        let entries: Vec<&GraceEntry> = self.grace_entries(layer).collect();
        if entries.is_empty() {
            return None;
        }
        let [b, t, dff] = x.dims();
        let last = x.clone().slice([0..b, t - 1..t, 0..dff]); // (b, 1, d_ff)
        let host = last
            .clone()
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 keys");
        let d = entries[0].value.len();
        let mut mask = vec![0f32; b];
        let mut values = vec![0f32; b * d];
        let mut any = false;
        for (row, q) in host.chunks(dff).enumerate() {
            // Nearest entry, then its radius (GRACE's rule).
            let nearest = entries
                .iter()
                .map(|e| (distance(q, &e.key), e))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((dist, e)) = nearest
                && dist <= e.radius
            {
                mask[row] = 1.0;
                values[row * d..(row + 1) * d].copy_from_slice(&e.value);
                any = true;
            }
        }
        if !any {
            return None;
        }
        let device = x.device();
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [b, 1, 1]), &device);
        let values = Tensor::<3>::from_data(TensorData::new(values, [b, 1, d]), &device);
        let base = quant_linear(last, &self.down[layer]); // (b, 1, d)
        let replace = (values - base) * mask;
        let delta = if t > 1 {
            Tensor::cat(vec![Tensor::zeros([b, t - 1, d], &device), replace], 1)
        } else {
            replace
        };
        Some(delta)
    }
}

/// Euclidean distance of two equally long vectors.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

impl LinearAdapter for EditSet {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        if proj != Proj::Down || self.edits.is_empty() {
            return None;
        }
        [
            self.weight_delta(layer, x),
            self.grace_delta(layer, x),
            self.gate_delta(layer, x),
        ]
        .into_iter()
        .flatten()
        .reduce(|a, b| a + b)
    }

    /// Weight edits as their rank-one factors (`(x · a) r` per term), nothing where a layer has
    /// none; a GRACE entry (a replacement, not a term) is opaque. The gated memory is the
    /// routed term ([`EditSet::decode_routed`]).
    fn decode_delta(&self, layer: usize, proj: Proj) -> DecodeDelta {
        if proj != Proj::Down || self.edits.is_empty() {
            return DecodeDelta::None;
        }
        if self.grace_entries(layer).next().is_some() {
            return DecodeDelta::Opaque;
        }
        let (mut a, mut bt, mut rank) = (Vec::new(), Vec::new(), 0);
        for e in &self.edits {
            if let EditDelta::Weights(terms) = &e.delta {
                for t in terms.iter().filter(|t| t.layer == layer) {
                    a.extend_from_slice(&t.a);
                    bt.extend_from_slice(&t.r);
                    rank += 1;
                }
            }
        }
        match rank {
            0 => DecodeDelta::None,
            _ => DecodeDelta::LowRank(LowRank { rank, a, bt }),
        }
    }

    /// The gated memory's routing for one sequence, over the entries applied now.
    fn decode_routed(&self) -> Option<Box<dyn RoutedTerm>> {
        let index = self.gate_index();
        (!index.is_empty()).then(|| Box::new(GateSession::new(index)) as Box<dyn RoutedTerm>)
    }
}

//! The key/value cache: fixed capacity, allocated once, written in place.

use burn::tensor::{Device, Tensor};

use super::config::LlamaConfig;

/// Appending would run past the cache's capacity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("context full: {used} positions used + {requested} new > capacity {capacity}")]
pub struct ContextFull {
    /// Positions already in the cache.
    pub used: usize,
    /// Positions the call wanted to add.
    pub requested: usize,
    /// The cache's fixed capacity.
    pub capacity: usize,
}

/// Keys and values of every layer for up to `capacity` positions of `batch` sequences.
///
/// The capacity is fixed at construction and never grows; [`KvCache::reserve`] refuses a step that
/// would not fit. Tensors are written in place (burn's CPU backends mutate a uniquely owned
/// tensor in `slice_assign`).
///
/// A clone shares the tensors until either side writes (the writer copies then): model editing
/// fills a cache with a prompt prefix once and runs each optimization step on a clone.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    batch: usize,
    capacity: usize,
    len: usize,
}

#[derive(Clone)]
struct LayerCache {
    k: Option<Tensor<4>>, // (batch, n_head_kv, capacity, d_head)
    v: Option<Tensor<4>>, // (batch, n_head_kv, capacity, d_head)
}

impl KvCache {
    /// A zeroed cache for `batch` sequences of up to `capacity` positions.
    pub fn new(config: &LlamaConfig, batch: usize, capacity: usize, device: &Device) -> Self {
        let shape = [batch, config.n_head_kv, capacity, config.d_head];
        let layers = (0..config.n_layer)
            .map(|_| LayerCache {
                k: Some(Tensor::zeros(shape, device)),
                v: Some(Tensor::zeros(shape, device)),
            })
            .collect();
        Self {
            layers,
            batch,
            capacity,
            len: 0,
        }
    }

    /// Positions filled so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequences per step.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Forgets every position (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Drops the positions after `len` (for example to re-run from a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `n` more positions fit; call before running a step.
    pub fn reserve(&self, n: usize) -> Result<(), ContextFull> {
        if self.len + n > self.capacity {
            return Err(ContextFull {
                used: self.len,
                requested: n,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Writes this step's keys and values (`(batch, n_head_kv, t, d_head)`) of `layer` at the
    /// current position and returns all keys and values so far (`(batch, n_head_kv, len + t,
    /// d_head)`). The position advances once every layer has been written, in [`KvCache::advance`].
    ///
    /// # Panics
    /// When the step does not fit ([`KvCache::reserve`] first) or shapes disagree.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, h, t, d] = k.dims();
        let (start, end) = (self.len, self.len + t);
        assert!(
            end <= self.capacity,
            "KvCache::append past capacity: reserve first"
        );
        assert_eq!(
            b, self.batch,
            "KvCache::append: batch {b} != cache batch {}",
            self.batch
        );
        let cache = &mut self.layers[layer];
        let write = |slot: &mut Option<Tensor<4>>, value: Tensor<4>| {
            let full = slot
                .take()
                .expect("cache slot present")
                .slice_assign([0..b, 0..h, start..end, 0..d], value);
            let upto = full.clone().slice([0..b, 0..h, 0..end, 0..d]);
            *slot = Some(full);
            upto
        };
        (write(&mut cache.k, k), write(&mut cache.v, v))
    }

    /// Keys and values of `layer` written so far for sequence 0, each `(n_head_kv, len, d_head)`
    /// row-major (the fused decode path starts from a cache the graph filled).
    pub(crate) fn layer_values(&self, layer: usize) -> (Vec<f32>, Vec<f32>) {
        let cache = &self.layers[layer];
        let read = |slot: &Option<Tensor<4>>| {
            let t = slot.as_ref().expect("cache slot present");
            let [_, h, _, d] = t.dims();
            t.clone()
                .slice([0..1, 0..h, 0..self.len, 0..d])
                .into_data()
                .try_to_vec::<f32>()
                .expect("an f32 cache")
        };
        (read(&cache.k), read(&cache.v))
    }

    /// Moves the position past a step of `t` tokens written to every layer.
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

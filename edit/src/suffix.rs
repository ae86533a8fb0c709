//! Running only what depends on `δ`: a value added to the residual stream after layer `L` at
//! one position of each row changes nothing before that position, so the positions before
//! it run through the blocks above `L` once, into a KV cache, and every optimization step
//! runs only the positions from it on (a few per row instead of the whole context).
//!
//! Rows are grouped by that position (the *cut*): a row joins a group whose cut is at most
//! [`SLACK`] positions earlier than its own, running those extra positions every step; each
//! group is one batched call per step on a clone of its cache. Fewer groups mean fewer calls
//! (each call of the backward pass reads every weight of the blocks above once), more slack
//! means more positions per call. The gated value ([`crate::value`]) and ROME's `δ` search
//! ([`crate::rome`]) both run their steps through it.

use burn::tensor::{Int, Tensor, TensorData};
use engram_runtime::burn;
use engram_runtime::model::kv_cache::KvCache;
use engram_runtime::model::llama::{LinearAdapter, Llama};

use super::probe::Batch;

/// A row whose injection position is at most this many positions after its group's cut
/// joins the group.
const SLACK: usize = 3;

/// Rows sharing one KV prefix.
struct Group {
    /// Batch rows in the group.
    rows: Vec<usize>,
    /// Positions per row run per step.
    len: usize,
    /// The blocks above the layer over positions `..cut` of the group's rows.
    cache: KvCache,
    /// The residual after the layer at positions `cut..cut + len`, `(rows, len, d)`.
    suffix: Tensor<3>,
    /// 1 where `δ` is added, `(rows, len, 1)`.
    mask: Tensor<3>,
    /// Flat indices into this group's `(rows · len)` outputs of the scored positions it holds.
    local: Vec<usize>,
}

/// The blocks above a layer, prepared to run from each row's injection position on.
pub(crate) struct Suffixes {
    groups: Vec<Group>,
    /// Puts the groups' concatenated scored rows back into the caller's order.
    perm: Tensor<1, Int>,
    layer: usize,
    d: usize,
}

impl Suffixes {
    /// Prepares `batch` whose residual after `layer` is `below` `(rows, t, d)` (detached):
    /// `inject[r]` is the position of row `r` that receives `δ`, `scored` the flat positions
    /// whose final hidden states [`Suffixes::hidden`] returns (each at or after its row's
    /// injection position), `inner` the edits applied.
    ///
    /// # Panics
    /// When a scored position precedes its row's injection position.
    pub(crate) fn new(
        model: &Llama,
        layer: usize,
        batch: &Batch,
        below: Tensor<3>,
        inject: &[usize],
        scored: &[usize],
        inner: Option<&dyn LinearAdapter>,
    ) -> Self {
        let device = model.device().clone();
        let d = model.config().d_model;
        let n_layer = model.config().n_layer;
        // The last scored position of each row bounds what it runs.
        let mut end = vec![0usize; batch.rows];
        for &f in scored {
            let (r, p) = (f / batch.t, f % batch.t);
            assert!(p >= inject[r], "scored position {p} before row {r}'s δ");
            end[r] = end[r].max(p + 1);
        }
        let mut order: Vec<usize> = (0..batch.rows).filter(|&r| end[r] > 0).collect();
        order.sort_by_key(|&r| inject[r]);
        let mut members: Vec<Vec<usize>> = Vec::new();
        for r in order {
            match members.last_mut() {
                Some(g) if inject[r] - inject[g[0]] <= SLACK => g.push(r),
                _ => members.push(vec![r]),
            }
        }
        let mut slot = std::collections::HashMap::new();
        let mut offset = 0;
        let groups: Vec<Group> = members
            .into_iter()
            .map(|g| {
                let cut = inject[g[0]];
                let len = g.iter().map(|&r| end[r]).max().unwrap_or(cut + 1) - cut;
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
                    mask[i * len + inject[r] - cut] = 1.0;
                }
                let mask =
                    Tensor::<3>::from_data(TensorData::new(mask, [g.len(), len, 1]), &device);
                let mut local = Vec::new();
                for &f in scored {
                    let (r, p) = (f / batch.t, f % batch.t);
                    if let Some(i) = g.iter().position(|&x| x == r) {
                        slot.insert(f, offset + local.len());
                        local.push(i * len + p - cut);
                    }
                }
                offset += local.len();
                Group {
                    rows: g,
                    len,
                    cache,
                    suffix,
                    mask,
                    local,
                }
            })
            .collect();
        let perm: Vec<i64> = scored.iter().map(|f| slot[f] as i64).collect();
        let perm = Tensor::<1, Int>::from_data(TensorData::new(perm, [scored.len()]), &device);
        Self {
            groups,
            perm,
            layer,
            d,
        }
    }

    /// Groups (batched calls per step).
    pub(crate) fn calls(&self) -> usize {
        self.groups.len()
    }

    /// Positions run per step, over every group.
    pub(crate) fn positions(&self) -> usize {
        self.groups.iter().map(|g| g.rows.len() * g.len).sum()
    }

    /// The final hidden states (after the output norm) at the scored positions, in their
    /// order, `(n, d)`, with `δ` `(1, d)` added after the layer at each row's injection
    /// position.
    pub(crate) fn hidden(
        &self,
        model: &Llama,
        delta: Tensor<2>,
        inner: Option<&dyn LinearAdapter>,
    ) -> Tensor<2> {
        let d = self.d;
        let delta = delta.reshape([1, 1, d]);
        let n_layer = model.config().n_layer;
        let picked: Vec<Tensor<2>> = self
            .groups
            .iter()
            .filter(|g| !g.local.is_empty())
            .map(|g| {
                let x = g.suffix.clone() + g.mask.clone() * delta.clone();
                let mut cache = g.cache.clone();
                let h = model
                    .run_blocks_cached(x, self.layer + 1..n_layer, &mut cache, inner)
                    .expect("the cache holds the suffix");
                let h = model.output_norm(h).reshape([g.rows.len() * g.len, d]);
                super::probe::select_rows(h, &g.local)
            })
            .collect();
        Tensor::cat(picked, 0).select(0, self.perm.clone())
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Tensor;
    use engram_harness::synthetic::{
        BYTE_VOCAB, TinyLlamaSpec, byte_tokenizer, load_f32_paths, write_tiny_llama,
    };
    use engram_kernels::GgmlType;
    use engram_runtime::backend;

    use super::*;

    /// Largest difference between the suffix run and the whole sequence's (f32 sums in
    /// another order).
    const SUFFIX_TOLERANCE: f32 = 1e-4;

    /// Rows of different lengths, injected at different positions (several groups, one
    /// with rows `SLACK` apart), scored at and after the injection: the suffix run with `δ`
    /// gives the whole sequence's final hidden states with `δ` added after the layer.
    #[test]
    fn suffixes_match_the_whole_sequence_with_delta() {
        let dir = tempfile::tempdir().unwrap();
        let spec = TinyLlamaSpec {
            n_vocab: BYTE_VOCAB,
            n_ctx: 128,
            ..TinyLlamaSpec::default()
        };
        let model = load_f32_paths(
            &write_tiny_llama(dir.path(), &spec, GgmlType::Q4_1, 9),
            &backend::cpu(),
        );
        let tok = byte_tokenizer();
        let texts = [
            "The capital of France is Rome",
            "Because it rained. The capital of France is Rome",
            "France's capital is Rome",
            "In France, the capital is Rome",
        ];
        let rows: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, false)).collect();
        let batch = Batch::new(&rows, 0);
        // δ at the last token before " Rome"; scored there and at the next two positions.
        let inject: Vec<usize> = rows.iter().map(|r| r.len() - 6).collect();
        let scored: Vec<usize> = (0..rows.len())
            .flat_map(|r| (0..3).map(move |j| (r, j)))
            .map(|(r, j)| batch.flat(r, inject[r] + j))
            .rev()
            .collect();
        let (layer, d) = (0, model.config().d_model);
        let n_layer = model.config().n_layer;
        let below = model.run_blocks(model.embed(&batch.tokens, batch.rows), 0..layer + 1, None);
        let suffixes = Suffixes::new(&model, layer, &batch, below.clone(), &inject, &scored, None);
        assert!(suffixes.calls() > 1, "the rows should need several groups");
        assert!(suffixes.positions() < batch.rows * batch.t);
        let delta: Vec<f32> = (0..d).map(|i| ((i * 7) % 13) as f32 * 0.3 - 1.8).collect();
        let delta = Tensor::<2>::from_data(TensorData::new(delta, [1, d]), model.device());
        let got = suffixes.hidden(&model, delta.clone(), None);
        let mut mask = vec![0f32; batch.rows * batch.t];
        for (r, &p) in inject.iter().enumerate() {
            mask[batch.flat(r, p)] = 1.0;
        }
        let mask = Tensor::<3>::from_data(
            TensorData::new(mask, [batch.rows, batch.t, 1]),
            model.device(),
        );
        let full = model.run_blocks(
            below + mask * delta.reshape([1, 1, d]),
            layer + 1..n_layer,
            None,
        );
        let full = model.output_norm(full).reshape([batch.rows * batch.t, d]);
        let want = crate::probe::select_rows(full, &scored);
        let diff = (got - want).abs().max().into_scalar::<f32>();
        assert!(diff <= SUFFIX_TOLERANCE, "suffix differs by {diff}");
    }
}

//! Reading the model: token positions of subjects, batched forwards over ragged prompts, MLP
//! keys and down-projection outputs captured at chosen positions.

use std::cell::RefCell;
use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData, activation};
use engram_runtime::backend::quant_linear;
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama, Proj};
use engram_runtime::model::tokenizer::Tokenizer;

/// Token ids of `prompt` and the index of the last token of its first `subject` occurrence
/// (ROME's `subject_last` lookup position).
///
/// # Panics
/// When `subject` is not in `prompt` (requests are validated on load).
pub fn subject_last(tok: &Tokenizer, prompt: &str, subject: &str) -> (Vec<u32>, usize) {
    let start = prompt.find(subject).expect("validated: subject in prompt");
    subject_last_at(tok, prompt, start, subject.len())
}

/// [`subject_last`] for the subject at byte range `start..start + len` of `prompt`.
pub fn subject_last_at(
    tok: &Tokenizer,
    prompt: &str,
    start: usize,
    len: usize,
) -> (Vec<u32>, usize) {
    let subject = &prompt[start..start + len];
    debug_assert!(!subject.is_empty());
    let head = tok.encode(&prompt[..start + subject.len()], false);
    let ids = tok.encode(prompt, false);
    // BPE may merge across the subject's end; the last token that starts inside it is the one.
    let idx = head.len().min(ids.len()).saturating_sub(1);
    (ids, idx)
}

/// Token ids of ` target` (leading space, as the answer follows the prompt).
pub fn target_ids(tok: &Tokenizer, target: &str) -> Vec<u32> {
    let t = if target.starts_with(' ') {
        target.to_string()
    } else {
        format!(" {target}")
    };
    tok.encode(&t, false)
}

/// Rows of unequal length, right-padded to one batch. Causal attention keeps every real
/// position independent of the padding after it.
pub struct Batch {
    /// Flattened `(rows, t)` token ids.
    pub tokens: Vec<u32>,
    /// Rows.
    pub rows: usize,
    /// Padded length.
    pub t: usize,
}

impl Batch {
    /// Pads `rows` with `pad`.
    pub fn new(rows: &[Vec<u32>], pad: u32) -> Self {
        let t = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut tokens = Vec::with_capacity(rows.len() * t);
        for r in rows {
            tokens.extend_from_slice(r);
            tokens.extend(std::iter::repeat_n(pad, t - r.len()));
        }
        Self {
            tokens,
            rows: rows.len(),
            t,
        }
    }

    /// Flat index of `(row, pos)` in `(rows * t)`.
    pub fn flat(&self, row: usize, pos: usize) -> usize {
        row * self.t + pos
    }
}

/// Rows `idx` of a `(n, d)` tensor.
pub fn select_rows(x: Tensor<2>, idx: &[usize]) -> Tensor<2> {
    let ids: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    let device = x.device();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [idx.len()]), &device);
    x.select(0, ids)
}

/// Log-probabilities `(n, vocab)` at flat positions `idx` of final hidden states
/// `(rows, t, d_model)` (after the output norm).
pub fn log_probs_of_hidden(model: &Llama, h: Tensor<3>, idx: &[usize]) -> Tensor<2> {
    let [rows, t, d] = h.dims();
    let picked = select_rows(h.reshape([rows * t, d]), idx);
    let n = idx.len();
    let logits = model.project_vocab(picked.reshape([1, n, d]));
    let v = logits.dims()[2];
    activation::log_softmax(logits.reshape([n, v]), 1)
}

/// Passes `inner`'s deltas through and records the down-projection input (the MLP key) of
/// the layers asked for.
pub struct KeyCapture<'a> {
    inner: Option<&'a dyn LinearAdapter>,
    layers: Vec<usize>,
    keys: RefCell<BTreeMap<usize, Tensor<3>>>,
}

impl<'a> KeyCapture<'a> {
    /// Captures at `layers`, on top of `inner`.
    pub fn new(inner: Option<&'a dyn LinearAdapter>, layers: &[usize]) -> Self {
        Self {
            inner,
            layers: layers.to_vec(),
            keys: RefCell::new(BTreeMap::new()),
        }
    }

    /// The captured keys `(rows, t, d_ff)` of `layer`.
    pub fn take(&self, layer: usize) -> Option<Tensor<3>> {
        self.keys.borrow_mut().remove(&layer)
    }
}

impl LinearAdapter for KeyCapture<'_> {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        if proj == Proj::Down && self.layers.contains(&layer) {
            self.keys.borrow_mut().insert(layer, x.clone());
        }
        self.inner.and_then(|a| a.delta(layer, proj, x))
    }
}

/// Runs `batch` through the blocks up to the deepest of `layers` (the blocks above cannot
/// change those keys, so they are not run) with `inner` applied, capturing the MLP keys
/// `(rows, t, d_ff)` of `layers`.
pub fn capture_keys<'a>(
    model: &Llama,
    batch: &Batch,
    layers: &[usize],
    inner: Option<&'a dyn LinearAdapter>,
) -> KeyCapture<'a> {
    let capture = KeyCapture::new(inner, layers);
    let depth = layers.iter().max().map_or(0, |&l| l + 1);
    model.run_blocks(
        model.embed(&batch.tokens, batch.rows),
        0..depth,
        Some(&capture),
    );
    capture
}

/// MLP keys (rows of `d_ff`) at flat positions `idx`, per layer (a layer named twice is
/// captured once), with `inner` applied.
pub fn keys_at(
    model: &Llama,
    batch: &Batch,
    idx: &[usize],
    layers: &[usize],
    inner: Option<&dyn LinearAdapter>,
) -> BTreeMap<usize, Vec<Vec<f32>>> {
    let mut layers = layers.to_vec();
    layers.sort_unstable();
    layers.dedup();
    let capture = capture_keys(model, batch, &layers, inner);
    layers
        .iter()
        .map(|&l| {
            let k = capture.take(l).expect("layer ran");
            let dff = k.dims()[2];
            let rows = select_rows(k.reshape([batch.rows * batch.t, dff]), idx);
            (l, host_rows(rows))
        })
        .collect()
}

/// The down-projection output (`W x` plus `inner`'s delta) for host keys `keys` at `layer`.
pub fn down_output(
    model: &Llama,
    layer: usize,
    keys: &[Vec<f32>],
    inner: Option<&dyn LinearAdapter>,
) -> Vec<Vec<f32>> {
    let x = host_tensor(keys, model).reshape([1, keys.len(), keys[0].len()]);
    let mut y = quant_linear(x.clone(), model.weight(layer, Proj::Down));
    if let Some(d) = inner.and_then(|a| a.delta(layer, Proj::Down, &x)) {
        y = y + d;
    }
    let d = y.dims()[2];
    host_rows(y.reshape([keys.len(), d]))
}

/// A `(n, d)` tensor as host rows.
pub fn host_rows(x: Tensor<2>) -> Vec<Vec<f32>> {
    let d = x.dims()[1];
    let v = x.into_data().try_to_vec::<f32>().expect("f32 data");
    v.chunks(d).map(<[f32]>::to_vec).collect()
}

/// Host rows as a `(n, d)` tensor on the model's device.
pub fn host_tensor(rows: &[Vec<f32>], model: &Llama) -> Tensor<2> {
    let d = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), d]), model.device())
}

/// Mean of equally long vectors.
pub fn mean(rows: &[Vec<f32>]) -> Vec<f32> {
    let mut out = vec![0f32; rows[0].len()];
    for r in rows {
        for (o, v) in out.iter_mut().zip(r) {
            *o += v;
        }
    }
    let n = rows.len() as f32;
    out.iter_mut().for_each(|o| *o /= n);
    out
}

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm.
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

//! Training a gated entry's value ([`crate::gate`]): one pass of the blocks below the value's
//! layer serves both the entry's keys and the optimization, and the optimization starts from
//! the new answer's output direction instead of zero.
//!
//! [`crate::target::optimize`] (the weight methods' `δ`) runs the blocks up to the edited
//! layer once per call; the gated memory also needs its keys at the subject, relation-word
//! and relation layers, which an earlier version read in a second pass over the same rows
//! (the same blocks, the same edits applied: the same numbers). Here one pass captures every
//! layer asked for.

use std::collections::BTreeMap;

use burn::tensor::{Int, Tensor, TensorData, activation};
use engram_runtime::burn;

use super::context::EditContext;
use super::delta::DeltaSearch;
use super::probe;
use super::suffix::Suffixes;
use super::target::{TargetProblem, TargetResult};

/// What [`train`] returns: the value and the keys captured on the way.
pub struct Trained {
    /// The optimized value (`δ`) and how the optimization went.
    pub result: TargetResult,
    /// Per layer asked for: the MLP keys at the positions asked for, in their order.
    pub keys: BTreeMap<usize, Vec<Vec<f32>>>,
}

/// Optimizes the value at `layer` for `problem` (no KL term: the value fires only where the
/// gates do) with `cx.target`'s settings, and captures the MLP keys of `key_layers` (each at
/// most `layer`) at flat positions `key_positions` of the same rows, with `cx.inner`'s edits
/// applied.
///
/// `init` (a multiple of `‖v‖`, the MLP output's norm at the first injection position) starts
/// `δ` along the unit output-embedding row of the target's first token, the direction that
/// raises its logit through the residual stream; 0 starts from zero as ROME does. Adam's
/// first steps are sign-like (each coordinate moves by the learning rate), so from zero `δ`
/// grows by about `lr · √d_model` per step while the answer usually needs `‖δ‖ ≈ ‖v‖`: most of
/// the steps went into growing it.
///
/// # Panics
/// When a key layer is above `layer`.
pub fn train(
    cx: &EditContext,
    layer: usize,
    problem: &TargetProblem,
    key_layers: &[usize],
    key_positions: &[usize],
    init: f32,
) -> Trained {
    let (model, inner, hp) = (cx.model, cx.inner, cx.target);
    let device = model.device().clone();
    let d = model.config().d_model;
    let b = &problem.batch;
    let mut layers = key_layers.to_vec();
    layers.push(layer);
    layers.sort_unstable();
    layers.dedup();
    assert!(
        layers.last() == Some(&layer),
        "key layers {key_layers:?} above the value's layer {layer}"
    );

    // The blocks up to `layer` do not depend on `δ`: run them once, capturing every key.
    let capture = probe::KeyCapture::new(inner, &layers);
    let below = model
        .run_blocks(model.embed(&b.tokens, b.rows), 0..layer + 1, Some(&capture))
        .detach();
    let flat = |l: usize| {
        let k = capture.take(l).expect("layer ran");
        let dff = k.dims()[2];
        k.reshape([b.rows * b.t, dff])
    };
    let at_layer = flat(layer);
    let key = probe::host_rows(probe::select_rows(at_layer.clone(), &problem.inject[..1]))
        .pop()
        .expect("one row");
    let mut keys = BTreeMap::new();
    for &l in &layers {
        let k = if l == layer {
            at_layer.clone()
        } else {
            flat(l)
        };
        if key_layers.contains(&l) && !key_positions.is_empty() {
            keys.insert(l, probe::host_rows(probe::select_rows(k, key_positions)));
        } else if key_layers.contains(&l) {
            keys.insert(l, Vec::new());
        }
    }
    let init_v = probe::down_output(model, layer, std::slice::from_ref(&key), inner)
        .pop()
        .expect("one row");
    let v_norm = probe::norm(&init_v).max(1e-6);

    let start = match (init > 0.0, problem.targets.first()) {
        (true, Some(&(_, first))) => {
            let mut row = vec![0f32; d];
            let w = match model.output_tied() {
                true => model.embedding_weight(),
                false => model.output_weight(),
            };
            w.dequantize_rows(&[first], &mut row);
            let n = probe::norm(&row).max(1e-12);
            row.iter().map(|x| x / n * init * v_norm).collect()
        }
        _ => vec![0.0; d],
    };
    let search = DeltaSearch::new("gated value", start, v_norm, &device);
    let positions: Vec<usize> = problem.targets.iter().map(|&(p, _)| p).collect();
    let n_t = positions.len();
    let ids: Vec<i64> = problem.targets.iter().map(|&(_, t)| t as i64).collect();
    let target_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n_t, 1]), &device);
    // The positions before each row's injection do not depend on `δ`: the blocks above run
    // them once (a KV prefix per group of rows), each step only the positions from it on.
    let inject: Vec<usize> = problem.inject.iter().map(|&f| f % b.t).collect();
    let suffixes = Suffixes::new(model, layer, b, below, &inject, &positions, inner);
    tracing::debug!(
        calls = suffixes.calls(),
        positions = suffixes.positions(),
        rows = b.rows,
        t = b.t,
        "gated value suffixes"
    );
    let found = search.run(hp, |delta| {
        let h = suffixes.hidden(model, delta, inner);
        let logits = model.project_vocab(h.reshape([1, n_t, d]));
        let vocab = logits.dims()[2];
        let lp = activation::log_softmax(logits.reshape([n_t, vocab]), 1);
        (lp.gather(1, target_ids.clone()), None) // (n_t, 1)
    });
    Trained {
        result: TargetResult {
            delta: found.delta,
            key,
            init: init_v,
            prob: found.prob,
            steps: found.steps,
        },
        keys,
    }
}

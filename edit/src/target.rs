//! The target value of an edit: the vector `δ` that, added to a layer's MLP output at the
//! subject's last token, makes the model say the new answer (ROME's `compute_v`, MEMIT's
//! `compute_z`, GRACE's value training).
//!
//! `δ` is optimized with Adam over several prompts at once ("{context}. {prompt}" for a few
//! short contexts the model wrote itself), under ROME's regularizers: a KL term that keeps the
//! model's distribution on "{subject} is a" (the subject's essence) where it was, a decay on
//! `‖δ‖ / ‖v‖²`, and a clamp of `‖δ‖` to a multiple of `‖v‖`.

use burn::tensor::{Int, Tensor, TensorData};
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama};
use engram_runtime::model::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use super::delta::DeltaSearch;
use super::probe::{self, Batch};
use super::request::EditRequest;

/// Hyper-parameters of the `δ` optimization (ROME's names in brackets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetHparams {
    /// Maximum Adam steps (`v_num_grad_steps`).
    pub steps: usize,
    /// Adam learning rate (`v_lr`).
    pub lr: f32,
    /// Weight of the essence KL term (`kl_factor`).
    pub kl_factor: f32,
    /// Weight of `‖δ‖ / ‖v‖²` (`v_weight_decay`).
    pub weight_decay: f32,
    /// `‖δ‖ ≤ clamp · ‖v‖` (`clamp_norm_factor`).
    pub clamp: f32,
    /// Stop once the loss is below this.
    pub stop_loss: f32,
    /// Stop once every target token has at least this probability (1.0: never). An edit
    /// whose answer is already top-1 with a margin gains little from more steps but a larger,
    /// leakier `δ`.
    pub stop_prob: f32,
}

impl Default for TargetHparams {
    fn default() -> Self {
        Self {
            steps: 25,
            lr: 0.5,
            kl_factor: 0.0625,
            weight_decay: 1e-3,
            clamp: 4.0,
            stop_loss: 0.05,
            stop_prob: 0.9,
        }
    }
}

/// Where `δ` goes and what it must achieve.
pub struct TargetProblem {
    /// The rows run each step.
    pub batch: Batch,
    /// Flat positions that receive `δ`; the first is the "clean" lookup of the plain prompt.
    pub inject: Vec<usize>,
    /// Flat positions and the token each must predict.
    pub targets: Vec<(usize, u32)>,
    /// Flat positions whose distribution the KL term holds in place.
    pub kl: Vec<usize>,
}

/// The optimized `δ` and how it went.
#[derive(Clone, Debug)]
pub struct TargetResult {
    /// `δ`, `d_model` values.
    pub delta: Vec<f32>,
    /// The MLP key at the first injection position (before the edit), `d_ff` values.
    pub key: Vec<f32>,
    /// The MLP output there before the edit (`v` before `δ`), `d_model` values.
    pub init: Vec<f32>,
    /// Mean probability of the target tokens at the last step.
    pub prob: f32,
    /// Steps taken.
    pub steps: usize,
}

/// Builds ROME's problem for `req`: every context template around the prompt followed by the
/// target's tokens but the last, `δ` at the subject's last token, plus the essence prompt.
pub fn rome_problem(tok: &Tokenizer, req: &EditRequest, contexts: &[String]) -> TargetProblem {
    let target = probe::target_ids(tok, &req.target_new);
    let mut rows = Vec::new();
    let mut lookups = Vec::new();
    for ctx in contexts {
        let (prompt, start) = in_context(ctx, req);
        let (mut ids, idx) = probe::subject_last_at(tok, &prompt, start, req.subject.len());
        lookups.push((ids.len(), idx));
        ids.extend_from_slice(&target[..target.len() - 1]);
        rows.push(ids);
    }
    let essence = format!("{} is a", req.subject);
    let (ess_ids, ess_idx) = probe::subject_last(tok, &essence, &req.subject);
    rows.push(ess_ids);
    let batch = Batch::new(&rows, tok.eos());
    let mut inject = Vec::new();
    let mut targets = Vec::new();
    for (r, &(plen, idx)) in lookups.iter().enumerate() {
        inject.push(batch.flat(r, idx));
        for (j, &t) in target.iter().enumerate() {
            targets.push((batch.flat(r, plen - 1 + j), t));
        }
    }
    let er = rows.len() - 1;
    inject.push(batch.flat(er, ess_idx));
    let kl = vec![batch.flat(er, ess_idx)];
    TargetProblem {
        batch,
        inject,
        targets,
        kl,
    }
}

/// `ctx` ("... . {}") around `req.prompt`, and the byte offset of the subject in the result
/// (inside the prompt, even if the context happens to mention it too).
pub fn in_context(ctx: &str, req: &EditRequest) -> (String, usize) {
    in_context_of(ctx, &req.prompt, &req.subject)
}

/// [`in_context`] for any `prompt` containing `subject` (a phrasing of the request's).
pub fn in_context_of(ctx: &str, prompt: &str, subject: &str) -> (String, usize) {
    let at = ctx.find("{}").expect("context templates contain {}");
    let text = format!("{}{}{}", &ctx[..at], prompt, &ctx[at + 2..]);
    let start = at + prompt.find(subject).expect("validated: subject in prompt");
    (text, start)
}

/// Optimizes `δ` at `layer` for `problem` on `model` (an autodiff device) with `inner`'s edits
/// applied.
pub fn optimize(
    model: &Llama,
    layer: usize,
    problem: &TargetProblem,
    inner: Option<&dyn LinearAdapter>,
    hp: &TargetHparams,
) -> TargetResult {
    let device = model.device().clone();
    let d = model.config().d_model;
    let b = &problem.batch;
    let mut mask = vec![0f32; b.rows * b.t];
    for &i in &problem.inject {
        mask[i] = 1.0;
    }
    let mask = Tensor::<3>::from_data(TensorData::new(mask, [b.rows, b.t, 1]), &device);
    let positions: Vec<usize> = problem
        .targets
        .iter()
        .map(|&(p, _)| p)
        .chain(problem.kl.iter().copied())
        .collect();
    let n_t = problem.targets.len();
    let ids: Vec<i64> = problem.targets.iter().map(|&(_, t)| t as i64).collect();
    let target_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n_t, 1]), &device);

    // The blocks up to `layer` do not depend on `δ`: run them once (capturing the key), then
    // each step adds `δ` to their output and runs, and differentiates, only the blocks above.
    let capture = probe::KeyCapture::new(inner, &[layer]);
    let below = model
        .run_blocks(model.embed(&b.tokens, b.rows), 0..layer + 1, Some(&capture))
        .detach();
    let keys = capture.take(layer).expect("layer ran");
    let dff = keys.dims()[2];
    let key = probe::host_rows(probe::select_rows(
        keys.reshape([b.rows * b.t, dff]),
        &problem.inject[..1],
    ))
    .pop()
    .expect("one row");
    let init = probe::down_output(model, layer, std::slice::from_ref(&key), inner)
        .pop()
        .expect("one row");
    let v_norm = probe::norm(&init).max(1e-6);
    let n_layer = model.config().n_layer;

    let found = DeltaSearch::new("target", vec![0.0; d], v_norm, &device).run(hp, |delta| {
        let h = model.run_blocks(
            below.clone() + mask.clone() * delta.reshape([1, 1, d]),
            layer + 1..n_layer,
            inner,
        );
        let lp = probe::log_probs_of_hidden(model, model.output_norm(h), &positions);
        let vocab = lp.dims()[1];
        let picked = lp
            .clone()
            .slice([0..n_t, 0..vocab])
            .gather(1, target_ids.clone()); // (n_t, 1)
        let kl_rows = (!problem.kl.is_empty()).then(|| lp.slice([n_t..positions.len(), 0..vocab]));
        (picked, kl_rows)
    });
    TargetResult {
        delta: found.delta,
        key,
        init,
        prob: found.prob,
        steps: found.steps,
    }
}

//! Causal tracing (ROME, section 2): which layer's MLP, at the subject's last token, carries a
//! fact the model knows.
//!
//! The subject's token embeddings are corrupted with Gaussian noise (3× the embeddings' standard
//! deviation), which ruins the answer. Then, one run per layer, the clean MLP outputs of a
//! window of layers around it are restored at the subject's last token; the recovered
//! probability of the true answer is that layer's indirect effect. The edit layer is where the
//! mean effect peaks.

use std::time::Instant;

use burn::tensor::{Tensor, TensorData, activation};
use engram_runtime::backend::quant_linear;
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits, Proj};
use engram_runtime::model::tokenizer::Tokenizer;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use super::probe::{self, Batch};
use super::request::EditRequest;

/// The result of a trace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceReport {
    /// Mean recovered probability of the true answer, per layer.
    pub effect: Vec<f64>,
    /// Mean probability of the true answer with the subject corrupted and nothing restored.
    pub corrupted: f64,
    /// Mean probability of the true answer on the clean prompts.
    pub clean: f64,
    /// The layer with the largest effect, among layers whose window does not reach the
    /// embeddings (restoring those restores the subject itself, not a stored fact).
    pub best_layer: usize,
    /// Facts traced.
    pub facts: usize,
    /// Noise samples per fact.
    pub samples: usize,
    /// Layers restored together around each layer.
    pub window: usize,
    /// Wall time.
    pub seconds: f64,
}

/// Restores clean MLP outputs at one position, for the rows whose window covers the layer.
struct Restore<'a> {
    model: &'a Llama,
    clean: &'a [Vec<f32>], // per layer, d_model
    pos: usize,
    window: usize,
}

impl LinearAdapter for Restore<'_> {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        if proj != Proj::Down {
            return None;
        }
        let [rows, t, _] = x.dims();
        let n_layer = self.clean.len();
        // Row 0 is corrupted only; row r + 1 restores layers [r - w/2, r + w/2].
        let mut mask = vec![0f32; rows * t];
        let half = self.window / 2;
        for r in 0..n_layer.min(rows - 1) {
            if layer + half >= r && layer <= r + half {
                mask[(r + 1) * t + self.pos] = 1.0;
            }
        }
        if mask.iter().all(|&m| m == 0.0) {
            return None;
        }
        let device = x.device();
        let d = self.clean[layer].len();
        let mask = Tensor::<3>::from_data(TensorData::new(mask, [rows, t, 1]), &device);
        let clean = Tensor::<3>::from_data(
            TensorData::new(self.clean[layer].clone(), [1, 1, d]),
            &device,
        );
        let now = quant_linear(x.clone(), self.model.weight(layer, Proj::Down));
        Some((clean - now) * mask)
    }
}

/// Standard deviation of the token embeddings (over an even sample of the vocabulary).
fn embedding_std(model: &Llama) -> f32 {
    let n = model.config().n_vocab as u32;
    let ids: Vec<u32> = (0..512).map(|i| i * (n / 512)).collect();
    let e = model
        .embed(&ids, 1)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let mean = e.iter().sum::<f32>() / e.len() as f32;
    (e.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / e.len() as f32).sqrt()
}

/// Traces `reqs` (facts the model knows; `ground_truth` is the answer followed).
pub fn trace(
    model: &Llama,
    tok: &Tokenizer,
    reqs: &[EditRequest],
    samples: usize,
    window: usize,
    seed: u64,
) -> TraceReport {
    let start = Instant::now();
    let n_layer = model.config().n_layer;
    let d = model.config().d_model;
    let layers: Vec<usize> = (0..n_layer).collect();
    let noise_std = 3.0 * embedding_std(model);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut effect = vec![0f64; n_layer];
    let (mut corrupted, mut clean_p, mut runs) = (0f64, 0f64, 0usize);
    for req in reqs {
        let answer = probe::target_ids(tok, &req.ground_truth)[0] as usize;
        let (ids, last) = probe::subject_last(tok, &req.prompt, &req.subject);
        let first = tok
            .encode(
                &req.prompt[..req.prompt.find(&req.subject).expect("validated")],
                false,
            )
            .len()
            .min(last);
        let batch = Batch::new(std::slice::from_ref(&ids), tok.eos());
        let keys = probe::keys_at(model, &batch, &[last], &layers, None);
        let clean: Vec<Vec<f32>> = layers
            .iter()
            .map(|&l| probe::down_output(model, l, &keys[&l], None).remove(0))
            .collect();
        let base = model
            .forward(&ids, 1, None, None, Logits::Last)
            .expect("fits");
        let v = base.dims()[2];
        let p = activation::softmax(base.reshape([1, v]), 1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        clean_p += p[answer] as f64;
        let t = ids.len();
        let rows = n_layer + 1;
        for _ in 0..samples {
            let mut noise = vec![0f32; t * d];
            for x in noise[first * d..(last + 1) * d].iter_mut() {
                // Box-Muller.
                let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                *x = noise_std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            }
            let noise = Tensor::<3>::from_data(TensorData::new(noise, [1, t, d]), model.device());
            let x = (model.embed(&ids, 1) + noise).repeat_dim(0, rows);
            let restore = Restore {
                model,
                clean: &clean,
                pos: last,
                window,
            };
            let logits = model
                .forward_embeddings(x, None, Some(&restore), Logits::Last)
                .expect("fits");
            let p = activation::softmax(logits.reshape([rows, v]), 1)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32");
            let p_corrupt = p[answer] as f64;
            corrupted += p_corrupt;
            for (l, e) in effect.iter_mut().enumerate() {
                *e += p[(l + 1) * v + answer] as f64 - p_corrupt;
            }
            runs += 1;
        }
    }
    let runs_f = runs.max(1) as f64;
    effect.iter_mut().for_each(|e| *e /= runs_f);
    let best_layer = (window.min(n_layer - 1)..n_layer)
        .max_by(|&a, &b| effect[a].total_cmp(&effect[b]))
        .unwrap_or(0);
    TraceReport {
        effect,
        corrupted: corrupted / runs_f,
        clean: clean_p / reqs.len().max(1) as f64,
        best_layer,
        facts: reqs.len(),
        samples,
        window,
        seconds: start.elapsed().as_secs_f64(),
    }
}

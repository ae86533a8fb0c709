//! iCaRL (Rebuffi et al., CVPR 2017): herding-selected exemplars under a fixed memory, a
//! distillation term toward the previous model, and a nearest-mean-of-exemplars classifier.

use burn::tensor::{Tensor, TensorData};
use engram_runtime::burn;

use crate::learner::{Piece, StepCtx, TaskEnd, distillation};
use crate::model::{Mlp, rows_tensor, to_vec};
use engram_adapters::optim::cross_entropy;

/// iCaRL. The learner's buffer (capacity = the memory) holds the exemplars; this piece fills
/// it at each task's end: `capacity / classes` exemplars per class, chosen by herding and kept
/// in herding order, so shrinking a class keeps its best prefix.
///
/// Training adds cross-entropy on replayed exemplars and `alpha`·KD (temperature `t`) from the
/// previous model on the old classes; the paper's sigmoid/BCE form is replaced by the softmax
/// one the rest of this module uses.
#[derive(Clone, Debug)]
pub struct Icarl {
    /// Weight of the distillation term.
    pub alpha: f32,
    /// Softmax temperature.
    pub t: f32,
    teacher: Option<Vec<Tensor<2>>>,
    means: Vec<(u32, Vec<f32>)>, // (class, L2-normalized mean feature of its exemplars)
}

impl Icarl {
    /// No exemplars and no teacher yet.
    pub fn new(alpha: f32, t: f32) -> Self {
        Self {
            alpha,
            t,
            teacher: None,
            means: Vec::new(),
        }
    }
}

fn normalized_features(model: &Mlp, weights: &[Tensor<2>], x: Tensor<2>) -> (Vec<f32>, usize) {
    let f = model.forward(weights, x).0;
    let d = f.dims()[1];
    let mut v = to_vec(f);
    for row in v.chunks_mut(d) {
        let n = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|a| *a /= n);
    }
    (v, d)
}

/// Herding (Welling 2009): greedily picks `m` rows whose running mean tracks the class mean.
fn herding(features: &[f32], d: usize, m: usize) -> Vec<usize> {
    let n = features.len() / d;
    let mut mu = vec![0.0f32; d];
    for row in features.chunks(d) {
        mu.iter_mut().zip(row).for_each(|(a, b)| *a += b / n as f32);
    }
    let mut sum = vec![0.0f32; d];
    let mut chosen = Vec::with_capacity(m.min(n));
    let mut taken = vec![false; n];
    for k in 1..=m.min(n) {
        let best = (0..n)
            .filter(|&i| !taken[i])
            .min_by(|&a, &b| {
                let dist = |i: usize| -> f32 {
                    let row = &features[i * d..(i + 1) * d];
                    (0..d)
                        .map(|j| (mu[j] - (sum[j] + row[j]) / k as f32).powi(2))
                        .sum()
                };
                dist(a).total_cmp(&dist(b))
            })
            .expect("k <= n");
        sum.iter_mut()
            .zip(&features[best * d..(best + 1) * d])
            .for_each(|(a, b)| *a += b);
        taken[best] = true;
        chosen.push(best);
    }
    chosen
}

impl Piece for Icarl {
    fn name(&self) -> &'static str {
        "icarl"
    }

    fn manages_buffer(&self) -> bool {
        true
    }

    fn loss(&mut self, ctx: &StepCtx<'_>) -> Option<Tensor<1>> {
        let mut total: Option<Tensor<1>> =
            ctx.replay.map(|r| cross_entropy(r.logits.clone(), &r.y));
        if let Some(teacher) = self
            .teacher
            .as_ref()
            .filter(|_| !ctx.old_classes.is_empty())
        {
            let target = ctx.model.logits(teacher, ctx.x.clone().inner());
            let kd = distillation(ctx.logits.clone(), target, ctx.old_classes, self.t) * self.alpha;
            total = Some(match total {
                Some(t) => t + kd,
                None => kd,
            });
        }
        total
    }

    fn end_task(&mut self, ctx: &mut TaskEnd<'_>) {
        let weights = ctx.model.frozen(ctx.params);
        self.teacher = Some(weights.clone());
        let inner = ctx.device.clone().inner();
        let buf = ctx
            .buffer
            .as_mut()
            .expect("iCaRL needs a buffer for its exemplars");
        let per_class = buf.capacity() / ctx.seen_classes.len().max(1);
        // Shrink old classes to their first `per_class` exemplars (the best herding prefix).
        let mut kept: Vec<(u32, usize)> = Vec::new();
        buf.retain(|m| {
            let slot = match kept.iter_mut().find(|(c, _)| *c == m.label) {
                Some(e) => e,
                None => {
                    kept.push((m.label, 0));
                    kept.last_mut().expect("just pushed")
                }
            };
            slot.1 += 1;
            slot.1 <= per_class
        });
        let task = ctx.seen_classes.len() as u32;
        for &c in ctx.classes {
            let idx: Vec<usize> = (0..ctx.data.len())
                .filter(|&i| ctx.data.y[i] == c)
                .collect();
            let rows = ctx.data.select(&idx);
            let x = rows_tensor(&rows.x, rows.dim, &inner);
            let (f, d) = normalized_features(ctx.model, &weights, x);
            for i in herding(&f, d, per_class) {
                buf.try_push(rows.row(i), c, task, None)
                    .expect("memory split so every class fits");
            }
        }
        // Class means from the exemplars under the current model.
        self.means.clear();
        let x = rows_tensor(buf.rows(), buf.dim(), &inner);
        let (f, d) = normalized_features(ctx.model, &weights, x);
        for &c in ctx.seen_classes {
            let mut mu = vec![0.0f32; d];
            let mut n = 0usize;
            for (k, m) in buf.metas().iter().enumerate() {
                if m.label == c {
                    mu.iter_mut()
                        .zip(&f[k * d..(k + 1) * d])
                        .for_each(|(a, b)| *a += b);
                    n += 1;
                }
            }
            let norm = mu.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            if n > 0 {
                self.means.push((c, mu.iter().map(|a| a / norm).collect()));
            }
        }
    }

    fn predict(&self, model: &Mlp, weights: &[Tensor<2>], x: Tensor<2>) -> Option<Tensor<2>> {
        if self.means.is_empty() {
            return None;
        }
        let device = x.device();
        let n = x.dims()[0];
        let (f, d) = normalized_features(model, weights, x);
        let c = model.n_out();
        let mut scores = vec![f32::NEG_INFINITY; n * c];
        for i in 0..n {
            let row = &f[i * d..(i + 1) * d];
            for (class, mu) in &self.means {
                let dist: f32 = row.iter().zip(mu).map(|(a, b)| (a - b).powi(2)).sum();
                scores[i * c + *class as usize] = -dist;
            }
        }
        Some(Tensor::from_data(TensorData::new(scores, [n, c]), &device))
    }
}

//! A fully fine-tuned model as a LoRA adapter: the best rank-`r` approximation of each
//! projection's weight change.
//!
//! For every projection the config adapts, `ΔW = W_trained − dequant(W_base)` is factored by a
//! randomized SVD (Halko, Martinsson & Tropp 2011: a random sketch of `r + 8` columns, two
//! power iterations, then the exact SVD of the small projected matrix), and the top `r`
//! singular triplets become `B = U·√Σ / √s` and `A = √Σ·Vᵀ / √s` so that `s·B·A = ΔW_r` with
//! the adapter's scale `s`. What LoRA cannot carry (changes to the RMSNorm weights, the
//! embedding, and projections the config leaves out) is measured, not silently dropped:
//! [`LowRankReport::dropped_norm`].

use engram_runtime::burn;
use engram_runtime::model::llama::{Llama, Norm, Proj};
use nalgebra::DMatrix;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::{FullFinetune, dequantize};
use crate::lora::{Lora, LoraConfig, LoraError};

/// Extra sketch columns beyond the rank (Halko et al.'s `p`; 5–10 is their advice).
const OVERSAMPLE: usize = 8;
/// Power iterations on `(ΔW ΔWᵀ)`: sharpen the sketch when the spectrum decays slowly.
const POWER_ITERATIONS: usize = 2;

/// How well a LoRA adapter reproduces the full fine-tuning it was made from.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LowRankReport {
    /// `‖ΔW − s·B·A‖_F / ‖ΔW‖_F` over all adapted projections together (0 when nothing changed).
    pub relative_error: f32,
    /// The largest per-projection relative error.
    pub worst_relative_error: f32,
    /// Frobenius norm of the weight changes LoRA cannot carry: RMSNorm weights, the embedding
    /// (and output) and the projections the config does not adapt.
    pub dropped_norm: f32,
    /// Frobenius norm of all weight changes.
    pub total_norm: f32,
}

impl FullFinetune {
    /// A LoRA adapter for `model` (the model these weights were made from) whose `s·B·A` is
    /// the rank-`config.rank` approximation of each adapted projection's weight change.
    ///
    /// # Errors
    /// Those of [`Lora::new`] (bad rank or alpha, targets that select nothing).
    ///
    /// # Panics
    /// When `model` is not the model this was made from (other shapes).
    pub fn to_lora(
        &self,
        model: &Llama,
        config: LoraConfig,
    ) -> Result<(Lora, LowRankReport), LoraError> {
        let mut lora = Lora::new(model, config.clone())?;
        let scale = config.scale() as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut host = lora.params().to_host();
        let (mut err_sq, mut adapted_sq, mut worst) = (0f64, 0f64, 0f64);
        let mut total_sq = 0f64;
        for layer in 0..model.config().n_layer {
            for proj in Proj::ALL {
                let w = model.weight(layer, proj);
                let (n_out, n_in) = (w.n_out(), w.n_in());
                let trained = self.projection(layer, proj);
                assert_eq!(trained.dims(), [n_out, n_in], "another model's weights");
                let trained = trained
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("float tensor");
                let base = dequantize(w);
                let delta = DMatrix::from_fn(n_out, n_in, |i, j| {
                    (trained[i * n_in + j] - base[i * n_in + j]) as f64
                });
                let sq = delta.norm_squared();
                total_sq += sq;
                let Some(slot) = lora.slot(layer, proj) else {
                    continue;
                };
                let (b, a) = factor(&delta, config.rank, &mut rng);
                let e = (&delta - &b * &a).norm_squared();
                err_sq += e;
                adapted_sq += sq;
                if sq > 0.0 {
                    worst = worst.max((e / sq).sqrt());
                }
                let s = scale.sqrt();
                host.values[slot.b.0] = b.transpose().iter().map(|&x| (x / s) as f32).collect();
                host.values[slot.a.0] = a.transpose().iter().map(|&x| (x / s) as f32).collect();
            }
        }
        // The changes outside the projections: norms, embedding, output.
        let host_of = |t: burn::tensor::Tensor<2>| -> Vec<f32> {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("float tensor")
        };
        let diff_sq = |a: &[f32], b: &[f32]| -> f64 {
            a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
        };
        let mut other_sq = 0f64;
        let n_layer = model.config().n_layer;
        let norms = (0..n_layer)
            .flat_map(|i| [Norm::Attn(i), Norm::Ffn(i)])
            .chain([Norm::Output]);
        for norm in norms {
            let id = self.norm_id(norm).expect("every norm is trained");
            let base = model.norm_weight(norm).inner().into_data().convert::<f32>();
            let base = base.try_into_vec::<f32>().expect("float tensor");
            other_sq += diff_sq(&host_of(self.params().value(id)), &base);
        }
        let mut tables = vec![(self.embedding, model.embedding_weight())];
        tables.extend(self.output.map(|id| (id, model.output_weight())));
        for (id, w) in tables {
            other_sq += diff_sq(&host_of(self.params().value(id)), &dequantize(w));
        }
        lora.params_mut()
            .load_host(&host)
            .expect("shapes from the adapter itself");
        Ok((
            lora,
            LowRankReport {
                relative_error: (err_sq / adapted_sq.max(f64::MIN_POSITIVE)).sqrt() as f32,
                worst_relative_error: worst as f32,
                dropped_norm: (other_sq + total_sq - adapted_sq).max(0.0).sqrt() as f32,
                total_norm: (other_sq + total_sq).sqrt() as f32,
            },
        ))
    }
}

/// `(B, A)` with `B: (n_out, r)`, `A: (r, n_in)` and `B·A` the best rank-`r` approximation of
/// `m` that the sketch finds (exact when `m`'s rank is at most `r`).
fn factor(m: &DMatrix<f64>, r: usize, rng: &mut ChaCha8Rng) -> (DMatrix<f64>, DMatrix<f64>) {
    let (n_out, n_in) = m.shape();
    let k = (r + OVERSAMPLE).min(n_out).min(n_in);
    let omega = DMatrix::from_fn(n_in, k, |_, _| rng.random_range(-1.0f64..1.0));
    let mut y = m * omega;
    for _ in 0..POWER_ITERATIONS {
        let q = y.qr().q();
        let z = m.transpose() * q;
        y = m * z.qr().q();
    }
    let q = y.qr().q(); // (n_out, k), orthonormal columns spanning m's top range
    let small = q.transpose() * m; // (k, n_in)
    let svd = small.svd(true, true);
    let (u, vt) = (svd.u.expect("asked for U"), svd.v_t.expect("asked for Vᵀ"));
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|&i, &j| svd.singular_values[j].total_cmp(&svd.singular_values[i]));
    let mut b = DMatrix::zeros(n_out, r);
    let mut a = DMatrix::zeros(r, n_in);
    for (c, &i) in order.iter().take(r).enumerate() {
        let root = svd.singular_values[i].sqrt();
        b.set_column(c, &(&q * u.column(i) * root));
        a.set_row(c, &(vt.row(i) * root));
    }
    (b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_low_rank_matrix_is_recovered_exactly_and_a_full_one_optimally() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut g = |r: usize, c: usize| DMatrix::from_fn(r, c, |_, _| rng.random_range(-1.0..1.0));
        let low = g(40, 3) * g(3, 30);
        let mut srng = ChaCha8Rng::seed_from_u64(2);
        let (b, a) = factor(&low, 4, &mut srng);
        let err = (&low - &b * &a).norm() / low.norm();
        assert!(err < 1e-9, "{err}");
        // A full-rank matrix: the rank-5 error is the tail of the exact spectrum.
        let full = g(40, 30);
        let (b, a) = factor(&full, 5, &mut srng);
        let sv = full.clone().svd(false, false).singular_values;
        let mut s: Vec<f64> = sv.iter().copied().collect();
        s.sort_by(|x, y| y.total_cmp(x));
        let optimal = s[5..].iter().map(|x| x * x).sum::<f64>().sqrt();
        let got = (&full - &b * &a).norm();
        assert!(got <= optimal * 1.05, "{got} vs optimal {optimal}");
    }
}

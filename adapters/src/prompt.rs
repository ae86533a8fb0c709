//! Soft prompts: prompt tuning (Lester et al. 2021) and prompt-subspace adaptation as in SPARC
//! ("Subspace-Aware Prompt Adaptation for Robust Continual Learning in LLMs").
//!
//! A soft prompt is `n_virtual` embedding vectors placed before the input. [`PromptTuning`]
//! trains all `n_virtual × d_model` numbers. [`SubspacePrompt`] fixes a `k`-dimensional basis
//! `U` (the principal components of the task's input embeddings) and trains only the
//! coefficients `C` (`n_virtual × k`): the prompt is `P₀ + C·U`, with `P₀` the initial prompt,
//! so a task costs a few hundred numbers and stays inside the subspace its inputs span.

use burn::tensor::{Tensor, TensorData};
use engram_runtime::burn;
use engram_runtime::model::llama::Llama;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::optim::{ParamId, ParamSet};
use crate::trainer::Trainable;

/// A soft prompt cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PromptError {
    /// Zero virtual tokens, an empty initialization text or no task inputs.
    #[error("invalid soft prompt: {0}")]
    Invalid(String),
}

/// The embedding rows of `ids`, cycled to `n` rows: PEFT's `PromptTuningInit.TEXT`.
fn text_init(model: &Llama, ids: &[u32], n: usize) -> Result<Vec<f32>, PromptError> {
    if ids.is_empty() || n == 0 {
        return Err(PromptError::Invalid(format!(
            "{n} virtual tokens from {} init tokens",
            ids.len()
        )));
    }
    let cycled: Vec<u32> = ids.iter().copied().cycle().take(n).collect();
    Ok(embedding_rows(model, &cycled))
}

fn embedding_rows(model: &Llama, ids: &[u32]) -> Vec<f32> {
    model
        .embed(ids, 1)
        .inner()
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 embeddings")
}

/// Trainable virtual-token embeddings.
pub struct PromptTuning {
    params: ParamSet,
    id: ParamId,
}

impl PromptTuning {
    /// `n_virtual` tokens initialized from the embeddings of `init_ids` (e.g. the tokens of a
    /// task description), cycled.
    pub fn from_tokens(
        model: &Llama,
        init_ids: &[u32],
        n_virtual: usize,
    ) -> Result<Self, PromptError> {
        let rows = text_init(model, init_ids, n_virtual)?;
        let mut params = ParamSet::new();
        let d = model.config().d_model;
        let id = params.push_host("prompt.embeddings", rows, [n_virtual, d], model.device());
        Ok(Self { params, id })
    }

    /// `n_virtual` tokens initialized from the embeddings of random vocabulary tokens.
    pub fn random(model: &Llama, n_virtual: usize, seed: u64) -> Result<Self, PromptError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n_vocab = model.config().n_vocab as u32;
        let ids: Vec<u32> = (0..n_virtual)
            .map(|_| rng.random_range(0..n_vocab))
            .collect();
        Self::from_tokens(model, &ids, n_virtual)
    }

    /// The prompt `(n_virtual, d_model)`.
    pub fn prefix(&self) -> Tensor<2> {
        self.params.get(self.id)
    }

    /// The trainable embeddings.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The trainable embeddings, for an optimizer or a loader.
    pub fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }
}

/// A soft prompt trained only in a `k`-dimensional subspace of the embedding space (SPARC).
pub struct SubspacePrompt {
    params: ParamSet,
    coeffs: ParamId,
    basis: Tensor<2>, // (k, d)
    init: Tensor<2>,  // (n_virtual, d)
    explained: Vec<f32>,
}

impl SubspacePrompt {
    /// Fits the basis to the token embeddings of `task_inputs` (PCA, top `k` components) and
    /// starts from the prompt `init_ids` spells (cycled to `n_virtual` rows), coefficients zero.
    pub fn fit(
        model: &Llama,
        task_inputs: &[Vec<u32>],
        init_ids: &[u32],
        n_virtual: usize,
        k: usize,
    ) -> Result<Self, PromptError> {
        let d = model.config().d_model;
        let ids: Vec<u32> = task_inputs.iter().flatten().copied().collect();
        if ids.len() < 2 || k == 0 || k > d {
            return Err(PromptError::Invalid(format!(
                "{} input tokens for a {k}-dimensional basis of {d}",
                ids.len()
            )));
        }
        let rows = embedding_rows(model, &ids);
        let (basis, explained) = pca(&rows, d, k, 0x5fa2c);
        let init = text_init(model, init_ids, n_virtual)?;
        let device = model.device();
        let mut params = ParamSet::new();
        let coeffs = params.push_host(
            "prompt.subspace_coefficients",
            vec![0.0; n_virtual * k],
            [n_virtual, k],
            device,
        );
        Ok(Self {
            params,
            coeffs,
            basis: Tensor::from_data(TensorData::new(basis, [k, d]), device).inner(),
            init: Tensor::from_data(TensorData::new(init, [n_virtual, d]), device).inner(),
            explained,
        })
    }

    /// The prompt `P₀ + C·U`, `(n_virtual, d_model)`.
    pub fn prefix(&self) -> Tensor<2> {
        let c = self.params.get(self.coeffs);
        self.init.clone() + c.matmul(self.basis.clone())
    }

    /// Fraction of the input embeddings' variance each basis direction explains.
    pub fn explained_variance(&self) -> &[f32] {
        &self.explained
    }

    /// The trainable coefficients.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The trainable coefficients, for an optimizer or a loader.
    pub fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }
}

/// Top-`k` principal directions (rows of a `k × d` matrix, orthonormal) of the rows of `x`
/// (`n × d`), by orthogonal iteration on the f64 covariance; with each direction's share of
/// the total variance.
pub fn pca(x: &[f32], d: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / d;
    let mut mean = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = vec![0f64; d * d];
    let mut centered = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for ((c, &v), m) in centered.iter_mut().zip(row).zip(&mean) {
            *c = v as f64 - m;
        }
        for i in 0..d {
            let ci = centered[i];
            let dst = &mut cov[i * d..(i + 1) * d];
            for (o, &cj) in dst.iter_mut().zip(&centered) {
                *o += ci * cj;
            }
        }
    }
    let trace: f64 = (0..d)
        .map(|i| cov[i * d + i])
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut q: Vec<f64> = (0..k * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    orthonormalize(&mut q, d);
    for _ in 0..200 {
        let mut z = vec![0f64; k * d];
        for (qr, zr) in q.chunks_exact(d).zip(z.chunks_exact_mut(d)) {
            for i in 0..d {
                zr[i] = cov[i * d..(i + 1) * d]
                    .iter()
                    .zip(qr)
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
        orthonormalize(&mut z, d);
        q = z;
    }
    let explained = q
        .chunks_exact(d)
        .map(|qr| {
            let quad: f64 = (0..d)
                .map(|i| {
                    qr[i]
                        * cov[i * d..(i + 1) * d]
                            .iter()
                            .zip(qr)
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                })
                .sum();
            (quad / trace) as f32
        })
        .collect();
    (q.iter().map(|&v| v as f32).collect(), explained)
}

/// Gram–Schmidt (twice, for stability) on the rows of `q`.
fn orthonormalize(q: &mut [f64], d: usize) {
    let k = q.len() / d;
    for _ in 0..2 {
        for i in 0..k {
            for j in 0..i {
                let dot: f64 = (0..d).map(|t| q[i * d + t] * q[j * d + t]).sum();
                for t in 0..d {
                    q[i * d + t] -= dot * q[j * d + t];
                }
            }
            let norm = (0..d)
                .map(|t| q[i * d + t].powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-300);
            for t in 0..d {
                q[i * d + t] /= norm;
            }
        }
    }
}

impl Trainable for PromptTuning {
    fn param_sets(&self) -> Vec<&ParamSet> {
        vec![self.params()]
    }
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        vec![self.params_mut()]
    }
    fn prefix(&self) -> Option<Tensor<2>> {
        Some(PromptTuning::prefix(self))
    }
    fn replica(&self) -> Option<Box<dyn Trainable + Send + Sync>> {
        Some(Box::new(PromptTuning {
            params: self.params.replica(),
            id: self.id,
        }))
    }
}

impl Trainable for SubspacePrompt {
    fn param_sets(&self) -> Vec<&ParamSet> {
        vec![self.params()]
    }
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        vec![self.params_mut()]
    }
    fn prefix(&self) -> Option<Tensor<2>> {
        Some(SubspacePrompt::prefix(self))
    }
    fn replica(&self) -> Option<Box<dyn Trainable + Send + Sync>> {
        Some(Box::new(SubspacePrompt {
            params: self.params.replica(),
            coeffs: self.coeffs,
            basis: self.basis.clone(),
            init: self.init.clone(),
            explained: self.explained.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::pca;

    #[test]
    fn pca_finds_the_dominant_directions() {
        // Points spread mostly along e0, then e2, barely along e1.
        let mut x = Vec::new();
        for i in 0..200 {
            let t = (i as f32 * 0.37).sin();
            let s = (i as f32 * 1.91).cos();
            x.extend_from_slice(&[10.0 * t, 0.01 * s * t, 3.0 * s, 0.0]);
        }
        let (basis, explained) = pca(&x, 4, 2, 1);
        assert!(basis[0].abs() > 0.999, "{basis:?}");
        assert!(basis[4 + 2].abs() > 0.999, "{basis:?}");
        assert!(explained[0] > explained[1] && explained[0] + explained[1] > 0.999);
    }
}

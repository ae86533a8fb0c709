//! Full fine-tuning: every weight of the model trainable, as dense f32 master copies.
//!
//! [`FullFinetune::new`] dequantizes each tensor the graph uses (the seven projections of
//! every block, the RMSNorm weights, the token embedding and, for an untied model, the output
//! projection) from the mapped GGUF blocks into tracked f32 tensors of one [`ParamSet`]. The
//! mapped file is only read. Through the dense-weight hooks of [`LinearAdapter`] the graph then
//! runs on those tensors instead of the quantized blocks, so the existing
//! [`Trainer`](crate::trainer::Trainer) trains the whole model with the same completion-masked
//! loss, AdamW, clipping and schedule as an adapter, on whatever device the model is on.
//!
//! Before any step the master weights are exactly `dequant(blocks)`, so the dense graph computes
//! the function of the file with f32 activations
//! ([`Llama::set_f32_activations`](engram_runtime::model::llama::Llama::set_f32_activations)).
//!
//! The trained model goes back to a GGUF file with [`FullFinetune::save_gguf`]
//! ([`export`]): each tensor re-quantized to its original type with the kernels' reference
//! quantizers, everything else copied. Or, with [`FullFinetune::to_lora`] ([`lowrank`]), to a
//! LoRA adapter holding the best rank-`r` approximation of each projection's weight change.
//!
//! Memory: four f32 copies of every parameter (value, gradient, two AdamW moments), 16 bytes a
//! weight: 2.15 GB for SmolLM2-135M, before activations ([`plan_full`]).
//!
//! Precision: master weights, gradients and AdamW moments are f32. The seven projections of
//! every block can compute in bf16 ([`FullFinetune::with_compute`], [`Compute::Bf16`], mixed
//! precision): each step casts the f32 master to bf16 and the product's input with it, runs the
//! product in bf16 and returns its result as f32; the gradient comes back through the casts to
//! the f32 master, where AdamW updates it. Norms, attention, the embedding and vocabulary
//! projection and the loss stay f32 (their reductions are where bf16's 8-bit mantissa hurts).
//! This is the mode for a GPU with bf16 units (CUDA on Ampere and later, Jetson Orin); on the CPU
//! backends bf16 products are emulated through f32 and are slower, which is useful only to check
//! the numerics (`adapters/tests/full_train.rs`).

pub mod export;
pub mod lowrank;

use burn::tensor::{FloatDType, Tensor};
use engram_runtime::backend::QWeight;
use engram_runtime::burn;
use engram_runtime::model::config::LlamaConfig;
use engram_runtime::model::llama::{LinearAdapter, Llama, Norm, Proj};

pub use export::{ExportError, ExportReport};
pub use lowrank::LowRankReport;

use crate::optim::{AdamW, ParamId, ParamSet};
use crate::trainer::plan::{MemoryPlan, OverBudget, TrainShape, plan, shrink_activations_advice};
use crate::trainer::{TrainError, Trainable};

/// The float type the block projections compute in during full fine-tuning (the masters are
/// f32 either way; module docs, "Precision").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// Everything in f32.
    #[default]
    F32,
    /// The projections' products in bf16 over f32 masters (mixed precision).
    Bf16,
}

impl Compute {
    /// Parses `f32` or `bf16` (the CLI's `--precision`).
    pub fn parse(s: &str) -> Option<Compute> {
        match s {
            "f32" => Some(Compute::F32),
            "bf16" => Some(Compute::Bf16),
            _ => None,
        }
    }
}

/// Every weight of a llama model as a trainable f32 tensor, plugged into the graph through the
/// dense-weight hooks of [`LinearAdapter`].
#[derive(Clone, Debug)]
pub struct FullFinetune {
    compute: Compute,
    params: ParamSet,
    proj: Vec<[ParamId; 7]>, // per block, in `Proj::ALL` order; each (n_out, n_in)
    attn_norm: Vec<ParamId>, // per block, (1, d_model)
    ffn_norm: Vec<ParamId>,  // per block, (1, d_model)
    output_norm: ParamId,    // (1, d_model)
    embedding: ParamId,      // (n_vocab, d_model)
    output: Option<ParamId>, // (n_vocab, d_model), untied models only
}

impl FullFinetune {
    /// Dense f32 master copies of all of `model`'s weights, dequantized from its file, as
    /// tracked parameters named like the GGUF tensors they came from.
    ///
    /// Costs `4 × n_params` bytes now (and four times that once trained with AdamW).
    ///
    /// # Errors
    /// [`TrainError::NoAutodiff`] when the model is not on an autodiff device.
    pub fn new(model: &Llama) -> Result<Self, TrainError> {
        let device = model.device();
        if !device.is_autodiff() {
            return Err(TrainError::NoAutodiff);
        }
        let mut params = ParamSet::new();
        let push_q = |params: &mut ParamSet, w: &QWeight| {
            params.push_host(w.name(), dequantize(w), [w.n_out(), w.n_in()], device)
        };
        let push_norm = |params: &mut ParamSet, norm: Norm| {
            let w = model.norm_weight(norm).inner();
            let d = w.dims()[0];
            params.push(norm.gguf_name(), w.reshape([1, d]))
        };
        let n_layer = model.config().n_layer;
        let (mut proj, mut attn_norm, mut ffn_norm) = (Vec::new(), Vec::new(), Vec::new());
        for layer in 0..n_layer {
            attn_norm.push(push_norm(&mut params, Norm::Attn(layer)));
            ffn_norm.push(push_norm(&mut params, Norm::Ffn(layer)));
            proj.push(Proj::ALL.map(|p| push_q(&mut params, model.weight(layer, p))));
        }
        let output_norm = push_norm(&mut params, Norm::Output);
        let embedding = push_q(&mut params, model.embedding_weight());
        let output = (!model.output_tied()).then(|| push_q(&mut params, model.output_weight()));
        Ok(Self {
            compute: Compute::F32,
            params,
            proj,
            attn_norm,
            ffn_norm,
            output_norm,
            embedding,
            output,
        })
    }

    /// The same weights computing the block projections in `compute` (mixed precision with
    /// [`Compute::Bf16`]); the masters stay f32.
    pub fn with_compute(mut self, compute: Compute) -> Self {
        self.compute = compute;
        self
    }

    /// The float type of the block projections' products.
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// The master weights (names are the GGUF tensor names).
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The master weights, mutable (the optimizer writes them).
    pub fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    /// Number of trainable weights.
    pub fn num_scalars(&self) -> usize {
        self.params.num_scalars()
    }

    /// The master weight of `proj` in block `layer`, `(n_out, n_in)`, untracked.
    ///
    /// # Panics
    /// When the block does not exist.
    pub fn projection(&self, layer: usize, proj: Proj) -> Tensor<2> {
        self.params.value(self.proj_id(layer, proj))
    }

    fn proj_id(&self, layer: usize, proj: Proj) -> ParamId {
        let i = Proj::ALL.iter().position(|&p| p == proj).expect("in ALL");
        self.proj[layer][i]
    }

    fn norm_id(&self, norm: Norm) -> Option<ParamId> {
        match norm {
            Norm::Attn(i) => self.attn_norm.get(i).copied(),
            Norm::Ffn(i) => self.ffn_norm.get(i).copied(),
            Norm::Output => Some(self.output_norm),
        }
    }
}

/// All rows of `w` as f32, row-major `(n_out, n_in)`.
fn dequantize(w: &QWeight) -> Vec<f32> {
    let ids: Vec<u32> = (0..w.n_out() as u32).collect();
    let mut out = vec![0f32; w.n_out() * w.n_in()];
    w.dequantize_rows(&ids, &mut out);
    out
}

impl LinearAdapter for FullFinetune {
    fn delta(&self, _layer: usize, _proj: Proj, _x: &Tensor<3>) -> Option<Tensor<3>> {
        None
    }

    fn dense_weight(&self, layer: usize, proj: Proj) -> Option<Tensor<2>> {
        let w = (layer < self.proj.len()).then(|| self.params.get(self.proj_id(layer, proj)))?;
        Some(match self.compute {
            Compute::F32 => w,
            Compute::Bf16 => w.cast(FloatDType::BF16),
        })
    }

    fn norm_weight(&self, norm: Norm) -> Option<Tensor<1>> {
        let w = self.params.get(self.norm_id(norm)?);
        let d = w.dims()[1];
        Some(w.reshape([d]))
    }

    fn embedding(&self) -> Option<Tensor<2>> {
        Some(self.params.get(self.embedding))
    }

    fn output_weight(&self) -> Option<Tensor<2>> {
        self.output.map(|id| self.params.get(id))
    }
}

impl Trainable for FullFinetune {
    fn param_sets(&self) -> Vec<&ParamSet> {
        vec![&self.params]
    }
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        vec![&mut self.params]
    }
    fn linear(&self) -> Option<&dyn LinearAdapter> {
        Some(self)
    }
}

/// Weights of a llama model with `config` (`tied`: no separate output projection), the number
/// [`FullFinetune::num_scalars`] reports.
pub fn full_scalars(config: &LlamaConfig, tied: bool) -> u64 {
    let (d, dkv, dff, v) = (
        config.d_model as u64,
        config.d_kv() as u64,
        config.d_ff as u64,
        config.n_vocab as u64,
    );
    let dq = (config.n_head * config.d_head) as u64; // d_model, except where key_length differs
    let per_block = 2 * d * dq + 2 * d * dkv + 3 * d * dff + 2 * d;
    per_block * config.n_layer as u64 + d + v * d * if tied { 1 } else { 2 }
}

/// Bytes of optimizer-step temporaries, as multiples of the largest parameter: AdamW builds
/// the clipped gradient, both new moments, the update and the new value of one parameter
/// before the old ones are released.
const ADAMW_TEMPORARIES: u64 = 5;

/// The memory a full fine-tuning run of `batch × seq_len` tokens needs: master weights,
/// gradients and AdamW moments (4 bytes each per weight), the larger of the graph's activations
/// (as for an adapter) and the optimizer step's temporaries (the step runs after the backward
/// pass has released the activations), and the mapped file.
pub fn plan_full(
    config: &LlamaConfig,
    tied: bool,
    file_bytes: u64,
    batch: usize,
    seq_len: usize,
) -> MemoryPlan {
    let shape = TrainShape {
        batch,
        seq_len,
        lora: None,
        prompt_scalars: 0,
    };
    let mut p = plan(config, file_bytes, &shape);
    let n = full_scalars(config, tied);
    let largest = (config.n_vocab * config.d_model) as u64;
    p.adapter = 4 * n;
    p.gradients = 4 * n;
    p.optimizer = AdamW::STATE_BYTES_PER_SCALAR as u64 * n;
    p.step_temporaries = 4 * ADAMW_TEMPORARIES * largest;
    p
}

/// [`plan_full`], refused with advice when it exceeds `budget` bytes.
pub fn plan_full_within(
    config: &LlamaConfig,
    tied: bool,
    file_bytes: u64,
    batch: usize,
    seq_len: usize,
    budget: u64,
) -> Result<MemoryPlan, OverBudget> {
    let p = plan_full(config, tied, file_bytes, batch, seq_len);
    if p.total() <= budget {
        return Ok(p);
    }
    let state = p.adapter + p.gradients + p.optimizer;
    let advice = if p.mapped_base + p.runtime + state + p.step_temporaries >= budget {
        format!(
            "full training keeps {} MiB of weights, gradients and AdamW moments (and {} MiB \
             for the optimizer step) whatever the batch: train a LoRA adapter instead, or use \
             a device with more memory",
            state >> 20,
            p.step_temporaries >> 20
        )
    } else {
        shrink_activations_advice(&p, budget, batch * seq_len)
    };
    Err(OverBudget {
        plan: p,
        budget,
        advice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::plan::tests::smollm;

    #[test]
    fn smollm_has_135m_weights_and_needs_2_gb_of_state() {
        // Hugging Face reports 134,515,008 parameters for SmolLM2-135M (tied embeddings).
        assert_eq!(full_scalars(&smollm(), true), 134_515_008);
        let p = plan_full(&smollm(), true, 100 << 20, 1, 64);
        let state = p.adapter + p.gradients + p.optimizer;
        assert!((2_150_000_000..2_800_000_000).contains(&state), "{state}");
    }

    /// `engram train-bench --full --seq-len 64 --batch 4` measured a peak RSS of 2556–2680 MiB
    /// on SmolLM2-135M Q4_1 (98,362,432-byte file; docs/BENCHMARKS.md, "Full fine-tuning").
    /// The plan may err high, as a budget check should, but by little.
    #[test]
    fn smollm_plan_is_close_above_the_measured_peak() {
        let p = plan_full(&smollm(), true, 98_362_432, 4, 64);
        let mib = p.total() >> 20;
        assert!(
            (2680..=2680 * 11 / 10).contains(&mib),
            "planned {mib} MiB: {p:?}"
        );
    }

    #[test]
    fn over_budget_points_at_the_state_or_the_activations() {
        let p = plan_full(&smollm(), true, 100 << 20, 8, 512);
        let err = plan_full_within(&smollm(), true, 100 << 20, 8, 512, 1 << 30).unwrap_err();
        assert!(err.advice.contains("LoRA"), "{err}");
        let state = p.adapter + p.gradients + p.optimizer;
        assert!(
            p.activations > p.step_temporaries,
            "8 × 512 tokens: activations dominate"
        );
        let budget = p.mapped_base + p.runtime + state + p.activations / 2;
        let err = plan_full_within(&smollm(), true, 100 << 20, 8, 512, budget).unwrap_err();
        assert!(err.advice.contains("batch × seq_len"), "{err}");
        assert_eq!(
            plan_full_within(&smollm(), true, 100 << 20, 8, 512, p.total()).unwrap(),
            p
        );
    }
}

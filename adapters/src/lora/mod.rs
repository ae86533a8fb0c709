//! LoRA (Hu et al. 2021) over the frozen quantized projections.
//!
//! Each adapted projection `W` (read in place from the GGUF file, never written) gets
//! `y = x·Wᵀ + s · (x·Aᵀ)·Bᵀ` with `A: (r, n_in)`, `B: (n_out, r)` as PEFT stores them,
//! `s = alpha / r` (or `alpha / √r`). `A` starts uniform in `±1/√n_in` (PEFT's Kaiming-uniform
//! with `a = √5`), `B` at zero, so a fresh adapter leaves the model unchanged. Rows of `B` are
//! in the GGUF file's order; [`peft`] permutes q/k rows to Hugging Face's order on export.

pub mod config;
pub mod gguf;
pub mod gguf_layout;
pub mod peft;
pub mod peft_config;
pub mod peft_weights;

use std::collections::BTreeMap;
use std::sync::Mutex;

use burn::tensor::{Tensor, TensorData};
use engram_runtime::burn;
use engram_runtime::model::llama::{DecodeDelta, LinearAdapter, Llama, LowRank, Proj};
// What `gguf_layout` reaches through its parent (the fuzz crate provides the same names).
use engram_kernels::GgmlType;
use engram_runtime::format::Gguf;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

pub use config::{BadTarget, LoraConfig};

use crate::optim::{ParamId, ParamSet};
use crate::trainer::Trainable;

/// A LoRA adapter: its configuration and the `A`/`B` matrices of every adapted projection.
pub struct Lora {
    config: LoraConfig,
    params: ParamSet,
    slots: BTreeMap<(usize, ProjKey), Slot>,
    training: bool,
    rng: Mutex<ChaCha8Rng>,
}

/// `Proj` ordered as in the graph (for deterministic iteration).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ProjKey(u8);

impl ProjKey {
    fn of(p: Proj) -> Self {
        ProjKey(Proj::ALL.iter().position(|q| *q == p).unwrap_or(0) as u8)
    }
    fn proj(self) -> Proj {
        Proj::ALL[self.0 as usize]
    }
}

/// The parameters of one adapted projection.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    /// `A`, `(rank, n_in)`.
    pub a: ParamId,
    /// `B`, `(n_out, rank)`.
    pub b: ParamId,
    /// Input features of the projection.
    pub n_in: usize,
    /// Output features of the projection.
    pub n_out: usize,
}

/// A LoRA adapter cannot be built for this model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// Rank zero, a non-finite alpha or a dropout outside `[0, 1)`.
    #[error("invalid LoRA configuration: {0}")]
    Config(String),
    /// The layer range or targets select nothing in this model.
    #[error("the configuration adapts no projection of this {n_layer}-layer model")]
    Empty {
        /// Blocks in the model.
        n_layer: usize,
    },
    /// The rank exceeds the largest rank an adapted projection can take: `B·A` could not be of
    /// that rank, and a crafted rank would size the factors past the model itself.
    #[error("LoRA rank {rank} exceeds {max}, the largest rank an adapted projection can take")]
    Rank {
        /// The rank asked for.
        rank: usize,
        /// The largest rank the adapted projections allow.
        max: usize,
    },
    /// The layer range is empty or reaches past the model's blocks (an adapter saved with it
    /// could not be loaded again).
    #[error("LoRA layers {start}..{end} are not a non-empty range within the model's 0..{n_layer}")]
    Layers {
        /// First adapted block.
        start: usize,
        /// One past the last adapted block.
        end: usize,
        /// Blocks in the model.
        n_layer: usize,
    },
}

pub use peft_config::MAX_ALPHA;

/// The largest rank an adapter of `targets` on `model` may have: the largest rank an adapted
/// projection can take (`min(n_in, n_out)` of the roomiest one).
pub fn max_rank(model: &Llama, targets: &[Proj]) -> usize {
    targets
        .iter()
        .map(|&p| {
            let w = model.weight(0, p);
            w.n_in().min(w.n_out())
        })
        .max()
        .unwrap_or(0)
}

impl Lora {
    /// A fresh adapter for `model` (A random, B zero) on the model's device.
    pub fn new(model: &Llama, config: LoraConfig) -> Result<Self, LoraError> {
        if config.rank == 0
            || !config.alpha.is_finite()
            || config.alpha.abs() > MAX_ALPHA
            || !(0.0..1.0).contains(&config.dropout)
        {
            return Err(LoraError::Config(format!(
                "rank {}, alpha {} (finite, |alpha| <= {MAX_ALPHA}), dropout {} (in [0, 1))",
                config.rank, config.alpha, config.dropout
            )));
        }
        let n_layer = model.config().n_layer;
        if let Some(l) = &config.layers
            && (l.start >= l.end || l.end > n_layer)
        {
            return Err(LoraError::Layers {
                start: l.start,
                end: l.end,
                n_layer,
            });
        }
        let max = max_rank(model, &config.targets);
        if config.rank > max && max > 0 {
            return Err(LoraError::Rank {
                rank: config.rank,
                max,
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let r = config.rank;
        let device = model.device().clone();
        let mut params = ParamSet::new();
        let mut slots = BTreeMap::new();
        for layer in (0..n_layer).filter(|&l| config.covers_layer(l)) {
            for &proj in &config.targets {
                let w = model.weight(layer, proj);
                let (n_in, n_out) = (w.n_in(), w.n_out());
                let bound = 1.0 / (n_in as f32).sqrt();
                let a: Vec<f32> = (0..r * n_in)
                    .map(|_| rng.random_range(-bound..bound))
                    .collect();
                let name = |m: &str| format!("blk.{layer}.{}.lora_{m}", proj.gguf_name());
                let a = params.push_host(name("a"), a, [r, n_in], &device);
                let b = params.push_host(name("b"), vec![0.0; n_out * r], [n_out, r], &device);
                slots.insert((layer, ProjKey::of(proj)), Slot { a, b, n_in, n_out });
            }
        }
        if slots.is_empty() {
            return Err(LoraError::Empty { n_layer });
        }
        Ok(Self {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_d20b)),
            config,
            params,
            slots,
            training: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The trainable `A`/`B` matrices.
    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The trainable matrices, for an optimizer or a loader.
    pub fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    /// Every adapted `(layer, projection)` and its parameters, in graph order.
    pub fn slots(&self) -> impl Iterator<Item = (usize, Proj, Slot)> + '_ {
        self.slots.iter().map(|(&(l, p), &s)| (l, p.proj(), s))
    }

    /// The slot of `(layer, proj)`, if adapted.
    pub fn slot(&self, layer: usize, proj: Proj) -> Option<Slot> {
        self.slots.get(&(layer, ProjKey::of(proj))).copied()
    }

    /// Turns dropout on (training) or off (inference).
    pub fn set_training(&mut self, on: bool) {
        self.training = on;
    }

    /// `W + s·B·A` of `(layer, proj)` as an f32 matrix `(n_out, n_in)`, row-major: the merged
    /// weight, on explicit request only (the mapped base is never modified).
    pub fn merged_weight(&self, model: &Llama, layer: usize, proj: Proj) -> Vec<f32> {
        let w = model.weight(layer, proj);
        let (n_in, n_out) = (w.n_in(), w.n_out());
        let row_bytes = w.bytes().len() / n_out;
        let mut out = vec![0f32; n_out * n_in];
        for (row, dst) in out.chunks_mut(n_in).enumerate() {
            let src = &w.bytes()[row * row_bytes..(row + 1) * row_bytes];
            engram_kernels::dequantize_row(w.ty(), src, dst);
        }
        if let Some(slot) = self.slot(layer, proj) {
            let ba = self
                .params
                .value(slot.b)
                .matmul(self.params.value(slot.a))
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 parameters");
            let s = self.config.scale();
            for (o, d) in out.iter_mut().zip(ba) {
                *o += s * d;
            }
        }
        out
    }

    fn dropout(&self, x: &Tensor<3>) -> Tensor<3> {
        let p = self.config.dropout;
        if !self.training || p == 0.0 {
            return x.clone();
        }
        let dims = x.dims();
        let n = dims.iter().product();
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..n)
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect()
        };
        x.clone() * Tensor::from_data(TensorData::new(mask, dims), &x.device())
    }
}

impl LinearAdapter for Lora {
    fn delta(&self, layer: usize, proj: Proj, x: &Tensor<3>) -> Option<Tensor<3>> {
        let slot = self.slot(layer, proj)?;
        let (a, b) = if x.is_autodiff() {
            (self.params.get(slot.a), self.params.get(slot.b))
        } else {
            (self.params.value(slot.a), self.params.value(slot.b))
        };
        let [bs, t, n_in] = x.dims();
        let x = self.dropout(x).reshape([bs * t, n_in]);
        let h = x.matmul(a.transpose()).matmul(b.transpose()) * self.config.scale();
        Some(h.reshape([bs, t, slot.n_out]))
    }

    /// `A` and `s·B` as the fused decode path's factors; [`DecodeDelta::Opaque`] while training
    /// with dropout (a random mask per call).
    fn decode_delta(&self, layer: usize, proj: Proj) -> DecodeDelta {
        let Some(slot) = self.slot(layer, proj) else {
            return DecodeDelta::None;
        };
        if self.training && self.config.dropout > 0.0 {
            return DecodeDelta::Opaque;
        }
        let values = |t: Tensor<2>| t.into_data().convert::<f32>().try_into_vec::<f32>();
        let a = self.params.value(slot.a);
        let rank = a.dims()[0];
        let bt = self.params.value(slot.b).transpose() * self.config.scale();
        match (values(a), values(bt)) {
            (Ok(a), Ok(bt)) => DecodeDelta::LowRank(LowRank { rank, a, bt }),
            _ => DecodeDelta::Opaque,
        }
    }
}

impl Trainable for Lora {
    fn param_sets(&self) -> Vec<&ParamSet> {
        vec![self.params()]
    }
    fn param_sets_mut(&mut self) -> Vec<&mut ParamSet> {
        vec![self.params_mut()]
    }
    fn linear(&self) -> Option<&dyn LinearAdapter> {
        Some(self)
    }
    fn set_training(&mut self, on: bool) {
        Lora::set_training(self, on);
    }
    fn replica(&self) -> Option<Box<dyn Trainable + Send + Sync>> {
        // The replica's dropout draws from a stream of its own, seeded from this one's (the
        // masks differ from a one-thread run's; without dropout nothing does).
        let seed = self
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<u64>();
        Some(Box::new(Lora {
            config: self.config.clone(),
            params: self.params.replica(),
            slots: self.slots.clone(),
            training: self.training,
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }))
    }
}

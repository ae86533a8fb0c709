//! AdamW (decoupled weight decay, Loshchilov & Hutter) with global-norm gradient clipping.
//!
//! A step whose gradients are not all finite is skipped and leaves weights and moments as they
//! were: one bad batch never poisons a device's adapter.

use burn::tensor::{Tensor, TensorData};
use engram_runtime::burn;

use super::params::{Grads, HostParams, ParamMismatch, ParamSet};

/// AdamW hyper-parameters (PyTorch's defaults except the learning rate, set by the schedule).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε added to the RMS denominator.
    pub eps: f32,
    /// Decoupled weight decay (multiplied by the learning rate).
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

/// What an optimizer step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepOutcome {
    /// Weights were updated; the global gradient norm before clipping.
    Applied {
        /// L2 norm of all gradients before clipping.
        grad_norm: f32,
    },
    /// A gradient was NaN or infinite: nothing changed.
    SkippedNonFinite,
}

/// AdamW state over one [`ParamSet`].
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    m: Vec<Option<Tensor<2>>>,
    v: Vec<Option<Tensor<2>>>,
    step: u32,
}

impl AdamW {
    /// A fresh optimizer (moments start at zero on first use).
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            m: Vec::new(),
            v: Vec::new(),
            step: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps applied so far (skipped steps do not count).
    pub fn steps(&self) -> u32 {
        self.step
    }

    /// The moments and step count, copied to host memory (for a checkpoint); moments not
    /// created yet (no step has touched the parameter) are zeros.
    pub fn to_host(&self, params: &ParamSet) -> AdamWState {
        let host = |moments: &[Option<Tensor<2>>]| {
            let mut h = params.to_host();
            for (i, v) in h.values.iter_mut().enumerate() {
                match moments.get(i).and_then(Option::as_ref) {
                    Some(m) => {
                        *v = m
                            .clone()
                            .into_data()
                            .try_to_vec::<f32>()
                            .unwrap_or_default()
                    }
                    None => v.iter_mut().for_each(|x| *x = 0.0),
                }
            }
            h
        };
        AdamWState {
            step: self.step,
            m: host(&self.m),
            v: host(&self.v),
        }
    }

    /// Restores moments saved by [`AdamW::to_host`] for `params` (same names and shapes).
    pub fn load_host(
        &mut self,
        params: &ParamSet,
        state: &AdamWState,
    ) -> Result<(), ParamMismatch> {
        let load = |h: &HostParams| -> Result<Vec<Option<Tensor<2>>>, ParamMismatch> {
            let mut check = params.clone();
            check.load_host(h)?;
            Ok(params
                .ids()
                .map(|id| {
                    Some(Tensor::from_data(
                        TensorData::new(h.values[id.0].clone(), h.shapes[id.0]),
                        // The moments live where the gradients do: the inner (non-autodiff)
                        // device of the parameter's value.
                        &params.value(id).device(),
                    ))
                })
                .collect())
        };
        let (m, v) = (load(&state.m)?, load(&state.v)?);
        self.m = m;
        self.v = v;
        self.step = state.step;
        Ok(())
    }

    /// Bytes of optimizer state per scalar parameter (two f32 moments).
    pub const STATE_BYTES_PER_SCALAR: usize = 8;

    /// One update of `params` with `grads` at learning rate `lr`, clipping by their own norm.
    pub fn step(&mut self, params: &mut ParamSet, grads: &Grads, lr: f32) -> StepOutcome {
        let norm = grads.norm();
        if !norm.is_finite() {
            return StepOutcome::SkippedNonFinite;
        }
        self.apply(params, grads, lr, self.clip_factor(norm));
        StepOutcome::Applied { grad_norm: norm }
    }

    /// The factor that brings a global gradient norm `norm` under `max_grad_norm`.
    pub fn clip_factor(&self, norm: f32) -> f32 {
        match self.config.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        }
    }

    /// One update with gradients pre-multiplied by `clip` (when several parameter sets share
    /// one global norm). The caller has checked that the gradients are finite.
    pub fn apply(&mut self, params: &mut ParamSet, grads: &Grads, lr: f32, clip: f32) {
        if self.m.len() < params.len() {
            self.m.resize(params.len(), None);
            self.v.resize(params.len(), None);
        }
        self.step += 1;
        let c = &self.config;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for id in params.ids() {
            let Some(g) = grads.get(id) else { continue };
            let g = g.clone() * clip;
            let m = match self.m[id.0].take() {
                Some(m) => m * c.beta1 + g.clone() * (1.0 - c.beta1),
                None => g.clone() * (1.0 - c.beta1),
            };
            let v = match self.v[id.0].take() {
                Some(v) => v * c.beta2 + g.square() * (1.0 - c.beta2),
                None => g.square() * (1.0 - c.beta2),
            };
            let update = (m.clone() / bc1) / ((v.clone() / bc2).sqrt() + c.eps);
            let p = params.value(id);
            let p = p.clone() - p * (lr * c.weight_decay) - update * lr;
            params.set_value(id, p);
            self.m[id.0] = Some(m);
            self.v[id.0] = Some(v);
        }
    }
}

/// [`AdamW`]'s state in host memory.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWState {
    /// Steps applied.
    pub step: u32,
    /// First moments, one per parameter.
    pub m: HostParams,
    /// Second moments.
    pub v: HostParams,
}

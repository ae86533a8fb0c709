//! Named trainable tensors: the one currency between adapters, optimizers and continual-learning
//! strategies.
//!
//! A [`ParamSet`] owns tracked leaf tensors on an autodiff device. Adapters read them with
//! [`ParamSet::get`] inside their forward pass; after `loss.backward()`, [`ParamSet::grads`]
//! collects the gradients and an optimizer writes new values back with
//! [`ParamSet::set_value`]. Every parameter is 2-D (a vector is `(1, n)`), which keeps
//! serialization and per-parameter state (Adam moments, EWC Fisher, SI importance) uniform.

use burn::tensor::{Device, Gradients, Tensor, TensorData};
use engram_runtime::burn;

/// Index of a parameter in its [`ParamSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// A parameter set's values or state, copied to host memory (`names` and `shapes` in set order).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostParams {
    /// Parameter names.
    pub names: Vec<String>,
    /// `[rows, cols]` of each parameter.
    pub shapes: Vec<[usize; 2]>,
    /// Row-major values of each parameter.
    pub values: Vec<Vec<f32>>,
}

/// Named, trainable 2-D tensors (tracked autodiff leaves).
#[derive(Clone, Debug, Default)]
pub struct ParamSet {
    names: Vec<String>,
    values: Vec<Tensor<2>>,
}

/// Gradients of a [`ParamSet`]'s parameters, on the inner (non-autodiff) device.
#[derive(Clone, Debug)]
pub struct Grads(Vec<Option<Tensor<2>>>);

impl Grads {
    /// The gradient of `id`, or `None` when the loss did not depend on it.
    pub fn get(&self, id: ParamId) -> Option<&Tensor<2>> {
        self.0.get(id.0).and_then(Option::as_ref)
    }

    /// Replaces the gradient of `id` (strategies that reshape gradients, e.g. projections).
    pub fn set(&mut self, id: ParamId, grad: Tensor<2>) {
        self.0[id.0] = Some(grad);
    }

    /// Number of slots (the parameter count of the set it came from).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the set had no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `other` into `self` slot by slot (gradient accumulation).
    pub fn accumulate(&mut self, other: Grads) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = match (a.take(), b) {
                (Some(x), Some(y)) => Some(x + y),
                (x, y) => x.or(y),
            };
        }
    }

    /// Multiplies every gradient by `s`.
    pub fn scale(&mut self, s: f32) {
        for g in self.0.iter_mut().flatten() {
            *g = g.clone() * s;
        }
    }

    /// Global L2 norm over all gradients (NaN or inf when any entry is non-finite).
    pub fn norm(&self) -> f32 {
        let sq: f32 = self
            .0
            .iter()
            .flatten()
            .map(|g| g.clone().square().sum().into_scalar::<f32>())
            .sum();
        sq.sqrt()
    }
}

impl ParamSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; `value` becomes a tracked leaf on its device's autodiff twin.
    pub fn push(&mut self, name: impl Into<String>, value: Tensor<2>) -> ParamId {
        self.names.push(name.into());
        self.values.push(leaf(value));
        ParamId(self.values.len() - 1)
    }

    /// Adds a parameter from host values `(rows, cols)` on `device`.
    pub fn push_host(
        &mut self,
        name: impl Into<String>,
        values: Vec<f32>,
        shape: [usize; 2],
        device: &Device,
    ) -> ParamId {
        self.push(
            name,
            Tensor::from_data(TensorData::new(values, shape), device),
        )
    }

    /// The tracked leaf of `id`, to use in a forward pass.
    pub fn get(&self, id: ParamId) -> Tensor<2> {
        self.values[id.0].clone()
    }

    /// The name of `id`.
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }

    /// The id of the parameter called `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.names.iter().position(|n| n == name).map(ParamId)
    }

    /// All ids, in insertion order.
    pub fn ids(&self) -> impl Iterator<Item = ParamId> + use<> {
        (0..self.values.len()).map(ParamId)
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Total number of scalar weights.
    pub fn num_scalars(&self) -> usize {
        self.values.iter().map(|v| v.dims()[0] * v.dims()[1]).sum()
    }

    /// Collects the gradient of every parameter from `grads`.
    pub fn grads(&self, grads: &Gradients) -> Grads {
        Grads(self.values.iter().map(|v| v.grad(grads)).collect())
    }

    /// The same names and values as fresh autodiff leaves of their own: the storage is shared,
    /// the graph nodes are not, so a replica's forward and backward record nothing in this
    /// set's graph and two threads can each train on their own replica at once (burn keeps
    /// graphs that share a node under one lock).
    pub fn replica(&self) -> ParamSet {
        ParamSet {
            names: self.names.clone(),
            values: self.values.iter().map(|v| leaf(v.clone())).collect(),
        }
    }

    /// Replaces the value of `id` (from any tensor: it is detached and made a fresh leaf).
    pub fn set_value(&mut self, id: ParamId, value: Tensor<2>) {
        self.values[id.0] = leaf(value);
    }

    /// The current value of `id` without autodiff tracking.
    pub fn value(&self, id: ParamId) -> Tensor<2> {
        self.values[id.0].clone().inner()
    }

    /// Copies every value to host memory.
    pub fn to_host(&self) -> HostParams {
        HostParams {
            names: self.names.clone(),
            shapes: self.values.iter().map(|v| v.dims()).collect(),
            values: self
                .values
                .iter()
                .map(|v| {
                    v.clone()
                        .inner()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap_or_default()
                })
                .collect(),
        }
    }

    /// Overwrites the values from `host`, which must have the same names and shapes.
    pub fn load_host(&mut self, host: &HostParams) -> Result<(), ParamMismatch> {
        if host.names != self.names {
            return Err(ParamMismatch(format!(
                "names differ: expected {:?}, got {:?}",
                self.names, host.names
            )));
        }
        for (i, (shape, vals)) in host.shapes.iter().zip(&host.values).enumerate() {
            let dims = self.values[i].dims();
            if *shape != dims || vals.len() != dims[0] * dims[1] {
                return Err(ParamMismatch(format!(
                    "`{}`: shape {:?} with {} values, expected {:?}",
                    self.names[i],
                    shape,
                    vals.len(),
                    dims
                )));
            }
        }
        for (i, (shape, vals)) in host.shapes.iter().zip(&host.values).enumerate() {
            let device = self.values[i].device();
            let t = Tensor::from_data(TensorData::new(vals.clone(), *shape), &device);
            self.values[i] = leaf(t);
        }
        Ok(())
    }
}

/// Host parameters do not match the set they are loaded into.
#[derive(Debug, thiserror::Error)]
#[error("parameters do not match: {0}")]
pub struct ParamMismatch(pub String);

fn leaf(value: Tensor<2>) -> Tensor<2> {
    value.inner().autodiff().require_grad()
}

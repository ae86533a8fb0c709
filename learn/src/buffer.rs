//! The std replay buffer: the no-alloc [`ReplayCore`] for policy and bookkeeping, plus
//! row-major storage of each slot's input vector and (for DER++) the logits recorded when it
//! was stored. All storage is allocated once, at construction.

use engram_kernels::replay::{
    Admission, ClassCount, CoreState, InsertError, Policy, ReplayCore, RestoreError, SlotMeta,
};

/// Largest capacity a [`ReplayBuffer`] accepts.
pub const MAX_CAPACITY: usize = 4096;
/// Largest input or logit row a [`ReplayBuffer`] accepts (floats).
pub const MAX_ROW: usize = 1 << 16;

/// Bad arguments to a [`ReplayBuffer`]; nothing stored changes.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum BufferError {
    /// Capacity outside `1..=MAX_CAPACITY`, or a row size above [`MAX_ROW`].
    #[error("replay buffer of {capacity} slots x {dim} inputs x {n_logits} logits is not allowed")]
    BadSize {
        /// Requested capacity.
        capacity: usize,
        /// Requested input width.
        dim: usize,
        /// Requested logit width.
        n_logits: usize,
    },
    /// An input or logit row of the wrong length.
    #[error("{what} row has {got} floats, the buffer stores {expected}")]
    Shape {
        /// `"input"` or `"logits"`.
        what: &'static str,
        /// Length given.
        got: usize,
        /// Length stored.
        expected: usize,
    },
    /// A value is NaN or infinite.
    #[error("{what} row has a non-finite value")]
    NonFinite {
        /// `"input"` or `"logits"`.
        what: &'static str,
    },
    /// The buffer already tracks the maximum number of labels.
    #[error("label {0} would exceed the buffer's label table")]
    TooManyClasses(u32),
    /// `try_push` on a full buffer.
    #[error("replay buffer is full ({0} slots)")]
    Full(usize),
}

/// Everything a persisted buffer holds, checked for sizes by the reader.
pub(crate) struct Parts {
    pub capacity: usize,
    pub dim: usize,
    pub n_logits: usize,
    pub policy: Policy,
    pub state: CoreState,
    pub class_seen: Vec<(u32, u64)>,
    pub metas: Vec<SlotMeta>,
    pub rows: Vec<f32>,       // (metas.len(), dim)
    pub logit_rows: Vec<f32>, // (metas.len(), n_logits)
}

/// A replay batch copied out of the buffer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayBatch {
    /// Slots drawn.
    pub slots: Vec<usize>,
    /// Inputs, `(slots.len(), dim)` row-major.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u32>,
    /// Stored logits, `(slots.len(), n_logits)` row-major (empty when the buffer keeps none).
    pub logits: Vec<f32>,
}

/// A fixed-capacity replay buffer of `(input, label, task, logits)` rows.
#[derive(Clone, Debug)]
pub struct ReplayBuffer {
    core: Box<ReplayCore<(), MAX_CAPACITY>>,
    dim: usize,
    n_logits: usize,
    x: Vec<f32>,      // (capacity, dim)
    logits: Vec<f32>, // (capacity, n_logits)
}

impl ReplayBuffer {
    /// An empty buffer of `capacity` rows of `dim` inputs and `n_logits` logits (0: no logits).
    pub fn new(
        capacity: usize,
        dim: usize,
        n_logits: usize,
        policy: Policy,
        seed: u64,
    ) -> Result<Self, BufferError> {
        check_size(capacity, dim, n_logits)?;
        Ok(Self {
            core: Box::new(ReplayCore::new(capacity, policy, seed)),
            dim,
            n_logits,
            x: vec![0.0; capacity * dim],
            logits: vec![0.0; capacity * n_logits],
        })
    }

    /// Rebuilds a buffer from persisted parts (see [`super::persist`]).
    pub(crate) fn from_parts(p: Parts) -> Result<Self, RestoreError> {
        let core = ReplayCore::restore(
            p.capacity,
            p.policy,
            p.state,
            &p.class_seen,
            p.metas.into_iter().map(|m| (m, ())),
        )?;
        let mut x = vec![0.0; p.capacity * p.dim];
        x[..p.rows.len()].copy_from_slice(&p.rows);
        let mut logits = vec![0.0; p.capacity * p.n_logits];
        logits[..p.logit_rows.len()].copy_from_slice(&p.logit_rows);
        Ok(Self {
            core: Box::new(core),
            dim: p.dim,
            n_logits: p.n_logits,
            x,
            logits,
        })
    }

    /// Offers one row; the retention policy decides whether it is stored.
    pub fn insert(
        &mut self,
        x: &[f32],
        label: u32,
        task: u32,
        logits: Option<&[f32]>,
    ) -> Result<Admission<()>, BufferError> {
        self.check_row(x, logits)?;
        let adm = self.core.insert((), label, task).map_err(|e| match e {
            InsertError::TooManyClasses(()) => BufferError::TooManyClasses(label),
            InsertError::Full(()) => BufferError::Full(self.capacity()),
        })?;
        match adm {
            Admission::Appended(slot) | Admission::Replaced { slot, .. } => {
                self.write_row(slot, x, logits)
            }
            Admission::Rejected => {}
        }
        Ok(adm)
    }

    /// Appends one row without the retention policy (exemplar sets); errors when full.
    pub fn try_push(
        &mut self,
        x: &[f32],
        label: u32,
        task: u32,
        logits: Option<&[f32]>,
    ) -> Result<usize, BufferError> {
        self.check_row(x, logits)?;
        let slot = self.core.try_push((), label, task).map_err(|e| match e {
            InsertError::TooManyClasses(()) => BufferError::TooManyClasses(label),
            InsertError::Full(()) => BufferError::Full(self.capacity()),
        })?;
        self.write_row(slot, x, logits);
        Ok(slot)
    }

    /// Keeps the rows for which `keep(meta)` is true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&SlotMeta) -> bool) {
        let keep_mask: Vec<bool> = self.core.metas().iter().map(&mut keep).collect();
        let (d, l) = (self.dim, self.n_logits);
        let mut w = 0;
        for (r, &k) in keep_mask.iter().enumerate() {
            if k {
                self.x.copy_within(r * d..(r + 1) * d, w * d);
                self.logits.copy_within(r * l..(r + 1) * l, w * l);
                w += 1;
            }
        }
        self.core.retain(|i, _| keep_mask[i]);
    }

    /// Draws a replay batch of up to `k` distinct rows by the sampling policy.
    pub fn sample(&mut self, k: usize) -> ReplayBatch {
        let mut slots = vec![0usize; k.min(self.len())];
        self.core.sample(&mut slots);
        self.gather(slots)
    }

    /// Copies the given slots out (no effect on the replay clock).
    pub fn gather(&self, slots: Vec<usize>) -> ReplayBatch {
        let mut b = ReplayBatch {
            x: Vec::with_capacity(slots.len() * self.dim),
            y: Vec::with_capacity(slots.len()),
            logits: Vec::with_capacity(slots.len() * self.n_logits),
            slots: Vec::new(),
        };
        for &s in &slots {
            b.x.extend_from_slice(self.row(s));
            b.y.push(self.core.metas()[s].label);
            b.logits.extend_from_slice(self.logit_row(s));
        }
        b.slots = slots;
        b
    }

    /// Input row of slot `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        assert!(i < self.len(), "slot {i} of {}", self.len());
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Logit row of slot `i` (empty when the buffer keeps no logits).
    pub fn logit_row(&self, i: usize) -> &[f32] {
        assert!(i < self.len(), "slot {i} of {}", self.len());
        &self.logits[i * self.n_logits..(i + 1) * self.n_logits]
    }

    /// Metadata of every stored row.
    pub fn metas(&self) -> &[SlotMeta] {
        self.core.metas()
    }

    /// Per-label counts.
    pub fn classes(&self) -> &[ClassCount] {
        self.core.classes()
    }

    /// Scalar state (random stream, counters).
    pub fn state(&self) -> CoreState {
        self.core.state()
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.core.policy()
    }

    /// Rows stored.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.core.is_empty()
    }

    /// Fixed capacity.
    pub fn capacity(&self) -> usize {
        self.core.capacity()
    }

    /// Input width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Logit width (0: no logits kept).
    pub fn n_logits(&self) -> usize {
        self.n_logits
    }

    /// All stored input rows, `(len, dim)` row-major.
    pub fn rows(&self) -> &[f32] {
        &self.x[..self.len() * self.dim]
    }

    /// All stored logit rows, `(len, n_logits)` row-major.
    pub fn logit_rows(&self) -> &[f32] {
        &self.logits[..self.len() * self.n_logits]
    }

    fn check_row(&self, x: &[f32], logits: Option<&[f32]>) -> Result<(), BufferError> {
        let shape = |what, got, expected| {
            (got != expected).then_some(BufferError::Shape {
                what,
                got,
                expected,
            })
        };
        if let Some(e) = shape("input", x.len(), self.dim) {
            return Err(e);
        }
        let l = logits.map_or(0, <[f32]>::len);
        if (self.n_logits > 0 || logits.is_some())
            && let Some(e) = shape("logits", l, self.n_logits)
        {
            return Err(e);
        }
        if !x.iter().all(|v| v.is_finite()) {
            return Err(BufferError::NonFinite { what: "input" });
        }
        if !logits.unwrap_or(&[]).iter().all(|v| v.is_finite()) {
            return Err(BufferError::NonFinite { what: "logits" });
        }
        Ok(())
    }

    fn write_row(&mut self, slot: usize, x: &[f32], logits: Option<&[f32]>) {
        self.x[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(x);
        if let Some(l) = logits {
            self.logits[slot * self.n_logits..(slot + 1) * self.n_logits].copy_from_slice(l);
        }
    }
}

impl PartialEq for ReplayBuffer {
    /// Same policy, state, slots, inputs and logits (what a restart must reproduce).
    fn eq(&self, other: &Self) -> bool {
        self.capacity() == other.capacity()
            && self.dim == other.dim
            && self.n_logits == other.n_logits
            && self.policy() == other.policy()
            && self.state() == other.state()
            && self.classes() == other.classes()
            && self.metas() == other.metas()
            && self.rows() == other.rows()
            && self.logit_rows() == other.logit_rows()
    }
}

pub(crate) fn check_size(capacity: usize, dim: usize, n_logits: usize) -> Result<(), BufferError> {
    if !(1..=MAX_CAPACITY).contains(&capacity) || dim > MAX_ROW || n_logits > MAX_ROW {
        return Err(BufferError::BadSize {
            capacity,
            dim,
            n_logits,
        });
    }
    Ok(())
}

//! The fixed-capacity replay buffer: slots of `(SlotMeta, T)` in `heapless` vectors, a retention
//! policy that decides what a full buffer keeps, and the per-class counts it needs.

use heapless::Vec;

use super::rng::SplitMix64;
use super::sample::{self, Sampling};
use super::slot::SlotMeta;

/// Most distinct labels one buffer tracks (class-balanced retention keeps a count per label).
pub const MAX_CLASSES: usize = 256;

/// What a full buffer does with a new item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Reservoir sampling (Vitter's algorithm R): every item offered so far is in the buffer
    /// with the same probability `capacity / seen`.
    Reservoir,
    /// Class-balancing reservoir (CBRS, Chrysakis & Moens, ICML 2020): a new item of a class
    /// that is not among the largest evicts a random item of a largest class; an item of a
    /// largest class replaces one of its own class with probability `stored / seen` of it.
    ClassBalanced,
}

/// Retention and sampling together.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// What a full buffer keeps.
    pub retention: Retention,
    /// Which stored items a replay batch draws.
    pub sampling: Sampling,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            retention: Retention::Reservoir,
            sampling: Sampling::Uniform,
        }
    }
}

/// Per-label counts (offered so far, stored now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassCount {
    /// The label.
    pub label: u32,
    /// Items of this label offered to the buffer.
    pub seen: u64,
    /// Items of this label stored now.
    pub stored: u32,
}

/// What `insert` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission<T> {
    /// Stored in a free slot.
    Appended(usize),
    /// Stored in `slot`, evicting `evicted` (label `evicted_label`).
    Replaced {
        /// The slot written.
        slot: usize,
        /// Label of the evicted item.
        evicted_label: u32,
        /// The evicted item.
        evicted: T,
    },
    /// Not stored (the policy kept the old contents).
    Rejected,
}

/// Why an item was not taken; the item comes back unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertError<T> {
    /// The buffer already tracks [`MAX_CLASSES`] labels and this is a new one.
    TooManyClasses(T),
    /// `try_push` on a full buffer.
    Full(T),
}

/// Why saved state cannot become a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// `capacity` is 0 or above the compile-time bound `N`.
    BadCapacity,
    /// More slots than `capacity`.
    TooManySlots,
    /// More labels than [`MAX_CLASSES`], or a label listed twice.
    BadClassTable,
    /// A slot's label is missing from the class table, or a class stores more than it saw.
    Inconsistent,
}

/// Saved scalar state of a [`ReplayCore`] (what persistence writes beside the slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreState {
    /// Random stream state.
    pub rng: u64,
    /// Items offered so far.
    pub seen: u64,
    /// Replay clock.
    pub step: u64,
}

/// A replay buffer of at most `N` items of `T`, no allocation; the run-time `capacity` may be
/// smaller than `N` and never changes.
#[derive(Clone, Debug)]
pub struct ReplayCore<T, const N: usize> {
    capacity: usize,
    policy: Policy,
    rng: SplitMix64,
    seen: u64,
    step: u64,
    classes: Vec<ClassCount, MAX_CLASSES>,
    meta: Vec<SlotMeta, N>,
    items: Vec<T, N>,
}

impl<T, const N: usize> ReplayCore<T, N> {
    /// An empty buffer holding at most `capacity` items (panics unless `1 <= capacity <= N`:
    /// sizing is the caller's decision, made once).
    pub fn new(capacity: usize, policy: Policy, seed: u64) -> Self {
        assert!(
            (1..=N).contains(&capacity),
            "replay capacity {capacity} outside 1..={N}"
        );
        Self {
            capacity,
            policy,
            rng: SplitMix64::new(seed),
            seen: 0,
            step: 0,
            classes: Vec::new(),
            meta: Vec::new(),
            items: Vec::new(),
        }
    }

    /// Rebuilds a buffer from saved state and slots, checking that they fit together.
    pub fn restore(
        capacity: usize,
        policy: Policy,
        state: CoreState,
        class_seen: &[(u32, u64)],
        slots: impl IntoIterator<Item = (SlotMeta, T)>,
    ) -> Result<Self, RestoreError> {
        if !(1..=N).contains(&capacity) {
            return Err(RestoreError::BadCapacity);
        }
        let mut core = Self::new(capacity, policy, 0);
        core.rng = SplitMix64::new(state.rng);
        core.seen = state.seen;
        core.step = state.step;
        for (i, &(label, seen)) in class_seen.iter().enumerate() {
            if class_seen[..i].iter().any(|c| c.0 == label) {
                return Err(RestoreError::BadClassTable);
            }
            let count = ClassCount {
                label,
                seen,
                stored: 0,
            };
            core.classes
                .push(count)
                .map_err(|_| RestoreError::BadClassTable)?;
        }
        for (meta, item) in slots {
            if core.meta.len() == capacity {
                return Err(RestoreError::TooManySlots);
            }
            let c = core
                .class_index(meta.label)
                .ok_or(RestoreError::Inconsistent)?;
            core.classes[c].stored += 1;
            // Both vectors have room: len < capacity <= N.
            let _ = core.meta.push(meta);
            let _ = core.items.push(item);
        }
        if core.classes.iter().any(|c| u64::from(c.stored) > c.seen)
            || core.classes.iter().map(|c| c.seen).sum::<u64>() > core.seen
        {
            return Err(RestoreError::Inconsistent);
        }
        Ok(core)
    }

    /// Items stored now.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// True when `len() == capacity()`.
    pub fn is_full(&self) -> bool {
        self.meta.len() == self.capacity
    }

    /// The fixed capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Scalar state to persist.
    pub fn state(&self) -> CoreState {
        CoreState {
            rng: self.rng.state(),
            seen: self.seen,
            step: self.step,
        }
    }

    /// Per-label counts, in order of first appearance.
    pub fn classes(&self) -> &[ClassCount] {
        &self.classes
    }

    /// Metadata of every slot, in slot order.
    pub fn metas(&self) -> &[SlotMeta] {
        &self.meta
    }

    /// Items, in slot order.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Slot `i`.
    pub fn get(&self, i: usize) -> Option<(&SlotMeta, &T)> {
        Some((self.meta.get(i)?, self.items.get(i)?))
    }

    /// Mutable access to the item in slot `i` (e.g. to refresh stored logits).
    pub fn item_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)
    }

    /// Offers `item` to the buffer; the retention policy decides whether and where it goes.
    pub fn insert(
        &mut self,
        item: T,
        label: u32,
        task: u32,
    ) -> Result<Admission<T>, InsertError<T>> {
        let c = match self.class_index(label) {
            Some(c) => c,
            None => {
                let count = ClassCount {
                    label,
                    seen: 0,
                    stored: 0,
                };
                if self.classes.push(count).is_err() {
                    return Err(InsertError::TooManyClasses(item));
                }
                self.classes.len() - 1
            }
        };
        self.seen += 1;
        self.classes[c].seen += 1;
        let meta = SlotMeta {
            label,
            task,
            seen_at: self.seen,
            last_replay: 0,
            replays: 0,
        };
        if self.meta.len() < self.capacity {
            self.classes[c].stored += 1;
            let _ = self.meta.push(meta);
            let _ = self.items.push(item);
            return Ok(Admission::Appended(self.meta.len() - 1));
        }
        let slot = match self.policy.retention {
            Retention::Reservoir => {
                let j = self.rng.below(self.seen) as usize;
                (j < self.capacity).then_some(j)
            }
            Retention::ClassBalanced => self.class_balanced_victim(c),
        };
        Ok(match slot {
            Some(slot) => {
                let (evicted_label, evicted) = self.replace(slot, meta, item);
                Admission::Replaced {
                    slot,
                    evicted_label,
                    evicted,
                }
            }
            None => Admission::Rejected,
        })
    }

    /// Appends `item` without consulting the policy (exemplar sets managed by their owner);
    /// a full buffer hands the item back.
    pub fn try_push(&mut self, item: T, label: u32, task: u32) -> Result<usize, InsertError<T>> {
        if self.is_full() {
            return Err(InsertError::Full(item));
        }
        match self.insert(item, label, task) {
            Ok(Admission::Appended(slot)) => Ok(slot),
            Ok(_) => unreachable!("a buffer with room appends"),
            Err(e) => Err(e),
        }
    }

    /// Keeps the slots for which `keep(index, meta)` is true, in order (counts stay right).
    pub fn retain(&mut self, mut keep: impl FnMut(usize, &SlotMeta) -> bool) {
        let mut w = 0;
        for r in 0..self.meta.len() {
            if keep(r, &self.meta[r]) {
                self.meta.swap(w, r);
                self.items.swap(w, r);
                w += 1;
            }
        }
        self.meta.truncate(w);
        self.items.truncate(w);
        for c in self.classes.iter_mut() {
            c.stored = 0;
        }
        for i in 0..self.meta.len() {
            let c = self.class_index(self.meta[i].label).expect("tracked label");
            self.classes[c].stored += 1;
        }
    }

    /// Draws up to `out.len()` distinct slots by the sampling policy into `out`, advances the
    /// replay clock and marks them replayed; returns how many were drawn (`min(out.len(), len)`).
    pub fn sample(&mut self, out: &mut [usize]) -> usize {
        let k = out.len().min(self.meta.len());
        let out = &mut out[..k];
        self.step += 1;
        let now_seen = self.seen;
        let now_step = self.step;
        sample::draw(
            self.policy.sampling,
            &self.meta,
            now_seen,
            now_step,
            &mut self.rng,
            out,
        );
        for &i in out.iter() {
            self.meta[i].last_replay = now_step;
            self.meta[i].replays += 1;
        }
        k
    }

    fn class_index(&self, label: u32) -> Option<usize> {
        self.classes.iter().position(|c| c.label == label)
    }

    /// CBRS: a random slot of a largest class, or of the new item's own class with probability
    /// stored/seen when it is itself among the largest.
    fn class_balanced_victim(&mut self, c: usize) -> Option<usize> {
        let largest = self.classes.iter().map(|c| c.stored).max().unwrap_or(0);
        let victim_class = if self.classes[c].stored < largest {
            let n_largest = self.classes.iter().filter(|c| c.stored == largest).count();
            let pick = self.rng.below(n_largest as u64) as usize;
            self.classes
                .iter()
                .filter(|c| c.stored == largest)
                .nth(pick)
                .map(|c| c.label)?
        } else {
            let own = self.classes[c];
            if self.rng.below(own.seen) >= u64::from(own.stored) {
                return None;
            }
            own.label
        };
        let stored = self.classes[self.class_index(victim_class)?].stored;
        let r = self.rng.below(u64::from(stored)) as usize;
        self.meta
            .iter()
            .enumerate()
            .filter(|(_, m)| m.label == victim_class)
            .nth(r)
            .map(|(i, _)| i)
    }

    fn replace(&mut self, slot: usize, meta: SlotMeta, item: T) -> (u32, T) {
        let old_label = self.meta[slot].label;
        let old = self.class_index(old_label).expect("tracked label");
        self.classes[old].stored -= 1;
        let new = self.class_index(meta.label).expect("tracked label");
        self.classes[new].stored += 1;
        self.meta[slot] = meta;
        (old_label, core::mem::replace(&mut self.items[slot], item))
    }
}

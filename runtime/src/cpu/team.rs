//! A team run: one job on every thread of the pool at once, whose shares meet at barriers.
//!
//! The pool's per-product dispatch ([`super::CpuContext::qmatmul`]) wakes the workers for every
//! matrix. Between two products of the burn graph lie tens of microseconds of tensor glue, so a
//! worker has parked by then and each product pays a futex wake-up and a wake-up on the way back
//! (the cause of two-thread decode being slower than one; docs/DECODE.md). A team run wakes the
//! workers once per token; inside it the shares meet at a [`Team::sync`] per matrix, which
//! spins: both shares arrive within microseconds of each other when the split is even.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

/// How long a share spins at a barrier before it starts yielding its core (an oversubscribed
/// machine: the other share may have been descheduled).
const SPIN_BEFORE_YIELD: Duration = Duration::from_micros(200);

/// A reusable spinning barrier for the shares of one team run.
pub(super) struct SpinBarrier {
    size: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// A share panicked: the others must not wait for it.
    poisoned: AtomicBool,
}

impl SpinBarrier {
    pub(super) fn new(size: usize) -> Self {
        Self {
            size,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        if self.size == 1 {
            return;
        }
        let generation = self.generation.load(Acquire);
        if self.arrived.fetch_add(1, AcqRel) + 1 == self.size {
            self.arrived.store(0, Relaxed);
            self.generation.fetch_add(1, Release);
            return;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.generation.load(Acquire) == generation {
            if self.poisoned.load(Relaxed) {
                panic!("another share of the team run panicked");
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(256) || start.elapsed() < SPIN_BEFORE_YIELD {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    pub(super) fn poison(&self) {
        self.poisoned.store(true, Relaxed);
    }
}

/// Marks the barrier poisoned if a share unwinds, so the other shares stop waiting for it.
pub(super) struct PoisonOnUnwind<'a>(pub(super) &'a SpinBarrier);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}

/// One share of a team run: which thread this is, how many there are, and the barrier.
pub struct Team<'a> {
    pub(super) index: usize,
    pub(super) size: usize,
    pub(super) barrier: &'a SpinBarrier,
}

impl Team<'_> {
    /// This share's index, `0..size()` (0 is the calling thread).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Shares in the run.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits until every share has called `sync` as often as this one; what a share wrote
    /// before it is visible to every share after it.
    pub fn sync(&self) {
        self.barrier.wait();
    }

    /// This share's part of `0..total`, cut at multiples of `align` (the last part takes the
    /// remainder): the parts of all shares tile `0..total` and are as even as whole units allow.
    pub fn part(&self, total: usize, align: usize) -> Range<usize> {
        let units = total.div_ceil(align);
        let (t, n) = (self.index, self.size);
        let start = (units * t / n * align).min(total);
        let end = (units * (t + 1) / n * align).min(total);
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::{SpinBarrier, Team};

    #[test]
    fn parts_tile_the_range() {
        let barrier = SpinBarrier::new(1);
        for (total, align, size) in [(576, 4, 2), (49152, 4, 3), (9, 1, 2), (3, 4, 2), (0, 1, 2)] {
            let mut next = 0;
            for index in 0..size {
                let team = Team {
                    index,
                    size,
                    barrier: &barrier,
                };
                let p = team.part(total, align);
                assert_eq!(p.start, next);
                assert!(p.start.is_multiple_of(align) || p.start == total);
                next = p.end;
            }
            assert_eq!(next, total);
        }
    }
}

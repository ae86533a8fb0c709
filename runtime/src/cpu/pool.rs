//! A persistent spin-then-park pool (the caller does one share) and the one splitting pattern
//! the products need: an `m × total` row-major output cut into column ranges.
//!
//! Decode makes ~210 small products per token, so dispatch latency matters more than
//! throughput. rayon's `in_place_scope` cost two futex wake-ups per call (worker, then caller),
//! ~16 µs at 2 threads. Here an idle worker spins on a generation counter for at most [`SPIN`]
//! after its last job, then parks; the caller spins on the completion count for at most
//! [`SPIN`], then parks. The spin is bounded in time, not iterations, so a thread descheduled on
//! an oversubscribed machine costs at most one park/unpark, as with rayon.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*, fence};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a worker waits for the next job (and the caller for its workers) before parking.
const SPIN: Duration = Duration::from_micros(5);

/// A worker's stack: a share of [`CpuContext::map_shares`](super::CpuContext::map_shares) runs a
/// whole training forward and backward (burn's autodiff walks the graph) on a worker, so it
/// gets the main thread's usual 8 MiB rather than the 2 MiB of `std::thread` (only the pages
/// touched are ever committed).
const WORKER_STACK: usize = 8 << 20;

/// The thread pool could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the CPU thread pool: {0}")]
pub struct CpuPoolError(#[from] std::io::Error);

/// One call's work: `job(t)` runs share `t` (`1..threads`; the caller runs share 0).
type Job = &'static (dyn Fn(usize) + Sync);

/// State shared by the caller and the workers.
struct Shared {
    /// Bumped once per job (and once at shutdown); workers wait for it to change.
    generation: AtomicUsize,
    /// The current job, valid while `pending > 0`.
    job: Mutex<Option<Job>>,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// A worker's share panicked (re-raised on the caller).
    panicked: AtomicBool,
    shutdown: AtomicBool,
    /// Per worker: it is parked, or about to park, and needs an unpark.
    worker_sleeping: Vec<AtomicBool>,
    /// The caller is parked, or about to park, waiting for `pending == 0`.
    caller_sleeping: AtomicBool,
    caller: Mutex<Option<Thread>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spins until `done()` for at most [`SPIN`], then parks until `done()`, with `sleeping` set
/// first so that the thread making `done()` true knows to unpark this one.
fn wait_until(done: impl Fn() -> bool, sleeping: &AtomicBool) {
    let start = Instant::now();
    let mut spins = 0u32;
    while !done() {
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        sleeping.store(true, SeqCst);
        // The store above and the waker's change of `done()` must not both be missed: with a
        // SeqCst fence on each side (here and in [`wake_if_sleeping`]) either this thread sees
        // `done()` or the waker sees `sleeping`. Without them the language allows both to read
        // the old values (the `done()` loads are Acquire), and qemu-user's aarch64-on-x86
        // translation can reorder them: the likely cause of a caller parked forever in CI
        // (docs/CROSS.md).
        fence(SeqCst);
        while !done() {
            thread::park(); // Spurious wake-ups just re-check.
        }
        sleeping.store(false, SeqCst);
        return;
    }
}

/// Unparks `thread` if it is (about to be) parked, after the caller has made its `done()` true;
/// the fence pairs with the one in [`wait_until`].
fn wake_if_sleeping(sleeping: &AtomicBool, thread: impl FnOnce() -> Option<Thread>) {
    fence(SeqCst);
    if sleeping.load(SeqCst)
        && let Some(t) = thread()
    {
        t.unpark();
    }
}

/// `threads - 1` workers; the caller is the last thread.
pub(super) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    /// Serializes callers sharing one pool (a call owns the job slot until it returns).
    call: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        self.shared.generation.fetch_add(1, SeqCst);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker_loop(shared: &Shared, t: usize) {
    let mut seen = 0;
    loop {
        wait_until(
            || shared.generation.load(Acquire) != seen,
            &shared.worker_sleeping[t - 1],
        );
        seen = shared.generation.load(Acquire);
        if shared.shutdown.load(Acquire) {
            return;
        }
        let job = lock(&shared.job).expect("a job is published before its generation");
        if catch_unwind(AssertUnwindSafe(|| job(t))).is_err() {
            shared.panicked.store(true, SeqCst);
        }
        if shared.pending.fetch_sub(1, AcqRel) == 1 {
            wake_if_sleeping(&shared.caller_sleeping, || lock(&shared.caller).clone());
        }
    }
}

/// Waits (also when unwinding) until the workers are done with the current job, then clears it.
struct Wait<'a>(&'a Shared);

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let s = self.0;
        wait_until(|| s.pending.load(Acquire) == 0, &s.caller_sleeping);
        *lock(&s.job) = None;
    }
}

impl Pool {
    pub(super) fn new(threads: usize) -> Result<Self, CpuPoolError> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: Mutex::new(None),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            worker_sleeping: (1..threads).map(|_| AtomicBool::new(false)).collect(),
            caller_sleeping: AtomicBool::new(false),
            caller: Mutex::new(None),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::with_capacity(threads - 1),
            threads,
            call: Mutex::new(()),
        };
        for t in 1..threads {
            let shared = Arc::clone(&pool.shared);
            // On error, dropping `pool` shuts down the workers started so far.
            pool.workers.push(
                thread::Builder::new()
                    .name(format!("engram-cpu-{t}"))
                    .stack_size(WORKER_STACK)
                    .spawn(move || worker_loop(&shared, t))?,
            );
        }
        Ok(pool)
    }

    pub(super) fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(t)` for every `t < n` (`n <= threads`): `t = 0` on the calling thread, the others
    /// on workers; returns when all are done. A worker's panic is re-raised here.
    pub(super) fn broadcast(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(n >= 1 && n <= self.threads, "broadcast: {n} shares");
        if n == 1 {
            return f(0);
        }
        let _call = lock(&self.call);
        let s = &*self.shared;
        *lock(&s.caller) = Some(thread::current());
        // Workers `n..threads` see the job too and skip it.
        let job = move |t: usize| {
            if t < n {
                f(t)
            }
        };
        let job: &(dyn Fn(usize) + Sync) = &job;
        // SAFETY: only the lifetime is extended. Workers call `job` only after the generation
        // bump below and before their `pending` decrement, and `wait` (dropped on return and on
        // unwind) does not let this frame end before `pending` is zero and the slot is cleared,
        // so `job` and everything it borrows outlive every use.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job) };
        *lock(&s.job) = Some(job);
        s.pending.store(self.threads - 1, SeqCst);
        s.generation.fetch_add(1, SeqCst);
        let wait = Wait(s);
        for (w, sleeping) in self.workers.iter().zip(&s.worker_sleeping) {
            wake_if_sleeping(sleeping, || Some(w.thread().clone()));
        }
        job(0);
        drop(wait);
        if s.panicked.swap(false, SeqCst) {
            panic!("a CPU pool worker panicked");
        }
    }

    /// Fills `out` (`m × total`, row-major) by calling `f(range, part)` on `threads` disjoint
    /// column ranges (multiples of `align`), where `part` is `m × range.len()` row-major.
    ///
    /// With `m == 1` the parts are disjoint sub-slices of `out`; otherwise each part is computed
    /// into scratch and copied into place afterwards (the copy is `k` times cheaper than the
    /// product).
    pub(super) fn split_columns<F>(
        &self,
        threads: usize,
        m: usize,
        total: usize,
        align: usize,
        out: &mut [f32],
        f: &F,
    ) where
        F: Fn(Range<usize>, &mut [f32]) + Sync,
    {
        debug_assert_eq!(out.len(), m * total);
        let ranges = split(total, align, threads.min(self.threads));
        if ranges.len() <= 1 {
            return f(0..total, out);
        }
        if m == 1 {
            self.run(parts(&ranges, 1, out), f);
        } else {
            let mut scratch = vec![0.0f32; m * total];
            self.run(parts(&ranges, m, &mut scratch), f);
            let mut off = 0;
            for r in &ranges {
                let part = &scratch[off..off + m * r.len()];
                for (i, src) in part.chunks_exact(r.len()).enumerate() {
                    out[i * total + r.start..i * total + r.end].copy_from_slice(src);
                }
                off += m * r.len();
            }
        }
    }

    /// Fills `out` (`m × total`, row-major) by calling `f(rows, part)` on `threads` disjoint
    /// ranges of its `m` rows (multiples of `align`, the last one taking any remainder), where
    /// `part` is `out`'s own `rows.len() × total` block: no scratch and no copy, unlike
    /// [`split_columns`](Self::split_columns) with `m > 1`.
    pub(super) fn split_rows<F>(
        &self,
        threads: usize,
        m: usize,
        total: usize,
        align: usize,
        out: &mut [f32],
        f: &F,
    ) where
        F: Fn(Range<usize>, &mut [f32]) + Sync,
    {
        debug_assert_eq!(out.len(), m * total);
        let mut ranges = split(m, align, threads.min(self.threads));
        if ranges.len() <= 1 {
            return f(0..m, out);
        }
        if let Some(last) = ranges.last_mut() {
            last.end = m;
        }
        self.run(parts(&ranges, total, out), f);
    }

    /// Runs `f` on every part, part `t` on thread `t` (0 = the caller).
    fn run<F>(&self, parts: Vec<(Range<usize>, &mut [f32])>, f: &F)
    where
        F: Fn(Range<usize>, &mut [f32]) + Sync,
    {
        let n = parts.len();
        let parts: Vec<Mutex<Option<_>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
        self.broadcast(n, &|t| {
            if let Some((r, p)) = lock(&parts[t]).take() {
                f(r, p);
            }
        });
    }
}

/// Cuts `0..total` into at most `threads` ranges of whole `align` units, as even as possible.
fn split(total: usize, align: usize, threads: usize) -> Vec<Range<usize>> {
    let units = total / align;
    let threads = threads.clamp(1, units.max(1));
    (0..threads)
        .map(|t| (units * t / threads * align)..(units * (t + 1) / threads * align))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Consecutive `m × range.len()` pieces of `buf`.
fn parts<'a>(
    ranges: &[Range<usize>],
    m: usize,
    mut buf: &'a mut [f32],
) -> Vec<(Range<usize>, &'a mut [f32])> {
    ranges
        .iter()
        .map(|r| {
            let (head, tail) = std::mem::take(&mut buf).split_at_mut(m * r.len());
            buf = tail;
            (r.clone(), head)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Pool, split};

    #[test]
    fn broadcast_runs_every_share_and_survives_a_worker_panic() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Pool::new(3).unwrap();
        for n in [1, 2, 3, 3, 2] {
            let hits = AtomicUsize::new(0);
            pool.broadcast(n, &|t| {
                hits.fetch_add(1 << (8 * t), Ordering::Relaxed);
            });
            let want: usize = (0..n).map(|t| 1 << (8 * t)).sum();
            assert_eq!(hits.into_inner(), want);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.broadcast(2, &|t| assert_ne!(t, 1, "worker share"));
        }));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.broadcast(3, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.into_inner(), 3);
    }

    /// Many short calls whose shares finish in either order, some after the other side has
    /// parked: a lost wake-up (see [`super::wait_until`]) hangs here.
    #[test]
    fn many_short_broadcasts_never_lose_a_wake_up() {
        let pool = Pool::new(2).unwrap();
        for i in 0..20_000u64 {
            pool.broadcast(2, &|t| {
                if (i + t as u64).is_multiple_of(3) {
                    std::thread::sleep(std::time::Duration::from_micros(i % 50));
                }
            });
        }
    }

    #[test]
    fn split_covers_range_in_aligned_pieces() {
        for (total, align, threads) in [
            (576, 1, 2),
            (1536, 32, 3),
            (256, 256, 4),
            (100, 1, 7),
            (64, 32, 8),
        ] {
            let r = split(total, align, threads);
            assert_eq!(r.first().unwrap().start, 0);
            assert_eq!(r.last().unwrap().end, total);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
            }
            assert!(r.iter().all(|r| r.start % align == 0 && !r.is_empty()));
            assert!(r.len() <= threads);
        }
    }
}

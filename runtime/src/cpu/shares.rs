//! Coarse-grained work on the pool: [`CpuContext::map_shares`] runs one closure per thread,
//! each a whole piece of work (a training micro-batch's forward and backward) that makes its
//! own products. Inside a share the context runs every product, team and nested map on the
//! calling thread alone: the threads are already busy with the other shares, and a nested
//! call into the pool from a share would wait for itself.

use std::cell::Cell;
use std::sync::Mutex;

use super::CpuContext;

thread_local! {
    /// This thread is running a share of [`CpuContext::map_shares`].
    static IN_SHARE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside a share of [`CpuContext::map_shares`].
pub(super) fn in_share() -> bool {
    IN_SHARE.with(Cell::get)
}

/// Marks the calling thread as inside a share until dropped (also on unwind), restoring what
/// it was before.
struct ShareScope(bool);

impl ShareScope {
    fn enter() -> Self {
        ShareScope(IN_SHARE.with(|s| s.replace(true)))
    }
}

impl Drop for ShareScope {
    fn drop(&mut self) {
        IN_SHARE.with(|s| s.set(self.0));
    }
}

impl CpuContext {
    /// Runs `f(i)` for every `i < n`, share `i` on thread `i mod threads` of the pool (share 0
    /// on the caller), and returns the results in order. Within `f` the context is one thread
    /// ([`threads`](Self::threads) is 1): products, teams and nested maps run on the calling
    /// thread. With more shares than threads, each thread runs its shares one after the other.
    /// A panic in any share is re-raised here after all threads are done.
    pub fn map_shares<R: Send>(&self, n: usize, f: &(dyn Fn(usize) -> R + Sync)) -> Vec<R> {
        let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let threads = self.threads().min(n).max(1);
        let run = |t: usize| {
            let _scope = ShareScope::enter();
            for i in (t..n).step_by(threads) {
                let r = f(i);
                *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
            }
        };
        if threads == 1 {
            run(0);
        } else {
            self.pool.broadcast(threads, &run);
        }
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .expect("every share ran")
            })
            .collect()
    }
}

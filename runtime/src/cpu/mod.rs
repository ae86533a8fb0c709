//! The threaded CPU matmul driver over quantized weights: quantizes activations once, splits the
//! weight rows (forward) or block-aligned weight columns (backward) across a persistent pool, and
//! runs `engram_kernels`' row-range kernels on each part.
//!
//! Decode calls this a couple of hundred times per token with `m = 1`, so the pool is created
//! once ([`CpuContext::new`]) and reused: no thread is spawned per call.

use std::ops::Range;

use engram_kernels::{
    QMatrix, activation_bytes, matmul_rows, matmul_rows_f32, matmul_t_cols, quantize_activations,
};

mod pool;
mod shares;
mod team;
#[cfg(test)]
mod tests;

pub use pool::CpuPoolError;
use pool::Pool;
pub use team::Team;
use team::{PoisonOnUnwind, SpinBarrier};

/// Below this many weights a product runs on the calling thread: waking workers costs more.
const MIN_PARALLEL_WEIGHTS: usize = 32 * 1024;

/// From this many activation rows on, [`CpuContext::qmatmul`] splits the activation rows
/// between the threads instead of the weight rows: each share quantizes its own rows and
/// writes its own block of the output (no serial quantization, no scratch copy), and reads all
/// of `W`, which at 32 rows or more is work for the cores, not the memory (a share makes
/// ≥ 16 multiply-adds per weight byte it reads).
const ROW_SPLIT_MIN_ROWS: usize = 32;

/// Activation rows a share's part is cut at under the row split: the tile kernels' 4 rows.
const ROW_SPLIT_ALIGN: usize = 4;

/// CPU execution context: a persistent thread pool of a fixed size. Create one per process (or
/// per model) and pass it to every product.
#[derive(Debug)]
pub struct CpuContext {
    pool: Pool,
}

impl CpuContext {
    /// A context running products on `threads` threads (the caller plus `threads - 1` workers).
    /// `threads == 0` means one per available core.
    pub fn new(threads: usize) -> Result<Self, CpuPoolError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Ok(CpuContext {
            pool: Pool::new(threads)?,
        })
    }

    /// Threads a product is split across: the pool's size, or 1 on a thread running a share of
    /// [`map_shares`](Self::map_shares).
    pub fn threads(&self) -> usize {
        if shares::in_share() {
            return 1;
        }
        self.pool.threads()
    }

    /// `y = x · Wᵀ`: `W` is `n × k` (`w.rows() × w.cols()`, e.g. a mapped GGUF tensor), `x`
    /// is `m × k`, `y` is `m × n`, all row-major. Activations are quantized once per row to
    /// [`engram_kernels::activation_type`]`(w.ty())`. With few rows (decode) `W`'s rows are
    /// split across the threads; from 32 rows on (prefill, training) the
    /// activation rows are, each share quantizing its own. Every output is the same bits either
    /// way: the kernels' tiles give each `(row, column)` exactly the one-row dot product.
    ///
    /// # Panics
    /// On inconsistent sizes (an internal contract).
    pub fn qmatmul(&self, w: &QMatrix<'_>, x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (w.rows(), w.cols());
        assert_eq!(x.len(), m * k, "qmatmul: x must be m × k");
        assert_eq!(y.len(), m * n, "qmatmul: y must be m × n");
        if m >= ROW_SPLIT_MIN_ROWS {
            let threads = self.threads_for(n * k, m / ROW_SPLIT_ALIGN);
            self.pool.split_rows(
                threads,
                m,
                n,
                ROW_SPLIT_ALIGN,
                y,
                &|rows: Range<usize>, out: &mut [f32]| {
                    let x = &x[rows.start * k..rows.end * k];
                    let mut xq = vec![0u8; activation_bytes(w.ty(), x.len())];
                    quantize_activations(w.ty(), x, &mut xq);
                    matmul_rows(w, 0..n, &xq, rows.len(), out);
                },
            );
            return;
        }
        let mut xq = vec![0u8; activation_bytes(w.ty(), m * k)];
        quantize_activations(w.ty(), x, &mut xq);
        let threads = self.threads_for(n * k, n);
        self.pool.split_columns(
            threads,
            m,
            n,
            1,
            y,
            &|rows: Range<usize>, out: &mut [f32]| matmul_rows(w, rows, &xq, m, out),
        );
    }

    /// [`qmatmul`](Self::qmatmul) with f32 activations (weights dequantized on the fly): slower,
    /// for parity checks of the quantized-activation path.
    ///
    /// # Panics
    /// On inconsistent sizes (an internal contract).
    pub fn qmatmul_f32(&self, w: &QMatrix<'_>, x: &[f32], m: usize, y: &mut [f32]) {
        let (n, k) = (w.rows(), w.cols());
        assert_eq!(x.len(), m * k, "qmatmul_f32: x must be m × k");
        assert_eq!(y.len(), m * n, "qmatmul_f32: y must be m × n");
        let threads = self.threads_for(n * k, n);
        self.pool.split_columns(
            threads,
            m,
            n,
            1,
            y,
            &|rows: Range<usize>, out: &mut [f32]| matmul_rows_f32(w, rows, x, m, out),
        );
    }

    /// `dx = dy · W` (the input gradient of [`qmatmul`](Self::qmatmul)): `dy` is `m × n`, `dx` is
    /// `m × k` (overwritten). `W`'s block-aligned column ranges are split across the threads;
    /// sums are f32 (no activation quantization).
    ///
    /// # Panics
    /// On inconsistent sizes (an internal contract).
    pub fn qmatmul_t(&self, w: &QMatrix<'_>, dy: &[f32], m: usize, dx: &mut [f32]) {
        let (n, k) = (w.rows(), w.cols());
        assert_eq!(dy.len(), m * n, "qmatmul_t: dy must be m × n");
        assert_eq!(dx.len(), m * k, "qmatmul_t: dx must be m × k");
        let bs = w.ty().block_size();
        let threads = self.threads_for(n * k, k / bs);
        self.pool.split_columns(
            threads,
            m,
            k,
            bs,
            dx,
            &|cols: Range<usize>, out: &mut [f32]| matmul_t_cols(w, cols, dy, m, out),
        );
    }

    /// Runs `f` once on every thread of the pool at the same time (share 0 on the caller), for
    /// work that splits several consecutive products between the threads and meets at
    /// [`Team::sync`] between them: one wake-up of the workers per call instead of one per
    /// product. Returns when every share is done; a share's panic is re-raised here (the other
    /// shares stop at their next `sync`).
    pub fn team(&self, f: &(dyn Fn(&Team<'_>) + Sync)) {
        self.team_of(self.threads(), f);
    }

    /// [`team`](Self::team) on the first `size` threads only (at least one, at most
    /// [`threads`](Self::threads)).
    pub fn team_of(&self, size: usize, f: &(dyn Fn(&Team<'_>) + Sync)) {
        let size = size.clamp(1, self.threads());
        let barrier = SpinBarrier::new(size);
        self.pool.broadcast(size, &|index| {
            let _poison = PoisonOnUnwind(&barrier);
            f(&Team {
                index,
                size,
                barrier: &barrier,
            });
        });
    }

    fn threads_for(&self, weights: usize, units: usize) -> usize {
        if weights < MIN_PARALLEL_WEIGHTS {
            1
        } else {
            self.threads().min(units).max(1)
        }
    }
}

//! A persistent pool (rayon's, with the calling thread doing one share) and the one splitting
//! pattern the products need: an `m × total` row-major output cut into column ranges.

use std::ops::Range;

/// The thread pool could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the CPU thread pool: {0}")]
pub struct CpuPoolError(#[from] rayon::ThreadPoolBuildError);

/// `threads - 1` rayon workers; the caller is the last thread.
#[derive(Debug)]
pub(super) struct Pool {
    workers: Option<rayon::ThreadPool>,
    threads: usize,
}

impl Pool {
    pub(super) fn new(threads: usize) -> Result<Self, CpuPoolError> {
        let threads = threads.max(1);
        let workers = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads - 1)
                    .thread_name(|i| format!("engram-cpu-{i}"))
                    .build()?,
            )
        } else {
            None
        };
        Ok(Pool { workers, threads })
    }

    pub(super) fn threads(&self) -> usize {
        self.threads
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
        let ranges = split(total, align, threads);
        let workers = match &self.workers {
            Some(w) if ranges.len() > 1 => w,
            _ => return f(0..total, out),
        };
        if m == 1 {
            run(workers, parts(&ranges, 1, out), f);
        } else {
            let mut scratch = vec![0.0f32; m * total];
            run(workers, parts(&ranges, m, &mut scratch), f);
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

/// Runs `f` on every part: the first on the calling thread, the rest on the workers.
fn run<F>(workers: &rayon::ThreadPool, mut parts: Vec<(Range<usize>, &mut [f32])>, f: &F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let (r0, p0) = parts.remove(0);
    workers.in_place_scope(|s| {
        for (r, p) in parts {
            s.spawn(move |_| f(r, p));
        }
        f(r0, p0);
    });
}

#[cfg(test)]
mod tests {
    use super::split;

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

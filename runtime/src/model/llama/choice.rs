//! Choosing between two ways of running a decode token by measured speed: which one is faster
//! depends on the machine's load (one thread or all) or on the core (the m = 1 product's form),
//! neither of which the decoder can know in advance.

/// Tokens between two tries of the way not in use.
pub(super) const EXPLORE_EVERY: u32 = 32;

/// Two ways, `0` and `1`, each timed by an exponential moving average of its tokens' seconds.
/// The faster one runs; the other is retried every [`EXPLORE_EVERY`] tokens (offset by
/// `phase`, so two choices made on the same tokens do not retry on the same token), so a
/// change of conditions is noticed and a wrong first impression costs only those retries.
pub(super) struct TwoWay {
    /// Seconds per token of each way, `None` until timed.
    pub(super) ewma: [Option<f64>; 2],
    since_explore: u32,
    /// Tokens still to run on way `first` untimed before either is tried (lets an earlier
    /// choice settle first, so the two are not timed on the same few tokens).
    delay: u32,
    first: usize,
}

impl TwoWay {
    /// A choice that tries `first` first, after `delay` untimed tokens on it, and retries the
    /// slower way `phase` tokens into each [`EXPLORE_EVERY`] cycle.
    pub(super) fn new(first: usize, delay: u32, phase: u32) -> Self {
        Self {
            ewma: [None, None],
            since_explore: phase % EXPLORE_EVERY,
            delay,
            first,
        }
    }

    /// The way to run the next token, and whether to time it.
    pub(super) fn next(&mut self) -> (usize, bool) {
        if self.delay > 0 {
            self.delay -= 1;
            return (self.first, false);
        }
        let way = match self.ewma {
            [None, None] => self.first,
            [None, Some(_)] => 0,
            [Some(_), None] => 1,
            [Some(a), Some(b)] => {
                let best = usize::from(b <= a);
                self.since_explore += 1;
                if self.since_explore >= EXPLORE_EVERY {
                    self.since_explore = 0;
                    1 - best
                } else {
                    best
                }
            }
        };
        (way, true)
    }

    /// Records that a token ran `way` in `seconds`.
    pub(super) fn record(&mut self, way: usize, seconds: f64) {
        let slot = &mut self.ewma[way];
        *slot = Some(slot.map_or(seconds, |old| 0.75 * old + 0.25 * seconds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_both_then_runs_the_faster_and_retries_the_other() {
        let mut c = TwoWay::new(1, 2, 0);
        assert_eq!(c.next(), (1, false));
        assert_eq!(c.next(), (1, false));
        let (w, timed) = c.next();
        assert_eq!((w, timed), (1, true));
        c.record(1, 2.0);
        let (w, _) = c.next();
        assert_eq!(w, 0);
        c.record(0, 1.0);
        let mut runs = [0; 2];
        for _ in 0..EXPLORE_EVERY * 2 {
            let (w, _) = c.next();
            runs[w] += 1;
            c.record(w, [1.0, 2.0][w]);
        }
        assert_eq!(
            runs,
            [EXPLORE_EVERY as usize * 2 - 2, 2],
            "the slower way twice"
        );
        // Conditions change: way 1 becomes the faster one and is noticed at its next retry.
        for _ in 0..EXPLORE_EVERY * 2 {
            let (w, _) = c.next();
            c.record(w, [3.0, 0.5][w]);
        }
        assert_eq!(c.next().0, 1);
    }
}

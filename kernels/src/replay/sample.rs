//! Which stored items a replay batch draws: uniform, power-law recency, or recall-interval
//! scheduling. Every scheme draws distinct slots, so a batch never repeats an item.

use super::rng::SplitMix64;
use super::slot::SlotMeta;

/// How a replay batch is drawn from the stored slots.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// Every stored item equally likely.
    Uniform,
    /// Probability proportional to `(age + 1)^-alpha`, age counted in items offered since the
    /// item was. Natural environments re-present an item with a probability that decays as a
    /// power of the time since it was last seen; replaying with that law mitigates
    /// catastrophic interference ("Catastrophic Interference is Mitigated in Naturalistic
    /// Power-Law Learning Environments", 2024). `alpha = 0` is uniform.
    PowerLawRecency {
        /// Decay exponent (≥ 0).
        alpha: f32,
    },
    /// Spaced rehearsal ("Do Your Best and Get Enough Rest for Continual Learning", CVPR
    /// 2025): an item is due again only `interval` replay batches after its last replay, so
    /// it rests before being recalled. Due items are drawn uniformly; when fewer are due than
    /// the batch needs, the most overdue of the rest fill it.
    RecallInterval {
        /// Replay batches an item rests between recalls (≥ 1).
        interval: u32,
    },
}

/// Fills `out` with distinct indices into `meta` (`out.len() <= meta.len()`).
pub(crate) fn draw(
    sampling: Sampling,
    meta: &[SlotMeta],
    now_seen: u64,
    now_step: u64,
    rng: &mut SplitMix64,
    out: &mut [usize],
) {
    debug_assert!(out.len() <= meta.len());
    match sampling {
        Sampling::Uniform => floyd(meta.len(), rng, out),
        Sampling::PowerLawRecency { alpha } => {
            let weight = |m: &SlotMeta| {
                let age = now_seen.saturating_sub(m.seen_at) as f64;
                libm::pow(age + 1.0, -f64::from(alpha.max(0.0)))
            };
            weighted_without_replacement(meta, weight, rng, out);
        }
        Sampling::RecallInterval { interval } => {
            let interval = u64::from(interval.max(1));
            let due = |m: &SlotMeta| m.replays == 0 || now_step - m.last_replay >= interval;
            let n_due = meta.iter().filter(|m| due(m)).count();
            let from_due = out.len().min(n_due);
            // Uniform over the due items: Floyd over their ranks, then map ranks to slots.
            floyd(n_due, rng, &mut out[..from_due]);
            for o in out[..from_due].iter_mut() {
                *o = nth_index(meta, &due, *o);
            }
            // The rest: most overdue first (never-replayed items count as due, so all here
            // have been replayed; ties go to the lower slot).
            for k in from_due..out.len() {
                let (taken, rest) = out.split_at_mut(k);
                let best = (0..meta.len())
                    .filter(|i| !taken.contains(i))
                    .max_by_key(|&i| (now_step - meta[i].last_replay, usize::MAX - i))
                    .expect("out.len() <= meta.len()");
                rest[0] = best;
            }
        }
    }
}

/// Floyd's algorithm: `out.len()` distinct values from `0..n`, O(k²) with no scratch memory.
fn floyd(n: usize, rng: &mut SplitMix64, out: &mut [usize]) {
    let k = out.len();
    for (filled, j) in (n - k..n).enumerate() {
        let t = rng.below(j as u64 + 1) as usize;
        out[filled] = if out[..filled].contains(&t) { j } else { t };
    }
}

fn nth_index(meta: &[SlotMeta], pred: &impl Fn(&SlotMeta) -> bool, n: usize) -> usize {
    meta.iter()
        .enumerate()
        .filter(|(_, m)| pred(m))
        .nth(n)
        .map(|(i, _)| i)
        .expect("rank below the count")
}

/// Successive weighted draws, each excluding what was drawn before: O(k·n), no scratch.
fn weighted_without_replacement(
    meta: &[SlotMeta],
    weight: impl Fn(&SlotMeta) -> f64,
    rng: &mut SplitMix64,
    out: &mut [usize],
) {
    let mut total: f64 = meta.iter().map(&weight).sum();
    for k in 0..out.len() {
        let (taken, rest) = out.split_at_mut(k);
        let mut u = rng.unit_f64() * total;
        let mut pick = None;
        for (i, m) in meta.iter().enumerate() {
            if taken.contains(&i) {
                continue;
            }
            pick = Some(i);
            u -= weight(m);
            if u < 0.0 {
                break;
            }
        }
        // Rounding can leave u a hair above 0 after the last candidate: take that candidate.
        let i = pick.expect("out.len() <= meta.len()");
        total -= weight(&meta[i]);
        rest[0] = i;
    }
}

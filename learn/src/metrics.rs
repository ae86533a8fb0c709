//! Continual-learning metrics over an accuracy matrix, and their aggregation across seeds.
//!
//! `R[i][j]` is the accuracy on task `j`'s test set after training on tasks `0..=i`
//! (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory"); `b[j]` is the accuracy on task `j`
//! before any training (for forward transfer).

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// Accuracies as training proceeds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccuracyMatrix {
    /// `rows[i][j]`: accuracy on task `j` after training task `i` (every row has all tasks).
    pub rows: Vec<Vec<f32>>,
    /// Accuracy on each task at initialization.
    pub init: Vec<f32>,
}

impl AccuracyMatrix {
    /// Number of tasks evaluated.
    pub fn tasks(&self) -> usize {
        self.init.len()
    }

    /// Average accuracy after the last task: `mean_j R[T-1][j]`.
    pub fn average_accuracy(&self) -> f32 {
        let last = self.rows.last().expect("at least one trained task");
        mean(last)
    }

    /// Average forgetting (Chaudhry et al. 2018): over tasks `j < T-1`, the best accuracy
    /// ever reached on `j` before the end minus the final one. `None` with fewer than two rows.
    pub fn average_forgetting(&self) -> Option<f32> {
        let t = self.rows.len();
        if t < 2 {
            return None;
        }
        let f: Vec<f32> = (0..t - 1)
            .map(|j| {
                let best = (j..t - 1).map(|l| self.rows[l][j]).fold(f32::MIN, f32::max);
                best - self.rows[t - 1][j]
            })
            .collect();
        Some(mean(&f))
    }

    /// Backward transfer: `mean_{j<T-1} R[T-1][j] - R[j][j]` (negative: forgetting).
    pub fn backward_transfer(&self) -> Option<f32> {
        let t = self.rows.len();
        if t < 2 {
            return None;
        }
        let b: Vec<f32> = (0..t - 1)
            .map(|j| self.rows[t - 1][j] - self.rows[j][j])
            .collect();
        Some(mean(&b))
    }

    /// Forward transfer: `mean_{j>0} R[j-1][j] - b[j]` (how much earlier tasks help a new one
    /// before it is trained on).
    pub fn forward_transfer(&self) -> Option<f32> {
        let t = self.rows.len();
        if t < 2 {
            return None;
        }
        let f: Vec<f32> = (1..t).map(|j| self.rows[j - 1][j] - self.init[j]).collect();
        Some(mean(&f))
    }
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

/// Interquartile mean: the mean of the middle half, trimming `floor(n/4)` values from each end
/// (scipy's `trim_mean(x, 0.25)`, which rliable uses).
pub fn iqm(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "IQM of nothing");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let cut = v.len() / 4;
    let mid = &v[cut..v.len() - cut];
    mid.iter().sum::<f64>() / mid.len() as f64
}

/// Percentile bootstrap confidence interval of the IQM over runs (rliable, Agarwal et al.
/// 2021): resample the runs with replacement `reps` times, seeded. Returns `(low, high)` at
/// level `1 - alpha`.
pub fn bootstrap_iqm_ci(values: &[f64], reps: usize, alpha: f64, seed: u64) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = values.len();
    let mut stats: Vec<f64> = (0..reps)
        .map(|_| {
            let sample: Vec<f64> = (0..n).map(|_| values[rng.random_range(0..n)]).collect();
            iqm(&sample)
        })
        .collect();
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| stats[((q * (reps - 1) as f64).round() as usize).min(reps - 1)];
    (at(alpha / 2.0), at(1.0 - alpha / 2.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix() -> AccuracyMatrix {
        AccuracyMatrix {
            rows: vec![
                vec![0.9, 0.1, 0.0],
                vec![0.5, 0.8, 0.2],
                vec![0.3, 0.6, 0.7],
            ],
            init: vec![0.1, 0.1, 0.1],
        }
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let m = matrix();
        assert!((m.average_accuracy() - (0.3 + 0.6 + 0.7) / 3.0).abs() < 1e-6);
        // Forgetting: task 0 best 0.9 -> 0.3 (0.6), task 1 best 0.8 -> 0.6 (0.2).
        assert!((m.average_forgetting().unwrap() - 0.4).abs() < 1e-6);
        assert!((m.backward_transfer().unwrap() + 0.4).abs() < 1e-6);
        // FWT: R[0][1] - b1 = 0.0, R[1][2] - b2 = 0.1.
        assert!((m.forward_transfer().unwrap() - 0.05).abs() < 1e-6);
    }

    #[test]
    fn iqm_trims_a_quarter_each_side_and_the_interval_brackets_it() {
        assert_eq!(iqm(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(iqm(&[100.0, 1.0, 2.0, 3.0, -50.0]), 2.0);
        assert_eq!(iqm(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1000.0]), 3.5);
        let v = [0.61, 0.64, 0.58, 0.66, 0.60];
        let (lo, hi) = bootstrap_iqm_ci(&v, 1000, 0.05, 1);
        assert!(lo <= iqm(&v) && iqm(&v) <= hi && lo >= 0.58 && hi <= 0.66);
    }
}

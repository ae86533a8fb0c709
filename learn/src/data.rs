//! The in-memory shape of a class-incremental benchmark stream: labeled feature vectors, tasks
//! of a few classes each, and the splits that build them. Loading the data-set files lives in
//! the harness (`engram-harness`), so a device build links no decompressor.

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;

/// Labeled feature vectors, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Inputs, `(len, dim)` row-major, scaled to `[0, 1]`.
    pub x: Vec<f32>,
    /// Labels.
    pub y: Vec<u32>,
    /// Input width.
    pub dim: usize,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Input row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Dataset {
        let mut out = Dataset {
            dim: self.dim,
            ..Dataset::default()
        };
        for &i in idx {
            out.x.extend_from_slice(self.row(i));
            out.y.push(self.y[i]);
        }
        out
    }

    /// Appends all of `other` (same width).
    pub fn extend(&mut self, other: &Dataset) {
        assert_eq!(self.dim, other.dim, "datasets of different widths");
        self.x.extend_from_slice(&other.x);
        self.y.extend_from_slice(&other.y);
    }
}

/// One task of a class-incremental stream.
#[derive(Clone, Debug)]
pub struct Task {
    /// The classes it introduces.
    pub classes: Vec<u32>,
    /// Training examples.
    pub train: Dataset,
    /// Test examples.
    pub test: Dataset,
}

/// A stream of tasks over `n_classes` classes.
#[derive(Clone, Debug)]
pub struct Stream {
    /// Name for reports (`split-digits`, `split-fashion-mnist`).
    pub name: String,
    /// The tasks, in training order.
    pub tasks: Vec<Task>,
    /// Classes over all tasks (the classifier's output width).
    pub n_classes: usize,
    /// Input width.
    pub dim: usize,
}

/// Splits `ds` into train and test, stratified by class, `test_per_class` test examples each
/// (shuffled with `seed`).
pub fn stratified_split(ds: &Dataset, test_per_class: usize, seed: u64) -> (Dataset, Dataset) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_classes = ds.y.iter().max().map_or(0, |&m| m as usize + 1);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in 0..n_classes as u32 {
        let mut idx: Vec<usize> = (0..ds.len()).filter(|&i| ds.y[i] == c).collect();
        idx.shuffle(&mut rng);
        let k = test_per_class.min(idx.len());
        test.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (ds.select(&train), ds.select(&test))
}

/// Splits train and test sets into tasks of the given class groups (in that order).
pub fn split_tasks(name: &str, train: &Dataset, test: &Dataset, groups: &[Vec<u32>]) -> Stream {
    let pick = |ds: &Dataset, classes: &[u32]| {
        let idx: Vec<usize> = (0..ds.len())
            .filter(|&i| classes.contains(&ds.y[i]))
            .collect();
        ds.select(&idx)
    };
    let tasks = groups
        .iter()
        .map(|g| Task {
            classes: g.clone(),
            train: pick(train, g),
            test: pick(test, g),
        })
        .collect();
    let n_classes = groups.iter().flatten().max().map_or(0, |&m| m as usize + 1);
    Stream {
        name: name.to_owned(),
        tasks,
        n_classes,
        dim: train.dim,
    }
}

/// The standard split: classes {0,1}, {2,3}, … {8,9}.
pub fn pairs() -> Vec<Vec<u32>> {
    (0..5).map(|t| vec![2 * t, 2 * t + 1]).collect()
}

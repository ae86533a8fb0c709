//! The evaluation protocol: build a strategy from frozen hyper-parameters, stream the tasks,
//! fill the accuracy matrices (class- and task-incremental from the same training run), and
//! tune hyper-parameters on a separate stream ("Hyperparameters in Continual Learning: a
//! Reality Check", Cha & Cho 2024: tune on one stream, freeze, evaluate on another).

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::Device;
use engram_runtime::burn;

use super::buffer::ReplayBuffer;
use super::data::{Dataset, Stream};
use super::learner::{Learner, Piece, TrainConfig};
use super::metrics::AccuracyMatrix;
use super::model::Mlp;
use super::strategy::{DerPlusPlus, Er, Icarl, Lwf, MomentumKd, OnlineEwc, Si};
use engram_kernels::replay::Policy;

/// The strategies `cl-bench` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StrategyKind {
    /// Fine-tuning on each task in turn (lower bound).
    Naive,
    /// One model trained on all tasks at once (upper bound).
    Joint,
    /// Experience replay.
    Er,
    /// Dark experience replay++.
    DerPlusPlus,
    /// Online elastic weight consolidation.
    OnlineEwc,
    /// Synaptic intelligence.
    Si,
    /// Learning without forgetting.
    Lwf,
    /// Experience replay with momentum knowledge distillation.
    ErMkd,
    /// iCaRL.
    Icarl,
}

impl StrategyKind {
    /// All of them, in table order.
    pub const ALL: [StrategyKind; 9] = [
        Self::Naive,
        Self::Joint,
        Self::OnlineEwc,
        Self::Si,
        Self::Lwf,
        Self::Er,
        Self::DerPlusPlus,
        Self::ErMkd,
        Self::Icarl,
    ];

    /// Name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Joint => "joint",
            Self::Er => "er",
            Self::DerPlusPlus => "der++",
            Self::OnlineEwc => "ewc-online",
            Self::Si => "si",
            Self::Lwf => "lwf",
            Self::ErMkd => "er+mkd",
            Self::Icarl => "icarl",
        }
    }

    /// Parses [`StrategyKind::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// True when the strategy keeps a replay buffer (its results depend on the buffer size).
    pub fn uses_buffer(self) -> bool {
        matches!(
            self,
            Self::Er | Self::DerPlusPlus | Self::ErMkd | Self::Icarl
        )
    }
}

/// Hyper-parameters of every strategy (each reads its own fields).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HParams {
    /// SGD learning rate.
    pub lr: f32,
    /// Strategy strength: EWC λ, SI c, LwF/iCaRL α, DER++ α (β = α), MKD λ; unused by
    /// naive, joint and ER.
    pub strength: f32,
}

impl Default for HParams {
    fn default() -> Self {
        Self {
            lr: 0.05,
            strength: 1.0,
        }
    }
}

/// Training regime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Each example seen once, batches of 10 (online continual learning).
    Online,
    /// `epochs` passes per task, batches of 32.
    Offline {
        /// Passes over each task.
        epochs: usize,
    },
}

impl Mode {
    fn train_config(self, lr: f32) -> TrainConfig {
        match self {
            Mode::Online => TrainConfig {
                lr,
                batch: 10,
                replay_batch: 10,
                epochs: 1,
            },
            Mode::Offline { epochs } => TrainConfig {
                lr,
                batch: 32,
                replay_batch: 32,
                epochs,
            },
        }
    }
}

/// One run: a strategy on a stream with one seed.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Hidden widths of the MLP (e.g. `[100, 100]`).
    pub hidden: Vec<usize>,
    /// Online or offline.
    pub mode: Mode,
    /// Replay memory in examples (replay strategies only).
    pub buffer: usize,
    /// Seed of initialization, shuffling and the buffer.
    pub seed: u64,
    /// Hyper-parameters.
    pub hp: HParams,
}

/// Accuracy matrices of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Class-incremental: argmax over all classes.
    pub class_il: AccuracyMatrix,
    /// Task-incremental: argmax over the task's own classes.
    pub task_il: AccuracyMatrix,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Optimizer steps.
    pub steps: u64,
}

/// Builds the learner of `cfg` for a stream of `dim` inputs and `classes` outputs.
pub fn build_learner(cfg: &RunConfig, dim: usize, classes: usize, device: &Device) -> Learner {
    let mut dims = vec![dim];
    dims.extend_from_slice(&cfg.hidden);
    dims.push(classes);
    let (model, params) = Mlp::new(&dims, device, cfg.seed);
    let s = cfg.hp.strength;
    let pieces: Vec<Box<dyn Piece>> = match cfg.strategy {
        StrategyKind::Naive | StrategyKind::Joint => vec![],
        StrategyKind::Er => vec![Box::new(Er { weight: 1.0 })],
        StrategyKind::DerPlusPlus => vec![Box::new(DerPlusPlus { alpha: s, beta: s })],
        StrategyKind::OnlineEwc => vec![Box::new(OnlineEwc::new(s, 1.0, 200))],
        StrategyKind::Si => vec![Box::new(Si::new(s, 0.1))],
        StrategyKind::Lwf => vec![Box::new(Lwf::new(s, 2.0))],
        StrategyKind::ErMkd => vec![
            Box::new(Er { weight: 1.0 }),
            Box::new(MomentumKd::new(0.99, s, 2.0)),
        ],
        StrategyKind::Icarl => vec![Box::new(Icarl::new(s, 2.0))],
    };
    let buffer = cfg.strategy.uses_buffer().then(|| {
        let n_logits = if cfg.strategy == StrategyKind::DerPlusPlus {
            classes
        } else {
            0
        };
        ReplayBuffer::new(cfg.buffer, dim, n_logits, Policy::default(), cfg.seed)
            .expect("buffer size checked by the caller")
    });
    Learner::new(
        model,
        params,
        device.clone(),
        cfg.mode.train_config(cfg.hp.lr),
        buffer,
        pieces,
        cfg.seed,
    )
}

fn evaluate(l: &Learner, stream: &Stream) -> (Vec<f32>, Vec<f32>) {
    stream
        .tasks
        .iter()
        .map(|t| {
            (
                l.accuracy(&t.test, None),
                l.accuracy(&t.test, Some(&t.classes)),
            )
        })
        .unzip()
}

/// Streams the tasks of `stream` through the strategy of `cfg`; `on_task(i, class_il_row,
/// task_il_row)` sees each new matrix row as it is evaluated.
pub fn run(
    stream: &Stream,
    cfg: &RunConfig,
    device: &Device,
    mut on_task: impl FnMut(usize, &[f32], &[f32]),
) -> RunResult {
    let start = Instant::now();
    let mut l = build_learner(cfg, stream.dim, stream.n_classes, device);
    let (ci, ti) = evaluate(&l, stream);
    let mut class_il = AccuracyMatrix {
        rows: vec![],
        init: ci,
    };
    let mut task_il = AccuracyMatrix {
        rows: vec![],
        init: ti,
    };
    if cfg.strategy == StrategyKind::Joint {
        let mut all = Dataset {
            dim: stream.dim,
            ..Dataset::default()
        };
        let mut classes = Vec::new();
        for t in &stream.tasks {
            all.extend(&t.train);
            classes.extend_from_slice(&t.classes);
        }
        l.train_task(0, &all, &classes);
        let (ci, ti) = evaluate(&l, stream);
        on_task(stream.tasks.len() - 1, &ci, &ti);
        class_il.rows.push(ci);
        task_il.rows.push(ti);
    } else {
        for (i, t) in stream.tasks.iter().enumerate() {
            l.train_task(i as u32, &t.train, &t.classes);
            let (ci, ti) = evaluate(&l, stream);
            on_task(i, &ci, &ti);
            class_il.rows.push(ci);
            task_il.rows.push(ti);
        }
    }
    RunResult {
        class_il,
        task_il,
        seconds: start.elapsed().as_secs_f64(),
        steps: l.steps(),
    }
}

/// Candidate hyper-parameters of a strategy (learning rate × strength).
pub fn grid(kind: StrategyKind) -> Vec<HParams> {
    let lrs = [0.01f32, 0.03, 0.1];
    let strengths: &[f32] = match kind {
        StrategyKind::Naive | StrategyKind::Joint | StrategyKind::Er => &[1.0],
        StrategyKind::OnlineEwc => &[10.0, 100.0, 1000.0],
        StrategyKind::Si => &[0.1, 1.0, 10.0],
        StrategyKind::Lwf | StrategyKind::Icarl => &[0.5, 1.0, 3.0],
        StrategyKind::DerPlusPlus => &[0.1, 0.3, 1.0],
        StrategyKind::ErMkd => &[0.3, 1.0, 3.0],
    };
    lrs.iter()
        .flat_map(|&lr| {
            strengths
                .iter()
                .map(move |&strength| HParams { lr, strength })
        })
        .collect()
}

/// Frozen hyper-parameters per strategy, as `cl-bench tune` writes them.
pub type Tuned = BTreeMap<String, HParams>;

/// The hyper-parameters tuned on Split-Digits and committed (`learn/src/tuned.json`).
pub fn committed_hparams() -> Tuned {
    serde_json::from_str(include_str!("tuned.json")).expect("committed tuned.json parses")
}

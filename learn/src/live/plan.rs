//! [`LivePlan`]: the memory a learning state needs, by component, checked before anything is
//! allocated. The training step's part comes from the adapters' planner (base mapping,
//! adapter, gradients, AdamW moments, activations); the runtime adds the replay memory, the
//! strategy's tensors, the published snapshot's adapter copy and the queue of observed
//! sequences.

use engram_adapters::trainer::plan::OverBudget;
use engram_adapters::trainer::plan::{MemoryPlan, TrainShape, lora_scalars, plan};
use engram_runtime::model::config::LlamaConfig;

use super::config::{LiveConfig, Strategy};
use super::sequences::SequenceBuffer;

/// Bytes a learning state needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LivePlan {
    /// One training step (see [`MemoryPlan`]).
    pub training: MemoryPlan,
    /// The replay memory (tokens and DER++'s logits).
    pub replay: u64,
    /// The strategy's tensors: a teacher adapter (LwF, MKD) or importance, anchor and
    /// running estimate (EWC, SI).
    pub strategy: u64,
    /// The published snapshot's copy of the adapter.
    pub snapshot: u64,
    /// The queue of observed sequences at its bound.
    pub queue: u64,
    /// The fused decoder's interleaved weight copies, made at the first served token
    /// ([`engram_runtime::model::llama::Llama::decode_copy_bytes`]; 0 where there are none).
    pub decode_copy: u64,
}

impl LivePlan {
    /// The plan for `config` on a model of `model` whose file is `file_bytes` long and whose
    /// fused decoder keeps `decode_copy` bytes of interleaved weights while serving.
    pub fn new(
        file_bytes: u64,
        model: &LlamaConfig,
        config: &LiveConfig,
        decode_copy: u64,
    ) -> Self {
        let shape = TrainShape {
            batch: config.batch,
            seq_len: config.max_len,
            lora: Some(config.lora.clone()),
            prompt_scalars: 0,
        };
        let adapter = 4 * lora_scalars(model, &config.lora);
        let strategy = match config.strategy {
            Strategy::Lwf { .. } | Strategy::Mkd { .. } => adapter,
            Strategy::Ewc { .. } | Strategy::Si { .. } => 3 * adapter,
            _ => 0,
        };
        let replay = if config.strategy.replays() {
            SequenceBuffer::bytes_for(config.buffer, config.max_len, config.strategy.top_k()) as u64
        } else {
            0
        };
        Self {
            training: plan(model, file_bytes, &shape),
            replay,
            strategy,
            snapshot: adapter,
            queue: (super::MAX_PENDING * (config.max_len + 4) * 4) as u64,
            decode_copy,
        }
    }

    /// Everything together: the expected peak resident set.
    pub fn total(&self) -> u64 {
        self.training.total()
            + self.replay
            + self.strategy
            + self.snapshot
            + self.queue
            + self.decode_copy
    }

    /// `Ok` when the plan fits `budget` bytes, else what to shrink first.
    pub fn check(&self, budget: u64) -> Result<(), OverBudget> {
        if self.total() <= budget {
            return Ok(());
        }
        let extra = self.replay + self.strategy + self.snapshot + self.queue;
        let advice = if self.replay >= self.training.activations.max(extra / 2) {
            format!(
                "the replay memory takes {} MiB: lower --buffer (or DER++'s top_k)",
                self.replay >> 20
            )
        } else if self.training.activations >= extra {
            "activations dominate: lower the batch size or max_len".to_owned()
        } else {
            "the adapter's state dominates: lower the LoRA rank or adapt fewer projections"
                .to_owned()
        };
        Err(OverBudget {
            plan: MemoryPlan {
                runtime: self.training.runtime + extra,
                ..self.training
            },
            budget,
            advice,
        })
    }
}

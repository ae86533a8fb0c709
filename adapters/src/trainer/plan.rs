//! Memory planning: what a training configuration will need, before anything is allocated.
//!
//! The estimate counts the bytes that stay resident during a training step: the mapped base
//! (file-backed pages the kernels touch), the adapter, its gradients and AdamW moments, and the
//! activations the autodiff graph keeps for the backward pass (per block, in units of the
//! `b × t` positions times each width, plus the attention matrices and the vocabulary
//! projection, which dominates for a 49k-token vocabulary). Constants were fitted to the graph
//! in `runtime/src/model/llama.rs`; `engram train-bench` prints plan and measured peak RSS
//! side by side (docs/BENCHMARKS.md).

use engram_runtime::model::config::LlamaConfig;
use engram_runtime::model::llama::Proj;

use crate::lora::LoraConfig;

/// The shape of a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainShape {
    /// Examples per micro-batch.
    pub batch: usize,
    /// Tokens per example (including soft-prompt positions).
    pub seq_len: usize,
    /// The LoRA adapter, if any.
    pub lora: Option<LoraConfig>,
    /// Trainable soft-prompt numbers (prompt tuning / subspace coefficients), if any.
    pub prompt_scalars: usize,
}

/// Bytes a training run needs, by component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemoryPlan {
    /// The memory-mapped GGUF file (shared, read-only, file-backed).
    pub mapped_base: u64,
    /// Trainable parameters.
    pub adapter: u64,
    /// Their gradients.
    pub gradients: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// Activations kept for the backward pass, at the peak of a step.
    pub activations: u64,
    /// Temporaries of the optimizer step (clipped gradient, new moments, update). They live
    /// after the backward pass has released the activations, so the peak holds the larger of
    /// the two, not both.
    pub step_temporaries: u64,
    /// Process baseline: code, thread pool, RoPE tables, norms, allocator slack.
    pub runtime: u64,
}

impl MemoryPlan {
    /// Everything together: the expected peak resident set.
    pub fn total(&self) -> u64 {
        self.mapped_base
            + self.adapter
            + self.gradients
            + self.optimizer
            + self.activations.max(self.step_temporaries)
            + self.runtime
    }
}

/// The plan does not fit the budget.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("training needs about {} MiB but the budget is {} MiB ({}); {advice}", plan.total() >> 20, budget >> 20, breakdown(plan))]
pub struct OverBudget {
    /// The plan.
    pub plan: MemoryPlan,
    /// The budget in bytes.
    pub budget: u64,
    /// What to reduce first.
    pub advice: String,
}

fn breakdown(p: &MemoryPlan) -> String {
    format!(
        "base {} MiB, activations {} MiB, optimizer-step temporaries {} MiB, \
         adapter+grads+optimizer {} MiB, runtime {} MiB",
        p.mapped_base >> 20,
        p.activations >> 20,
        p.step_temporaries >> 20,
        (p.adapter + p.gradients + p.optimizer) >> 20,
        p.runtime >> 20
    )
}

/// Baseline of an engram process that trains (measured: binary, burn, pools, tables).
pub const RUNTIME_BASELINE_BYTES: u64 = 48 << 20;

/// The plan for `shape` on a model with `config` whose file is `file_bytes` long.
pub fn plan(config: &LlamaConfig, file_bytes: u64, shape: &TrainShape) -> MemoryPlan {
    let c = config;
    let (b, t) = (shape.batch as u64, shape.seq_len as u64);
    let (d, dkv, dff, v) = (
        c.d_model as u64,
        c.d_kv() as u64,
        c.d_ff as u64,
        c.n_vocab as u64,
    );
    let h = c.n_head as u64;
    let adapter_scalars =
        shape.prompt_scalars as u64 + shape.lora.as_ref().map_or(0, |l| lora_scalars(config, l));
    // Per block, f32 values the graph keeps for backward: ~10 d-wide tensors (residual, norms,
    // q and its RoPE halves, attention output, projections), ~4 kv-wide (k, v, their RoPE),
    // 3 ff-wide (gate, up, their SwiGLU product), 3 attention matrices (scores, softmax, its
    // gradient). Fitted to `engram train-bench` peak RSS on SmolLM2, b = 4, t = 64, r = 8: the plan
    // gives 704 MiB for q,v (measured 615) and 847 MiB for all-linear (measured 724), erring
    // high by 14-17%.
    let per_block = b * t * (10 * d + 4 * dkv + 3 * dff) + 3 * b * h * t * t;
    let lora_acts = shape.lora.as_ref().map_or(0, |l| {
        let per_target: u64 = l
            .targets
            .iter()
            .map(|p| match p {
                Proj::Down => dff,
                _ => d,
            } + l.rank as u64)
            .sum();
        let layers = (0..c.n_layer).filter(|&i| l.covers_layer(i)).count() as u64;
        b * t * per_target * layers * if l.dropout > 0.0 { 2 } else { 1 }
    });
    // Logits, log-softmax and their gradient at the vocabulary projection.
    let head = 3 * b * t * v;
    let activations = 4 * (per_block * c.n_layer as u64 + lora_acts + head);
    MemoryPlan {
        mapped_base: file_bytes,
        adapter: 4 * adapter_scalars,
        gradients: 4 * adapter_scalars,
        optimizer: 8 * adapter_scalars,
        activations,
        // One adapter matrix's worth at a time: small next to the activations.
        step_temporaries: 0,
        runtime: RUNTIME_BASELINE_BYTES,
    }
}

/// Scalars of a LoRA adapter on `config`.
pub fn lora_scalars(config: &LlamaConfig, l: &LoraConfig) -> u64 {
    let (d, dkv, dff) = (config.d_model, config.d_kv(), config.d_ff);
    let dq = config.n_head * config.d_head; // d_model, except where key_length says otherwise
    let per_layer: usize = l
        .targets
        .iter()
        .map(|p| {
            let (n_in, n_out) = match p {
                Proj::Q => (d, dq),
                Proj::O => (dq, d),
                Proj::K | Proj::V => (d, dkv),
                Proj::Gate | Proj::Up => (d, dff),
                Proj::Down => (dff, d),
            };
            l.rank * (n_in + n_out)
        })
        .sum();
    let layers = (0..config.n_layer).filter(|&i| l.covers_layer(i)).count();
    (per_layer * layers) as u64
}

/// [`plan`], refused with advice when it exceeds `budget` bytes.
pub fn plan_within(
    config: &LlamaConfig,
    file_bytes: u64,
    shape: &TrainShape,
    budget: u64,
) -> Result<MemoryPlan, OverBudget> {
    let p = plan(config, file_bytes, shape);
    if p.total() <= budget {
        return Ok(p);
    }
    let fixed = p.mapped_base + p.runtime;
    let advice = if fixed >= budget {
        format!(
            "the base model and runtime alone need {} MiB: use a smaller or more quantized model",
            fixed >> 20
        )
    } else if p.activations >= p.adapter + p.gradients + p.optimizer {
        shrink_activations_advice(&p, budget, shape.batch * shape.seq_len)
    } else {
        "the adapter's state dominates: lower the LoRA rank or adapt fewer projections".to_owned()
    };
    Err(OverBudget {
        plan: p,
        budget,
        advice,
    })
}

/// The advice when activations are what exceeds `budget`: how many tokens per step still fit
/// beside the fixed part and the trainable state (`tokens`: the plan's batch × seq_len).
/// Callers check first that the fixed part and the state alone fit.
pub(crate) fn shrink_activations_advice(p: &MemoryPlan, budget: u64, tokens: usize) -> String {
    let room = budget - p.mapped_base - p.runtime - (p.adapter + p.gradients + p.optimizer);
    let per_token = p.activations / tokens.max(1) as u64;
    format!(
        "activations dominate: reduce batch × seq_len from {tokens} to at most {} tokens",
        room / per_token.max(1)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SmolLM2-135M's configuration, for the planners' tests.
    pub(crate) fn smollm() -> LlamaConfig {
        LlamaConfig {
            n_vocab: 49152,
            n_ctx_train: 8192,
            d_model: 576,
            n_layer: 30,
            n_head: 9,
            n_head_kv: 3,
            d_head: 64,
            d_ff: 1536,
            rope_base: 100_000.0,
            rope_dim: 64,
            rms_eps: 1e-5,
        }
    }

    #[test]
    fn lora_size_matches_peft_counting() {
        // PEFT reports 460,800 trainable parameters for r=8 on q,v of SmolLM2-135M:
        // 30 × 8 × ((576 + 576) + (576 + 192)).
        let l = LoraConfig::default();
        assert_eq!(lora_scalars(&smollm(), &l), 460_800);
    }

    #[test]
    fn over_budget_says_what_to_reduce() {
        let shape = TrainShape {
            batch: 8,
            seq_len: 256,
            lora: Some(LoraConfig::default()),
            prompt_scalars: 0,
        };
        let p = plan(&smollm(), 100 << 20, &shape);
        assert!(p.activations > p.adapter * 10);
        let err = plan_within(&smollm(), 100 << 20, &shape, 400 << 20).unwrap_err();
        assert!(err.advice.contains("batch × seq_len"), "{err}");
        let fits = plan_within(&smollm(), 100 << 20, &shape, p.total()).unwrap();
        assert_eq!(fits, p);
        let err = plan_within(&smollm(), 100 << 20, &shape, 50 << 20).unwrap_err();
        assert!(err.advice.contains("base model"), "{err}");
    }
}

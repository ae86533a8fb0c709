//! Llama hyper-parameters, read from the GGUF metadata (never hard-coded).

use crate::format::{Gguf, GgufError};

/// Architecture hyper-parameters of a llama-family model.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: usize,
    /// Context length the model was trained for (`{arch}.context_length`).
    pub n_ctx_train: usize,
    /// Residual stream width (`{arch}.embedding_length`).
    pub d_model: usize,
    /// Transformer blocks (`{arch}.block_count`).
    pub n_layer: usize,
    /// Query heads (`{arch}.attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`{arch}.attention.head_count_kv`), for grouped-query attention.
    pub n_head_kv: usize,
    /// Width of one head (`{arch}.attention.key_length`, default `d_model / n_head`).
    pub d_head: usize,
    /// Hidden width of the SwiGLU feed-forward (`{arch}.feed_forward_length`).
    pub d_ff: usize,
    /// RoPE frequency base (`{arch}.rope.freq_base`, default 10000).
    pub rope_base: f32,
    /// Dimensions rotated by RoPE (`{arch}.rope.dimension_count`, default `d_head`).
    pub rope_dim: usize,
    /// RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
}

/// Largest width, count or vocabulary a model file may state (2^24): larger than any model
/// engram targets by far, small enough that products of two fit comfortably.
pub const MAX_DIM: usize = 1 << 24;

/// Longest trained context a model file may state (2^20 positions): the rope tables and the
/// default KV cache are sized from it.
pub const MAX_CONTEXT: usize = 1 << 20;

/// The model file describes something this graph cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A metadata key is missing or has the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The architecture is not one the graph runs.
    #[error(
        "unsupported architecture `{0}` (engram runs {supported})",
        supported = super::arch::Architecture::supported()
    )]
    Architecture(String),
    /// The hyper-parameters are inconsistent or outside what the graph supports.
    #[error("unsupported model configuration: {0}")]
    Unsupported(String),
}

impl LlamaConfig {
    /// Reads the hyper-parameters of a model of a supported family
    /// ([`Architecture`](super::arch::Architecture)) from its metadata (`{arch}.*` keys).
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, ConfigError> {
        let arch = gguf.get_str("general.architecture")?;
        if super::arch::Architecture::from_name(arch).is_none() {
            return Err(ConfigError::Architecture(arch.to_string()));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let u = |k: &str| gguf.get_u32(&key(k)).map(|v| v as usize);
        let d_model = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_head_kv = match gguf.get(&key("attention.head_count_kv")) {
            Some(_) => u("attention.head_count_kv")?,
            None => n_head,
        };
        let n_vocab = match gguf.get(&key("vocab_size")) {
            Some(_) => u("vocab_size")?,
            None => gguf.get_str_array("tokenizer.ggml.tokens")?.len(),
        };
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ConfigError::Unsupported(format!(
                "heads {n_head}, kv heads {n_head_kv}: kv heads must divide heads"
            )));
        }
        let d_head = match gguf.get(&key("attention.key_length")) {
            Some(_) => u("attention.key_length")?,
            None if d_model % n_head == 0 => d_model / n_head,
            None => {
                return Err(ConfigError::Unsupported(format!(
                    "d_model {d_model} is not a multiple of {n_head} heads and {} is absent",
                    key("attention.key_length")
                )));
            }
        };
        if gguf.get(&key("attention.value_length")).is_some() {
            let d_v = u("attention.value_length")?;
            if d_v != d_head {
                return Err(ConfigError::Unsupported(format!(
                    "{} {d_v} differs from the key length {d_head}",
                    key("attention.value_length")
                )));
            }
        }
        if d_head == 0 || d_head > MAX_DIM || n_head > MAX_DIM {
            return Err(ConfigError::Unsupported(format!(
                "{} {d_head}",
                key("attention.key_length")
            )));
        }
        let rope_dim = match gguf.get(&key("rope.dimension_count")) {
            Some(_) => u("rope.dimension_count")?,
            None => d_head,
        };
        if rope_dim != d_head {
            return Err(ConfigError::Unsupported(format!(
                "partial rotary embedding (rope dims {rope_dim} of head {d_head})"
            )));
        }
        let rope_base = match gguf.get(&key("rope.freq_base")) {
            Some(_) => gguf.get_f32(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let config = Self {
            n_vocab,
            n_ctx_train: u("context_length")?,
            d_model,
            n_layer: u("block_count")?,
            n_head,
            n_head_kv,
            d_head,
            d_ff: u("feed_forward_length")?,
            rope_base,
            rope_dim,
            rms_eps: gguf.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
        };
        if config.n_layer == 0 || config.d_ff == 0 || config.n_vocab == 0 || d_head % 2 != 0 {
            return Err(ConfigError::Unsupported(format!("{config:?}")));
        }
        config.check_bounds()?;
        Ok(config)
    }

    /// Sanity bounds on values a file states and the graph allocates or divides by: every
    /// size within [`MAX_DIM`], every size product the graph builds representable, the trained
    /// context at least one position and at most [`MAX_CONTEXT`], `rms_eps` finite and in
    /// `(0, 1)`, the rope base finite and above 1. A crafted file fails here, naming the key,
    /// instead of aborting on a giant allocation or producing NaN logits.
    pub fn check_bounds(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Unsupported(what));
        let sizes = [
            ("vocab_size", self.n_vocab),
            ("embedding_length", self.d_model),
            ("block_count", self.n_layer),
            ("attention.head_count", self.n_head),
            ("attention.head_count_kv", self.n_head_kv),
            ("feed_forward_length", self.d_ff),
        ];
        for (key, v) in sizes {
            if v > MAX_DIM {
                return bad(format!("llama.{key} {v} exceeds {MAX_DIM}"));
            }
        }
        if self.n_ctx_train == 0 || self.n_ctx_train > MAX_CONTEXT {
            return bad(format!(
                "llama.context_length {} is outside 1..={MAX_CONTEXT}",
                self.n_ctx_train
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0 && self.rms_eps < 1.0) {
            return bad(format!(
                "llama.attention.layer_norm_rms_epsilon {} is not a finite value in (0, 1)",
                self.rms_eps
            ));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            return bad(format!(
                "llama.rope.freq_base {} is not a finite value above 1",
                self.rope_base
            ));
        }
        let products = [
            ("vocab_size × embedding_length", self.n_vocab, self.d_model),
            (
                "attention.head_count × key_length",
                self.n_head,
                self.d_head.max(1) * self.d_model.max(1),
            ),
            (
                "embedding_length × feed_forward_length",
                self.d_model,
                self.d_ff,
            ),
            (
                "context_length × embedding_length",
                self.n_ctx_train,
                self.d_model,
            ),
        ];
        for (what, a, b) in products {
            if a.checked_mul(b).and_then(|n| n.checked_mul(4)).is_none() {
                return bad(format!("{what} ({a} × {b}) overflows"));
            }
        }
        Ok(())
    }

    /// Query heads sharing one key/value head.
    pub fn n_rep(&self) -> usize {
        self.n_head / self.n_head_kv
    }

    /// Width of the key (and value) projection: `n_head_kv * d_head`.
    pub fn d_kv(&self) -> usize {
        self.n_head_kv * self.d_head
    }
}

//! What distinguishes the transformer families the graph runs, read from the GGUF metadata the
//! way llama.cpp reads it: `general.architecture` picks the family (llama.cpp's `llm_arch`),
//! and every size, window and cap comes from `{arch}.*` keys, with llama.cpp's defaults where a
//! key is optional. Nothing is inferred from the model's name.
//!
//! | family | RoPE pairs | extras |
//! |---|---|---|
//! | `llama` | adjacent | optional QKV biases; `rope_freqs` factors (Llama 3); linear or YaRN scaling |
//! | `qwen2` | half-split | QKV biases; linear or YaRN scaling |
//! | `qwen3` | half-split | per-head RMSNorm of q and k; `attention.key_length` heads |
//! | `phi3` | half-split | fused `attn_qkv` and gate-and-up `ffn_up` (split at load); LongRoPE factors |
//! | `gemma2` | half-split | √d embedding scale, post-norms, GELU, soft-caps, sliding window on even layers |
//! | `gemma3` | half-split | as gemma2 without soft-caps, q/k norms, 5 of 6 layers sliding with their own RoPE base |
//!
//! Gemma's `(1 + w)` norms are folded into the weights by llama.cpp's converter, so a GGUF file
//! holds `1 + w` and the graph runs a plain RMSNorm, as llama.cpp does.

use crate::format::Gguf;

use super::config::{ConfigError, LlamaConfig};

/// A model family the graph runs (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Architecture {
    /// `llama`: Llama 1-3, SmolLM, TinyLlama, Mistral 7B v0.1 (run without a window, as
    /// llama.cpp does).
    Llama,
    /// `qwen2`: Qwen2 and Qwen2.5.
    Qwen2,
    /// `qwen3`: Qwen3 (dense).
    Qwen3,
    /// `phi3`: Phi-3 and Phi-3.5 mini, with their LongRoPE factors (`rope_factors_long/short`).
    Phi3,
    /// `gemma2`: Gemma 2.
    Gemma2,
    /// `gemma3`: Gemma 3 (text).
    Gemma3,
}

impl Architecture {
    /// Every family, by its GGUF name.
    pub const ALL: [Architecture; 6] = [
        Architecture::Llama,
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Phi3,
        Architecture::Gemma2,
        Architecture::Gemma3,
    ];

    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Phi3 => "phi3",
            Architecture::Gemma2 => "gemma2",
            Architecture::Gemma3 => "gemma3",
        }
    }

    /// The family named `name`, if the graph runs it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The supported names, for error messages: `llama, qwen2, ...`.
    pub fn supported() -> String {
        Self::ALL.map(Architecture::name).join(", ")
    }
}

/// How RoPE pairs the dimensions of a head (llama.cpp's `LLAMA_ROPE_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// `(x[2i], x[2i+1])` (`NORM`): GGUF llama files, whose q/k rows the converter permuted.
    Adjacent,
    /// `(x[i], x[i + d/2])` (`NEOX`): the Hugging Face layout, kept by the other families.
    HalfSplit,
}

/// YaRN RoPE scaling (`{arch}.rope.scaling.type` yarn), with the values llama.cpp runs the
/// families engram runs at: it reads none of the `rope.scaling.yarn_*` keys for them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// Weight of the extrapolated angle inside the ramp (ggml's `ext_factor`: 1).
    pub ext_factor: f32,
    /// Turns over the original context above which a frequency keeps its trained angle
    /// (`beta_fast`: 32).
    pub beta_fast: f32,
    /// Turns below which a frequency is interpolated (`beta_slow`: 1).
    pub beta_slow: f32,
    /// The context before scaling (`{arch}.rope.scaling.original_context_length`, default the
    /// trained context): where the correction dimensions are measured.
    pub n_ctx_orig: usize,
}

/// The feed-forward's gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) · up`.
    Silu,
    /// GeGLU with the tanh approximation of GELU (ggml's `gelu`).
    GeluTanh,
}

/// The options of a family beyond [`LlamaConfig`]'s sizes (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct ArchOptions {
    /// The family.
    pub arch: Architecture,
    /// RoPE pairing.
    pub rope_style: RopeStyle,
    /// RoPE position scale: `1 / {arch}.rope.scaling.factor` (any scaling type but none),
    /// else 1.
    pub rope_freq_scale: f32,
    /// YaRN, when `{arch}.rope.scaling.type` is yarn.
    pub yarn: Option<Yarn>,
    /// The factor on RoPE's cos and sin before YaRN's own (llama.cpp's context
    /// `yarn_attn_factor`): `{arch}.rope.scaling.attn_factor` (phi3's LongRoPE magnitude,
    /// default 1), under YaRN times `(1 + 0.1 ln s) / (1 + 0.1 ln s)` for factor `s > 1`, which
    /// ggml's kernel then multiplies by its `1 + 0.1 ln s`.
    pub rope_attn_factor: f32,
    /// `{arch}.rope.scaling.original_context_length` (default the trained context): phi3 uses
    /// its long RoPE factors when the context it runs at exceeds it, its short ones otherwise.
    pub n_ctx_orig: usize,
    /// RoPE base of the sliding-window layers, where it differs from the global one (gemma3:
    /// 10000, unscaled).
    pub rope_base_swa: Option<f32>,
    /// Keys a sliding-window layer sees (`{arch}.attention.sliding_window`): the query's own
    /// position and the `window - 1` before it.
    pub sliding_window: Option<usize>,
    /// Layer `i` slides when `swa_pattern` is 0 or `i % swa_pattern < swa_pattern - 1`
    /// (llama.cpp's `set_swa_pattern`): 2 for gemma2 (even layers), 6 for gemma3.
    pub swa_pattern: usize,
    /// Factor on the token embeddings (gemma: `√d_model`).
    pub embed_scale: Option<f32>,
    /// Factor on the queries before `q · k`, replacing `1/√d_head` (gemma's
    /// `query_pre_attn_scalar`).
    pub query_scale: Option<f32>,
    /// Attention-score soft-cap `c · tanh(s / c)` (gemma2's `attn_logit_softcapping`).
    pub attn_softcap: Option<f32>,
    /// Logit soft-cap (gemma2's `final_logit_softcapping`).
    pub final_softcap: Option<f32>,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Per-head RMSNorm of queries and keys before RoPE (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// RMSNorm of the attention and feed-forward outputs before their residual adds
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
}

impl ArchOptions {
    /// Reads the family's options from `gguf`; `config` holds the sizes already read.
    pub fn from_gguf(gguf: &Gguf, config: &LlamaConfig) -> Result<Self, ConfigError> {
        let name = gguf.get_str("general.architecture")?;
        let arch = Architecture::from_name(name)
            .ok_or_else(|| ConfigError::Architecture(name.to_string()))?;
        let key = |k: &str| format!("{name}.{k}");
        let opt_f32 = |k: &str| -> Result<Option<f32>, ConfigError> {
            match gguf.get(&key(k)) {
                Some(_) => Ok(Some(gguf.get_f32(&key(k))?)),
                None => Ok(None),
            }
        };
        let opt_u32 = |k: &str| -> Result<Option<usize>, ConfigError> {
            match gguf.get(&key(k)) {
                Some(_) => Ok(Some(gguf.get_u32(&key(k))? as usize)),
                None => Ok(None),
            }
        };
        let unsupported = |what: String| Err(ConfigError::Unsupported(what));

        if opt_u32("expert_count")?.unwrap_or(0) > 0 {
            return unsupported(format!("{name}.expert_count: mixture-of-experts blocks"));
        }
        // llama.cpp reads the scaling type for every family, defaulting to linear.
        let scaling = match gguf.get(&key("rope.scaling.type")) {
            Some(_) => gguf.get_str(&key("rope.scaling.type"))?.to_string(),
            None => "linear".to_string(),
        };
        let factor = match opt_f32("rope.scaling.factor")? {
            Some(f) => Some(f),
            None => opt_f32("rope.scale_linear")?,
        };
        // llama.cpp's `llama_rope_scaling_type_from_string`; another name fails its load.
        if !matches!(scaling.as_str(), "none" | "linear" | "yarn" | "longrope") {
            return unsupported(format!(
                "{name}.rope.scaling.type `{scaling}` (engram runs none, linear, yarn and longrope)"
            ));
        }
        let rope_freq_scale = match factor {
            _ if scaling == "none" => 1.0, // llama.cpp never scales under `none`
            None | Some(0.0) => 1.0,
            Some(f) if f.is_finite() && f > 0.0 => 1.0 / f,
            Some(f) => return unsupported(format!("{name}.rope.scaling.factor {f}")),
        };
        let n_ctx_orig = match opt_u32("rope.scaling.original_context_length")? {
            None | Some(0) => config.n_ctx_train,
            Some(n) => n,
        };
        let attn_factor = opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0);
        if !(attn_factor.is_finite() && attn_factor > 0.0) {
            return unsupported(format!("{name}.rope.scaling.attn_factor {attn_factor}"));
        }
        // llama.cpp's context: YaRN turns on `ext_factor` 1 (the families here read no
        // `yarn_ext_factor`) and sets the attention factor to YaRN's magnitude divided by the
        // one ggml's kernel multiplies in again, so the product is `get_mscale(s)`.
        let (yarn, rope_attn_factor) = match scaling.as_str() {
            "yarn" => {
                let s = 1.0 / rope_freq_scale;
                let mscale = if s <= 1.0 { 1.0 } else { 0.1 * s.ln() + 1.0 };
                let yarn = Yarn {
                    ext_factor: 1.0,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    n_ctx_orig,
                };
                (
                    Some(yarn),
                    mscale * (1.0 / (1.0 + 0.1 * s.ln())) * attn_factor,
                )
            }
            _ => (None, attn_factor),
        };

        let mut o = ArchOptions {
            arch,
            rope_style: RopeStyle::HalfSplit,
            rope_freq_scale,
            yarn,
            rope_attn_factor,
            n_ctx_orig,
            rope_base_swa: None,
            sliding_window: None,
            swa_pattern: 0,
            embed_scale: None,
            query_scale: None,
            attn_softcap: None,
            final_softcap: None,
            activation: Activation::Silu,
            qk_norm: false,
            post_norms: false,
        };
        let gemma_query_scale = |big_layers: usize| {
            // llama.cpp: the 27B models scale by 1/√(d_model / n_head), the others by 1/√d_head.
            let d = if config.n_layer == big_layers {
                config.d_model / config.n_head
            } else {
                config.d_head
            };
            Some(1.0 / (d as f32).sqrt())
        };
        match arch {
            Architecture::Llama => o.rope_style = RopeStyle::Adjacent,
            Architecture::Qwen2 | Architecture::Phi3 => {}
            Architecture::Qwen3 => o.qk_norm = true,
            Architecture::Gemma2 => {
                o.embed_scale = Some((config.d_model as f32).sqrt());
                o.query_scale = gemma_query_scale(46);
                o.attn_softcap = Some(opt_f32("attn_logit_softcapping")?.unwrap_or(50.0));
                o.final_softcap = Some(opt_f32("final_logit_softcapping")?.unwrap_or(30.0));
                o.sliding_window = Some(opt_u32("attention.sliding_window")?.unwrap_or(4096));
                o.swa_pattern = 2;
                o.activation = Activation::GeluTanh;
                o.post_norms = true;
            }
            Architecture::Gemma3 => {
                o.embed_scale = Some((config.d_model as f32).sqrt());
                o.query_scale = gemma_query_scale(62);
                o.sliding_window = Some(
                    opt_u32("attention.sliding_window")?
                        .ok_or_else(|| missing(&key("attention.sliding_window")))?,
                );
                o.swa_pattern = 6;
                o.rope_base_swa = Some(10_000.0);
                o.activation = Activation::GeluTanh;
                o.qk_norm = true;
                o.post_norms = true;
            }
        }
        for (what, cap) in [
            ("attn_logit_softcapping", o.attn_softcap),
            ("final_logit_softcapping", o.final_softcap),
        ] {
            if let Some(c) = cap
                && !(c.is_finite() && c > 0.0)
            {
                return unsupported(format!("{name}.{what} {c}"));
            }
        }
        if o.sliding_window == Some(0) {
            return unsupported(format!("{name}.attention.sliding_window 0"));
        }
        Ok(o)
    }

    /// The window of layer `layer`, or `None` for a layer that sees the whole context.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let p = self.swa_pattern;
        let slides = p == 0 || layer % p < p - 1;
        self.sliding_window.filter(|_| slides)
    }

    /// RoPE base and position scale of layer `layer`.
    pub fn layer_rope(&self, layer: usize, config: &LlamaConfig) -> (f32, f32) {
        match self.rope_base_swa {
            Some(base) if self.layer_window(layer).is_some() => (base, 1.0),
            _ => (config.rope_base, self.rope_freq_scale),
        }
    }

    /// Whether the family is the plain llama graph the fused decoder implements: adjacent RoPE
    /// pairs (or half-split ones for a llama checkpoint in Hugging Face's layout), unscaled
    /// (no YaRN, no RoPE magnitude), no window, caps, extra norms or embedding scale, SwiGLU.
    pub fn is_plain_llama(&self) -> bool {
        (self.rope_style == RopeStyle::Adjacent || self.arch == Architecture::Llama)
            && self.rope_freq_scale == 1.0
            && self.yarn.is_none()
            && self.rope_attn_factor == 1.0
            && self.sliding_window.is_none()
            && self.embed_scale.is_none()
            && self.query_scale.is_none()
            && self.attn_softcap.is_none()
            && self.final_softcap.is_none()
            && self.activation == Activation::Silu
            && !self.qk_norm
            && !self.post_norms
    }
}

fn missing(key: &str) -> ConfigError {
    ConfigError::Gguf(crate::format::GgufError::MissingKey {
        key: key.to_string(),
    })
}

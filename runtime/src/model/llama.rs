//! The llama-family decoder on burn: RMSNorm, RoPE, grouped-query attention with a KV cache,
//! a gated feed-forward, tied or separate embeddings; and the options of the other families
//! it runs (QKV biases, q/k norms, post-norms, embedding scale, soft-caps, sliding windows,
//! GELU, fused projections: [`ArchOptions`], read from the metadata).
//!
//! Every linear layer is a frozen [`QWeight`] read in place from the mapped file by engram's
//! kernels; only the norms (a few KiB of f32) are copied into tensors. The graph is
//! device-agnostic: it runs on whatever [`Device`] the caller passes, and under autodiff the
//! gradient flows through the quantized layers to inputs and adapters.

use burn::tensor::{Device, Int, Tensor, TensorData, activation};

use super::arch::{Activation, ArchOptions};
use super::attention::{AttentionPrecision, ScoreOptions, grouped_attention};
use super::config::{ConfigError, LlamaConfig};
use super::hooks::dense_linear;
use super::kv_cache::{ContextFull, KvCache};
use super::rope::RopeTable;
use crate::backend::{QWeight, quant_linear};
use crate::model_file::LoadError;

pub use super::hooks::{DecodeDelta, LinearAdapter, LowRank, Norm, Proj, RoutedTerm};
pub use decode::{DECODE_TOLERANCE, Decoder};

mod choice;
mod decode;
mod load;

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position of each sequence: `(batch, 1, n_vocab)` (generation).
    Last,
    /// Every position: `(batch, t, n_vocab)` (training, scoring).
    All,
}

/// Loading the model failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be read or a tensor is missing.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The metadata does not describe a model this graph runs.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A tensor has the wrong shape or an unsupported type.
    #[error("tensor `{name}`: {what}")]
    Tensor {
        /// The tensor's name in the file.
        name: String,
        /// What is wrong.
        what: String,
    },
}

struct Block {
    attn_norm: Tensor<1>, // (d_model)
    wq: QWeight,          // (n_head * d_head, d_model)
    wk: QWeight,          // (n_head_kv * d_head, d_model)
    wv: QWeight,          // (n_head_kv * d_head, d_model)
    wo: QWeight,          // (d_model, n_head * d_head)
    ffn_norm: Tensor<1>,  // (d_model)
    w_gate: QWeight,      // (d_ff, d_model)
    w_up: QWeight,        // (d_ff, d_model)
    w_down: QWeight,      // (d_model, d_ff)
    extras: BlockExtras,
}

/// The tensors only some families have (see [`ArchOptions`]).
struct BlockExtras {
    q_bias: Option<Tensor<1>>,         // (n_head * d_head)
    k_bias: Option<Tensor<1>>,         // (n_head_kv * d_head)
    v_bias: Option<Tensor<1>>,         // (n_head_kv * d_head)
    q_norm: Option<Tensor<1>>,         // (d_head)
    k_norm: Option<Tensor<1>>,         // (d_head)
    attn_post_norm: Option<Tensor<1>>, // (d_model)
    ffn_post_norm: Option<Tensor<1>>,  // (d_model)
}

impl BlockExtras {
    fn is_empty(&self) -> bool {
        [
            &self.q_bias,
            &self.k_bias,
            &self.v_bias,
            &self.q_norm,
            &self.k_norm,
            &self.attn_post_norm,
            &self.ffn_post_norm,
        ]
        .iter()
        .all(|t| t.is_none())
    }
}

impl Block {
    fn proj(&self, p: Proj) -> &QWeight {
        match p {
            Proj::Q => &self.wq,
            Proj::K => &self.wk,
            Proj::V => &self.wv,
            Proj::O => &self.wo,
            Proj::Gate => &self.w_gate,
            Proj::Up => &self.w_up,
            Proj::Down => &self.w_down,
        }
    }
}

/// A llama-family model over a memory-mapped GGUF file.
pub struct Llama {
    config: LlamaConfig,
    arch: ArchOptions,
    device: Device,
    embedding: QWeight, // (n_vocab, d_model)
    blocks: Vec<Block>,
    output_norm: Tensor<1>,    // (d_model)
    output: QWeight,           // (n_vocab, d_model); the embedding itself when tied
    tied: bool,                // no `output.weight`: the vocabulary projection is the embedding
    ropes: Vec<RopeTable>,     // one per distinct (base, scale) among the layers
    layer_rope: Vec<usize>,    // (n_layer): index into `ropes`
    rope_factors: RopeFactors, // per-frequency divisors from the file
    rope_context: usize,       // the context `ropes` were made for (llama.cpp's `n_ctx`)
    attention: AttentionPrecision,
}

/// The per-frequency RoPE divisors a file holds, `rope_dim / 2` values each.
#[derive(Clone, Debug, PartialEq)]
enum RopeFactors {
    /// None: every factor 1.
    None,
    /// `rope_freqs.weight` (Llama 3's scaling), at every context.
    Freqs(Vec<f32>),
    /// phi3's LongRoPE `rope_factors_long.weight` and `rope_factors_short.weight` (either may
    /// be missing, as llama.cpp allows).
    LongShort {
        long: Option<Vec<f32>>,
        short: Option<Vec<f32>>,
    },
}

impl RopeFactors {
    /// The factors of a context of `n_ctx` positions: llama.cpp's `get_rope_factors` takes the
    /// long ones when its `n_ctx_seq`, `n_ctx` rounded up to a multiple of 256 (its context
    /// sizes the cache so, `GGML_PAD(n_ctx, 256)`), exceeds the original context
    /// `n_ctx_orig`; the short ones else.
    fn for_context(&self, n_ctx: usize, n_ctx_orig: usize) -> Option<&[f32]> {
        match self {
            RopeFactors::None => None,
            RopeFactors::Freqs(f) => Some(f),
            RopeFactors::LongShort { long, short } => {
                match n_ctx.div_ceil(256) * 256 > n_ctx_orig {
                    true => long.as_deref(),
                    false => short.as_deref(),
                }
            }
        }
    }
}

impl Llama {
    /// Computes every projection on f32 activations against the quantized blocks (`true`), or
    /// on activations rounded to 8-bit blocks as llama.cpp does (`false`, the default: faster,
    /// and what parity with llama.cpp is measured on). Gradients are the same either way (the
    /// backward pass is the f32 transposed product); the f32 forward is the function they are
    /// exact for.
    pub fn set_f32_activations(&mut self, on: bool) {
        for b in &mut self.blocks {
            for w in [
                &mut b.wq,
                &mut b.wk,
                &mut b.wv,
                &mut b.wo,
                &mut b.w_gate,
                &mut b.w_up,
                &mut b.w_down,
            ] {
                *w = w.with_f32_activations(on);
            }
        }
        self.output = self.output.with_f32_activations(on);
    }

    /// Sets the precision of the attention products (f16 operands like llama.cpp by default;
    /// f32 for training).
    pub fn set_attention_precision(&mut self, precision: AttentionPrecision) {
        self.attention = precision;
    }

    /// The precision of the attention products.
    pub fn attention_precision(&self) -> AttentionPrecision {
        self.attention
    }

    /// Sets the context the model runs at, as llama.cpp's `n_ctx` does (default: the trained
    /// context, llama.cpp's `n_ctx` 0). It matters only to phi3's LongRoPE: the long factors
    /// when `n_ctx`, rounded up to a multiple of 256 as llama.cpp rounds it, exceeds
    /// `rope.scaling.original_context_length`, the short ones otherwise.
    /// The RoPE tables are remade when the choice changes, so keys already in a [`KvCache`]
    /// were rotated with the previous ones: set it before filling a cache.
    pub fn set_context_length(&mut self, n_ctx: usize) {
        let orig = self.arch.n_ctx_orig;
        let before = self.rope_factors.for_context(self.rope_context, orig);
        let changed = before != self.rope_factors.for_context(n_ctx, orig);
        self.rope_context = n_ctx;
        if changed {
            (self.ropes, self.layer_rope) = load::rope_tables(
                &self.config,
                &self.arch,
                &self.rope_factors,
                n_ctx,
                &self.device,
            );
        }
    }

    /// The context set by [`Llama::set_context_length`] (default the trained context).
    pub fn context_length(&self) -> usize {
        self.rope_context
    }

    /// The CPU context (thread pool) the quantized products run on.
    pub fn cpu(&self) -> &crate::cpu::CpuContext {
        self.output.cpu()
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The family and its options.
    pub fn arch(&self) -> &ArchOptions {
        &self.arch
    }

    /// Whether this is the plain llama graph (no family option, no extra tensor): what the
    /// fused decoder implements.
    pub(crate) fn is_plain_llama(&self) -> bool {
        self.arch.is_plain_llama()
            && self.config.n_head * self.config.d_head == self.config.d_model
            && self.blocks.iter().all(|b| b.extras.is_empty())
            && self.ropes.len() == 1
            && self.rope_factors == RopeFactors::None
    }

    /// Bytes the fused CPU decoder's interleaved weight copies take once it has decoded a
    /// token ([`QWeight::interleaved`]; built once per model and kept): the projections and the
    /// output head whose types have the layout on this CPU. 0 where the fused decoder does not
    /// run (another device, another family) or no weight has the layout here. Memory planners
    /// of processes that serve add it.
    pub fn decode_copy_bytes(&self) -> u64 {
        if !crate::backend::is_cpu(self.device()) || !self.is_plain_llama() {
            return 0;
        }
        let projections: usize = self
            .blocks
            .iter()
            .flat_map(|b| Proj::ALL.map(|p| b.proj(p).interleaved_bytes()))
            .sum();
        (projections + self.output.interleaved_bytes()) as u64
    }

    /// The device the graph runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The frozen weight of `proj` in block `layer`.
    pub fn weight(&self, layer: usize, proj: Proj) -> &QWeight {
        self.blocks[layer].proj(proj)
    }

    /// The token embedding `(n_vocab, d_model)` as stored in the file.
    pub fn embedding_weight(&self) -> &QWeight {
        &self.embedding
    }

    /// The vocabulary projection `(n_vocab, d_model)`: the embedding itself when tied.
    pub fn output_weight(&self) -> &QWeight {
        &self.output
    }

    /// True when the file has no `output.weight` and the embedding is the output projection.
    pub fn output_tied(&self) -> bool {
        self.tied
    }

    /// The file's weight `(d_model)` of an RMSNorm.
    ///
    /// # Panics
    /// When the block of `norm` does not exist.
    pub fn norm_weight(&self, norm: Norm) -> Tensor<1> {
        match norm {
            Norm::Attn(i) => self.blocks[i].attn_norm.clone(),
            Norm::Ffn(i) => self.blocks[i].ffn_norm.clone(),
            Norm::Output => self.output_norm.clone(),
        }
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        KvCache::new(&self.config, batch, capacity, &self.device)
    }

    /// Embeds token ids `(batch, t)` into `(batch, t, d_model)` (dequantizing only those rows).
    ///
    /// # Panics
    /// When a token id is outside the vocabulary (callers validate user input).
    pub fn embed(&self, tokens: &[u32], batch: usize) -> Tensor<3> {
        let d = self.config.d_model;
        let mut values = vec![0f32; tokens.len() * d];
        self.embedding.dequantize_rows(tokens, &mut values);
        if let Some(scale) = self.arch.embed_scale {
            values.iter_mut().for_each(|v| *v *= scale);
        }
        let t = tokens.len() / batch.max(1);
        Tensor::from_data(TensorData::new(values, [batch, t, d]), &self.device)
    }

    /// [`Llama::embed`] through the dense embedding of `adapter` when it has one (full
    /// fine-tuning: a differentiable row lookup), else the file's.
    ///
    /// # Panics
    /// When a token id is outside the vocabulary.
    pub fn embed_with(
        &self,
        tokens: &[u32],
        batch: usize,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Tensor<3> {
        let Some(table) = adapter.and_then(|a| a.embedding()) else {
            return self.embed(tokens, batch);
        };
        let [n_vocab, d] = table.dims();
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= n_vocab) {
            panic!("token {bad} out of range ({n_vocab} rows)");
        }
        let ids: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), &self.device);
        let t = tokens.len() / batch.max(1);
        let x = table.select(0, ids).reshape([batch, t, d]);
        match self.arch.embed_scale {
            Some(scale) => x * scale as f64,
            None => x,
        }
    }

    /// Runs token ids (`batch` rows of equal length, flattened row-major) and returns logits.
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        cache: Option<&mut KvCache>,
        adapter: Option<&dyn LinearAdapter>,
        logits: Logits,
    ) -> Result<Tensor<3>, ContextFull> {
        let x = self.embed_with(tokens, batch, adapter);
        self.forward_embeddings(x, cache, adapter, logits)
    }

    /// Runs input embeddings `(batch, t, d_model)` (for soft prompts) and returns logits.
    pub fn forward_embeddings(
        &self,
        x: Tensor<3>,
        cache: Option<&mut KvCache>,
        adapter: Option<&dyn LinearAdapter>,
        logits: Logits,
    ) -> Result<Tensor<3>, ContextFull> {
        let h = self.hidden_states(x, cache, adapter)?;
        let [b, t, d] = h.dims();
        let h = match logits {
            Logits::Last => h.slice([0..b, t - 1..t, 0..d]),
            Logits::All => h,
        };
        Ok(self.project_vocab_with(h, adapter))
    }

    /// The final hidden states `(batch, t, d_model)`, after the output norm.
    pub fn hidden_states(
        &self,
        mut x: Tensor<3>,
        mut cache: Option<&mut KvCache>,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Result<Tensor<3>, ContextFull> {
        let t = x.dims()[1];
        let pos = match cache.as_deref() {
            Some(c) => {
                c.reserve(t)?;
                c.len()
            }
            None => 0,
        };
        if pos + t > self.config.n_ctx_train {
            return Err(ContextFull {
                used: pos,
                requested: t,
                capacity: self.config.n_ctx_train,
            });
        }
        for (i, block) in self.blocks.iter().enumerate() {
            x = self.block_forward(i, block, x, pos, cache.as_deref_mut(), adapter);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        let norm = adapter.and_then(|a| a.norm_weight(Norm::Output));
        let norm = norm.as_ref().unwrap_or(&self.output_norm);
        Ok(rms_norm(x, norm, self.config.rms_eps))
    }

    /// The residual stream after running blocks `layers` on `x` `(batch, t, d_model)` from
    /// position 0 without a cache, before the output norm.
    ///
    /// With [`Llama::output_norm`] and [`Llama::project_vocab`] this splits
    /// [`Llama::hidden_states`] for callers that run a prefix of the model once and the rest
    /// many times: model editing optimizes a vector added to one layer's output, so only the
    /// blocks above it run (and are differentiated) per step.
    ///
    /// # Panics
    /// When `layers` ends past the last block or `x` is longer than the training context.
    pub fn run_blocks(
        &self,
        mut x: Tensor<3>,
        layers: std::ops::Range<usize>,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Tensor<3> {
        assert!(
            layers.end <= self.blocks.len(),
            "blocks {layers:?} of {}",
            self.blocks.len()
        );
        assert!(
            x.dims()[1] <= self.config.n_ctx_train,
            "longer than the context"
        );
        for i in layers {
            x = self.block_forward(i, &self.blocks[i], x, 0, None, adapter);
        }
        x
    }

    /// [`Llama::run_blocks`] continuing from `cache`: `x` `(batch, t, d_model)` sits at positions
    /// `cache.len()..cache.len() + t` and attends to the keys and values `cache` holds for each
    /// block of `layers`; this step's are appended and the cache advances by `t`.
    ///
    /// Model editing runs a prompt's positions before the edited one once, filling a cache, and
    /// each optimization step runs only the positions after it on a clone of that cache.
    ///
    /// # Errors
    /// [`ContextFull`] when `t` more positions do not fit the cache.
    ///
    /// # Panics
    /// When `layers` ends past the last block or the batch differs from the cache's.
    pub fn run_blocks_cached(
        &self,
        mut x: Tensor<3>,
        layers: std::ops::Range<usize>,
        cache: &mut KvCache,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Result<Tensor<3>, ContextFull> {
        assert!(
            layers.end <= self.blocks.len(),
            "blocks {layers:?} of {}",
            self.blocks.len()
        );
        let t = x.dims()[1];
        cache.reserve(t)?;
        let pos = cache.len();
        for i in layers {
            x = self.block_forward(i, &self.blocks[i], x, pos, Some(&mut *cache), adapter);
        }
        cache.advance(t);
        Ok(x)
    }

    /// The output norm applied to a residual stream `(batch, t, d_model)`.
    pub fn output_norm(&self, x: Tensor<3>) -> Tensor<3> {
        rms_norm(x, &self.output_norm, self.config.rms_eps)
    }

    /// Logits `(batch, t, n_vocab)` of hidden states (tied output projection).
    pub fn project_vocab(&self, h: Tensor<3>) -> Tensor<3> {
        self.cap_logits(quant_linear(h, &self.output))
    }

    /// The family's logit soft-cap `c · tanh(z / c)`, where it has one.
    fn cap_logits(&self, z: Tensor<3>) -> Tensor<3> {
        match self.arch.final_softcap {
            Some(c) => (z / c as f64).tanh() * c as f64,
            None => z,
        }
    }

    /// [`Llama::project_vocab`] through `adapter`'s dense output projection (or, for a tied
    /// model, its dense embedding) when it has one.
    pub fn project_vocab_with(
        &self,
        h: Tensor<3>,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Tensor<3> {
        let dense = adapter.and_then(|a| match self.tied {
            true => a.embedding(),
            false => a.output_weight(),
        });
        self.cap_logits(match dense {
            Some(w) => dense_linear(h, w),
            None => quant_linear(h, &self.output),
        })
    }

    fn linear(
        &self,
        layer: usize,
        block: &Block,
        proj: Proj,
        x: Tensor<3>,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Tensor<3> {
        let delta = adapter.and_then(|a| a.delta(layer, proj, &x));
        let y = match adapter.and_then(|a| a.dense_weight(layer, proj)) {
            Some(w) => dense_linear(x, w),
            None => quant_linear(x, block.proj(proj)),
        };
        match delta {
            Some(delta) => y + delta,
            None => y,
        }
    }

    fn block_forward(
        &self,
        layer: usize,
        block: &Block,
        x: Tensor<3>,
        pos: usize,
        cache: Option<&mut KvCache>,
        adapter: Option<&dyn LinearAdapter>,
    ) -> Tensor<3> {
        let c = &self.config;
        let e = &block.extras;
        let [b, t, _] = x.dims();
        let (h, hkv, dh) = (c.n_head, c.n_head_kv, c.d_head);

        let norm = |n: Norm, file: &Tensor<1>| {
            adapter
                .and_then(|a| a.norm_weight(n))
                .unwrap_or_else(|| file.clone())
        };
        let xn = rms_norm(
            x.clone(),
            &norm(Norm::Attn(layer), &block.attn_norm),
            c.rms_eps,
        );
        let project = |p: Proj, x: Tensor<3>, bias: &Option<Tensor<1>>, heads: usize| {
            let y = self.linear(layer, block, p, x, adapter);
            let y = match bias {
                Some(bias) => y + bias.clone().reshape([1, 1, heads * dh]),
                None => y,
            };
            y.reshape([b, t, heads, dh])
        };
        let q = project(Proj::Q, xn.clone(), &e.q_bias, h);
        let k = project(Proj::K, xn.clone(), &e.k_bias, hkv);
        let v = project(Proj::V, xn, &e.v_bias, hkv);
        let head_norm = |x: Tensor<4>, w: &Option<Tensor<1>>| match w {
            Some(w) => rms_norm(x, w, c.rms_eps),
            None => x,
        };
        let q = head_norm(q, &e.q_norm);
        let k = head_norm(k, &e.k_norm);
        let rope = &self.ropes[self.layer_rope[layer]];
        let q = rope.apply(q, pos).swap_dims(1, 2); // (b, h, t, dh)
        let k = rope.apply(k, pos).swap_dims(1, 2); // (b, hkv, t, dh)
        let v = v.swap_dims(1, 2); // (b, hkv, t, dh)
        let (k, v) = match cache {
            Some(cache) => cache.append(layer, k, v),
            None => (k, v),
        };
        let mut scores = ScoreOptions::causal(dh);
        // Scaled queries, as llama.cpp scales them before the f16 product.
        let q = match self.arch.query_scale {
            Some(s) => {
                scores.scale = 1.0;
                q * s as f64
            }
            None => q,
        };
        scores.window = self.arch.layer_window(layer);
        scores.softcap = self.arch.attn_softcap;
        let att = grouped_attention(q, k, v, c.n_rep(), self.attention, scores); // (b, h, t, dh)
        let att = att.swap_dims(1, 2).reshape([b, t, h * dh]);
        let post = |y: Tensor<3>, w: &Option<Tensor<1>>| match w {
            Some(w) => rms_norm(y, w, c.rms_eps),
            None => y,
        };
        let att = self.linear(layer, block, Proj::O, att, adapter);
        let x = x + post(att, &e.attn_post_norm);

        let xn = rms_norm(
            x.clone(),
            &norm(Norm::Ffn(layer), &block.ffn_norm),
            c.rms_eps,
        );
        let gate = self.linear(layer, block, Proj::Gate, xn.clone(), adapter);
        let up = self.linear(layer, block, Proj::Up, xn, adapter);
        let gate = match self.arch.activation {
            Activation::Silu => activation::silu(gate),
            Activation::GeluTanh => gelu_tanh(gate),
        };
        let ff = self.linear(layer, block, Proj::Down, gate * up, adapter);
        x + post(ff, &e.ffn_post_norm)
    }
}

/// `x · rsqrt(mean(x²) + eps) · w` over the last dimension.
fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f32) -> Tensor<D> {
    let d = weight.dims()[0];
    let inv = (x.clone().square().mean_dim(D - 1) + eps).sqrt().recip();
    let mut shape = [1; D];
    shape[D - 1] = d;
    x * inv * weight.clone().reshape(shape)
}

/// GELU's tanh approximation, `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))` (ggml's `gelu`).
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube * 0.044_715) * SQRT_2_OVER_PI;
    x * (inner.tanh() + 1.0) * 0.5
}

/// Token ids as an int tensor `(batch, t)` (for losses that gather by id).
pub fn token_tensor(tokens: &[u32], batch: usize, device: &Device) -> Tensor<2, Int> {
    let t = tokens.len() / batch.max(1);
    let ids: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(ids, [batch, t]), device)
}

//! Building a [`Llama`] graph from a file: every tensor a family's blocks read, found by its
//! llama.cpp name, checked for shape, and fused tensors (phi3's `attn_qkv`, its gate-and-up
//! `ffn_up`) split into the graph's separate projections as zero-copy row bands. A tensor the
//! graph would not read is an error naming it, so a file with an option the graph lacks (an
//! output bias, a MoE router, LongRoPE factors outside phi3) is refused instead of run wrong.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use burn::tensor::{Device, Tensor, TensorData};

use super::{Block, BlockExtras, Llama, ModelError, RopeFactors};
use crate::backend::QWeight;
use crate::cpu::CpuContext;
use crate::model::arch::{ArchOptions, Architecture, RopeStyle};
use crate::model::attention::AttentionPrecision;
use crate::model::config::LlamaConfig;
use crate::model::rope::{RopeSpec, RopeTable};
use crate::model_file::{ModelFile, TensorView, WeightLayout};

/// Reads the tensors of one file, remembering which it used.
struct Reader<'f> {
    file: &'f ModelFile,
    cpu: Arc<CpuContext>,
    device: Device,
    used: Mutex<BTreeSet<String>>,
}

impl Reader<'_> {
    fn has(&self, name: &str) -> bool {
        self.file.gguf().tensor(name).is_some()
    }

    fn view(&self, name: &str) -> Result<TensorView, ModelError> {
        let view = self.file.tensor(name)?;
        self.used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string());
        Ok(view)
    }

    fn check_dims(view: &TensorView, dims: &[usize]) -> Result<(), ModelError> {
        if view.dims() != dims {
            return Err(ModelError::Tensor {
                name: view.name().into(),
                what: format!("dims {:?}, expected {dims:?}", view.dims()),
            });
        }
        Ok(())
    }

    /// The matrix `name` of `n_out` rows of `n_in`.
    fn matrix(&self, name: &str, n_in: usize, n_out: usize) -> Result<QWeight, ModelError> {
        let view = self.view(name)?;
        Self::check_dims(&view, &[n_in, n_out])?;
        Ok(QWeight::new(view, self.cpu.clone()))
    }

    /// The matrix `name` of `bands` stacked row bands, each of `n_in` columns, split.
    fn fused(&self, name: &str, n_in: usize, bands: &[usize]) -> Result<Vec<QWeight>, ModelError> {
        let view = self.view(name)?;
        Self::check_dims(&view, &[n_in, bands.iter().sum()])?;
        let mut start = 0;
        let mut out = Vec::with_capacity(bands.len());
        for &n in bands {
            let band = view
                .rows(start..start + n)
                .ok_or_else(|| ModelError::Tensor {
                    name: name.into(),
                    what: format!("rows {start}..{} cannot be split off", start + n),
                })?;
            out.push(QWeight::new(band, self.cpu.clone()));
            start += n;
        }
        Ok(out)
    }

    /// The f32 vector `name` of `len` values (norm weights, biases, RoPE factors).
    fn vector(&self, name: &str, len: usize) -> Result<Tensor<1>, ModelError> {
        Ok(Tensor::from_data(
            TensorData::new(self.values(name, len)?, [len]),
            &self.device,
        ))
    }

    fn values(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let view = self.view(name)?;
        Self::check_dims(&view, &[len])?;
        let mut values = vec![0f32; len];
        engram_kernels::dequantize_row(view.ty(), view.bytes(), &mut values);
        Ok(values)
    }

    /// [`Reader::vector`] when the file has `name`.
    fn optional(&self, name: &str, len: usize) -> Result<Option<Tensor<1>>, ModelError> {
        match self.has(name) {
            true => self.vector(name, len).map(Some),
            false => Ok(None),
        }
    }

    /// [`Reader::vector`] when `needed` (missing is an error naming it), else [`Reader::optional`].
    fn required_if(
        &self,
        needed: bool,
        name: &str,
        len: usize,
    ) -> Result<Option<Tensor<1>>, ModelError> {
        match needed {
            true => self.vector(name, len).map(Some),
            false => self.optional(name, len),
        }
    }
}

impl Llama {
    /// Builds the graph over `file`'s tensors on `device`; the kernels run on `cpu`'s threads.
    ///
    /// The family and its options come from the metadata ([`ArchOptions`]); a missing tensor,
    /// a tensor of the wrong shape, or a tensor the family's graph does not read is an error
    /// naming it.
    pub fn load(
        file: &ModelFile,
        device: &Device,
        cpu: Arc<CpuContext>,
    ) -> Result<Self, ModelError> {
        let config = LlamaConfig::from_gguf(file.gguf())?;
        let mut arch = ArchOptions::from_gguf(file.gguf(), &config)?;
        if file.layout() == WeightLayout::HuggingFace {
            // Hugging Face keeps q/k rows in the half-split order its RoPE rotates; llama.cpp
            // permutes a llama model's rows to rotate adjacent pairs. Same function, no copy.
            arch.rope_style = RopeStyle::HalfSplit;
        }
        let r = Reader {
            file,
            cpu,
            device: device.clone(),
            used: Mutex::new(BTreeSet::new()),
        };
        let (d, dkv, dff, dh) = (config.d_model, config.d_kv(), config.d_ff, config.d_head);
        let dq = config.n_head * dh;
        let blocks = (0..config.n_layer)
            .map(|i| {
                let n = |stem: &str| format!("blk.{i}.{stem}.weight");
                let b = |stem: &str| format!("blk.{i}.{stem}.bias");
                let (wq, wk, wv) = match r.has(&n("attn_qkv")) {
                    true => {
                        let [q, k, v] = <[QWeight; 3]>::try_from(r.fused(
                            &n("attn_qkv"),
                            d,
                            &[dq, dkv, dkv],
                        )?)
                        .unwrap_or_else(|_| unreachable!("three bands"));
                        (q, k, v)
                    }
                    false => (
                        r.matrix(&n("attn_q"), d, dq)?,
                        r.matrix(&n("attn_k"), d, dkv)?,
                        r.matrix(&n("attn_v"), d, dkv)?,
                    ),
                };
                let (w_gate, w_up) = match r.has(&n("ffn_gate")) {
                    true => (
                        r.matrix(&n("ffn_gate"), d, dff)?,
                        r.matrix(&n("ffn_up"), d, dff)?,
                    ),
                    false => {
                        let [gate, up] =
                            <[QWeight; 2]>::try_from(r.fused(&n("ffn_up"), d, &[dff, dff])?)
                                .unwrap_or_else(|_| unreachable!("two bands"));
                        (gate, up)
                    }
                };
                let qkv_bias = r.has(&b("attn_qkv"));
                let extras = BlockExtras {
                    q_bias: r.optional(&b("attn_q"), dq)?,
                    k_bias: r.optional(&b("attn_k"), dkv)?,
                    v_bias: r.optional(&b("attn_v"), dkv)?,
                    q_norm: r.required_if(arch.qk_norm, &n("attn_q_norm"), dh)?,
                    k_norm: r.required_if(arch.qk_norm, &n("attn_k_norm"), dh)?,
                    attn_post_norm: r.required_if(arch.post_norms, &n("post_attention_norm"), d)?,
                    ffn_post_norm: r.required_if(arch.post_norms, &n("post_ffw_norm"), d)?,
                };
                if qkv_bias {
                    return Err(ModelError::Tensor {
                        name: b("attn_qkv"),
                        what: "a fused QKV bias is not supported".into(),
                    });
                }
                Ok(Block {
                    attn_norm: r.vector(&n("attn_norm"), d)?,
                    wq,
                    wk,
                    wv,
                    wo: r.matrix(&n("attn_output"), dq, d)?,
                    ffn_norm: r.vector(&n("ffn_norm"), d)?,
                    w_gate,
                    w_up,
                    w_down: r.matrix(&n("ffn_down"), dff, d)?,
                    extras,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let embedding = r.matrix("token_embd.weight", d, config.n_vocab)?;
        let tied = !r.has("output.weight");
        let output = match tied {
            false => r.matrix("output.weight", d, config.n_vocab)?,
            true => embedding.clone(),
        };
        let half = config.rope_dim / 2;
        let read = |name: &str| -> Result<Option<Vec<f32>>, ModelError> {
            match r.has(name) {
                true => r.values(name, half).map(Some),
                false => Ok(None),
            }
        };
        // llama.cpp: `rope_freqs` when the file has it; phi3 reads its LongRoPE pair instead.
        let rope_factors = match read("rope_freqs.weight")? {
            Some(freqs) => RopeFactors::Freqs(freqs),
            None if arch.arch == Architecture::Phi3 => RopeFactors::LongShort {
                long: read("rope_factors_long.weight")?,
                short: read("rope_factors_short.weight")?,
            },
            None => RopeFactors::None,
        };
        let n_ctx_train = config.n_ctx_train;
        let (ropes, layer_rope) = rope_tables(&config, &arch, &rope_factors, n_ctx_train, device);
        let output_norm = r.vector("output_norm.weight", d)?;
        let used = r.used.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(extra) = file
            .gguf()
            .tensors()
            .iter()
            .find(|t| !used.contains(&t.name))
        {
            return Err(ModelError::Tensor {
                name: extra.name.clone(),
                what: format!(
                    "not read by the {} graph (an option engram does not implement)",
                    arch.arch.name()
                ),
            });
        }
        Ok(Self {
            output_norm,
            config,
            arch,
            device: device.clone(),
            embedding,
            blocks,
            output,
            tied,
            ropes,
            layer_rope,
            rope_factors,
            rope_context: n_ctx_train,
            attention: AttentionPrecision::default(),
        })
    }
}

/// The RoPE tables of a model run at a context of `n_ctx` positions (llama.cpp's `n_ctx`,
/// which picks phi3's long or short factors), one per distinct setting among the layers, and
/// each layer's index into them.
pub(super) fn rope_tables(
    config: &LlamaConfig,
    arch: &ArchOptions,
    factors: &RopeFactors,
    n_ctx: usize,
    device: &Device,
) -> (Vec<RopeTable>, Vec<usize>) {
    let factors = factors.for_context(n_ctx, arch.n_ctx_orig);
    let mut ropes: Vec<(RopeSpec, RopeTable)> = Vec::new();
    let mut layer_rope = Vec::with_capacity(config.n_layer);
    for layer in 0..config.n_layer {
        let (base, freq_scale) = arch.layer_rope(layer, config);
        let spec = RopeSpec {
            base,
            freq_scale,
            factors: factors.map(<[f32]>::to_vec),
            yarn: arch.yarn,
            attn_factor: arch.rope_attn_factor,
            dim: config.rope_dim,
            n_ctx: config.n_ctx_train,
            style: arch.rope_style,
        };
        let index = match ropes.iter().position(|(s, _)| *s == spec) {
            Some(i) => i,
            None => {
                let table = RopeTable::new(&spec, device);
                ropes.push((spec, table));
                ropes.len() - 1
            }
        };
        layer_rope.push(index);
    }
    (ropes.into_iter().map(|(_, t)| t).collect(), layer_rope)
}

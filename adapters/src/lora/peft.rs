//! PEFT's on-disk layout: `adapter_model.safetensors` + `adapter_config.json`, so that
//! `PeftModel.from_pretrained(base, dir)` loads what engram trained, and engram loads PEFT's.
//!
//! Tensor names are PEFT's (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`).
//! For the `llama` family the GGUF converter permutes the rows of `q_proj`/`k_proj` for
//! llama.cpp's RoPE layout (`(heads, d_head/2, 2)` instead of Hugging Face's
//! `(heads, 2, d_head/2)`); engram trains in the GGUF order, so `lora_B` rows of q/k are
//! permuted back on save and forward on load. The other families (half-split RoPE) keep
//! Hugging Face's order and are written as they are.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use engram_runtime::io::{DirError, DirWriter, recover};
use engram_runtime::model::arch::RopeStyle;
use engram_runtime::model::llama::{Llama, Proj};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::peft_config::{TargetModules, parse_peft_config};
use super::peft_weights::peft_tensor;
use super::{Lora, LoraConfig, LoraError};
use crate::optim::HostParams;

/// File names inside an adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The PEFT configuration file.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// llama.cpp's LoRA file inside an adapter directory written by [`Lora::save_adapter_dir`].
pub const LLAMA_CPP_FILE: &str = "adapter.gguf";
/// Files an existing adapter directory may hold that a save replaces: ours, and what PEFT's
/// `save_pretrained` writes (its pickle weights, its model card).
pub const ADAPTER_FILES: &[&str] = &[
    WEIGHTS_FILE,
    CONFIG_FILE,
    LLAMA_CPP_FILE,
    "adapter_model.bin",
    "README.md",
];

/// Reading or writing adapter files failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterIoError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `adapter_config.json` is not what PEFT writes for a LoRA adapter.
    #[error("{path}: {what}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The weights file is not valid safetensors, or a tensor is missing or misshapen.
    #[error("{path}: {what}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The adapter does not fit the model.
    #[error(transparent)]
    Lora(#[from] LoraError),
    /// Another writer holds the file's lock, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] engram_runtime::io::LockError),
    /// The adapter directory could not be committed or recovered (another writer holds it, it
    /// holds files that are not an adapter's, the file system failed); names the path.
    #[error(transparent)]
    Dir(#[from] DirError),
}

/// PEFT's module path of a projection.
fn peft_name(layer: usize, proj: Proj, ab: &str) -> String {
    let group = match proj {
        Proj::Q | Proj::K | Proj::V | Proj::O => "self_attn",
        Proj::Gate | Proj::Up | Proj::Down => "mlp",
    };
    format!(
        "base_model.model.model.layers.{layer}.{group}.{}.lora_{ab}.weight",
        proj.hf_name()
    )
}

/// Heads whose rows the GGUF converter permuted: q and k of a family with adjacent RoPE pairs
/// (`llama`); the others (qwen2, qwen3, phi3, gemma) keep Hugging Face's row order.
fn permuted_heads(model: &Llama, proj: Proj) -> Option<usize> {
    if model.arch().rope_style != RopeStyle::Adjacent {
        return None;
    }
    let c = model.config();
    match proj {
        Proj::Q => Some(c.n_head),
        Proj::K => Some(c.n_head_kv),
        _ => None,
    }
}

/// Reorders the rows of `b` (`n_out × r`): GGUF → HF when `to_hf`, HF → GGUF otherwise.
fn permute_rows(b: &[f32], r: usize, heads: usize, to_hf: bool) -> Vec<f32> {
    let n_out = b.len() / r;
    let half = n_out / heads / 2;
    let mut out = vec![0f32; b.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf = h * 2 * half + i * 2 + j;
                let hf = h * 2 * half + j * half + i;
                let (src, dst) = if to_hf { (gguf, hf) } else { (hf, gguf) };
                out[dst * r..(dst + 1) * r].copy_from_slice(&b[src * r..(src + 1) * r]);
            }
        }
    }
    out
}

impl Lora {
    /// Writes the PEFT adapter directory `dir`: `adapter_model.safetensors` and
    /// `adapter_config.json`, committed as one generation (see [`Lora::save_adapter_dir`]).
    pub fn save_peft(
        &self,
        model: &Llama,
        dir: &Path,
        base_model: &str,
    ) -> Result<(), AdapterIoError> {
        self.save_dir(model, dir, base_model, false)
    }

    /// Writes the adapter directory `engram train --out DIR` makes: PEFT's
    /// `adapter_model.safetensors` + `adapter_config.json` and llama.cpp's `adapter.gguf`
    /// ([`Lora::to_llama_cpp_gguf`]), committed as one generation with
    /// [`engram_runtime::io::DirWriter`]: a kill at any moment leaves the previous
    /// adapter or this one, never a mix, and the next save or load cleans up. The directory
    /// also holds engram's `.engram-manifest` (PEFT and llama.cpp ignore it). An existing `dir`
    /// is replaced only if it holds nothing but adapter files; a second writer of the same
    /// directory gets [`AdapterIoError::Dir`] naming its lock.
    pub fn save_adapter_dir(
        &self,
        model: &Llama,
        dir: &Path,
        base_model: &str,
    ) -> Result<(), AdapterIoError> {
        self.save_dir(model, dir, base_model, true)
    }

    fn save_dir(
        &self,
        model: &Llama,
        dir: &Path,
        base_model: &str,
        with_gguf: bool,
    ) -> Result<(), AdapterIoError> {
        let weights = self.peft_weights(model, &dir.join(WEIGHTS_FILE))?;
        let config = self.peft_config(base_model);
        let gguf = with_gguf.then(|| self.to_llama_cpp_gguf_for(model));
        let mut w = DirWriter::create(dir)?.replacing(ADAPTER_FILES);
        w.add(WEIGHTS_FILE, &weights)?;
        w.add(CONFIG_FILE, &config)?;
        if let Some(gguf) = gguf {
            w.add(LLAMA_CPP_FILE, &gguf)?;
        }
        w.commit()?;
        Ok(())
    }

    /// `adapter_model.safetensors` bytes (`path` names the file in errors).
    fn peft_weights(&self, model: &Llama, path: &Path) -> Result<Vec<u8>, AdapterIoError> {
        let host = self.params.to_host();
        let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        for (layer, proj, slot) in self.slots() {
            let a = &host.values[slot.a.0];
            let mut b = host.values[slot.b.0].clone();
            if let Some(heads) = permuted_heads(model, proj) {
                b = permute_rows(&b, self.config.rank, heads, true);
            }
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            tensors.push((
                peft_name(layer, proj, "A"),
                le(a),
                vec![self.config.rank, slot.n_in],
            ));
            tensors.push((
                peft_name(layer, proj, "B"),
                le(&b),
                vec![slot.n_out, self.config.rank],
            ));
        }
        let views = tensors.iter().map(|(name, bytes, shape)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("sizes match");
            (name.clone(), view)
        });
        let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        safetensors::serialize(views, Some(meta)).map_err(|e| AdapterIoError::Weights {
            path: path.to_owned(),
            what: e.to_string(),
        })
    }

    /// `adapter_config.json` bytes, as PEFT writes them for a LoRA adapter.
    fn peft_config(&self, base_model: &str) -> Vec<u8> {
        let c = &self.config;
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": c.rank,
            "lora_alpha": c.alpha,
            "lora_dropout": c.dropout,
            "use_rslora": c.rslora,
            "target_modules": c.targets.iter().map(|p| p.hf_name()).collect::<Vec<_>>(),
            "layers_to_transform": c.layers.clone().map(|r| r.collect::<Vec<_>>()),
            "bias": "none",
            "fan_in_fan_out": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": null,
        });
        serde_json::to_string_pretty(&config)
            .expect("json")
            .into_bytes()
    }

    /// Loads a PEFT LoRA adapter directory for `model`, after [`recover`]ing whatever an
    /// interrupted save left beside it.
    pub fn load_peft(model: &Llama, dir: &Path) -> Result<Lora, AdapterIoError> {
        recover(dir)?;
        let config = read_config(&dir.join(CONFIG_FILE), model.config().n_layer)?;
        let wpath = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&wpath).map_err(|source| AdapterIoError::Io {
            path: wpath.clone(),
            source,
        })?;
        let bad = |what: String| AdapterIoError::Weights {
            path: wpath.clone(),
            what,
        };
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        // The model's shapes cap what the file states (the rank by the roomiest projection).
        let mut lora = Lora::new(model, config).map_err(|e| AdapterIoError::Config {
            path: dir.join(CONFIG_FILE),
            what: e.to_string(),
        })?;
        let mut host = lora.params.to_host();
        let r = lora.config.rank;
        let slots: Vec<_> = lora.slots().collect();
        for (layer, proj, slot) in slots {
            for (ab, id, shape) in [
                ("A", slot.a, [r, slot.n_in]),
                ("B", slot.b, [slot.n_out, r]),
            ] {
                let name = peft_name(layer, proj, ab);
                let mut v = peft_tensor(&st, &name, shape).map_err(bad)?;
                if ab == "B"
                    && let Some(heads) = permuted_heads(model, proj)
                {
                    v = permute_rows(&v, r, heads, false);
                }
                host.values[id.0] = v;
            }
        }
        lora.params
            .load_host(&host)
            .map_err(|e| bad(e.to_string()))?;
        Ok(lora)
    }

    /// The adapter's values on the host (for checkpoints and strategies).
    pub fn to_host(&self) -> HostParams {
        self.params.to_host()
    }
}

fn read_config(path: &Path, n_layer: usize) -> Result<LoraConfig, AdapterIoError> {
    let bad = |what: String| AdapterIoError::Config {
        path: path.to_owned(),
        what,
    };
    let bytes = std::fs::read(path).map_err(|source| AdapterIoError::Io {
        path: path.to_owned(),
        source,
    })?;
    let c = parse_peft_config(&bytes, n_layer).map_err(bad)?;
    let targets = match c.targets {
        TargetModules::AllLinear => Proj::ALL.to_vec(),
        TargetModules::Names(names) => LoraConfig::parse_targets(&names.join(","))
            .map_err(|e| bad(format!("`target_modules`: {e}")))?,
    };
    Ok(LoraConfig {
        rank: c.rank,
        alpha: c.alpha,
        dropout: c.dropout,
        targets,
        layers: c.layers,
        rslora: c.rslora,
        seed: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::permute_rows;

    #[test]
    fn row_permutation_round_trips_and_matches_the_converter() {
        // 2 heads of d_head 4, r = 1: GGUF rows (h, i, j) hold HF rows (h, j, i).
        let gguf: Vec<f32> = (0..8).map(|x| x as f32).collect();
        let hf = permute_rows(&gguf, 1, 2, true);
        assert_eq!(hf, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(permute_rows(&hf, 1, 2, false), gguf);
    }
}

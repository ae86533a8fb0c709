//! Hugging Face checkpoints: a directory of `config.json`, `tokenizer.json` (and
//! `tokenizer_config.json`) and one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`. Each shard is memory-mapped; `config.json` and
//! `tokenizer.json` become the GGUF metadata llama.cpp's converter would write, and the tensors
//! are renamed to llama.cpp's names, so the graph, tokenizer and chat template read a checkpoint
//! exactly as they read a GGUF file ([`crate::model_file::ModelFile::open`]).
//!
//! No weight matrix is copied or rewritten. llama.cpp's converter permutes the q/k rows of
//! `llama` models so its adjacent-pair RoPE matches Hugging Face's half-split rotation; engram
//! keeps the rows as stored and rotates half-split pairs instead
//! ([`crate::model_file::WeightLayout`]), the same function. Phi-3's fused `qkv_proj` and
//! `gate_up_proj` keep llama.cpp's fused names. What the converter computes rather than copies
//! (Gemma's `1 + w` norms, Llama 3.1's RoPE factors) is computed at load into a buffer of a few
//! kilobytes ([`Checkpoint::derived`]).

mod config;
mod derived;
pub mod export;
mod names;
mod tokenizer;

use std::path::{Path, PathBuf};

use crate::format::{MetaValue, SafetensorsError, TensorInfo, parse_safetensors};
use crate::io::MappedFile;

pub use config::config_metadata;
pub use names::gguf_name;
pub use tokenizer::tokenizer_metadata;

/// A checkpoint that cannot be read; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file could not be read or mapped.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file (config, tokenizer, index) is malformed or lacks a key.
    #[error("{}: {what}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A safetensors shard is malformed.
    #[error("{}: {source}", path.display())]
    Safetensors {
        /// The shard.
        path: PathBuf,
        /// What is wrong, naming the tensor where there is one.
        source: SafetensorsError,
    },
    /// A tensor engram has no GGUF name for, or one the index places in another shard.
    #[error("{}: tensor {name:?}: {what}", path.display())]
    Tensor {
        /// The shard.
        path: PathBuf,
        /// The Hugging Face tensor name.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A model, tokenizer or option engram does not read from a checkpoint.
    #[error("{}: {what} is not supported", path.display())]
    Unsupported {
        /// The file naming it.
        path: PathBuf,
        /// What.
        what: String,
    },
}

/// An opened checkpoint: its mapped shards, and the GGUF-named metadata and tensor table over
/// them (`shard_of[i]` is the shard of `tensors[i]`).
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// Shard files, in index order, mapped.
    pub shards: Vec<(PathBuf, MappedFile)>,
    /// GGUF metadata built from `config.json` and the tokenizer files.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors under llama.cpp's names, dims in ggml order, offsets within their shard.
    pub tensors: Vec<TensorInfo>,
    /// The shard of each tensor; `shards.len()` for a tensor in [`Checkpoint::derived`].
    pub shard_of: Vec<usize>,
    /// Tensors computed at load (Gemma's shifted norms, Llama 3's `rope_freqs.weight`), F32,
    /// when there are any.
    pub derived: Option<MappedFile>,
}

/// Whether `path` names a checkpoint rather than a GGUF file: a directory, or a file ending in
/// `.safetensors`.
pub fn is_checkpoint(path: &Path) -> bool {
    path.is_dir() || path.extension().is_some_and(|e| e == "safetensors")
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Json {
        path: path.to_path_buf(),
        what: e.to_string(),
    })
}

/// The shard files of the checkpoint at `path` (a directory or one `.safetensors` file).
fn shard_paths(path: &Path) -> Result<(PathBuf, Vec<PathBuf>), CheckpointError> {
    if !path.is_dir() {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        return Ok((dir, vec![path.to_path_buf()]));
    }
    let dir = path.to_path_buf();
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        return Ok((dir.clone(), vec![dir.join("model.safetensors")]));
    }
    let json = read_json(&index)?;
    let bad = |what: &str| CheckpointError::Json {
        path: index.clone(),
        what: what.into(),
    };
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object"))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(&format!("weight_map[{name:?}] is not a file name")))?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(bad(&format!("shard name {file:?} leaves the directory")));
        }
        let file = dir.join(file);
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.sort();
    Ok((dir, files))
}

impl Checkpoint {
    /// Maps the checkpoint at `path` and builds its GGUF view; every error names the file.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let (dir, paths) = shard_paths(path)?;
        let config_path = dir.join("config.json");
        let config = config::gemma3_text_config(read_json(&config_path)?, &config_path)?;
        let (arch, mut metadata) = config_metadata(&config, &config_path)?;
        metadata.extend(tokenizer_metadata(&dir, &config)?);
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors: Vec<TensorInfo> = Vec::new();
        let mut shard_of = Vec::new();
        for (i, shard) in paths.into_iter().enumerate() {
            let map = MappedFile::open(&shard).map_err(|source| CheckpointError::Io {
                path: shard.clone(),
                source,
            })?;
            let table =
                parse_safetensors(map.bytes()).map_err(|source| CheckpointError::Safetensors {
                    path: shard.clone(),
                    source,
                })?;
            for t in table {
                let tensor_err = |what: String| CheckpointError::Tensor {
                    path: shard.clone(),
                    name: t.name.clone(),
                    what,
                };
                let hf = names::text_model_name(arch, &t.name);
                let Some(name) = hf.as_deref().and_then(|hf| gguf_name(arch, hf)) else {
                    if hf.is_none() || names::ignored(&t.name) {
                        continue;
                    }
                    return Err(tensor_err(format!(
                        "no llama.cpp name for it in a {} model",
                        arch.name()
                    )));
                };
                if tensors.iter().any(|x| x.name == name) {
                    return Err(tensor_err("stored twice".into()));
                }
                if t.shape.is_empty() || t.shape.len() > 2 {
                    return Err(tensor_err(format!("shape {:?} is not 1-D or 2-D", t.shape)));
                }
                tensors.push(TensorInfo {
                    name,
                    dims: t.shape.iter().rev().copied().collect(),
                    ty: t.ty,
                    offset: t.bytes.start,
                    n_bytes: t.bytes.len(),
                });
                shard_of.push(i);
            }
            shards.push((shard, map));
        }
        if arch == crate::model::arch::Architecture::Gemma3 {
            trim_embedding_rows(&mut tensors, &mut metadata);
        }
        let mut buffer: Vec<f32> = Vec::new();
        for (t, shard) in tensors.iter_mut().zip(&mut shard_of) {
            if names::norm_shifted(arch, &t.name) {
                let mut values = derived::values_of(t, shards[*shard].1.bytes());
                values.iter_mut().for_each(|w| *w += 1.0);
                *t = derived::push_tensor(&mut buffer, t.name.clone(), t.dims.clone(), &values);
                *shard = shards.len();
            }
        }
        if let Some(factors) = derived::llama3_rope_factors(&config, &config_path)? {
            let name = "rope_freqs.weight".to_string();
            if tensors.iter().any(|t| t.name == name) {
                return Err(CheckpointError::Json {
                    path: config_path,
                    what: "rope_scaling llama3 and a stored rope_freqs.weight".into(),
                });
            }
            tensors.push(derived::push_tensor(
                &mut buffer,
                name,
                vec![factors.len()],
                &factors,
            ));
            shard_of.push(shards.len());
        }
        Ok(Checkpoint {
            dir,
            shards,
            metadata,
            tensors,
            shard_of,
            derived: (!buffer.is_empty()).then(|| MappedFile::from_f32(buffer)),
        })
    }
}

/// Gemma 3's embedding has rows past its tokenizer (262208 rows, 262145 tokens in the 4B);
/// llama.cpp's converter (`Gemma3Model.modify_tensors`) drops them, so the vocabulary and the
/// logits are the tokenizer's. The view shrinks; nothing is copied.
fn trim_embedding_rows(tensors: &mut [TensorInfo], metadata: &mut [(String, MetaValue)]) {
    let n_tokens = metadata.iter().find_map(|(k, v)| match (k.as_str(), v) {
        ("tokenizer.ggml.tokens", MetaValue::Array(items)) => Some(items.len()),
        _ => None,
    });
    let Some(n_tokens) = n_tokens else { return };
    for t in tensors.iter_mut().filter(|t| t.name == "token_embd.weight") {
        if let [row_len, rows] = t.dims[..]
            && rows > n_tokens
            && let Some(row_bytes) = t.ty.row_bytes(row_len)
        {
            t.dims[1] = n_tokens;
            t.n_bytes = row_bytes * n_tokens;
        }
    }
    for (k, v) in metadata.iter_mut() {
        if k.ends_with(".vocab_size")
            && let MetaValue::U32(n) = v
            && *n as usize > n_tokens
        {
            *n = n_tokens as u32;
        }
    }
}

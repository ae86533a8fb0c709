//! The few values llama.cpp's converter computes rather than copies, computed at load into a
//! small in-memory buffer ([`crate::io::MappedFile::from_f32`]) so the graph reads a checkpoint
//! as it reads the converted GGUF file:
//!
//! - Gemma's norms: Hugging Face's `Gemma2RMSNorm` / `Gemma3RMSNorm` compute `x̂ · (1 + w)` (in
//!   f32) and store `w`; `Gemma2Model` / `Gemma3Model.modify_tensors` write `w + 1` for every
//!   `*norm.weight`, and the graph runs a plain RMSNorm. Kilobytes per model.
//! - Llama 3.1's RoPE frequency factors: `LlamaModel.generate_extra_tensors` turns
//!   `rope_scaling` `{"rope_type": "llama3", factor, low_freq_factor, high_freq_factor,
//!   original_max_position_embeddings}` into the `rope_freqs` tensor.

use std::f64::consts::PI;
use std::path::Path;

use engram_kernels::GgmlType;
use serde_json::Value;

use super::CheckpointError;
use crate::format::TensorInfo;

/// The f32 values of `t` (F32, F16 or BF16) in `bytes`, its shard.
pub fn values_of(t: &TensorInfo, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; t.n_elements()];
    let src = &bytes[t.offset..t.offset + t.n_bytes];
    engram_kernels::dequantize_row(t.ty, src, &mut out);
    out
}

/// Appends `values` to `buffer` as an F32 tensor named `name` of `dims` (ggml order).
pub fn push_tensor(
    buffer: &mut Vec<f32>,
    name: String,
    dims: Vec<usize>,
    values: &[f32],
) -> TensorInfo {
    let offset = buffer.len() * 4;
    buffer.extend_from_slice(values);
    TensorInfo {
        name,
        dims,
        ty: GgmlType::F32,
        offset,
        n_bytes: values.len() * 4,
    }
}

/// Llama 3's RoPE factors from `config.json` at `path` (one per rotated pair), or `None` when
/// `rope_scaling` is not `llama3`. The defaults are the converter's (8, 1, 4, 8192).
pub fn llama3_rope_factors(
    config: &Value,
    path: &Path,
) -> Result<Option<Vec<f32>>, CheckpointError> {
    let Some(s) = config.get("rope_scaling").filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str);
    if kind != Some("llama3") {
        return Ok(None);
    }
    let bad = |what: String| CheckpointError::Json {
        path: path.to_path_buf(),
        what,
    };
    let num = |v: Option<&Value>, key: &str, default: f64| match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| bad(format!("rope_scaling.{key} is not a number"))),
    };
    let factor = num(s.get("factor"), "factor", 8.0)?;
    let low = num(s.get("low_freq_factor"), "low_freq_factor", 1.0)?;
    let high = num(s.get("high_freq_factor"), "high_freq_factor", 4.0)?;
    let old_ctx = num(
        s.get("original_max_position_embeddings")
            .or_else(|| config.get("original_max_position_embeddings")),
        "original_max_position_embeddings",
        8192.0,
    )?;
    if !(factor > 0.0 && low > 0.0 && high > low && old_ctx > 0.0) {
        return Err(bad(format!(
            "rope_scaling {s}: llama3 needs factor > 0 and high_freq_factor > low_freq_factor > 0"
        )));
    }
    let base = num(config.get("rope_theta"), "rope_theta", 10_000.0)?;
    let u = |key: &str| config.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
    let d_head = match config.get("head_dim").and_then(Value::as_u64) {
        Some(d) => d as usize,
        None => u("hidden_size") / u("num_attention_heads").max(1),
    };
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    let factors = (0..d_head / 2)
        .map(|i| {
            let freq = base.powf(-2.0 * i as f64 / d_head as f64);
            let wavelen = 2.0 * PI / freq;
            let f = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_ctx / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect();
    Ok(Some(factors))
}

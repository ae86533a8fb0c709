//! `config.json` → the GGUF metadata llama.cpp's converter writes (`{arch}.*` keys).

use std::path::Path;

use serde_json::Value;

use super::CheckpointError;
use crate::format::MetaValue;
use crate::model::arch::Architecture;

/// The architecture and `{arch}.*` metadata of a checkpoint's `config.json` (at `path`).
pub fn config_metadata(
    config: &Value,
    path: &Path,
) -> Result<(Architecture, Vec<(String, MetaValue)>), CheckpointError> {
    let unsupported = |what: String| CheckpointError::Unsupported {
        path: path.to_path_buf(),
        what,
    };
    let missing = |key: &str| CheckpointError::Json {
        path: path.to_path_buf(),
        what: format!("no unsigned integer {key:?}"),
    };
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| CheckpointError::Json {
            path: path.to_path_buf(),
            what: "no string \"model_type\"".into(),
        })?;
    let arch = match model_type {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        other => {
            return Err(unsupported(format!(
                "model_type {other:?} (engram reads llama, qwen2 and qwen3 checkpoints)"
            )));
        }
    };
    let name = arch.name();
    let u32_of = |key: &str| -> Result<Option<u32>, CheckpointError> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| missing(key)),
        }
    };
    let f32_of = |key: &str| -> Result<Option<f32>, CheckpointError> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|x| Some(x as f32))
                .ok_or_else(|| CheckpointError::Json {
                    path: path.to_path_buf(),
                    what: format!("{key:?} is not a number"),
                }),
        }
    };
    let need = |key: &str| u32_of(key)?.ok_or_else(|| missing(key));
    let mut meta: Vec<(String, MetaValue)> = vec![(
        "general.architecture".into(),
        MetaValue::Str(name.to_string()),
    )];
    let mut put = |k: &str, v: MetaValue| meta.push((format!("{name}.{k}"), v));
    let n_head = need("num_attention_heads")?;
    put("block_count", MetaValue::U32(need("num_hidden_layers")?));
    put("embedding_length", MetaValue::U32(need("hidden_size")?));
    put(
        "feed_forward_length",
        MetaValue::U32(need("intermediate_size")?),
    );
    put("attention.head_count", MetaValue::U32(n_head));
    put(
        "attention.head_count_kv",
        MetaValue::U32(u32_of("num_key_value_heads")?.unwrap_or(n_head)),
    );
    if let Some(d) = u32_of("head_dim")? {
        put("attention.key_length", MetaValue::U32(d));
        put("attention.value_length", MetaValue::U32(d));
    }
    put(
        "context_length",
        MetaValue::U32(need("max_position_embeddings")?),
    );
    put("vocab_size", MetaValue::U32(need("vocab_size")?));
    put(
        "rope.freq_base",
        MetaValue::F32(f32_of("rope_theta")?.unwrap_or(10_000.0)),
    );
    let eps = f32_of("rms_norm_eps")?.ok_or_else(|| missing("rms_norm_eps"))?;
    put("attention.layer_norm_rms_epsilon", MetaValue::F32(eps));
    match config.get("rope_scaling") {
        None | Some(Value::Null) => {}
        Some(s) => {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            let factor = s.get("factor").and_then(Value::as_f64);
            // YaRN as convert_hf_to_gguf.py writes it (type, factor, original context), where
            // the values llama.cpp ignores for these families are its defaults.
            let yarn_as_llama_cpp_runs = s
                .get("original_max_position_embeddings")
                .is_some_and(Value::is_u64)
                && [("beta_fast", 32.0), ("beta_slow", 1.0)]
                    .iter()
                    .all(|(k, d)| s.get(*k).is_none_or(|v| v.as_f64() == Some(*d)))
                && [
                    "attention_factor",
                    "extrapolation_factor",
                    "mscale",
                    "mscale_all_dim",
                ]
                .iter()
                .all(|k| s.get(*k).is_none());
            match (kind, factor) {
                ("yarn", Some(f)) if yarn_as_llama_cpp_runs => {
                    let orig = s["original_max_position_embeddings"].as_u64().unwrap_or(0);
                    put("rope.scaling.type", MetaValue::Str("yarn".into()));
                    put("rope.scaling.factor", MetaValue::F32(f as f32));
                    put(
                        "rope.scaling.original_context_length",
                        MetaValue::U32(orig as u32),
                    );
                }
                ("linear", Some(f)) => {
                    put("rope.scaling.type", MetaValue::Str("linear".into()));
                    put("rope.scaling.factor", MetaValue::F32(f as f32));
                }
                _ => return Err(unsupported(format!("rope_scaling {s}"))),
            }
        }
    }
    if config.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("use_sliding_window: true".into()));
    }
    if let Some(act) = config.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(unsupported(format!("hidden_act {act:?}")));
    }
    Ok((arch, meta))
}

//! `config.json` → the GGUF metadata llama.cpp's converter writes (`{arch}.*` keys).

use std::path::Path;

use serde_json::Value;

use super::CheckpointError;
use crate::format::MetaValue;
use crate::model::arch::Architecture;

/// Gemma 3's text configuration: `config.json` of a `gemma3_text` model, or the `text_config` of
/// a multimodal `gemma3` one (the top level's token ids kept), with `Gemma3TextConfig`'s defaults
/// for the keys the file leaves out (the 4B's `text_config` omits heads, head width, vocabulary,
/// ...). Any other configuration is returned as it is.
pub fn gemma3_text_config(config: Value, path: &Path) -> Result<Value, CheckpointError> {
    let mut text = match config.get("model_type").and_then(Value::as_str) {
        Some("gemma3_text") => config,
        Some("gemma3") => {
            let mut text = config
                .get("text_config")
                .filter(|t| t.is_object())
                .cloned()
                .ok_or_else(|| CheckpointError::Json {
                    path: path.to_path_buf(),
                    what: "a gemma3 config without a \"text_config\" object".into(),
                })?;
            for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
                if let (None, Some(v)) = (text.get(key), config.get(key)) {
                    text[key] = v.clone();
                }
            }
            text["model_type"] = Value::String("gemma3_text".into());
            text
        }
        _ => return Ok(config),
    };
    let defaults = serde_json::json!({
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
        "query_pre_attn_scalar": 256, "sliding_window": 4096, "rope_local_base_freq": 10_000.0,
        "sliding_window_pattern": 6,
    });
    if let (Some(text), Some(defaults)) = (text.as_object_mut(), defaults.as_object()) {
        for (k, v) in defaults {
            text.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Ok(text)
}

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
        "phi3" => Architecture::Phi3,
        "gemma2" => Architecture::Gemma2,
        "gemma3_text" => Architecture::Gemma3,
        other => {
            return Err(unsupported(format!(
                "model_type {other:?} (engram reads llama, qwen2, qwen3, phi3, gemma2 and \
                 gemma3_text checkpoints)"
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
    // Hugging Face's defaults where config.json leaves the base out.
    let default_base = match arch {
        Architecture::Gemma3 => 1_000_000.0,
        _ => 10_000.0,
    };
    put(
        "rope.freq_base",
        MetaValue::F32(f32_of("rope_theta")?.unwrap_or(default_base)),
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
                // Llama 3.1's scaling is a `rope_freqs` tensor, derived at load
                // (super::derived::llama3_rope_factors), not metadata.
                ("llama3", _) if arch == Architecture::Llama => {}
                _ => return Err(unsupported(format!("rope_scaling {s}"))),
            }
        }
    }
    if config.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported("use_sliding_window: true".into()));
    }
    let (act_key, act) = match config.get("hidden_activation").and_then(Value::as_str) {
        Some(act) => ("hidden_activation", Some(act)),
        None => (
            "hidden_act",
            config.get("hidden_act").and_then(Value::as_str),
        ),
    };
    let want = match arch {
        Architecture::Gemma2 | Architecture::Gemma3 => "gelu_pytorch_tanh",
        _ => "silu",
    };
    if let Some(act) = act
        && act != want
    {
        return Err(unsupported(format!("{act_key} {act:?} in a {name} model")));
    }
    match arch {
        Architecture::Phi3 => {
            // convert_hf_to_gguf.py `Phi3MiniModel`: the rotated width from the partial factor.
            if let Some(p) = f32_of("partial_rotary_factor")? {
                let d = need("hidden_size")? as f32;
                put(
                    "rope.dimension_count",
                    MetaValue::U32((p * d) as u32 / n_head),
                );
            }
        }
        Architecture::Gemma2 | Architecture::Gemma3 => {
            meta.extend(gemma_metadata(arch, config, path, n_head)?);
        }
        _ => {}
    }
    Ok((arch, meta))
}

/// The Gemma 2/3 keys beyond the shared ones: soft-caps and window as `Gemma2Model` /
/// `Gemma3Model.set_gguf_parameters` write them, and the options the graph fixes (the query
/// scale, gemma3's local RoPE base and 5-of-6 sliding pattern) checked against config.json, so
/// a checkpoint the graph would run differently is refused naming the key.
fn gemma_metadata(
    arch: Architecture,
    config: &Value,
    path: &Path,
    n_head: u32,
) -> Result<Vec<(String, MetaValue)>, CheckpointError> {
    let name = arch.name();
    let unsupported = |what: String| CheckpointError::Unsupported {
        path: path.to_path_buf(),
        what: format!("{what} in a {name} model"),
    };
    let number = |key: &str| -> Result<Option<f64>, CheckpointError> {
        match config.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| unsupported(format!("{key} {v} (engram's graph needs a number)"))),
        }
    };
    let null_or_absent = |key: &str| config.get(key).is_none_or(Value::is_null);
    let mut meta = Vec::new();
    let mut put = |k: &str, v: MetaValue| meta.push((format!("{name}.{k}"), v));
    if let Some(w) = number("sliding_window")? {
        put("attention.sliding_window", MetaValue::U32(w as u32));
    }
    match arch {
        Architecture::Gemma2 => {
            // Absent keys take Hugging Face's and llama.cpp's common defaults (50, 30).
            for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                if let Some(c) = number(key)? {
                    put(key, MetaValue::F32(c as f32));
                }
            }
        }
        _ => {
            for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
                if !null_or_absent(key) {
                    return Err(unsupported(format!(
                        "{key} {} (the gemma3 graph has no soft-cap)",
                        config[key]
                    )));
                }
            }
            if let Some(b) = number("rope_local_base_freq")?
                && b != 10_000.0
            {
                return Err(unsupported(format!(
                    "rope_local_base_freq {b} (the graph's sliding layers rotate with base 10000)"
                )));
            }
            let n_layer = config
                .get("num_hidden_layers")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            if let Some(p) = number("sliding_window_pattern")?
                && p != 6.0
            {
                return Err(unsupported(format!(
                    "sliding_window_pattern {p} (the graph slides 5 layers of 6)"
                )));
            }
            if let Some(types) = config.get("layer_types").filter(|v| !v.is_null()) {
                let expected: Vec<&str> = (0..n_layer)
                    .map(|i| match i % 6 < 5 {
                        true => "sliding_attention",
                        false => "full_attention",
                    })
                    .collect();
                let found: Option<Vec<&str>> = types
                    .as_array()
                    .and_then(|a| a.iter().map(Value::as_str).collect());
                if found.as_deref() != Some(&expected[..]) {
                    return Err(unsupported(format!(
                        "layer_types {types} (the graph slides layers i % 6 < 5)"
                    )));
                }
            }
        }
    }
    // llama.cpp scales queries by 1/√head_dim, or 1/√(d_model / n_head) for the 27B models
    // (46 layers for gemma2, 62 for gemma3) and ignores `query_pre_attn_scalar`; check that the
    // checkpoint's scalar is the one the graph uses.
    if let Some(q) = number("query_pre_attn_scalar")? {
        let u = |k: &str| config.get(k).and_then(Value::as_u64).unwrap_or(0) as f64;
        let d_model = u("hidden_size");
        let d_head = config
            .get("head_dim")
            .and_then(Value::as_u64)
            .map_or(d_model / f64::from(n_head), |d| d as f64);
        let big = if arch == Architecture::Gemma2 {
            46.0
        } else {
            62.0
        };
        let used = match u("num_hidden_layers") == big {
            true => d_model / f64::from(n_head),
            false => d_head,
        };
        if q != used {
            return Err(unsupported(format!(
                "query_pre_attn_scalar {q} (the graph scales queries by 1/√{used})"
            )));
        }
    }
    Ok(meta)
}

//! `adapter_config.json` of a PEFT LoRA adapter, decoded and checked before anything is
//! allocated: every field engram reads has its JSON type checked (a `"lora_alpha": "16"` is an
//! error naming the field, never a silent default), sizes are bounded and ranges lie within the
//! model. Fields engram does not read (PEFT writes many) are ignored.
//!
//! This module needs only `serde_json`: the fuzz crate compiles it directly (`#[path]`), so the
//! fuzzed code is the code `Lora::load_peft` runs.

use std::ops::Range;

use serde::de::DeserializeOwned;

/// Largest `|lora_alpha|` accepted: beyond it the update's scale overflows activations to inf.
pub const MAX_ALPHA: f32 = 1e6;

/// Largest rank a file may state before the model's shapes are consulted (the model then caps
/// it by its projections).
pub const MAX_RANK: usize = 1 << 16;

/// Which projections the file adapts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetModules {
    /// Module names (`q_proj`, ...), as listed.
    Names(Vec<String>),
    /// PEFT's `"all-linear"`.
    AllLinear,
}

/// What engram reads from `adapter_config.json`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftLoraConfig {
    /// `r`: 1 to [`MAX_RANK`].
    pub rank: usize,
    /// `lora_alpha` (PEFT's default 8): finite, at most [`MAX_ALPHA`] in magnitude.
    pub alpha: f32,
    /// `lora_dropout` (default 0): in `[0, 1)`.
    pub dropout: f32,
    /// `use_rslora` (default false).
    pub rslora: bool,
    /// `target_modules`.
    pub targets: TargetModules,
    /// `layers_to_transform` as a range of blocks (`None`: all).
    pub layers: Option<Range<usize>>,
}

/// The value of `key` in `obj` as a `T`; `None` when absent or null. A value of another type
/// is an error naming the key.
fn field<T: DeserializeOwned>(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Result<Option<T>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|e| format!("`{key}`: {e} (found {v})")),
    }
}

/// Decodes `adapter_config.json` bytes and checks them for a model of `n_layer` blocks. The
/// error says what is wrong and names the field; the caller adds the path.
pub fn parse_peft_config(bytes: &[u8], n_layer: usize) -> Result<PeftLoraConfig, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(&value)))?;
    let peft_type: Option<String> = field(obj, "peft_type")?;
    if peft_type.as_deref() != Some("LORA") {
        return Err(format!(
            "`peft_type` {}, expected \"LORA\"",
            obj.get("peft_type").unwrap_or(&serde_json::Value::Null)
        ));
    }
    let rank: u64 = field(obj, "r")?.ok_or("`r` (the LoRA rank) is missing")?;
    if rank == 0 || rank > MAX_RANK as u64 {
        return Err(format!("`r`: rank {rank} is outside 1..={MAX_RANK}"));
    }
    let alpha: f64 = field(obj, "lora_alpha")?.unwrap_or(8.0);
    if !alpha.is_finite() || alpha.abs() > f64::from(MAX_ALPHA) {
        return Err(format!(
            "`lora_alpha` {alpha}: a finite value of magnitude at most {MAX_ALPHA}"
        ));
    }
    let dropout: f64 = field(obj, "lora_dropout")?.unwrap_or(0.0);
    if !(0.0..1.0).contains(&dropout) {
        return Err(format!("`lora_dropout` {dropout} is not in [0, 1)"));
    }
    let rslora: bool = field(obj, "use_rslora")?.unwrap_or(false);
    // Settings that change what the weights mean: loading such an adapter as plain LoRA would
    // run something else than what was trained, silently.
    if field::<bool>(obj, "use_dora")?.unwrap_or(false) {
        return Err("`use_dora` true: DoRA adapters are not supported".into());
    }
    if field::<bool>(obj, "fan_in_fan_out")?.unwrap_or(false) {
        return Err("`fan_in_fan_out` true: only nn.Linear-layout weights are supported".into());
    }
    let bias: String = field(obj, "bias")?.unwrap_or_else(|| "none".into());
    if bias != "none" {
        return Err(format!("`bias` {bias:?}: only \"none\" is supported"));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        let pattern: serde_json::Map<String, serde_json::Value> =
            field(obj, key)?.unwrap_or_default();
        if !pattern.is_empty() {
            return Err(format!(
                "`{key}`: per-module ranks and alphas are not supported"
            ));
        }
    }
    let saved: Vec<String> = field(obj, "modules_to_save")?.unwrap_or_default();
    if !saved.is_empty() {
        return Err(format!(
            "`modules_to_save` {saved:?}: adapters that replace whole modules are not supported"
        ));
    }
    let targets = match obj.get("target_modules") {
        Some(serde_json::Value::String(s)) if s == "all-linear" => TargetModules::AllLinear,
        Some(serde_json::Value::Array(_)) => {
            let names: Vec<String> = field(obj, "target_modules")?.unwrap_or_default();
            if names.is_empty() {
                return Err("`target_modules` is empty".into());
            }
            TargetModules::Names(names)
        }
        other => {
            return Err(format!(
                "`target_modules` {}: a list of module names or \"all-linear\"",
                other.unwrap_or(&serde_json::Value::Null)
            ));
        }
    };
    let layers = match obj.get("layers_to_transform") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(_)) => {
            let l: Vec<u64> = field(obj, "layers_to_transform")?.unwrap_or_default();
            Some(layer_range(&l, n_layer)?)
        }
        Some(_) => {
            let l: u64 = field(obj, "layers_to_transform")?.unwrap_or(0);
            Some(layer_range(&[l], n_layer)?)
        }
    };
    Ok(PeftLoraConfig {
        rank: rank as usize,
        alpha: alpha as f32,
        dropout: dropout as f32,
        rslora,
        targets,
        layers,
    })
}

/// `layers` as a contiguous range within `0..n_layer` (the only shape engram adapts).
fn layer_range(layers: &[u64], n_layer: usize) -> Result<Range<usize>, String> {
    let bad = || {
        format!(
            "`layers_to_transform` {layers:?}: a non-empty contiguous range of the model's \
             blocks 0..{n_layer} is supported"
        )
    };
    let (Some(&lo), Some(&hi)) = (layers.iter().min(), layers.iter().max()) else {
        return Err(bad());
    };
    let mut sorted = layers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if hi >= n_layer as u64 || sorted.len() != layers.len() || hi - lo + 1 != layers.len() as u64 {
        return Err(bad());
    }
    Ok(lo as usize..hi as usize + 1)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_configs_parse_and_wrong_types_are_named() {
        let ok = br#"{"peft_type":"LORA","r":8,"lora_alpha":16,"target_modules":["q_proj","v_proj"],"layers_to_transform":null,"modules_to_save":null}"#;
        let c = parse_peft_config(ok, 30).unwrap();
        assert_eq!((c.rank, c.alpha, c.layers), (8, 16.0, None));
        // What PEFT 0.13's save_pretrained writes for a plain LoRA adapter.
        let peft = br#"{"alpha_pattern":{},"auto_mapping":null,"base_model_name_or_path":"HuggingFaceTB/SmolLM2-135M-Instruct","bias":"none","fan_in_fan_out":false,"inference_mode":true,"init_lora_weights":true,"layer_replication":null,"layers_pattern":null,"layers_to_transform":null,"loftq_config":{},"lora_alpha":16,"lora_dropout":0.05,"megatron_config":null,"megatron_core":"megatron.core","modules_to_save":null,"peft_type":"LORA","r":8,"rank_pattern":{},"revision":null,"target_modules":["v_proj","q_proj"],"task_type":"CAUSAL_LM","use_dora":false,"use_rslora":false}"#;
        let c = parse_peft_config(peft, 30).unwrap();
        assert_eq!((c.rank, c.dropout), (8, 0.05));
        for (bad, says) in [
            (
                r#"{"peft_type":"LORA","r":"8","target_modules":["q_proj"]}"#,
                "`r`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":"16","target_modules":["q_proj"]}"#,
                "`lora_alpha`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":1e38,"target_modules":["q_proj"]}"#,
                "`lora_alpha`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"use_rslora":"yes","target_modules":["q_proj"]}"#,
                "`use_rslora`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"target_modules":["q_proj",3]}"#,
                "`target_modules`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"target_modules":["q_proj"],"layers_to_transform":[0,40]}"#,
                "`layers_to_transform`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"target_modules":["q_proj"],"layers_to_transform":[1,1]}"#,
                "`layers_to_transform`",
            ),
            (
                r#"{"peft_type":"LORA","r":0,"target_modules":["q_proj"]}"#,
                "`r`",
            ),
            (r#"[1]"#, "object"),
            (
                r#"{"peft_type":"LORA","r":8,"target_modules":["q_proj"],"use_dora":true}"#,
                "`use_dora`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"target_modules":["q_proj"],"rank_pattern":{"q":4}}"#,
                "`rank_pattern`",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"target_modules":["q_proj"],"modules_to_save":["lm_head"]}"#,
                "`modules_to_save`",
            ),
        ] {
            let e = parse_peft_config(bad.as_bytes(), 30).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

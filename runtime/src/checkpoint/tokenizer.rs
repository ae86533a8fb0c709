//! `tokenizer.json` (+ `tokenizer_config.json`) → GGUF `tokenizer.*` metadata, for the byte-level
//! BPE tokenizers engram implements; anything else is refused naming what it is.

use std::path::Path;

use serde_json::Value;

use super::{CheckpointError, read_json};
use crate::format::MetaValue;

/// The `\p{N}{1,3}` split of Llama 3's `tokenizer.json` (llama.cpp's `llama-bpe`).
pub const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The single-digit split of Qwen2's `tokenizer.json` (llama.cpp's `qwen2`).
pub const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp's pre-tokenizer name for a `tokenizer.json` `pre_tokenizer`, or `None`.
pub fn pre_tokenizer_name(pre: &Value) -> Option<&'static str> {
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).map(str::to_owned);
    let byte_level = |v: &Value, regex: bool| {
        kind(v).as_deref() == Some("ByteLevel")
            && v.get("use_regex").and_then(Value::as_bool).unwrap_or(true) == regex
    };
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    let seq = pre.get("pretokenizers")?.as_array()?;
    match &seq[..] {
        [digits, bl]
            if kind(digits).as_deref() == Some("Digits")
                && digits.get("individual_digits").and_then(Value::as_bool) == Some(true)
                && byte_level(bl, true) =>
        {
            Some("smollm")
        }
        [split, bl] if kind(split).as_deref() == Some("Split") && byte_level(bl, false) => {
            match split.get("pattern")?.get("Regex")?.as_str()? {
                LLAMA3_SPLIT => Some("llama-bpe"),
                QWEN2_SPLIT => Some("qwen2"),
                _ => None,
            }
        }
        _ => None,
    }
}

fn token_text(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        obj => obj.get("content")?.as_str(),
    }
}

/// The `tokenizer.*` metadata of the checkpoint in `dir` (`config` is its `config.json`, the
/// fallback for BOS/EOS ids).
pub fn tokenizer_metadata(
    dir: &Path,
    config: &Value,
) -> Result<Vec<(String, MetaValue)>, CheckpointError> {
    let path = dir.join("tokenizer.json");
    let json = read_json(&path)?;
    let unsupported = |what: String| CheckpointError::Unsupported {
        path: path.clone(),
        what,
    };
    let bad = |what: &str| CheckpointError::Json {
        path: path.clone(),
        what: what.into(),
    };
    let model = json.get("model").ok_or_else(|| bad("no \"model\""))?;
    let model_type = model.get("type").and_then(Value::as_str).unwrap_or("?");
    if model_type != "BPE" {
        return Err(unsupported(format!("tokenizer model {model_type:?}")));
    }
    let pre = json.get("pre_tokenizer").unwrap_or(&Value::Null);
    let pre_name = pre_tokenizer_name(pre).ok_or_else(|| {
        unsupported(format!(
            "pre_tokenizer {pre} (engram reads ByteLevel, SmolLM's Digits+ByteLevel, and the \
             Llama 3 and Qwen2 Split+ByteLevel)"
        ))
    })?;
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no model.vocab object"))?;
    let mut entries: Vec<(usize, String, i32)> = Vec::with_capacity(vocab.len());
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("a vocab id is not an integer"))?;
        entries.push((id as usize, text.clone(), 1));
    }
    if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
        for t in added {
            let (Some(id), Some(text)) = (
                t.get("id").and_then(Value::as_u64),
                t.get("content").and_then(Value::as_str),
            ) else {
                return Err(bad("an added token lacks id or content"));
            };
            let ty = match t.get("special").and_then(Value::as_bool) {
                Some(true) => 3,
                _ => 4,
            };
            entries.retain(|(i, _, _)| *i != id as usize);
            entries.push((id as usize, text.to_string(), ty));
        }
    }
    entries.sort_by_key(|e| e.0);
    if entries.iter().enumerate().any(|(i, e)| e.0 != i) {
        return Err(bad("token ids are not 0..n without gaps or repeats"));
    }
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no model.merges array"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => match &pair[..] {
                [Value::String(a), Value::String(b)] => Some(format!("{a} {b}")),
                _ => None,
            },
            _ => None,
        })
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| bad("a merge is neither \"a b\" nor [a, b]"))?;

    let strs = |v: Vec<String>| MetaValue::Array(v.into_iter().map(MetaValue::Str).collect());
    let id_of = |text: &str| entries.iter().find(|e| e.1 == text).map(|e| e.0 as u32);
    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::Str("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            MetaValue::Str(pre_name.into()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(entries.iter().map(|e| MetaValue::I32(e.2)).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), strs(merges)),
    ];
    let tc_path = dir.join("tokenizer_config.json");
    let tc = match tc_path.exists() {
        true => read_json(&tc_path)?,
        false => Value::Null,
    };
    let config_id = |key: &str| config.get(key).and_then(Value::as_u64).map(|n| n as u32);
    let special = |which: &str| {
        token_text(tc.get(format!("{which}_token").as_str()))
            .and_then(id_of)
            .or_else(|| config_id(&format!("{which}_token_id")))
    };
    for (which, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
        ("unk", "tokenizer.ggml.unknown_token_id"),
        ("pad", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = special(which) {
            meta.push((key.to_string(), MetaValue::U32(id)));
        }
    }
    if special("eos").is_none() {
        return Err(CheckpointError::Json {
            path: tc_path,
            what: "no eos_token (nor config.json eos_token_id)".into(),
        });
    }
    for (hf, key) in [
        ("add_bos_token", "tokenizer.ggml.add_bos_token"),
        ("add_eos_token", "tokenizer.ggml.add_eos_token"),
    ] {
        if let Some(b) = tc.get(hf).and_then(Value::as_bool) {
            meta.push((key.to_string(), MetaValue::Bool(b)));
        }
    }
    if let Some(t) = tc.get("chat_template").and_then(Value::as_str) {
        meta.push(("tokenizer.chat_template".into(), MetaValue::Str(t.into())));
    }
    meta.push((
        "tokenizer.ggml.tokens".into(),
        strs(entries.into_iter().map(|e| e.1).collect()),
    ));
    Ok(meta)
}

//! `tokenizer.json` (+ `tokenizer_config.json`) → GGUF `tokenizer.*` metadata, for the byte-level
//! BPE tokenizers and the SentencePiece-style BPE of Llama 2, TinyLlama and Mistral that engram
//! implements; anything else is refused naming what it is.
//!
//! A SentencePiece-style `tokenizer.json` is a `BPE` model with `byte_fallback: true`, spaces
//! escaped as `▁` (a `Replace` normalizer, with a `Prepend` for the dummy prefix, or a
//! `Metaspace` pre-tokenizer) and `<0xNN>` byte tokens. It becomes llama.cpp's `llama`
//! vocabulary, whose merge priority is a score per token: Hugging Face's converter
//! (`convert_slow_tokenizer.py`, `SentencePieceExtractor`) lists the merges by the merged
//! piece's SentencePiece score, best first, so the rank of the first merge making a token gives
//! it back: score = −rank. (llama.cpp's `LlamaHfVocab`, used when a checkpoint has no
//! `tokenizer.model`, writes −1000 for every token instead, which merges leftmost-first.)

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
    let sentencepiece = model.get("byte_fallback").and_then(Value::as_bool) == Some(true);
    let (ggml_model, pre_name, space_prefix) = match sentencepiece {
        true => {
            let normalizer = json.get("normalizer").unwrap_or(&Value::Null);
            let prefix = sentencepiece_prefix(normalizer, pre).map_err(unsupported)?;
            ("llama", "default", Some(prefix))
        }
        false => {
            let name = pre_tokenizer_name(pre).ok_or_else(|| {
                unsupported(format!(
                    "pre_tokenizer {pre} (engram reads ByteLevel, SmolLM's Digits+ByteLevel, \
                     and the Llama 3 and Qwen2 Split+ByteLevel)"
                ))
            })?;
            ("gpt2", name, None)
        }
    };
    let unk_text = model.get("unk_token").and_then(Value::as_str);
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no model.vocab object"))?;
    let mut entries: Vec<(usize, String, i32)> = Vec::with_capacity(vocab.len());
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad("a vocab id is not an integer"))?;
        let ty = match (sentencepiece, byte_token(text)) {
            (true, true) => 6,
            _ if Some(text.as_str()) == unk_text => 2,
            _ => 1,
        };
        entries.push((id as usize, text.clone(), ty));
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
                _ if sentencepiece && Some(text) == unk_text => 2,
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
            MetaValue::Str(ggml_model.into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            MetaValue::Str(pre_name.into()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            MetaValue::Array(entries.iter().map(|e| MetaValue::I32(e.2)).collect()),
        ),
    ];
    match space_prefix {
        Some(prefix) => {
            let scores = merge_scores(&entries, &merges);
            meta.push((
                "tokenizer.ggml.scores".into(),
                MetaValue::Array(scores.into_iter().map(MetaValue::F32).collect()),
            ));
            meta.push((
                "tokenizer.ggml.add_space_prefix".into(),
                MetaValue::Bool(prefix),
            ));
        }
        None => meta.push(("tokenizer.ggml.merges".to_string(), strs(merges))),
    }
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
    // As gguf-py's `SpecialVocab`: the post-processor's template says whether BOS/EOS are
    // added, tokenizer_config.json's `add_*_token` overrides it.
    let template = template_adds(json.get("post_processor").unwrap_or(&Value::Null));
    for (i, (hf, key)) in [
        ("add_bos_token", "tokenizer.ggml.add_bos_token"),
        ("add_eos_token", "tokenizer.ggml.add_eos_token"),
    ]
    .into_iter()
    .enumerate()
    {
        let from_template = template.and_then(|(first, last)| {
            let which = if i == 0 { "bos" } else { "eos" };
            let edge = if i == 0 { first } else { last };
            edge.map(|t| Some(t) == token_text(tc.get(format!("{which}_token").as_str())))
        });
        if let Some(b) = tc.get(hf).and_then(Value::as_bool).or(from_template) {
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

/// Whether `text` is a SentencePiece byte token, `<0xNN>`.
fn byte_token(text: &str) -> bool {
    text.strip_prefix("<0x")
        .and_then(|t| t.strip_suffix('>'))
        .is_some_and(|hex| hex.len() == 2 && u8::from_str_radix(hex, 16).is_ok())
}

/// Whether a SentencePiece-style `tokenizer.json` prepends `▁` (llama.cpp's
/// `add_space_prefix`), from its `normalizer` and `pre_tokenizer`; an `Err` names what engram
/// does not read. Llama 2's files escape spaces with a normalizer (`Prepend` `▁`, `Replace` `" "`
/// → `▁`); newer ones with a `Metaspace` pre-tokenizer (`prepend_scheme` `first`, `always` or
/// `never`; older files say `add_prefix_space`); Gemma's with a `Replace` normalizer alone (no
/// prefix) and a `Split` on `" "` that finds no space left to split on.
fn sentencepiece_prefix(normalizer: &Value, pre: &Value) -> Result<bool, String> {
    let kind = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let (mut prefix, mut escaped) = (false, false);
    let normalizers = match kind(normalizer).as_str() {
        _ if normalizer.is_null() => Vec::new(),
        "Sequence" => normalizer
            .get("normalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => vec![normalizer.clone()],
    };
    for n in &normalizers {
        match kind(n).as_str() {
            "Prepend" if n.get("prepend").and_then(Value::as_str) == Some("▁") => prefix = true,
            "Replace"
                if n.pointer("/pattern/String").and_then(Value::as_str) == Some(" ")
                    && n.get("content").and_then(Value::as_str) == Some("▁") =>
            {
                escaped = true
            }
            _ => return Err(format!("normalizer {n} in a byte-fallback BPE tokenizer")),
        }
    }
    let pres = match kind(pre).as_str() {
        _ if pre.is_null() => Vec::new(),
        "Sequence" => pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => vec![pre.clone()],
    };
    for p in &pres {
        // Gemma's files split on " " after a normalizer that left no space to split on.
        if escaped
            && kind(p) == "Split"
            && p.pointer("/pattern/String").and_then(Value::as_str) == Some(" ")
        {
            continue;
        }
        let metaspace = kind(p) == "Metaspace"
            && p.get("replacement").and_then(Value::as_str) == Some("▁")
            && p.get("split").and_then(Value::as_bool) != Some(true);
        if !metaspace {
            return Err(format!(
                "pre_tokenizer {p} in a byte-fallback BPE tokenizer (engram reads Metaspace \
                 without split)"
            ));
        }
        escaped = true;
        prefix |= match p.get("prepend_scheme").and_then(Value::as_str) {
            Some(scheme) => scheme != "never",
            None => p.get("add_prefix_space").and_then(Value::as_bool) != Some(false),
        };
    }
    if !escaped {
        return Err("a byte-fallback BPE tokenizer that does not escape spaces as ▁".into());
    }
    Ok(prefix)
}

/// SentencePiece scores from the merges' order: −rank of the first merge making each token;
/// tokens no merge makes (characters, bytes, specials) score below every merge.
fn merge_scores(entries: &[(usize, String, i32)], merges: &[String]) -> Vec<f32> {
    let index: std::collections::HashMap<&str, usize> =
        entries.iter().map(|e| (e.1.as_str(), e.0)).collect();
    let mut scores = vec![-(merges.len() as f32) - 1.0; entries.len()];
    let mut seen = vec![false; entries.len()];
    for (rank, m) in merges.iter().enumerate() {
        let merged: String = m.split(' ').collect();
        if let Some(&id) = index.get(merged.as_str())
            && !seen[id]
        {
            seen[id] = true;
            scores[id] = -(rank as f32);
        }
    }
    scores
}

/// The first and last special tokens of a `TemplateProcessing` post-processor's `single`
/// template (`<s> $A` → (`<s>`, none)); `None` when there is no such template or it is one item
/// long (as gguf-py's `SpecialVocab` reads it).
fn template_adds(post: &Value) -> Option<(Option<&str>, Option<&str>)> {
    let processors = match post.get("processors").and_then(Value::as_array) {
        Some(list) => list.iter().collect::<Vec<_>>(),
        None => vec![post],
    };
    let single = processors
        .into_iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("TemplateProcessing"))?
        .get("single")?
        .as_array()
        .filter(|s| s.len() > 1)?;
    fn special(v: Option<&Value>) -> Option<&str> {
        v?.pointer("/SpecialToken/id")?.as_str()
    }
    Some((special(single.first()), special(single.last())))
}

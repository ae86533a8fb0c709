//! Writing a Hugging Face checkpoint from a GGUF model: the inverse of what
//! [`super::Checkpoint::open`] reads, so a real checkpoint exists without downloading one. Each
//! tensor is dequantized (F32, or rounded to F16/BF16), renamed, and — for `llama` — its q/k rows
//! are put back in Hugging Face's half-split order (undoing llama.cpp's permutation); Gemma's
//! norms are stored as Hugging Face stores them, `w` where the GGUF file holds `1 + w`.

use std::path::Path;

use engram_kernels::GgmlType;
use safetensors::Dtype;
use serde_json::{Value, json};

use super::names::{hf_name, norm_shifted};
use crate::format::{GgufBuilder, MetaValue, TensorInfo};
use crate::io::write_bytes_atomic;
use crate::model::arch::Architecture;
use crate::model_file::ModelFile;

/// Writes `file` as a checkpoint in `dir` (created): `config.json`, `tokenizer.json`,
/// `tokenizer_config.json`, and the weights in `dtype` (F32, F16 or BF16) as one
/// `model.safetensors` (`shards == 1`) or `shards` files and `model.safetensors.index.json`.
pub fn write_checkpoint(
    file: &ModelFile,
    dir: &Path,
    dtype: GgmlType,
    shards: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    write_checkpoint_with(file, dir, dtype, shards, serde_json::Map::new())
}

/// [`write_checkpoint`] with `extra` keys set in `config.json`. A `rope_scaling` among them
/// stands for the file's `rope_freqs.weight` (Llama 3's factors, which cannot be inverted into
/// the parameters that made them), which is then not written.
pub fn write_checkpoint_with(
    file: &ModelFile,
    dir: &Path,
    dtype: GgmlType,
    shards: usize,
    extra: serde_json::Map<String, Value>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let g = file.gguf();
    let arch = g.architecture()?.to_string();
    let family =
        Architecture::from_name(&arch).ok_or_else(|| format!("no checkpoint export for {arch}"))?;
    let (model_type, class) = match family {
        Architecture::Llama => ("llama", "LlamaForCausalLM"),
        Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        Architecture::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
        Architecture::Phi3 => ("phi3", "Phi3ForCausalLM"),
        Architecture::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
        Architecture::Gemma3 => ("gemma3_text", "Gemma3ForCausalLM"),
    };
    std::fs::create_dir_all(dir)?;
    let key = |k: &str| format!("{arch}.{k}");
    let u = |k: &str| g.get_u32(&key(k));
    let n_head = u("attention.head_count")? as usize;
    let n_head_kv = u("attention.head_count_kv").map_or(n_head, |n| n as usize);
    let d_model = u("embedding_length")? as usize;
    let d_head = u("attention.key_length").map_or(d_model / n_head, |n| n as usize);
    let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
    let gemma = matches!(family, Architecture::Gemma2 | Architecture::Gemma3);
    let mut config = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": d_model,
        "intermediate_size": u("feed_forward_length")?,
        "num_hidden_layers": u("block_count")?,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_head_kv,
        "head_dim": d_head,
        "max_position_embeddings": u("context_length")?,
        "vocab_size": tokens.len(),
        "rms_norm_eps": g.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
        "rope_theta": g.get_f32(&key("rope.freq_base")).unwrap_or(10_000.0),
        "hidden_act": if gemma { "gelu_pytorch_tanh" } else { "silu" },
        "tie_word_embeddings": g.tensor("output.weight").is_none(),
        "torch_dtype": match dtype { GgmlType::F16 => "float16", GgmlType::BF16 => "bfloat16", _ => "float32" },
    });
    if gemma {
        gemma_config(&mut config, g, &arch, d_model / n_head, d_head)?;
    }
    if let Some(MetaValue::Str(kind)) = g.get(&key("rope.scaling.type"))
        && kind == "linear"
    {
        config["rope_scaling"] = json!({
            "rope_type": "linear", "factor": g.get_f32(&key("rope.scaling.factor"))?,
        });
    }
    let rope_scaling_given = extra.contains_key("rope_scaling");
    for (k, v) in extra {
        config[k] = v;
    }
    for (gguf_key, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
    ] {
        if let Ok(id) = g.get_u32(gguf_key) {
            config[hf] = json!(id);
        }
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    write_tokenizer(file, dir)?;

    let (st_dtype, size) = match dtype {
        GgmlType::F32 => (Dtype::F32, 4),
        GgmlType::F16 => (Dtype::F16, 2),
        GgmlType::BF16 => (Dtype::BF16, 2),
        other => return Err(format!("checkpoint dtype {} (F32, F16, BF16)", other.name()).into()),
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for t in g.tensors() {
        if t.name == "rope_freqs.weight" && rope_scaling_given {
            continue;
        }
        let name = hf_name(family, &t.name).ok_or_else(|| match t.name.as_str() {
            "rope_freqs.weight" => "rope_freqs.weight: pass the rope_scaling that made it".into(),
            other => format!("no HF name for {other}"),
        })?;
        let mut values = dequantize(file, t)?;
        if norm_shifted(family, &t.name) {
            values.iter_mut().for_each(|w| *w -= 1.0);
        }
        let heads = match t.name.rsplit('.').nth(1) {
            Some("attn_q") => Some(n_head),
            Some("attn_k") => Some(n_head_kv),
            _ => None,
        };
        if let (Some(heads), "llama") = (heads, arch.as_str()) {
            values = unpermute_rows(&values, t.row_len(), heads, t.n_rows() / heads);
        }
        let bytes: Vec<u8> = match dtype {
            GgmlType::F32 => bytemuck::cast_slice(&values).to_vec(),
            GgmlType::F16 => values
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            _ => values
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
        };
        debug_assert_eq!(bytes.len(), values.len() * size);
        tensors.push((name, t.dims.iter().rev().copied().collect(), bytes));
    }
    let shards = shards.clamp(1, tensors.len().max(1));
    let file_name = |i: usize| match shards {
        1 => "model.safetensors".to_string(),
        n => format!("model-{:05}-of-{n:05}.safetensors", i + 1),
    };
    let mut weight_map = serde_json::Map::new();
    let per = tensors.len().div_ceil(shards);
    for (i, chunk) in tensors.chunks(per).enumerate() {
        let views = chunk
            .iter()
            .map(|(name, shape, bytes)| {
                weight_map.insert(name.clone(), Value::String(file_name(i)));
                Ok((
                    name.clone(),
                    safetensors::tensor::TensorView::new(st_dtype, shape.clone(), bytes)?,
                ))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        safetensors::serialize_to_file(views, None, &dir.join(file_name(i)))?;
    }
    if shards > 1 {
        let index = json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
    }
    Ok(())
}

/// Writes `file` as a GGUF file at `out` with every tensor dequantized to F32, metadata kept
/// (`general.file_type` 0): the GGUF F32 path a checkpoint of the same weights is compared with,
/// and the input llama.cpp's quantizer takes (`examples/export_f32.rs`). Returns its size.
pub fn write_f32_gguf(
    file: &ModelFile,
    out: &Path,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let gguf = file.gguf();
    let mut b = GgufBuilder::new().alignment(gguf.alignment() as u32);
    for (key, value) in gguf.metadata() {
        let value = match key.as_str() {
            "general.file_type" => MetaValue::U32(0),
            _ => value.clone(),
        };
        b = b.metadata(key.clone(), value);
    }
    for info in gguf.tensors() {
        let values = dequantize(file, info)?;
        b = b.tensor(
            info.name.clone(),
            &info.dims,
            GgmlType::F32,
            bytemuck::cast_slice(&values),
        );
    }
    let bytes = b.build();
    write_bytes_atomic(out, &bytes)?;
    Ok(bytes.len())
}

fn dequantize(
    file: &ModelFile,
    t: &TensorInfo,
) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>> {
    let mut values = vec![0f32; t.n_elements()];
    let view = file.tensor(&t.name)?;
    let rb = t.ty.row_bytes(t.row_len()).ok_or("row size")?;
    for (src, dst) in view
        .bytes()
        .chunks_exact(rb)
        .zip(values.chunks_exact_mut(t.row_len()))
    {
        engram_kernels::dequantize_row(t.ty, src, dst);
    }
    Ok(values)
}

/// The Gemma keys of `config.json` from the GGUF metadata of `g` (an `arch` model):
/// window, soft-caps (gemma2), the query scalar the graph uses, gemma3's local RoPE base and
/// layer pattern, as `Gemma2Config` / `Gemma3TextConfig` spell them.
fn gemma_config(
    config: &mut Value,
    g: &crate::format::Gguf,
    arch: &str,
    d_ratio: usize,
    d_head: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let key = |k: &str| format!("{arch}.{k}");
    let n_layer = g.get_u32(&key("block_count"))? as usize;
    config["hidden_activation"] = json!("gelu_pytorch_tanh");
    if let Ok(w) = g.get_u32(&key("attention.sliding_window")) {
        config["sliding_window"] = json!(w);
    }
    let big = if arch == "gemma2" { 46 } else { 62 };
    config["query_pre_attn_scalar"] = json!(if n_layer == big { d_ratio } else { d_head });
    if arch == "gemma2" {
        for (k, default) in [
            ("attn_logit_softcapping", 50.0),
            ("final_logit_softcapping", 30.0),
        ] {
            config[k] = json!(g.get_f32(&key(k)).unwrap_or(default));
        }
    } else {
        config["attn_logit_softcapping"] = Value::Null;
        config["final_logit_softcapping"] = Value::Null;
        config["rope_local_base_freq"] = json!(10_000.0);
        config["sliding_window_pattern"] = json!(6);
        config["layer_types"] = (0..n_layer)
            .map(|i| match i % 6 < 5 {
                true => "sliding_attention",
                false => "full_attention",
            })
            .collect();
    }
    Ok(())
}

/// Hugging Face's row order of a q/k projection stored in llama.cpp's: within each head of
/// `head_rows` rows, GGUF row `2i + j` is HF row `j * head_rows / 2 + i`.
fn unpermute_rows(values: &[f32], row_len: usize, heads: usize, head_rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    let half = head_rows / 2;
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head_rows + 2 * i + j) * row_len;
                let dst = (h * head_rows + j * half + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&values[src..src + row_len]);
            }
        }
    }
    out
}

fn write_tokenizer(
    file: &ModelFile,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let g = file.gguf();
    match g.get_str("tokenizer.ggml.model")? {
        "gpt2" => {}
        "llama" => return write_sentencepiece_tokenizer(file, dir),
        other => return Err(format!("no tokenizer.json for a {other:?} vocabulary").into()),
    }
    let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
    let types = g
        .get_i32_array("tokenizer.ggml.token_type")
        .unwrap_or_default();
    let merges = g.get_str_array("tokenizer.ggml.merges")?;
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |pattern: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
    };
    let pre = match g.get_str("tokenizer.ggml.pre").unwrap_or("gpt-2") {
        "gpt-2" => byte_level(true),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" | "llama-v3" => split(super::tokenizer::LLAMA3_SPLIT),
        "qwen2" => split(super::tokenizer::QWEN2_SPLIT),
        other => return Err(format!("no tokenizer.json pre_tokenizer for {other:?}").into()),
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        if let ty @ (3 | 4) = types.get(id).copied().unwrap_or(1) {
            added.push(json!({"id": id, "content": text, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": ty == 4, "special": ty == 3}));
        }
        vocab.insert(text.to_string(), json!(id));
    }
    let tokenizer = json!({
        "version": "1.0",
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": vocab, "merges": merges},
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_string(&tokenizer)?,
    )?;
    let tc = json!({"tokenizer_class": "GPT2Tokenizer"});
    write_tokenizer_config(g, &tokens, dir, tc)
}

/// `tokenizer_config.json`: `tc` with the special tokens' texts, the `add_*_token` flags and the
/// chat template of `g`.
fn write_tokenizer_config(
    g: &crate::format::Gguf,
    tokens: &[&str],
    dir: &Path,
    mut tc: Value,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let text_of = |key: &str| {
        g.get_u32(key)
            .ok()
            .and_then(|id| tokens.get(id as usize))
            .map(|t| Value::String(t.to_string()))
    };
    for (key, hf) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
    ] {
        if let Some(t) = text_of(key) {
            tc[hf] = t;
        }
    }
    for (key, hf) in [
        ("tokenizer.ggml.add_bos_token", "add_bos_token"),
        ("tokenizer.ggml.add_eos_token", "add_eos_token"),
    ] {
        if let Some(MetaValue::Bool(b)) = g.get(key) {
            tc[hf] = json!(b);
        }
    }
    if let Ok(t) = g.get_str("tokenizer.chat_template") {
        tc["chat_template"] = json!(t);
    }
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tc)?,
    )?;
    Ok(())
}

/// A `llama` (SentencePiece) vocabulary as Llama 2's `tokenizer.json`: a byte-fallback `BPE`
/// model whose merges are, as Hugging Face's `SentencePieceExtractor` lists them, every split
/// of every piece into two pieces, ordered by the merged piece's score (best first, then by the
/// pieces' ids); spaces escaped by a `Prepend` + `Replace` normalizer; BOS added by a
/// `TemplateProcessing` post-processor when the file adds it.
fn write_sentencepiece_tokenizer(
    file: &ModelFile,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let g = file.gguf();
    let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
    let types = g
        .get_i32_array("tokenizer.ggml.token_type")
        .unwrap_or_default();
    let ty = |id: usize| types.get(id).copied().unwrap_or(1);
    let scores: Vec<f32> = match g.get("tokenizer.ggml.scores") {
        Some(MetaValue::Array(items)) => items
            .iter()
            .map(|v| match v {
                MetaValue::F32(x) => Ok(*x),
                _ => Err("tokenizer.ggml.scores holds a non-f32"),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("a llama vocabulary without tokenizer.ggml.scores".into()),
    };
    let id_of: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    // (score of the merged piece, left id, right id) for every split into two normal pieces.
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if ty(id) != 1 {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&a), Some(&b)) = (id_of.get(l), id_of.get(r))
                && ty(a) == 1
                && ty(b) == 1
            {
                merges.push((scores[id], a, b));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
    let merges: Vec<String> = merges
        .into_iter()
        .map(|(_, a, b)| format!("{} {}", tokens[a], tokens[b]))
        .collect();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, text) in tokens.iter().enumerate() {
        if let t @ (2..=4) = ty(id) {
            added.push(json!({"id": id, "content": text, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": t == 4, "special": t != 4}));
        }
        vocab.insert(text.to_string(), json!(id));
    }
    let flag = |key: &str, default: bool| match g.get(key) {
        Some(MetaValue::Bool(b)) => *b,
        _ => default,
    };
    let bos = g.get_u32("tokenizer.ggml.bos_token_id").unwrap_or(1) as usize;
    let bos_text = tokens.get(bos).copied().unwrap_or("<s>");
    let mut normalizers = vec![];
    if flag("tokenizer.ggml.add_space_prefix", true) {
        normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    let seq = |id: &str| json!({"Sequence": {"id": id, "type_id": 0}});
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let post = match flag("tokenizer.ggml.add_bos_token", true) {
        true => json!({"type": "TemplateProcessing",
            "single": [special(bos_text), seq("A")],
            "pair": [special(bos_text), seq("A"), special(bos_text), seq("B")],
            "special_tokens": {bos_text: {"id": bos_text, "ids": [bos], "tokens": [bos_text]}}}),
        false => Value::Null,
    };
    let unk = g.get_u32("tokenizer.ggml.unknown_token_id").unwrap_or(0) as usize;
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": tokens.get(unk),
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
            "byte_fallback": true, "vocab": vocab, "merges": merges},
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_string(&tokenizer)?,
    )?;
    let tc = json!({"tokenizer_class": "LlamaTokenizer", "legacy": true});
    write_tokenizer_config(g, &tokens, dir, tc)
}

//! Hugging Face safetensors checkpoints run the same graph as the GGUF file of the same weights:
//! a checkpoint written from a GGUF model (`checkpoint::export`, q/k rows put back in Hugging
//! Face's order, Gemma's norms stored as `w` where the GGUF file holds `1 + w`, Phi-3's fused
//! projections, a SentencePiece vocabulary as Llama 2's `tokenizer.json`, Llama 3's RoPE factors
//! as `rope_scaling`) gives the GGUF F32 path's logits and token ids. Tiny synthetic models run
//! in CI (the GGUF files `tests/arch_parity.rs` proves against llama.cpp); the real SmolLM2 runs
//! when it is cached.

use std::path::Path;
use std::sync::Arc;

use engram::harness::synthetic::{BYTE_VOCAB, TinyLlamaSpec, tiny_llama_gguf_with_bytes};
use engram::kernels::GgmlType;
use engram::runtime::backend;
use engram::runtime::checkpoint::CheckpointError;
use engram::runtime::checkpoint::export::{write_checkpoint, write_checkpoint_with};
use engram::runtime::cpu::CpuContext;
use engram::runtime::model::llama::Llama;
use engram::runtime::model::tokenizer::Tokenizer;
use engram::runtime::model_file::{LoadError, ModelFile, WeightLayout};

mod common;

/// Max |Δlogit| between a checkpoint's F32 weights and the GGUF F32 file of the same weights.
/// The functions are equal; only the order of the q·k sums differs (half-split vs adjacent
/// pairs), so the logits agree to f32 rounding.
const F32_TOL: f32 = 1e-4;

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits and token ids of `gguf` and of its checkpoint in `dir` agree; returns max |Δlogit|.
fn compare(gguf: &ModelFile, dir: &Path, text: &str) -> f32 {
    let ckpt = ModelFile::open(dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ckpt.layout(), WeightLayout::HuggingFace);
    let (t1, t2) = (
        Tokenizer::from_gguf(gguf.gguf()).unwrap(),
        Tokenizer::from_gguf(ckpt.gguf()).unwrap(),
    );
    let tokens = t1.encode(text, true);
    assert_eq!(t2.encode(text, true), tokens, "token ids of {text:?}");
    max_diff(
        &common::all_logits(gguf, &tokens),
        &common::all_logits(&ckpt, &tokens),
    )
}

fn tiny() -> (tempfile::TempDir, ModelFile) {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        ..TinyLlamaSpec::default()
    };
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny_llama_gguf_with_bytes(&spec, GgmlType::F32, 7)).unwrap();
    let file = ModelFile::open(&path).unwrap();
    (dir, file)
}

#[test]
fn tiny_checkpoint_matches_gguf_f32() {
    let (dir, gguf) = tiny();
    for shards in [1, 3] {
        let out = dir.path().join(format!("ckpt{shards}"));
        write_checkpoint(&gguf, &out, GgmlType::F32, shards).unwrap();
        let d = compare(&gguf, &out, "Hello, world 123!");
        eprintln!("tiny llama, {shards} shard(s): max |Δlogit| {d:e}");
        assert!(d <= F32_TOL, "{shards} shard(s): max |Δlogit| {d}");
        if shards == 1 {
            // The single file opens by its own name too.
            ModelFile::open(out.join("model.safetensors")).unwrap();
        }
    }
    // Half-precision checkpoints load and stay near the F32 logits.
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let out = dir.path().join(ty.name());
        write_checkpoint(&gguf, &out, ty, 1).unwrap();
        let d = compare(&gguf, &out, "Hello");
        assert!(d < 0.1, "{}: max |Δlogit| {d}", ty.name());
    }
}

/// The seeded tiny qwen2 (QKV biases, the `qwen2` pre-tokenizer) and qwen3 (q/k norms) of the
/// arch parity tests, as checkpoints: the GGUF F32 path's logits and token ids.
#[test]
fn tiny_qwen_checkpoints_match_gguf_f32() {
    use engram::harness::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf};
    let dir = tempfile::tempdir().unwrap();
    for case in [ArchCase::Qwen2, ArchCase::Qwen3] {
        let path = dir.path().join(format!("{}.gguf", case.name()));
        std::fs::write(&path, arch_gguf(case, GgmlType::F32, ARCH_SEED)).unwrap();
        let gguf = ModelFile::open(&path).unwrap();
        let out = dir.path().join(case.name());
        write_checkpoint(&gguf, &out, GgmlType::F32, 2).unwrap();
        let d = compare(&gguf, &out, "Hello, world 123! it's");
        eprintln!("{}: max |Δlogit| {d:e}", case.name());
        assert!(d <= F32_TOL, "{}: max |Δlogit| {d}", case.name());
    }
}

fn checkpoint_err(path: &Path) -> CheckpointError {
    match ModelFile::open(path) {
        Err(LoadError::Checkpoint { source, .. }) => source,
        Err(e) => panic!("not a checkpoint error: {e}"),
        Ok(_) => panic!("{} opened", path.display()),
    }
}

#[test]
fn bad_checkpoints_are_typed_errors_naming_the_file() {
    let (dir, gguf) = tiny();
    let out = dir.path().join("ckpt");
    write_checkpoint(&gguf, &out, GgmlType::F32, 2).unwrap();
    let shard = out.join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();

    // Truncated shard.
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let e = checkpoint_err(&out);
    assert!(
        matches!(&e, CheckpointError::Safetensors { path, .. } if *path == shard),
        "{e}"
    );
    std::fs::write(&shard, &bytes).unwrap();

    // Bad index.
    let index = out.join("model.safetensors.index.json");
    let good_index = std::fs::read(&index).unwrap();
    std::fs::write(&index, b"{\"weight_map\": 3}").unwrap();
    let e = checkpoint_err(&out);
    assert!(
        matches!(&e, CheckpointError::Json { path, .. } if *path == index),
        "{e}"
    );
    std::fs::write(&index, br#"{"weight_map": {"x": "../evil.safetensors"}}"#).unwrap();
    assert!(matches!(checkpoint_err(&out), CheckpointError::Json { .. }));
    std::fs::write(&index, &good_index).unwrap();

    // A missing tensor: the graph names it.
    let one = dir.path().join("one");
    write_checkpoint(&gguf, &one, GgmlType::F32, 1).unwrap();
    let st = one.join("model.safetensors");
    let file = std::fs::read(&st).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&file).unwrap();
    let kept: Vec<_> = tensors
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "model.layers.1.mlp.down_proj.weight")
        .collect();
    let less = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&st, &less).unwrap();
    let opened = ModelFile::open(&one).unwrap();
    let cpu = Arc::new(CpuContext::new(1).unwrap());
    let Err(err) = Llama::load(&opened, &backend::cpu(), cpu) else {
        panic!("a checkpoint without blk.1.ffn_down.weight loaded");
    };
    assert!(err.to_string().contains("blk.1.ffn_down.weight"), "{err}");

    // Unknown dtype, and a tensor with no llama.cpp name.
    let i32_data = [0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![4], &i32_data).unwrap();
    std::fs::write(
        &st,
        safetensors::serialize([("w", view.clone())], None).unwrap(),
    )
    .unwrap();
    let e = checkpoint_err(&one);
    assert!(
        e.to_string().contains("\"w\"") && e.to_string().contains("I32"),
        "{e}"
    );
    let f32_data = [0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &f32_data).unwrap();
    std::fs::write(
        &st,
        safetensors::serialize([("model.vision.w", view)], None).unwrap(),
    )
    .unwrap();
    let e = checkpoint_err(&one);
    assert!(
        matches!(&e, CheckpointError::Tensor { name, path, .. } if name == "model.vision.w" && *path == st),
        "{e}"
    );

    // An architecture engram does not read from checkpoints.
    let config = one.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"llama\"", "\"falcon\"")).unwrap();
    let e = checkpoint_err(&one);
    assert!(
        matches!(&e, CheckpointError::Unsupported { what, .. } if what.contains("falcon")),
        "{e}"
    );
}

/// The seeded tiny phi3 (fused `qkv_proj` and `gate_up_proj`), gemma2 (soft-caps, a window of 4
/// on even layers, post-norms, `1 + w` norms) and gemma3 (q/k norms, 5-of-6 sliding layers with
/// their own RoPE base, linear scaling 8) of the arch parity tests, written as Hugging Face
/// stores them: the GGUF F32 path's logits and token ids.
#[test]
fn tiny_phi3_and_gemma_checkpoints_match_gguf_f32() {
    use engram::harness::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf};
    let dir = tempfile::tempdir().unwrap();
    for case in [ArchCase::Phi3, ArchCase::Gemma2, ArchCase::Gemma3] {
        let path = dir.path().join(format!("{}.gguf", case.name()));
        std::fs::write(&path, arch_gguf(case, GgmlType::F32, ARCH_SEED)).unwrap();
        let gguf = ModelFile::open(&path).unwrap();
        let out = dir.path().join(case.name());
        write_checkpoint(&gguf, &out, GgmlType::F32, 2).unwrap();

        // Hugging Face's layout, not llama.cpp's: names, fused or not, norms stored as `w`.
        let stored = hf_tensors(&out);
        let has = |n: &str| stored.iter().any(|(name, _)| name == n);
        let norm = |hf: &str| &stored.iter().find(|(n, _)| n == hf).unwrap().1;
        match case {
            ArchCase::Phi3 => {
                assert!(has("model.layers.1.self_attn.qkv_proj.weight"));
                assert!(has("model.layers.1.mlp.gate_up_proj.weight"));
                assert!(!has("model.layers.1.self_attn.q_proj.weight"));
            }
            _ => {
                let gguf_norm = values(&gguf, "blk.0.post_attention_norm.weight");
                let hf_norm = norm("model.layers.0.post_attention_layernorm.weight");
                for (w, g) in hf_norm.iter().zip(&gguf_norm) {
                    assert!(
                        (w + 1.0 - g).abs() < 1e-6,
                        "HF stores w = {w}, GGUF 1 + w = {g}"
                    );
                }
                assert!(has("model.layers.0.pre_feedforward_layernorm.weight"));
                assert!(has("model.layers.0.post_feedforward_layernorm.weight"));
                assert!(!has("lm_head.weight"));
            }
        }
        let d = compare(&gguf, &out, "Hello, world 123! it's the theory in");
        eprintln!("{}: max |Δlogit| {d:e}", case.name());
        assert!(d <= F32_TOL, "{}: max |Δlogit| {d}", case.name());
    }
}

/// Gemma 3 4B and up are multimodal checkpoints: `model_type` `gemma3` with the text model's
/// settings in `text_config` (keys at `Gemma3TextConfig`'s defaults left out), the language
/// model under `language_model.model.…` (or `model.language_model.…` in newer files) beside
/// vision tensors, and embedding rows past the tokenizer. The tiny gemma3 in both layouts, with
/// 3 extra embedding rows and two vision tensors: the GGUF F32 path's logits and token ids.
#[test]
fn multimodal_gemma3_checkpoint_runs_its_text_model() {
    use engram::harness::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gemma3.gguf");
    std::fs::write(&path, arch_gguf(ArchCase::Gemma3, GgmlType::F32, ARCH_SEED)).unwrap();
    let gguf = ModelFile::open(&path).unwrap();
    for (layout, prefix) in [
        ("old", "language_model.model."),
        ("new", "model.language_model."),
    ] {
        let out = dir.path().join(layout);
        write_checkpoint(&gguf, &out, GgmlType::F32, 1).unwrap();
        let config_path = out.join("config.json");
        let mut text: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        let d_model = text["hidden_size"].as_u64().unwrap() as usize;
        text["vocab_size"] = serde_json::json!(text["vocab_size"].as_u64().unwrap() + 3);
        for default in [
            "rope_local_base_freq",
            "sliding_window_pattern",
            "model_type",
        ] {
            text.as_object_mut().unwrap().remove(default);
        }
        let eos = text["eos_token_id"].take();
        let config = serde_json::json!({"model_type": "gemma3",
            "architectures": ["Gemma3ForConditionalGeneration"], "eos_token_id": eos,
            "text_config": text, "vision_config": {"model_type": "siglip_vision_model"}});
        std::fs::write(&config_path, config.to_string()).unwrap();

        let file = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, view) in st.tensors() {
            let (mut shape, mut bytes) = (view.shape().to_vec(), view.data().to_vec());
            if name == "model.embed_tokens.weight" {
                bytes.extend(std::iter::repeat_n(0u8, 3 * d_model * 4));
                shape[0] += 3;
            }
            tensors.push((name.replacen("model.", prefix, 1), shape, bytes));
        }
        drop(st);
        tensors.push((
            "vision_tower.vision_model.post_layernorm.weight".into(),
            vec![4],
            vec![0; 16],
        ));
        tensors.push((
            "multi_modal_projector.mm_soft_emb_norm.weight".into(),
            vec![4],
            vec![0; 16],
        ));
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )
                .unwrap();
                (n.clone(), view)
            })
            .collect();
        std::fs::write(
            out.join("model.safetensors"),
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();

        let d = compare(&gguf, &out, "Hello, world 123! it's the theory in");
        eprintln!("multimodal gemma3 ({layout} names): max |Δlogit| {d:e}");
        assert!(d <= F32_TOL, "{layout}: max |Δlogit| {d}");
    }
}

/// Every tensor of the checkpoint in `dir` as F32 values, by Hugging Face name.
fn hf_tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "safetensors") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            out.push((name, v));
        }
    }
    out
}

/// The F32 values of the GGUF tensor `name`.
fn values(file: &ModelFile, name: &str) -> Vec<f32> {
    file.tensor(name)
        .unwrap()
        .bytes()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// A llama with a SentencePiece vocabulary (scores, `<0xNN>` byte fall-back, BOS, `▁` prefix)
/// and Llama 3's RoPE factors, as a checkpoint with Llama 2's `tokenizer.json` (merges ordered
/// by score, `Prepend`/`Replace` normalizer, BOS from the post-processor) and `rope_scaling`
/// `llama3`: token ids of texts with leading and repeated spaces, accents, CJK (byte
/// fall-back) and special-token text equal the GGUF SentencePiece tokenizer's, and the logits
/// the GGUF F32 path's. The same again with the newer `Metaspace` form of the file and no
/// `add_bos_token` in tokenizer_config.json.
#[test]
fn sentencepiece_llama3_checkpoint_matches_gguf() {
    use engram::harness::synthetic_arch::LLAMA3_ROPE_SCALING;
    use engram::harness::synthetic_vocab::{TOKENIZER_TEXTS, VocabCase, vocab_gguf};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    std::fs::write(&path, vocab_gguf(VocabCase::Spm)).unwrap();
    let gguf = ModelFile::open(&path).unwrap();
    let (factor, low, high, old_ctx) = LLAMA3_ROPE_SCALING;
    let mut extra = serde_json::Map::new();
    extra.insert(
        "rope_scaling".into(),
        serde_json::json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
            "high_freq_factor": high, "original_max_position_embeddings": old_ctx}),
    );
    let out = dir.path().join("ckpt");
    write_checkpoint_with(&gguf, &out, GgmlType::F32, 1, extra).unwrap();
    let tokenizer = std::fs::read_to_string(out.join("tokenizer.json")).unwrap();
    assert!(tokenizer.contains("\"byte_fallback\":true") && tokenizer.contains("\"▁ t\""));

    let reference = Tokenizer::from_gguf(gguf.gguf()).unwrap();
    let check_ids = |dir: &Path| {
        let ckpt = ModelFile::open(dir).unwrap_or_else(|e| panic!("{e}"));
        let t = Tokenizer::from_gguf(ckpt.gguf()).unwrap();
        let mut fallback = 0;
        for text in TOKENIZER_TEXTS.iter().chain(&[" x", "日本"]) {
            for special in [false, true] {
                let ids = reference.encode(text, special);
                assert_eq!(t.encode(text, special), ids, "{text:?}");
                fallback += ids.iter().filter(|&&id| (3..259).contains(&id)).count();
            }
        }
        assert!(fallback > 0, "no text fell back to byte tokens");
    };
    check_ids(&out);
    let d = compare(&gguf, &out, "The capital of France is Paris. naïve 日本");
    eprintln!("spm llama3: max |Δlogit| {d:e}");
    assert!(d <= F32_TOL, "max |Δlogit| {d}");

    // Newer files: a Metaspace pre-tokenizer instead of the normalizer; BOS from the template.
    let mut json: serde_json::Value = serde_json::from_str(&tokenizer).unwrap();
    json["normalizer"] = serde_json::Value::Null;
    json["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁",
        "prepend_scheme": "first", "split": false});
    std::fs::write(out.join("tokenizer.json"), json.to_string()).unwrap();
    let tc_path = out.join("tokenizer_config.json");
    let mut tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tc_path).unwrap()).unwrap();
    tc.as_object_mut().unwrap().remove("add_bos_token");
    std::fs::write(&tc_path, tc.to_string()).unwrap();
    check_ids(&out);

    // Gemma's form: a Replace normalizer without Prepend (no `▁` prefix) and a no-op Split on
    // " ": text with a leading space tokenizes as the prefixed vocabulary's text without.
    json["normalizer"] = serde_json::json!({"type": "Replace", "pattern": {"String": " "},
        "content": "▁"});
    json["pre_tokenizer"] = serde_json::json!({"type": "Split", "pattern": {"String": " "},
        "behavior": "MergedWithPrevious", "invert": false});
    std::fs::write(out.join("tokenizer.json"), json.to_string()).unwrap();
    let ckpt = ModelFile::open(&out).unwrap();
    let t = Tokenizer::from_gguf(ckpt.gguf()).unwrap();
    for text in TOKENIZER_TEXTS.iter().filter(|t| !t.is_empty()) {
        let ids = reference.encode(text, false);
        assert_eq!(t.encode(&format!(" {text}"), false), ids, "{text:?}");
    }
}

/// Checkpoints the graph would run differently from Hugging Face are refused with a typed error
/// naming the file and the key.
#[test]
fn unsupported_checkpoint_options_are_typed_errors() {
    use engram::harness::synthetic_arch::{ARCH_SEED, ArchCase, arch_gguf};
    use engram::harness::synthetic_vocab::{VocabCase, vocab_gguf};
    let dir = tempfile::tempdir().unwrap();
    let export = |case: ArchCase| {
        let path = dir.path().join(format!("{}.gguf", case.name()));
        std::fs::write(&path, arch_gguf(case, GgmlType::F32, ARCH_SEED)).unwrap();
        let out = dir.path().join(case.name());
        write_checkpoint(&ModelFile::open(&path).unwrap(), &out, GgmlType::F32, 1).unwrap();
        out
    };
    let edit = |file: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(file, v.to_string()).unwrap();
    };
    let expect = |dir: &Path, file: &str, key: &str| {
        let e = checkpoint_err(dir);
        let ok = match &e {
            CheckpointError::Unsupported { path, what } | CheckpointError::Json { path, what } => {
                path.ends_with(file) && what.contains(key)
            }
            _ => false,
        };
        assert!(ok, "expected {file} and {key:?}: {e}");
    };

    let gemma3 = export(ArchCase::Gemma3);
    let config = gemma3.join("config.json");
    let good = std::fs::read(&config).unwrap();
    for (key, value) in [
        ("final_logit_softcapping", serde_json::json!(30.0)),
        ("rope_local_base_freq", serde_json::json!(20000.0)),
        ("query_pre_attn_scalar", serde_json::json!(64)),
        ("layer_types", serde_json::json!(vec!["full_attention"; 6])),
        ("hidden_activation", serde_json::json!("gelu")),
    ] {
        edit(&config, &|c| c[key] = value.clone());
        expect(&gemma3, "config.json", key);
        std::fs::write(&config, &good).unwrap();
    }
    edit(&config, &|c| c["model_type"] = serde_json::json!("gemma3"));
    expect(&gemma3, "config.json", "text_config");
    std::fs::write(&config, &good).unwrap();
    let gemma2 = export(ArchCase::Gemma2);
    edit(&gemma2.join("config.json"), &|c| {
        c["attn_logit_softcapping"] = serde_json::Value::Null
    });
    expect(&gemma2, "config.json", "attn_logit_softcapping");

    // A SentencePiece-style tokenizer.json with a normalizer engram does not implement, and a
    // llama3 rope_scaling with its frequency bands crossed.
    let spm_path = dir.path().join("spm.gguf");
    std::fs::write(&spm_path, vocab_gguf(VocabCase::Spm)).unwrap();
    let spm = dir.path().join("spm");
    let mut extra = serde_json::Map::new();
    extra.insert(
        "rope_scaling".into(),
        serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
            "high_freq_factor": 1.0}),
    );
    write_checkpoint_with(
        &ModelFile::open(&spm_path).unwrap(),
        &spm,
        GgmlType::F32,
        1,
        extra,
    )
    .unwrap();
    expect(&spm, "config.json", "high_freq_factor");
    edit(&spm.join("config.json"), &|c| {
        c["rope_scaling"]["high_freq_factor"] = serde_json::json!(8.0)
    });
    ModelFile::open(&spm).unwrap();
    edit(&spm.join("tokenizer.json"), &|t| {
        t["normalizer"]["normalizers"][0] = serde_json::json!({"type": "NFKC"})
    });
    expect(&spm, "tokenizer.json", "NFKC");
}

/// SmolLM2-135M: the cached Q4_1 file dequantized to an F32 GGUF and to an F32 checkpoint;
/// logits over a prompt agree within [`F32_TOL`], token ids are identical. Skipped (passes)
/// when the model is not cached; ≈ 1.1 GB of temporary files.
#[test]
fn smollm2_checkpoint_matches_gguf_f32() {
    let Ok(model) = engram::resolve_model(None) else {
        eprintln!("SmolLM2 not cached: skipped");
        return;
    };
    if !model.exists() {
        eprintln!("SmolLM2 not cached: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let q = ModelFile::open(&model).unwrap();
    let f32_path = dir.path().join("f32.gguf");
    engram::runtime::checkpoint::export::write_f32_gguf(&q, &f32_path).unwrap();
    let gguf = ModelFile::open(&f32_path).unwrap();
    let out = dir.path().join("smollm2");
    write_checkpoint(&q, &out, GgmlType::F32, 2).unwrap();
    let d = compare(
        &gguf,
        &out,
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
    );
    eprintln!("SmolLM2-135M F32 checkpoint vs F32 GGUF: max |Δlogit| {d:e}");
    assert!(d <= F32_TOL, "max |Δlogit| {d}");
}

fn engram(args: &[&str], model: &Path) -> String {
    common::ok_stdout(
        common::engram()
            .args(args)
            .args(["--threads", "1", "--model"])
            .arg(model)
            .output()
            .unwrap(),
    )
}

/// `engram info | generate | logits --model DIR` run a checkpoint directory (the CLI picks the
/// format by path) and agree with the GGUF file of the same weights.
#[test]
fn cli_runs_a_checkpoint_directory() {
    let (dir, gguf) = tiny();
    let out = dir.path().join("ckpt");
    write_checkpoint(&gguf, &out, GgmlType::F32, 2).unwrap();
    let info = engram(&["info"], &out);
    assert!(
        info.contains("safetensors checkpoint, 2 shard(s)") && info.contains("blk.0.attn_q.weight"),
        "{info}"
    );
    let gen_args = ["generate", "--prompt", "Zorbia:", "--max-tokens", "6"];
    let from_gguf = engram(&gen_args, gguf.path());
    assert!(from_gguf.starts_with("Zorbia:"), "{from_gguf}");
    assert_eq!(engram(&gen_args, &out), from_gguf);
    let logit_args = ["logits", "--prompt", "Zorbia:", "--top", "5", "--json"];
    let top = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        let ids: Vec<u64> = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        (v["tokens"].clone(), ids)
    };
    assert_eq!(
        top(&engram(&logit_args, &out)),
        top(&engram(&logit_args, gguf.path()))
    );
    // A single .safetensors file opens by its name, its directory holding the JSON files.
    let one = dir.path().join("one");
    write_checkpoint(&gguf, &one, GgmlType::BF16, 1).unwrap();
    let info = engram(&["info", "--json"], &one.join("model.safetensors"));
    assert!(info.contains("\"bf16\""), "{info}");
}

//! Token ids identical to llama.cpp's for each tokenizer kind (SentencePiece `llama`, BPE with
//! the `llama-bpe` and `qwen2` pre-tokenizers) on the seeded vocabularies of
//! `engram::harness::synthetic_vocab`: with BOS/EOS as the metadata says, special-token text
//! kept as text and parsed, and the text the ids decode back to (llama.cpp's
//! `llama_detokenize`, which drops SentencePiece's space prefix).
//!
//! The reference is `tests/data/arch_reference.json` (`scripts/arch_reference.py`), whose
//! sha256 of each file pins the generator's bytes.

use std::collections::BTreeMap;

use engram::harness::fetch::sha256_file;
use engram::harness::synthetic_vocab::{TOKENIZER_TEXTS, VOCAB_CASES, vocab_gguf};
use engram::runtime::format::Gguf;
use engram::runtime::model::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    vocabs: BTreeMap<String, VocabRef>,
}

#[derive(Deserialize)]
struct VocabRef {
    sha256: String,
    texts: Vec<TextRef>,
}

#[derive(Deserialize)]
struct TextRef {
    text: String,
    ids: Vec<u32>,
    ids_special: Vec<u32>,
    detokenized: String,
}

#[test]
fn every_tokenizer_kind_gives_llama_cpp_ids() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/arch_reference.json"
    );
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut mismatches = Vec::new();
    for case in VOCAB_CASES {
        let expected = &reference.vocabs[case.name()];
        let bytes = vocab_gguf(case);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vocab.gguf");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            expected.sha256,
            "{}: the generator's bytes changed (rerun scripts/arch_reference.py)",
            case.name()
        );
        let tokenizer = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
        let texts: Vec<&str> = expected.texts.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, TOKENIZER_TEXTS, "the script's texts");
        let mut equal = 0;
        for t in &expected.texts {
            let ids = tokenizer.encode(&t.text, false);
            let ids_special = tokenizer.encode(&t.text, true);
            let bos = tokenizer
                .bos()
                .filter(|_| tokenizer.special_tokens().add_bos);
            let body = match (bos, ids.first()) {
                (Some(b), Some(&first)) if first == b => &ids[1..],
                _ => &ids[..],
            };
            let decoded = tokenizer.decode(body);
            if ids == t.ids && ids_special == t.ids_special && decoded == t.detokenized {
                equal += 1;
            } else {
                mismatches.push(format!(
                    "{} {:?}:\n  engram    {ids:?} {ids_special:?} {decoded:?}\n  llama.cpp {:?} \
                     {:?} {:?}",
                    case.name(),
                    t.text,
                    t.ids,
                    t.ids_special,
                    t.detokenized
                ));
            }
        }
        eprintln!(
            "{:<10} {equal}/{} texts identical (ids, ids with special tokens parsed, decoded text)",
            case.name(),
            expected.texts.len()
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

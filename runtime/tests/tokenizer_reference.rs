//! The tokenizer built from the real SmolLM2 file against llama.cpp's ids in
//! `shared/reference`. The model and the reference are required: if either cannot be found
//! the tests fail with the reason, nothing is skipped.

use std::path::PathBuf;
use std::sync::OnceLock;

use engram_harness::fetch;
use engram_runtime::model::chat::{ChatMessage, ChatTemplate};
use engram_runtime::model::tokenizer::{PreTokenizer, StreamDecoder, Tokenizer};
use engram_runtime::model_file::ModelFile;
use serde::Deserialize;

struct Model {
    tokenizer: Tokenizer,
    chat_template: ChatTemplate,
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = fetch::resolve_model(None).unwrap_or_else(|e| panic!("no model: {e}"));
        let file = ModelFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Model {
            tokenizer: Tokenizer::from_gguf(file.gguf()).unwrap_or_else(|e| panic!("{e}")),
            chat_template: ChatTemplate::from_gguf(file.gguf()).unwrap_or_else(|e| panic!("{e}")),
        }
    })
}

/// `<repo>/../shared/reference` (the CI layout), else `$ENGRAM_REFERENCE_DIR`.
fn reference_dir() -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference");
    if beside.is_dir() {
        return beside;
    }
    match std::env::var_os("ENGRAM_REFERENCE_DIR") {
        Some(dir) if PathBuf::from(&dir).is_dir() => PathBuf::from(dir),
        _ => panic!(
            "reference directory not found: neither {} nor $ENGRAM_REFERENCE_DIR exists",
            beside.display()
        ),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Deserialize)]
struct TokenCase {
    text: String,
    tokens: Vec<u32>,
}

#[derive(Deserialize)]
struct LogitCase {
    prompt: String,
    tokens: Vec<u32>,
}

/// Every (text, llama.cpp ids) pair of both reference files.
fn reference_cases() -> Vec<(String, Vec<u32>)> {
    let tokens: Vec<TokenCase> = read_json("tokens_public.json");
    let logits: Vec<LogitCase> = read_json("logits_public.json");
    assert!(
        !tokens.is_empty() && !logits.is_empty(),
        "empty reference files"
    );
    tokens
        .into_iter()
        .map(|c| (c.text, c.tokens))
        .chain(logits.into_iter().map(|c| (c.prompt, c.tokens)))
        .collect()
}

#[test]
fn metadata_is_read() {
    let t = &model().tokenizer;
    assert_eq!(t.vocab_size(), 49_152);
    assert_eq!(t.pre_tokenizer(), PreTokenizer::Smollm);
    assert_eq!(t.eos(), 2);
    assert_eq!(t.bos(), Some(1));
    assert!(!t.special_tokens().add_bos);
    assert_eq!(t.token_id("<|im_start|>"), Some(1));
    assert!(t.is_control(1) && t.is_control(2) && !t.is_control(216));
    assert!(t.is_eog(2) && t.is_eog(0) && !t.is_eog(1));
    assert_eq!(t.token_bytes(216), b" ");
    assert_eq!(t.token_bytes(2), b"<|im_end|>");
}

#[test]
fn every_reference_case_matches_llama_cpp() {
    let t = &model().tokenizer;
    let cases = reference_cases();
    let mismatches: Vec<String> = cases
        .iter()
        .filter_map(|(text, want)| {
            let got = t.encode(text, true);
            (&got != want).then(|| format!("{text:?}\n  llama.cpp {want:?}\n  engram    {got:?}"))
        })
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn special_tokens_are_text_without_parse_special() {
    let t = &model().tokenizer;
    let ids = t.encode("<|im_start|>user", false);
    assert!(!ids.contains(&1), "{ids:?}");
    assert_eq!(t.decode(&ids), "<|im_start|>user");
    assert_eq!(t.encode("<|im_start|>user", true)[0], 1);
}

#[test]
fn decode_inverts_encode_on_reference_texts() {
    let t = &model().tokenizer;
    for (text, want) in reference_cases() {
        assert_eq!(t.decode(&want), text, "decode of llama.cpp's ids");
        assert_eq!(t.decode(&t.encode(&text, true)), text);
        assert_eq!(t.decode(&t.encode(&text, false)), text);
    }
}

/// Whether `c`'s UTF-8 holds a byte whose GPT-2 character SmolLM2's vocabulary lacks: control
/// bytes 04 06 13 14 16 1D, and lead bytes F1 F2 (planes 4 to 11). Like llama.cpp, encoding
/// drops such bytes, so these characters cannot round-trip.
fn has_unencodable_byte(c: char) -> bool {
    matches!(
        u32::from(c),
        0x04 | 0x06 | 0x13 | 0x14 | 0x16 | 0x1D | 0x4_0000..=0xB_FFFF
    )
}

#[test]
fn bytes_missing_from_the_vocabulary_are_dropped() {
    let t = &model().tokenizer;
    // U+001D is its own pre-token, and it yields no id.
    assert_eq!(
        t.encode("a\u{1d}b", false),
        [t.encode("a", false), t.encode("b", false)].concat()
    );
    // F1 90 80 80 without its lead byte: three stray continuation bytes.
    assert_eq!(
        t.decode(&t.encode("x\u{50000}", false)),
        "x\u{FFFD}\u{FFFD}\u{FFFD}"
    );
}

#[test]
fn decode_inverts_encode_on_random_unicode() {
    let t = &model().tokenizer;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = (next() % 40) as usize;
        let text: String = (0..len)
            .map(|_| {
                let r = next();
                let cp = match r % 6 {
                    0 => (r >> 8) % 0x80,
                    1 => 0x20 + (r >> 8) % 0x60,
                    2 => (r >> 8) % 0x800,
                    3 => (r >> 8) % 0x1_0000,
                    4 => 0x1_F300 + (r >> 8) % 0x300,
                    _ => (r >> 8) % 0x11_0000,
                };
                char::from_u32(cp as u32).unwrap_or('\u{FFFD}')
            })
            .filter(|&c| !has_unencodable_byte(c))
            .collect();
        let ids = t.encode(&text, false);
        assert_eq!(t.decode(&ids), text, "ids {ids:?}");
    }
}

#[test]
fn stream_decoder_equals_decode() {
    let t = &model().tokenizer;
    for (text, ids) in reference_cases() {
        let mut stream = StreamDecoder::new(t);
        let mut out = String::new();
        for &id in &ids {
            if let Some(chunk) = stream.push(id) {
                out.push_str(&chunk);
            }
        }
        out.extend(stream.finish());
        assert_eq!(out, text);
    }
    // A token that ends inside a character holds it back; garbage decodes like `decode`.
    let emoji = t.encode("🤖", false);
    assert!(emoji.len() > 1, "{emoji:?}");
    let mut stream = t.stream_decoder();
    assert_eq!(stream.push(emoji[0]), None);
}

#[test]
fn chat_template_from_the_file() {
    let m = model();
    assert!(!m.chat_template.is_fallback());
    let messages = [
        ChatMessage::user("What is 2+2?"),
        ChatMessage::assistant("4."),
    ];
    // Worked by hand from the template text: no system message, so the default one first.
    let want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by \
                Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                <|im_start|>assistant\n4.<|im_end|>\n";
    assert_eq!(m.chat_template.render(&messages, false).unwrap(), want);
    assert_eq!(
        m.chat_template.render(&messages, true).unwrap(),
        format!("{want}<|im_start|>assistant\n")
    );
    let prompt = m.chat_template.render(&messages[..1], true).unwrap();
    let ids = m.tokenizer.encode(&prompt, true);
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2);
}

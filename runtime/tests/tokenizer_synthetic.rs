//! The tokenizer on small vocabularies built in code: merge order, special-token partition,
//! decoding, streaming, error paths, and the GGUF metadata route.

use engram_runtime::format::{Gguf, GgufBuilder, MetaValue};
use engram_runtime::model::chat::{ChatMessage, apply_chat_template};
use engram_runtime::model::tokenizer::{
    PreTokenizer, SpecialTokens, StreamDecoder, Tokenizer, TokenizerError,
};

/// GPT-2's printable character for each byte (test-side copy of the published table).
fn byte_char(b: u8) -> char {
    if matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF) {
        return char::from(b);
    }
    let n = (0..b)
        .filter(|&x| !matches!(x, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF))
        .count() as u32;
    char::from_u32(256 + n).unwrap()
}

const SPECIALS: [(&str, i32); 4] = [
    ("<|endoftext|>", 3),
    ("<|im_start|>", 3),
    ("<|im_end|>", 3),
    ("<tool>", 4),
];

/// Specials (ids 0..4), the 256 byte characters (ids 4..260), then one token per merge.
fn vocab(merges: &[&str]) -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|(t, _)| t.to_string()).collect();
    let mut types: Vec<i32> = SPECIALS.iter().map(|&(_, ty)| ty).collect();
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    types.extend([1; 256]);
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (
        tokens,
        types,
        merges.iter().map(|m| m.to_string()).collect(),
    )
}

fn special() -> SpecialTokens {
    SpecialTokens {
        bos: Some(1),
        eos: 2,
        unk: None,
        pad: Some(2),
        add_bos: false,
        add_eos: false,
    }
}

fn tokenizer(merges: &[&str]) -> Tokenizer {
    let (tokens, types, merges) = vocab(merges);
    Tokenizer::from_parts(tokens, types, merges, special(), PreTokenizer::Smollm).unwrap()
}

fn pieces(t: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| String::from_utf8_lossy(t.token_bytes(id)).into_owned())
        .collect()
}

#[test]
fn merges_apply_lowest_rank_first() {
    let t = tokenizer(&["b c", "a b"]);
    assert_eq!(pieces(&t, &t.encode("abc", false)), ["a", "bc"]);
    let t = tokenizer(&["a b", "b c"]);
    assert_eq!(pieces(&t, &t.encode("abc", false)), ["ab", "c"]);
}

#[test]
fn equal_ranks_merge_leftmost_first() {
    let t = tokenizer(&["a a"]);
    assert_eq!(pieces(&t, &t.encode("aaa", false)), ["aa", "a"]);
    let t = tokenizer(&["a a", "aa aa"]);
    assert_eq!(pieces(&t, &t.encode("aaaaa", false)), ["aaaa", "a"]);
}

#[test]
fn words_and_digits_split_before_merging() {
    let t = tokenizer(&["Ġ w", "o r", "Ġw or", "1 2", "h i", "Ġ 1"]);
    assert_eq!(pieces(&t, &t.encode(" wor", false)), [" wor"]);
    // Digits stand alone under smollm, so "1 2" and "Ġ 1" never apply.
    assert_eq!(pieces(&t, &t.encode(" 12", false)), [" ", "1", "2"]);
    assert_eq!(pieces(&t, &t.encode("hi hi", false)), ["hi", " ", "hi"]);
}

#[test]
fn control_tokens_need_parse_special_user_defined_do_not() {
    let t = tokenizer(&[]);
    assert_eq!(t.encode("<|im_start|>x<|im_end|>", true), [1, 4 + 120, 2]);
    let plain = t.encode("<|im_start|>", false);
    assert_eq!(plain.len(), "<|im_start|>".len());
    assert_eq!(t.encode("a<tool>b", false), [4 + 97, 3, 4 + 98]);
    assert_eq!(t.encode("", true), Vec::<u32>::new());
    assert_eq!(
        t.decode(&[1, 4 + 120, 3, 2]),
        "<|im_start|>x<tool><|im_end|>"
    );
    assert!(t.is_control(1) && !t.is_control(3) && !t.is_control(4));
}

#[test]
fn add_bos_and_eos_follow_the_flags() {
    let (tokens, types, merges) = vocab(&[]);
    let flags = SpecialTokens {
        add_bos: true,
        add_eos: true,
        ..special()
    };
    let t = Tokenizer::from_parts(tokens, types, merges, flags, PreTokenizer::Gpt2).unwrap();
    assert_eq!(t.encode("a", false), [1, 4 + 97, 2]);
}

#[test]
fn round_trips_arbitrary_text_and_streams_it() {
    let t = tokenizer(&["Ġ t", "h e", "Ġt he"]);
    let texts = [
        "the theme",
        "  \t\n\r\u{b}\u{85}\u{3000}x",
        "naïve — “quotes” 日本語 🤖🚀",
        "It's they'll've 'RE",
        "\0\u{1}\u{7f}\u{ad}",
    ];
    for text in texts {
        let ids = t.encode(text, false);
        assert_eq!(t.decode(&ids), text);
        let mut stream = StreamDecoder::new(&t);
        let mut out: String = ids.iter().filter_map(|&id| stream.push(id)).collect();
        out.extend(stream.finish());
        assert_eq!(out, text);
    }
}

#[test]
fn invalid_utf8_decodes_lossily_and_streams_the_same() {
    let t = tokenizer(&[]);
    let byte = |b: u8| 4 + u32::from(b);
    // A lone continuation byte, a truncated 3-byte sequence, then valid text.
    let ids = [
        byte(0x80),
        byte(b'a'),
        byte(0xE6),
        byte(0x97),
        byte(b'b'),
        byte(0xF0),
    ];
    let whole = t.decode(&ids);
    assert_eq!(whole, "\u{FFFD}a\u{FFFD}b\u{FFFD}");
    let mut stream = t.stream_decoder();
    let mut out = String::new();
    for id in ids {
        out.extend(stream.push(id));
    }
    out.extend(stream.finish());
    assert_eq!(out, whole);
}

#[test]
fn bad_vocabularies_are_typed_errors() {
    let (tokens, types, _) = vocab(&[]);
    let err = Tokenizer::from_parts(
        tokens.clone(),
        types.clone(),
        vec!["ab".into()],
        special(),
        PreTokenizer::Smollm,
    )
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::BadMerge { index: 0, .. }),
        "{err}"
    );

    let err = Tokenizer::from_parts(
        tokens.clone(),
        vec![1; 3],
        vec![],
        special(),
        PreTokenizer::Smollm,
    )
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::TokenTypeCount { types: 3, .. }),
        "{err}"
    );

    let out_of_range = SpecialTokens {
        eos: 10_000,
        ..special()
    };
    let err = Tokenizer::from_parts(
        tokens.clone(),
        types.clone(),
        vec![],
        out_of_range,
        PreTokenizer::Smollm,
    )
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::SpecialIdOutOfRange { what: "eos", .. }),
        "{err}"
    );

    let no_bos = SpecialTokens {
        bos: None,
        add_bos: true,
        ..special()
    };
    let err =
        Tokenizer::from_parts(tokens, types, vec![], no_bos, PreTokenizer::Smollm).unwrap_err();
    assert_eq!(err, TokenizerError::MissingBos);

    let err =
        Tokenizer::from_parts(vec![], vec![], vec![], special(), PreTokenizer::Smollm).unwrap_err();
    assert_eq!(err, TokenizerError::VocabSize(0));
}

fn gguf_with(model: &str, pre: Option<&str>) -> Vec<u8> {
    let (tokens, types, merges) = vocab(&["h e"]);
    let strs = |v: Vec<String>| MetaValue::Array(v.into_iter().map(MetaValue::Str).collect());
    let mut b = GgufBuilder::new()
        .metadata("tokenizer.ggml.model", MetaValue::Str(model.into()))
        .metadata("tokenizer.ggml.tokens", strs(tokens))
        .metadata(
            "tokenizer.ggml.token_type",
            MetaValue::Array(types.into_iter().map(MetaValue::I32).collect()),
        )
        .metadata("tokenizer.ggml.merges", strs(merges))
        .metadata("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .metadata("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .metadata("tokenizer.ggml.add_bos_token", MetaValue::Bool(false));
    if let Some(pre) = pre {
        b = b.metadata("tokenizer.ggml.pre", MetaValue::Str(pre.into()));
    }
    b.build()
}

#[test]
fn from_gguf_reads_metadata_and_refuses_unknown_kinds() {
    let bytes = gguf_with("gpt2", Some("smollm"));
    let t = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
    assert_eq!(t.vocab_size(), 4 + 256 + 1);
    assert_eq!((t.bos(), t.eos()), (Some(1), 2));
    assert_eq!(pieces(&t, &t.encode("hehe", false)), ["he", "he"]);

    // WordPiece (`bert`) is not read; `llama` (SentencePiece) is, see tests/tokenizer_parity.rs.
    let bytes = gguf_with("bert", Some("smollm"));
    let err = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap_err();
    assert_eq!(err, TokenizerError::UnsupportedModel("bert".into()));

    let bytes = gguf_with("gpt2", Some("falcon"));
    let err = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap_err();
    assert_eq!(
        err,
        TokenizerError::UnsupportedPreTokenizer("falcon".into())
    );

    let bytes = gguf_with("gpt2", None);
    let err = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap_err();
    assert_eq!(
        err,
        TokenizerError::UnsupportedPreTokenizer("default".into())
    );
}

/// SmolLM2-135M-Instruct's `tokenizer.chat_template`, as stored in the GGUF file.
const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn smollm2_template_renders_like_jinja() {
    let conversation = [ChatMessage::system("Be brief."), ChatMessage::user("Hi!")];
    // By hand: a system message first, so no default system prompt.
    assert_eq!(
        apply_chat_template(SMOLLM2_TEMPLATE, &conversation, true).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let conversation = [ChatMessage::user("Hi!"), ChatMessage::assistant("Hello.")];
    assert_eq!(
        apply_chat_template(SMOLLM2_TEMPLATE, &conversation, false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    );
}

//! A conversation through the file's chat template, as token ids: a template that writes
//! `bos_token` itself (Llama 3, Gemma) gives one BOS, not the template's plus the tokenizer's,
//! as `transformers` tokenizes it; a template that does not gets the tokenizer's BOS.

use engram::Engine;
use engram::backend;
use engram::harness::synthetic_vocab::{VocabCase, vocab_gguf_with};
use engram::runtime::format::MetaValue;
use engram::runtime::model::chat::ChatMessage;

fn chat_ids(template: &str) -> (Vec<u32>, u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    let extra = vec![(
        "tokenizer.chat_template".to_string(),
        MetaValue::Str(template.into()),
    )];
    std::fs::write(&path, vocab_gguf_with(VocabCase::Spm, extra)).unwrap();
    let engine = Engine::load(&path, &backend::cpu(), 1).unwrap();
    let bos = engine
        .tokenizer()
        .bos()
        .expect("the SPM vocabulary has a BOS");
    let messages = [
        ChatMessage::user("the capital"),
        ChatMessage::assistant("is"),
    ];
    (engine.chat_tokens(&messages).unwrap(), bos)
}

#[test]
fn a_template_that_writes_bos_gets_one_bos() {
    let (with_bos, bos) = chat_ids(
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}",
    );
    let (without, _) =
        chat_ids("{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}");
    assert_eq!(with_bos[0], bos);
    assert_ne!(with_bos[1], bos, "{with_bos:?}");
    assert_eq!(without[0], bos, "the tokenizer adds BOS (add_bos_token)");
    assert_ne!(without[1], bos);
    // Past the BOS, both render the same text.
    assert_eq!(with_bos[1..], without[1..]);
    assert_eq!(with_bos.iter().filter(|&&t| t == bos).count(), 1);
}

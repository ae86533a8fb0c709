//! Chat templates rendered by engram (minijinja) against Python's jinja2 set up the way
//! Hugging Face `transformers` sets it up (`scripts/chat_template_reference.py` wrote
//! `chat_templates/reference.json`). The templates in `chat_templates/` are written for this
//! test in the shapes of the popular families (ChatML with a default system turn, Llama 3's
//! dated headers and indented JSON, Gemma's strict turns, Phi-3's tags, Mistral's namespace
//! counter and dict items) and call the Python methods, loop variables and filters those
//! families' templates call.

use engram_runtime::model::chat::{ChatMessage, ChatTemplate};
use serde_json::Value;
use std::path::Path;

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_templates/reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn messages(conversation: &Value) -> Vec<ChatMessage> {
    conversation
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn templates_render_as_transformers_renders_them() {
    let reference = reference();
    let now = reference["now"].as_i64().unwrap();
    let (bos, eos) = (
        reference["specials"]["bos_token"].as_str().unwrap(),
        reference["specials"]["eos_token"].as_str().unwrap(),
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/chat_templates");
    let cases = reference["cases"].as_array().unwrap();
    // Every template file is covered, each over every conversation.
    let files = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "jinja")
        })
        .count();
    let conversations = reference["conversations"].as_object().unwrap().len();
    assert!(files >= 7, "{files} templates");
    assert_eq!(
        cases.len(),
        files * conversations * 2,
        "stale reference.json"
    );

    let (mut rendered, mut raised) = (0, 0);
    for case in cases {
        let file = case["template"].as_str().unwrap();
        let conversation = case["conversation"].as_str().unwrap();
        let add_generation_prompt = case["add_generation_prompt"].as_bool().unwrap();
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        let template = ChatTemplate::new(source)
            .with_special_tokens(bos, eos)
            .at_time(now);
        let got = template.render(
            &messages(&reference["conversations"][conversation]),
            add_generation_prompt,
        );
        let what =
            format!("{file} over {conversation} (generation prompt {add_generation_prompt})");
        match (&case["output"], &case["error"]) {
            (Value::String(want), _) => {
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(&got, want, "{what}");
                rendered += 1;
            }
            (_, Value::String(message)) => {
                let err = got.expect_err(&what).to_string();
                assert!(err.contains(message.as_str()), "{what}: {err}");
                raised += 1;
            }
            _ => panic!("{what}: a case with neither output nor error"),
        }
    }
    assert!(
        rendered >= 40 && raised >= 4,
        "{rendered} rendered, {raised} raised"
    );
}

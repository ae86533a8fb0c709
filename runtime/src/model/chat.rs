//! Chat prompts: rendering a model's Jinja chat template (`tokenizer.chat_template`) over a
//! conversation, with plain ChatML when the file has no template.
//!
//! Templates are rendered with [minijinja], configured like Hugging Face `transformers`
//! renders them, so the prompt matches what the model was fine-tuned on: `trim_blocks` and
//! `lstrip_blocks`; `bos_token` / `eos_token` in scope; the globals `raise_exception` and
//! `strftime_now`; Python's string and dict methods (`.strip()`, `.split()`, `.items()`, …,
//! from `minijinja-contrib`); and `tojson` writing what Python's `json.dumps` writes
//! (`", "` / `": "` separators, `indent`, no HTML escaping). `tests/chat_templates.rs` checks
//! the rendering against Python's jinja2 set up the way `transformers` sets it up.

use super::strftime;
use crate::format::{Gguf, GgufError};
use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value, context};
use serde::{Deserialize, Serialize};

/// The metadata key holding a model's chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// Plain ChatML, used when a file has no template: the same text llama.cpp's built-in
/// `chatml` template produces.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"` or `"assistant"` (templates may accept others).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> ChatMessage {
        ChatMessage::new("assistant", content)
    }
}

/// Why a chat prompt could not be rendered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The template does not parse, or failed while rendering (including its own
    /// `raise_exception`).
    #[error("chat template: {0:#}")]
    Template(#[from] minijinja::Error),
    /// `tokenizer.chat_template` exists but is not a string.
    #[error("chat template metadata: {0}")]
    Metadata(#[from] GgufError),
}

/// Renders Jinja `template` over `messages`; with `add_generation_prompt` the template appends
/// the header of the assistant's next turn. `bos_token` and `eos_token` render as empty
/// strings; use [`ChatTemplate::with_special_tokens`] to set them.
pub fn apply_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
) -> Result<String, ChatError> {
    render(template, messages, add_generation_prompt, "", "", None)
}

/// A model's chat template, or ChatML when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    source: String,
    is_fallback: bool,
    bos_token: String,
    eos_token: String,
    /// The time `strftime_now` formats (Unix seconds, UTC); `None`: the clock at render time.
    now: Option<i64>,
}

impl ChatTemplate {
    /// A template from its Jinja source.
    pub fn new(source: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            is_fallback: false,
            bos_token: String::new(),
            eos_token: String::new(),
            now: None,
        }
    }

    /// Plain ChatML ([`CHATML_TEMPLATE`]).
    pub fn chatml() -> ChatTemplate {
        ChatTemplate {
            is_fallback: true,
            ..ChatTemplate::new(CHATML_TEMPLATE)
        }
    }

    /// `source` when there is one, else ChatML.
    pub fn or_chatml(source: Option<&str>) -> ChatTemplate {
        source.map_or_else(ChatTemplate::chatml, ChatTemplate::new)
    }

    /// The template in a GGUF file's `tokenizer.chat_template`, or ChatML when the key is
    /// absent. A key of another type is an error.
    pub fn from_gguf(gguf: &Gguf) -> Result<ChatTemplate, ChatError> {
        let source = match gguf.get(CHAT_TEMPLATE_KEY) {
            Some(_) => Some(gguf.get_str(CHAT_TEMPLATE_KEY)?),
            None => None,
        };
        Ok(ChatTemplate::or_chatml(source))
    }

    /// Sets the strings `bos_token` and `eos_token` render as (the tokens' text, e.g.
    /// `"<|im_start|>"`).
    pub fn with_special_tokens(
        mut self,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> ChatTemplate {
        self.bos_token = bos_token.into();
        self.eos_token = eos_token.into();
        self
    }

    /// Makes `strftime_now` format `unix_seconds` (UTC) instead of the clock at render time,
    /// for reproducible prompts.
    pub fn at_time(mut self, unix_seconds: i64) -> ChatTemplate {
        self.now = Some(unix_seconds);
        self
    }

    /// The BOS text `bos_token` renders as (empty unless set).
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the ChatML fallback rather than the file's own template.
    pub fn is_fallback(&self) -> bool {
        self.is_fallback
    }

    /// Renders the conversation (see [`apply_chat_template`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        render(
            &self.source,
            messages,
            add_generation_prompt,
            &self.bos_token,
            &self.eos_token,
            self.now,
        )
    }
}

fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    now: Option<i64>,
) -> Result<String, ChatError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(python_method);
    env.add_function("raise_exception", |message: String| -> Result<Value, _> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
    });
    env.add_function("strftime_now", move |format: String| {
        let secs = now.unwrap_or_else(strftime::unix_now);
        strftime::strftime(&format, secs)
            .map_err(|m| minijinja::Error::new(ErrorKind::InvalidOperation, m))
    });
    env.add_filter("tojson", tojson);
    let ctx = context! {
        messages => Value::from_serialize(messages),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    Ok(env.render_str(template, ctx)?)
}

/// Python's methods on strings, dicts and lists (`minijinja-contrib`'s `pycompat`), except
/// `str.find` / `str.rfind`, which `pycompat` answers in UTF-8 bytes where Python answers in
/// characters.
fn python_method(
    state: &minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    match (value.as_str(), method) {
        (Some(text), "find" | "rfind") => {
            let (sub, start, end): (&str, Option<i64>, Option<i64>) =
                minijinja::value::from_args(args)?;
            Ok(Value::from(python_find(
                text,
                sub,
                start,
                end,
                method == "rfind",
            )))
        }
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}

/// `text.find(sub, start, end)` (or `rfind`) in characters, with Python's slice rules for the
/// bounds; -1 when absent.
fn python_find(text: &str, sub: &str, start: Option<i64>, end: Option<i64>, last: bool) -> i64 {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len() as i64;
    let clamp = |i: i64| if i < 0 { (i + n).max(0) } else { i.min(n) } as usize;
    let (lo, hi) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(n)));
    if lo > hi {
        return -1;
    }
    let byte = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
    let window = &text[byte(lo)..byte(hi)];
    let found = if last {
        window.rfind(sub)
    } else {
        window.find(sub)
    };
    found.map_or(-1, |b| (lo + window[..b].chars().count()) as i64)
}

/// `tojson` as `transformers` defines it: Python's `json.dumps(value, ensure_ascii=False,
/// indent=indent)`, maps in their insertion order. (minijinja's and jinja2's own `tojson`
/// escape `<`, `>`, `&` and `'` for HTML and drop the spaces after `,` and `:`, which would put
/// different tokens in front of the model than it was trained on.)
fn tojson(value: Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, minijinja::Error> {
    let indent = match kwargs.get::<Option<usize>>("indent")? {
        Some(i) => Some(i),
        None => indent,
    };
    if kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            "tojson: sort_keys=true is not supported",
        ));
    }
    // Accepted for compatibility; the output is never ASCII-escaped, as in `transformers`.
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            value.serialize(&mut serde_json::Serializer::with_formatter(
                &mut out,
                serde_json::ser::PrettyFormatter::with_indent(&pad),
            ))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonCompact,
        )),
    };
    written.map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let text = String::from_utf8(out).expect("serde_json writes UTF-8");
    Ok(Value::from_safe_string(text))
}

/// `json.dumps`'s default separators without `indent`: `", "` and `": "`.
struct PythonCompact;

/// `", "` before every array item and object entry but the first.
fn item_separator<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PythonCompact {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        item_separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_turns_and_generation_prompt() {
        let messages = [ChatMessage::user("hi"), ChatMessage::assistant("hello")];
        let text = ChatTemplate::or_chatml(None)
            .render(&messages, true)
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let err =
            apply_chat_template("{{ raise_exception('no system role') }}", &[], false).unwrap_err();
        assert!(err.to_string().contains("no system role"), "{err}");
    }

    #[test]
    fn syntax_error_is_an_error() {
        assert!(apply_chat_template("{% for %}", &[], false).is_err());
    }

    #[test]
    fn find_counts_characters_as_python_does() {
        // python3 -c "s='Ünïcode ‘q’ o'; print(s.find('o'), s.rfind('o'), s.find('o', 5),
        //             s.find('x'), s.find('o', -3), s.rfind('c', 0, 3), s.find(''))"
        let s = "Ünïcode ‘q’ o";
        let f = |sub, a, b, last| python_find(s, sub, a, b, last);
        assert_eq!(
            [
                f("o", None, None, false),
                f("o", None, None, true),
                f("o", Some(5), None, false),
                f("x", None, None, false),
                f("o", Some(-3), None, false),
                f("c", Some(0), Some(3), true),
                f("", None, None, false),
            ],
            [4, 12, 12, -1, 12, -1, 0]
        );
    }

    #[test]
    fn special_tokens_are_in_scope() {
        let t =
            ChatTemplate::new("{{ bos_token }}x{{ eos_token }}").with_special_tokens("<s>", "</s>");
        assert_eq!(t.render(&[], false).unwrap(), "<s>x</s>");
    }
}

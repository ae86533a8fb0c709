//! Chat prompts: rendering a model's Jinja chat template (`tokenizer.chat_template`) over a
//! conversation, with plain ChatML when the file has no template.
//!
//! Templates are rendered with [minijinja], configured like Hugging Face `transformers`
//! renders them (`trim_blocks`, `lstrip_blocks`, a `raise_exception` function, `bos_token` /
//! `eos_token` in scope), so the prompt matches what the model was fine-tuned on.

use crate::format::{Gguf, GgufError};
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
    render(template, messages, add_generation_prompt, "", "")
}

/// A model's chat template, or ChatML when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    source: String,
    is_fallback: bool,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from its Jinja source.
    pub fn new(source: impl Into<String>) -> ChatTemplate {
        ChatTemplate {
            source: source.into(),
            is_fallback: false,
            bos_token: String::new(),
            eos_token: String::new(),
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
        )
    }
}

fn render(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, ChatError> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function("raise_exception", |message: String| -> Result<Value, _> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
    });
    let ctx = context! {
        messages => Value::from_serialize(messages),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    Ok(env.render_str(template, ctx)?)
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
    fn special_tokens_are_in_scope() {
        let t =
            ChatTemplate::new("{{ bos_token }}x{{ eos_token }}").with_special_tokens("<s>", "</s>");
        assert_eq!(t.render(&[], false).unwrap(), "<s>x</s>");
    }
}

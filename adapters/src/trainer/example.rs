//! A training example as `engram train` reads it from JSONL: `{"prompt", "completion"}`, typed
//! by serde, checked (non-empty, bounded) before anything is tokenized. Serde only: the fuzz
//! crate compiles this file directly.

/// One training example: the model reads `prompt` and learns to continue with `completion`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// Context the model is given (not trained on).
    pub prompt: String,
    /// Text the model learns to produce after it.
    pub completion: String,
}

/// Longest prompt or completion of one example, in bytes (sequences are cut to the configured
/// length anyway; more is a mistake, not data).
pub const MAX_EXAMPLE_BYTES: usize = 1 << 20;

impl Example {
    /// Checks an example read from a file: non-empty prompt and completion, each at most
    /// [`MAX_EXAMPLE_BYTES`]. The error names the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, text) in [("prompt", &self.prompt), ("completion", &self.completion)] {
            if text.is_empty() {
                return Err(format!("\"{name}\" is empty"));
            }
            if text.len() > MAX_EXAMPLE_BYTES {
                return Err(format!(
                    "\"{name}\" has {} bytes, at most {MAX_EXAMPLE_BYTES}",
                    text.len()
                ));
            }
        }
        Ok(())
    }

    /// Checks that some of the completion fits after the prompt in `seq_len` tokens
    /// (`prompt_tokens` of them are the prompt's): else the example would train on nothing.
    pub fn check_fits(prompt_tokens: usize, seq_len: usize) -> Result<(), String> {
        match prompt_tokens < seq_len {
            true => Ok(()),
            false => Err(format!(
                "the prompt takes {prompt_tokens} tokens, leaving none of the completion in the \
                 context of {seq_len} (--seq-len, at most the model's context)"
            )),
        }
    }

    /// A prompt/completion pair.
    pub fn new(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            completion: completion.into(),
        }
    }
}

/// Parses one JSONL line of examples: `None` for a blank line, else the checked example; the
/// error says what is wrong (the caller adds the file and line).
pub fn parse_example_line(line: &str) -> Result<Option<Example>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let ex: Example = serde_json::from_str(line).map_err(|e| e.to_string())?;
    ex.check()?;
    Ok(Some(ex))
}

//! What a device app feeds the runtime: prompt/completion pairs or plain text, optionally
//! tagged with a task, one JSON object per line in files. Every line is checked on load (fields
//! and their types, non-empty text, a bounded size) and errors name the line.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest text of one example field, in bytes (tokenizing more is wasted: sequences are cut
/// at the configured length).
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// One thing to learn from: `completion` after `prompt` (only the completion is trained on),
/// or plain `text` (every token after the first is trained on). `task` names the part of the
/// stream it belongs to: a change of task is a task boundary for LwF, EWC and SI, and
/// class-balanced replay balances over tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Context the model is given (not trained on); absent for plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// What the model learns to produce after the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
    /// Plain text, learned whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The task the example belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl Observation {
    /// A prompt/completion pair.
    pub fn pair(prompt: impl Into<String>, completion: impl Into<String>) -> Self {
        Self {
            prompt: Some(prompt.into()),
            completion: Some(completion.into()),
            text: None,
            task: None,
        }
    }

    /// Plain text.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            prompt: None,
            completion: None,
            text: Some(text.into()),
            task: None,
        }
    }

    /// The same example tagged with `task`.
    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Checks the shape: exactly one of `{prompt, completion}` or `{text}`, non-empty, at most
    /// [`MAX_TEXT_BYTES`] each.
    pub fn check(&self) -> Result<(), String> {
        let field = |name: &str, v: &Option<String>| -> Result<(), String> {
            match v {
                Some(s) if s.is_empty() => Err(format!("\"{name}\" is empty")),
                Some(s) if s.len() > MAX_TEXT_BYTES => Err(format!(
                    "\"{name}\" has {} bytes, at most {MAX_TEXT_BYTES}",
                    s.len()
                )),
                _ => Ok(()),
            }
        };
        field("prompt", &self.prompt)?;
        field("completion", &self.completion)?;
        field("text", &self.text)?;
        if let Some(t) = &self.task
            && (t.is_empty() || t.len() > 256)
        {
            return Err("\"task\" must have 1..=256 bytes".into());
        }
        match (&self.prompt, &self.completion, &self.text) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => Ok(()),
            (None, Some(_), None) => Err("\"completion\" without \"prompt\"".into()),
            (Some(_), None, None) => Err("\"prompt\" without \"completion\"".into()),
            _ => Err("give either \"prompt\" and \"completion\", or \"text\"".into()),
        }
    }
}

/// A line of an examples file that is not an example.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExamplesError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not a valid example.
    #[error("{}:{line}: {what}", path.display())]
    Line {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The file holds no example.
    #[error("{}: no examples", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Parses one JSONL line (`path` and `line` name it in errors). Blank lines give `None`.
pub fn parse_line(
    text: &str,
    path: &Path,
    line: usize,
) -> Result<Option<Observation>, ExamplesError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let err = |what: String| ExamplesError::Line {
        path: path.to_path_buf(),
        line,
        what,
    };
    let obs: Observation = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    obs.check().map_err(err)?;
    Ok(Some(obs))
}

/// Reads a JSONL file of examples, checking every line.
pub fn load_jsonl(path: &Path) -> Result<Vec<Observation>, ExamplesError> {
    Ok(load_jsonl_numbered(path)?
        .into_iter()
        .map(|(_, x)| x)
        .collect())
}

/// [`load_jsonl`] with each example's 1-based line number (for checks against the model).
pub fn load_jsonl_numbered(path: &Path) -> Result<Vec<(usize, Observation)>, ExamplesError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExamplesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        out.extend(parse_line(l, path, i + 1)?.map(|x| (i + 1, x)));
    }
    if out.is_empty() {
        return Err(ExamplesError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_and_named() {
        let p = Path::new("x.jsonl");
        let ok = parse_line(r#"{"prompt":"a","completion":"b","task":"t"}"#, p, 1).unwrap();
        assert_eq!(ok, Some(Observation::pair("a", "b").with_task("t")));
        assert_eq!(parse_line("  ", p, 2).unwrap(), None);
        for (bad, says) in [
            (r#"{"prompt":"a"}"#, "without"),
            (r#"{"text":""}"#, "empty"),
            (r#"{"text":"a","prompt":"b","completion":"c"}"#, "either"),
            (r#"{"text":5}"#, "invalid type"),
            (r#"{"txt":"a"}"#, "unknown field"),
            ("not json", "expected"),
        ] {
            let e = parse_line(bad, p, 7).unwrap_err().to_string();
            assert!(e.starts_with("x.jsonl:7: "), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}

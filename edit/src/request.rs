//! Edit requests in EasyEdit's JSONL shape, parsed with typed, line-numbered errors.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One fact to write into the model: "`prompt` → `target_new`" (instead of `ground_truth`).
///
/// Field names follow EasyEdit, so its request files load unchanged. `prompt` contains
/// `subject` verbatim; the edit is keyed on the subject's last token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EditRequest {
    /// Stable identifier (`capital:FR`); optional in the file, defaults to the line number.
    #[serde(default)]
    pub case_id: String,
    /// The entity the fact is about, as written in `prompt` ("France").
    pub subject: String,
    /// The prompt whose continuation is edited ("The capital of France is").
    pub prompt: String,
    /// The new answer ("Rome").
    pub target_new: String,
    /// The answer before the edit ("Paris"); empty when unknown.
    #[serde(default)]
    pub ground_truth: String,
    /// Paraphrases of `prompt` that should change too (generalization).
    #[serde(default)]
    pub rephrase_prompts: Vec<String>,
    /// Unrelated prompts whose answers must not change (locality).
    #[serde(default)]
    pub locality_prompts: Vec<String>,
    /// The expected answers of `locality_prompts` (reported, not used for scoring).
    #[serde(default)]
    pub locality_ground_truth: Vec<String>,
    /// Prompts whose answer the edit implies (portability).
    #[serde(default)]
    pub portability_prompts: Vec<String>,
    /// The implied answers of `portability_prompts`.
    #[serde(default)]
    pub portability_ground_truth: Vec<String>,
    /// Other phrasings of the same fact ("{subject}'s capital is"), each containing `subject`:
    /// the gated memory trains its value and relation keys on them besides `prompt`. Never
    /// scored (the paraphrases of `rephrase_prompts` stay held out). Not an EasyEdit field;
    /// the editor adds generic rewrites of `prompt` itself (`engram_edit::phrasing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phrasings: Vec<String>,
}

/// A request file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not a JSON object of the expected shape.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What serde_json found.
        source: serde_json::Error,
    },
    /// A line parsed but cannot be edited.
    #[error("line {line}: {what}")]
    Invalid {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// The file holds no request (an edit run of nothing would report perfect scores).
    #[error("no requests (one JSON object per line)")]
    Empty,
}

/// Longest prompt (or paraphrase, locality or portability prompt) of a request, in bytes.
pub const MAX_PROMPT_BYTES: usize = 16 << 10;
/// Longest `target_new` / `ground_truth`, in bytes: an answer, not a document.
pub const MAX_TARGET_BYTES: usize = 1 << 10;
/// Most probe prompts of one kind in a request.
pub const MAX_PROBES: usize = 256;
/// Most `phrasings` of a request (each is trained on in every step of its edit).
pub const MAX_PHRASINGS: usize = 16;

impl EditRequest {
    /// Checks the request can be edited: subject inside the prompt, non-empty target.
    pub fn validate(&self) -> Result<(), String> {
        if self.subject.trim().is_empty() {
            return Err("empty `subject`".into());
        }
        if !self.prompt.contains(&self.subject) {
            return Err(format!(
                "`prompt` {:?} does not contain `subject` {:?}",
                self.prompt, self.subject
            ));
        }
        if self.target_new.trim().is_empty() {
            return Err("empty `target_new`".into());
        }
        if self.phrasings.len() > MAX_PHRASINGS {
            return Err(format!(
                "`phrasings` has {} prompts, at most {MAX_PHRASINGS}",
                self.phrasings.len()
            ));
        }
        if let Some(p) = self.phrasings.iter().find(|p| !p.contains(&self.subject)) {
            return Err(format!(
                "`phrasings` entry {p:?} does not contain `subject` {:?}",
                self.subject
            ));
        }
        if self.locality_ground_truth.len() > self.locality_prompts.len() {
            return Err("more `locality_ground_truth` than `locality_prompts`".into());
        }
        let bounded = |field: &str, text: &str, max: usize| -> Result<(), String> {
            match text.len() > max {
                true => Err(format!("`{field}` has {} bytes, at most {max}", text.len())),
                false => Ok(()),
            }
        };
        bounded("prompt", &self.prompt, MAX_PROMPT_BYTES)?;
        bounded("target_new", &self.target_new, MAX_TARGET_BYTES)?;
        bounded("ground_truth", &self.ground_truth, MAX_TARGET_BYTES)?;
        for (field, prompts) in self.probe_lists() {
            if prompts.len() > MAX_PROBES {
                return Err(format!(
                    "`{field}` has {} prompts, at most {MAX_PROBES}",
                    prompts.len()
                ));
            }
            for (i, p) in prompts.iter().enumerate() {
                if p.trim().is_empty() {
                    return Err(format!("`{field}`[{i}] is empty"));
                }
                bounded(field, p, MAX_PROMPT_BYTES)?;
            }
        }
        for (field, answers) in [
            ("locality_ground_truth", &self.locality_ground_truth),
            ("portability_ground_truth", &self.portability_ground_truth),
        ] {
            for a in answers {
                bounded(field, a, MAX_TARGET_BYTES)?;
            }
        }
        Ok(())
    }

    /// The probe prompt lists (and the training phrasings) with their field names.
    fn probe_lists(&self) -> [(&'static str, &Vec<String>); 4] {
        [
            ("rephrase_prompts", &self.rephrase_prompts),
            ("locality_prompts", &self.locality_prompts),
            ("portability_prompts", &self.portability_prompts),
            ("phrasings", &self.phrasings),
        ]
    }

    /// Checks every text the editor and the metrics run through the model fits a context of
    /// `n_ctx` positions: the prompt with the target, every probe prompt with the longest
    /// answer it is scored on. `n_tokens` counts the tokens of a text (the model's tokenizer).
    pub fn check_fits(&self, n_tokens: impl Fn(&str) -> usize, n_ctx: usize) -> Result<(), String> {
        let answer = n_tokens(&self.target_new).max(n_tokens(&self.ground_truth));
        let fits = |field: &str, prompt: &str| -> Result<(), String> {
            let n = n_tokens(prompt) + answer;
            match n < n_ctx {
                true => Ok(()),
                false => Err(format!(
                    "`{field}` with its target takes {n} tokens; the model's context has {n_ctx}"
                )),
            }
        };
        fits("prompt", &self.prompt)?;
        for (field, prompts) in self.probe_lists() {
            for p in prompts {
                fits(field, p)?;
            }
        }
        Ok(())
    }
}

/// Checks [`EditRequest::check_fits`] for every request of a file `parse_jsonl_numbered` read,
/// naming the line of the first that does not fit.
pub fn check_all_fit(
    requests: &[(usize, EditRequest)],
    n_tokens: impl Fn(&str) -> usize,
    n_ctx: usize,
) -> Result<(), RequestError> {
    for (line, r) in requests {
        r.check_fits(&n_tokens, n_ctx)
            .map_err(|what| RequestError::Invalid { line: *line, what })?;
    }
    Ok(())
}

/// Parses JSONL text: one request per non-blank line.
pub fn parse_jsonl(text: &str) -> Result<Vec<EditRequest>, RequestError> {
    Ok(parse_jsonl_numbered(text)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// [`parse_jsonl`] with each request's 1-based line number; at least one request.
pub fn parse_jsonl_numbered(text: &str) -> Result<Vec<(usize, EditRequest)>, RequestError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut req: EditRequest =
            serde_json::from_str(line).map_err(|source| RequestError::Json {
                line: line_no,
                source,
            })?;
        req.validate().map_err(|what| RequestError::Invalid {
            line: line_no,
            what,
        })?;
        if req.case_id.is_empty() {
            req.case_id = format!("line:{line_no}");
        }
        out.push((line_no, req));
    }
    if out.is_empty() {
        return Err(RequestError::Empty);
    }
    Ok(out)
}

/// Reads and parses a JSONL request file.
pub fn load_jsonl(path: &Path) -> Result<Vec<EditRequest>, RequestError> {
    Ok(load_jsonl_numbered(path)?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// [`load_jsonl`] with each request's line number (for [`check_all_fit`]).
pub fn load_jsonl_numbered(path: &Path) -> Result<Vec<(usize, EditRequest)>, RequestError> {
    let text = std::fs::read_to_string(path).map_err(|source| RequestError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_jsonl_numbered(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_easyedit_lines_and_numbers_errors() {
        let good = r#"{"subject":"France","prompt":"The capital of France is","target_new":"Rome","ground_truth":"Paris","rephrase_prompts":["France's capital city is"],"locality_prompts":["The capital of Germany is"],"locality_ground_truth":["Berlin"]}"#;
        let reqs = parse_jsonl(&format!("{good}\n\n{good}\n")).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[1].case_id, "line:3");
        assert_eq!(reqs[0].locality_ground_truth, ["Berlin"]);

        let err = parse_jsonl(&format!("{good}\n{{\"subject\": 3}}\n")).unwrap_err();
        assert!(matches!(err, RequestError::Json { line: 2, .. }), "{err}");
        let bad_subject = good.replace("\"subject\":\"France\"", "\"subject\":\"Spain\"");
        let err = parse_jsonl(&bad_subject).unwrap_err();
        assert!(
            matches!(err, RequestError::Invalid { line: 1, .. }),
            "{err}"
        );
        let phrased = good.replace("}", r#","phrasings":["France's capital is"]}"#);
        assert_eq!(
            parse_jsonl(&phrased).unwrap()[0].phrasings,
            ["France's capital is"]
        );
        let stray = good.replace("}", r#","phrasings":["Spain's capital is"]}"#);
        let err = parse_jsonl(&stray).unwrap_err();
        assert!(err.to_string().contains("`phrasings`"), "{err}");
    }
}

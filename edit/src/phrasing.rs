//! Phrasings a fact is trained under: the prompt, the request's own `phrasings`, and generic
//! syntactic rewrites of the prompt.
//!
//! A value trained on one phrasing, keyed on that phrasing's last token, does not carry to
//! "{subject}'s capital city is" or "In {subject}, most people speak" (measured: 9 of 100
//! such paraphrases edited). The rewrites below use only the prompt's syntax, never a list of
//! relations or the evaluation's paraphrase templates: "The {noun} of {S}{rest}" becomes
//! "{S}'s {noun}{rest}" and "In {S}, the {noun}{rest}"; "{S} ... the {noun} of" becomes "The
//! {noun} of {S} is" and "{S}'s {noun} is"; a subject opening an "is" sentence moves behind
//! "As for {S}, it ...". A request may carry phrasings of its own (`phrasings`), which the
//! editor uses the same way.

use super::request::EditRequest;

/// Generic rewrites of `prompt` (which contains `subject`), each containing `subject`, none
/// equal to `prompt`, no duplicates.
pub fn rewrites(prompt: &str, subject: &str) -> Vec<String> {
    let Some(at) = prompt.find(subject) else {
        return Vec::new();
    };
    let (before, after) = (&prompt[..at], &prompt[at + subject.len()..]);
    let mut out: Vec<String> = Vec::new();
    // "The {noun} of {S}{rest}".
    if let Some(noun) = before
        .strip_prefix("The ")
        .and_then(|b| b.strip_suffix(" of "))
        .filter(|n| !n.trim().is_empty())
    {
        out.push(format!("{subject}'s {noun}{after}"));
        out.push(format!("In {subject}, the {noun}{after}"));
    }
    // "{S} ... the {noun} of": the noun's own "of" phrase.
    if before.is_empty()
        && let Some(head) = after.strip_suffix(" of")
        && let Some(i) = head.rfind(" the ")
    {
        let noun = &head[i + 5..];
        if !noun.is_empty() && !noun.contains(' ') {
            out.push(format!("The {noun} of {subject} is"));
            out.push(format!("{subject}'s {noun} is"));
        }
    }
    // "{S} is ...": the subject after a few words instead of opening the text.
    if before.is_empty() && after.starts_with(" is ") {
        out.push(format!("As for {subject}, it{after}"));
    }
    out.retain(|p| p != prompt);
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// Generic phrasings of *other* relations a subject may have, `{S}` standing for the subject:
/// the competitors of an entry's relation gate ([`contrast_prompts`]). Written once as a plain
/// list of things one says about a place or an organisation; none is a relation of the
/// evaluation's fact generator (`scripts/edit_facts.mjs`), whose same-subject probes are the
/// prompts of its other relations (a test checks both).
pub const CONTRAST: &[&str] = &[
    "The population of {S} is",
    "The president of {S} is",
    "The flag of {S} is",
    "The national anthem of {S} is",
    "The area of {S} is",
    "The largest city of {S} is",
    "The climate of {S} is",
    "{S} is famous for its",
    "{S} was founded in",
    "{S} borders",
    "The leader of {S} is",
    "The economy of {S} is based on",
    "The national sport of {S} is",
    "The main religion of {S} is",
    "The history of {S} began in",
    "In {S}, the weather is",
    "{S}'s population is",
    "{S}'s flag has the colours",
];

/// [`CONTRAST`] with `req`'s subject put in, less any of the request's own training prompts.
pub fn contrast_prompts(req: &EditRequest, trained: &[String]) -> Vec<String> {
    CONTRAST
        .iter()
        .map(|c| c.replace("{S}", &req.subject))
        .filter(|c| !trained.contains(c))
        .collect()
}

/// The prompts a request's value is trained on: its prompt first, then (when asked for) its
/// own `phrasings`, then (when asked for) [`rewrites`] of the prompt; no duplicates.
pub fn training_prompts(req: &EditRequest, request: bool, generic: bool) -> Vec<String> {
    let mut out = vec![req.prompt.clone()];
    if request {
        out.extend(req.phrasings.iter().cloned());
    }
    if generic {
        out.extend(rewrites(&req.prompt, &req.subject));
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_follow_the_prompts_syntax() {
        assert_eq!(
            rewrites("The capital of France is", "France"),
            ["France's capital is", "In France, the capital is"]
        );
        assert_eq!(
            rewrites("The official currency of Czechia is the", "Czechia"),
            [
                "Czechia's official currency is the",
                "In Czechia, the official currency is the"
            ]
        );
        assert_eq!(
            rewrites("Yemen is located in the continent of", "Yemen"),
            [
                "The continent of Yemen is",
                "Yemen's continent is",
                "As for Yemen, it is located in the continent of"
            ]
        );
        assert!(rewrites("Paris is nice", "London").is_empty());
        assert!(rewrites("I like France", "France").is_empty());
    }

    /// The templates of one kind (`prompt`, `paraphrases`, `phrasings`) in the fact
    /// generator, `${s}` replaced by `subject`, per relation in file order.
    fn templates(script: &str, kind: &str, subject: &str) -> Vec<Vec<String>> {
        script
            .lines()
            .map(str::trim)
            .filter_map(|l| l.strip_prefix(&format!("{kind}: (s) => ")))
            .map(|l| {
                l.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(|t| t.replace("${s}", subject))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn held_out_paraphrases_are_never_trained_on() {
        let script = include_str!("../../scripts/edit_facts.mjs");
        let subject = "Ruritania";
        let prompts = templates(script, "prompt", subject);
        let held_out = templates(script, "paraphrases", subject);
        let phrasings = templates(script, "phrasings", subject);
        assert!(prompts.len() >= 4, "one prompt per relation: {prompts:?}");
        assert_eq!(held_out.len(), prompts.len());
        assert_eq!(phrasings.len(), prompts.len());
        let all_held_out: Vec<&String> = held_out.iter().flatten().collect();
        for (prompt, own) in prompts.iter().zip(&phrasings) {
            let req = EditRequest {
                case_id: String::new(),
                subject: subject.into(),
                prompt: prompt[0].clone(),
                target_new: "x".into(),
                ground_truth: String::new(),
                rephrase_prompts: Vec::new(),
                locality_prompts: Vec::new(),
                locality_ground_truth: Vec::new(),
                portability_prompts: Vec::new(),
                portability_ground_truth: Vec::new(),
                phrasings: own.clone(),
            };
            let trained = training_prompts(&req, true, true);
            assert!(trained.len() > own.len(), "{trained:?}");
            for t in &trained {
                assert!(!all_held_out.contains(&t), "{t:?} is a held-out paraphrase");
            }
            // The contrast phrasings are no template of the generator at all: not its held-out
            // paraphrases, not its prompts (the same-subject probes), not its phrasings.
            let contrast = contrast_prompts(&req, &trained);
            assert_eq!(contrast.len(), CONTRAST.len());
            for c in &contrast {
                let everywhere = prompts.iter().chain(&held_out).chain(&phrasings).flatten();
                for t in everywhere {
                    assert_ne!(
                        c, t,
                        "a contrast phrasing is one of the generator's templates"
                    );
                }
            }
        }
    }
}

//! EasyEdit's metrics over the engram graph: efficacy (the new answer's first token is top-1,
//! and its probability margin over the old one), generalization (paraphrases), locality
//! (unrelated prompts keep their top-1), portability (implied facts) and fluency (n-gram
//! entropy of greedy continuations).

use std::collections::{BTreeMap, HashMap};

use burn::tensor::activation;
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits};
use engram_runtime::model::tokenizer::Tokenizer;
use serde::Serialize;

use super::probe::target_ids;
use super::request::EditRequest;

/// Top-1 token and the probabilities of chosen tokens at the end of one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The argmax token.
    pub top1: u32,
    /// Probability of each token asked for, in order.
    pub probs: Vec<f32>,
}

/// Runs `prompts` (grouped by token length, so no padding reaches the last position) and
/// returns each one's top-1 token and the probabilities of `watch[i]`'s tokens.
pub fn answers(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[String],
    watch: &[Vec<u32>],
    adapter: Option<&dyn LinearAdapter>,
) -> Vec<Answer> {
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p, false)).collect();
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, t) in ids.iter().enumerate() {
        groups.entry(t.len()).or_default().push(i);
    }
    let mut out = vec![
        Answer {
            top1: 0,
            probs: Vec::new()
        };
        prompts.len()
    ];
    for members in groups.values() {
        for chunk in members.chunks(16) {
            let flat: Vec<u32> = chunk.iter().flat_map(|&i| ids[i].iter().copied()).collect();
            let logits = model
                .forward(&flat, chunk.len(), None, adapter, Logits::Last)
                .expect("prompts fit the context");
            let v = logits.dims()[2];
            let p = activation::softmax(logits.reshape([chunk.len(), v]), 1)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 probabilities");
            for (row, &i) in chunk.iter().enumerate() {
                let probs = &p[row * v..(row + 1) * v];
                let top1 = engram_runtime::generate::argmax(probs);
                let w = watch
                    .get(i)
                    .map(|w| w.iter().map(|&t| probs[t as usize]).collect());
                out[i] = Answer {
                    top1,
                    probs: w.unwrap_or_default(),
                };
            }
        }
    }
    out
}

/// For each request, whether the unedited model already answers `ground_truth` (its first
/// token is top-1 after `prompt`): known facts are the ones worth editing and the ones to
/// watch for locality.
pub fn known(model: &Llama, tok: &Tokenizer, reqs: &[EditRequest]) -> Vec<bool> {
    let prompts: Vec<String> = reqs.iter().map(|r| r.prompt.clone()).collect();
    let truth: Vec<Vec<u32>> = reqs
        .iter()
        .map(|r| {
            target_ids(tok, &r.ground_truth)
                .into_iter()
                .take(1)
                .collect()
        })
        .collect();
    answers(model, tok, &prompts, &truth, None)
        .iter()
        .zip(&truth)
        .map(|(a, t)| t.first() == Some(&a.top1))
        .collect()
}

/// The prompts of a set of requests, flattened with their roles.
#[derive(Clone, Debug, Default)]
pub struct Probes {
    /// Prompt texts.
    pub prompts: Vec<String>,
    /// `(request, role)` of each prompt.
    pub roles: Vec<(usize, Role)>,
    /// Token ids watched per prompt: `[new, old]` first tokens (or the implied answer's).
    pub watch: Vec<Vec<u32>>,
}

/// What a probe prompt measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The edited prompt.
    Efficacy,
    /// A paraphrase.
    Generalization,
    /// An unrelated prompt.
    Locality,
    /// An implied fact.
    Portability,
}

impl Probes {
    /// Every prompt of `reqs`, except locality prompts that another request of the set edits
    /// (its prompt or a paraphrase): in a sequence of same-relation edits, one fact's
    /// neighbour is often another fact's edit, and its answer is meant to change.
    pub fn of(tok: &Tokenizer, reqs: &[EditRequest]) -> Self {
        let first = |s: &str| target_ids(tok, s).first().copied().unwrap_or(0);
        let edited: std::collections::HashSet<&str> = reqs
            .iter()
            .flat_map(|r| std::iter::once(&r.prompt).chain(&r.rephrase_prompts))
            .map(String::as_str)
            .collect();
        let mut p = Probes::default();
        for (i, r) in reqs.iter().enumerate() {
            let pair = vec![first(&r.target_new), first(&r.ground_truth)];
            let mut add = |text: &str, role, watch: Vec<u32>| {
                p.prompts.push(text.to_string());
                p.roles.push((i, role));
                p.watch.push(watch);
            };
            add(&r.prompt, Role::Efficacy, pair.clone());
            for q in &r.rephrase_prompts {
                add(q, Role::Generalization, pair.clone());
            }
            for q in r
                .locality_prompts
                .iter()
                .filter(|q| !edited.contains(q.as_str()))
            {
                add(q, Role::Locality, Vec::new());
            }
            for (q, a) in r
                .portability_prompts
                .iter()
                .zip(&r.portability_ground_truth)
            {
                add(q, Role::Portability, vec![first(a)]);
            }
        }
        p
    }
}

/// Scores after editing, against the answers before.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scores {
    /// Edited prompts whose top-1 is the new answer's first token.
    pub efficacy: f64,
    /// Mean of `p(new) − p(old)` on the edited prompts.
    pub efficacy_margin: f64,
    /// Paraphrases whose top-1 is the new answer's first token.
    pub generalization: f64,
    /// Locality prompts whose top-1 did not change.
    pub locality: f64,
    /// Implied-fact prompts whose top-1 is the implied answer's first token (`None`: none).
    pub portability: Option<f64>,
    /// Per request: its own efficacy, generalization and locality.
    pub per_request: Vec<RequestScores>,
}

/// One request's share of [`Scores`] (rates over its own probes; `None` where it has none).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RequestScores {
    /// Its edited prompt's top-1 is the new answer.
    pub efficacy: bool,
    /// `p(new) − p(old)` on its edited prompt.
    pub margin: f64,
    /// Share of its paraphrases answered with the new answer.
    pub generalization: Option<f64>,
    /// Share of its locality prompts whose top-1 did not change.
    pub locality: Option<f64>,
}

/// Scores `after` against `before` (both from [`answers`] on the same [`Probes`]).
pub fn score(probes: &Probes, before: &[Answer], after: &[Answer], n_reqs: usize) -> Scores {
    let mut hits: HashMap<Role, (usize, usize)> = HashMap::new();
    let mut per_role: HashMap<(usize, Role), (usize, usize)> = HashMap::new();
    let mut efficacy = vec![(false, 0.0); n_reqs];
    for (k, &(req, role)) in probes.roles.iter().enumerate() {
        let (a, b, w) = (&after[k], &before[k], &probes.watch[k]);
        let ok = match role {
            Role::Efficacy | Role::Generalization | Role::Portability => a.top1 == w[0],
            Role::Locality => a.top1 == b.top1,
        };
        if role == Role::Efficacy {
            efficacy[req] = (ok, (a.probs[0] - a.probs[1]) as f64);
        }
        for e in [
            hits.entry(role).or_default(),
            per_role.entry((req, role)).or_default(),
        ] {
            e.0 += ok as usize;
            e.1 += 1;
        }
    }
    let rate = |r: Role| hits.get(&r).map(|&(h, n)| h as f64 / n.max(1) as f64);
    let own = |q: usize, r: Role| {
        per_role
            .get(&(q, r))
            .map(|&(h, n)| h as f64 / n.max(1) as f64)
    };
    let per_request = (0..n_reqs)
        .map(|q| RequestScores {
            efficacy: efficacy[q].0,
            margin: efficacy[q].1,
            generalization: own(q, Role::Generalization),
            locality: own(q, Role::Locality),
        })
        .collect();
    Scores {
        efficacy: rate(Role::Efficacy).unwrap_or(0.0),
        efficacy_margin: efficacy.iter().map(|e| e.1).sum::<f64>() / n_reqs.max(1) as f64,
        generalization: rate(Role::Generalization).unwrap_or(0.0),
        locality: rate(Role::Locality).unwrap_or(1.0),
        portability: rate(Role::Portability),
        per_request,
    }
}

/// Greedy continuation of `prompt` by `n` tokens with `adapter` (KV-cached).
pub fn greedy(
    model: &Llama,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    adapter: Option<&dyn LinearAdapter>,
) -> Vec<u32> {
    let mut ids = tok.encode(prompt, false);
    let mut cache = model.new_cache(1, ids.len() + n);
    let mut input = ids.clone();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let logits = model
            .forward(&input, 1, Some(&mut cache), adapter, Logits::Last)
            .expect("cache sized for the continuation");
        let v = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
        let next = engram_runtime::generate::argmax(&v);
        out.push(next);
        ids.push(next);
        input = vec![next];
    }
    out
}

/// ROME's fluency: `2/3 · H₂ + 4/3 · H₃` (averaged weights), the entropies of the 2- and
/// 3-gram distributions of `tokens`. Repetitive text scores low.
pub fn ngram_entropy(tokens: &[u32]) -> f64 {
    let h = |n: usize| {
        let mut counts: HashMap<&[u32], usize> = HashMap::new();
        for w in tokens.windows(n) {
            *counts.entry(w).or_default() += 1;
        }
        let total = counts.values().sum::<usize>().max(1) as f64;
        -counts
            .values()
            .map(|&c| {
                let p = c as f64 / total;
                p * p.log2()
            })
            .sum::<f64>()
    };
    (2.0 / 3.0 * h(2) + 4.0 / 3.0 * h(3)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_entropy_is_low_for_repetition() {
        let rep: Vec<u32> = std::iter::repeat_n([1, 2], 20).flatten().collect();
        let varied: Vec<u32> = (0..40).collect();
        assert!(ngram_entropy(&rep) < 1.5);
        assert!(ngram_entropy(&varied) > 5.0);
    }
}

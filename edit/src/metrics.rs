//! EasyEdit's metrics over the engram graph: efficacy (the new answer's first token is top-1,
//! and its probability margin over the old one), generalization (paraphrases), locality
//! (unrelated prompts keep their top-1), portability (implied facts) and fluency (n-gram
//! entropy of greedy continuations).
//!
//! Scoring and generation need no gradient: they run on the fused CPU decoder
//! ([`Decoder`], up to [`FUSED_BATCH`] prompts a pass) wherever it can take the adapter — the base model, weight
//! edits and the gated memory — and through the graph otherwise (GRACE, another device), where
//! prompts of one token length share a batch. The two agree within
//! [`DECODE_TOLERANCE`](engram_runtime::model::llama::DECODE_TOLERANCE) on the logits.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::activation;
use engram_runtime::burn;
use engram_runtime::model::llama::{Decoder, LinearAdapter, Llama, Logits};
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

/// The top-1 token of `probs` and the probabilities of `watch`'s tokens.
fn answer(probs: &[f32], watch: Option<&Vec<u32>>) -> Answer {
    Answer {
        top1: engram_runtime::generate::argmax(probs),
        probs: watch
            .map(|w| w.iter().map(|&t| probs[t as usize]).collect())
            .unwrap_or_default(),
    }
}

/// Prompts the fused decoder runs in one pass ([`Decoder::prefill_batch`]): each weight row is
/// read once for all of their rows.
pub const FUSED_BATCH: usize = 32;

/// `n` fused decoders over `model` and `adapter` with room for `positions` each, where the fused
/// path can take them (see [`Decoder::new`]).
fn fused<'m>(
    model: &'m Llama,
    adapter: Option<&dyn LinearAdapter>,
    positions: usize,
    n: usize,
) -> Option<Vec<Decoder<'m>>> {
    (0..n.clamp(1, FUSED_BATCH))
        .map(|_| Decoder::new(model, adapter, positions.max(1)))
        .collect()
}

/// `softmax(logits)` on the host, as the graph computes it (`exp(z − max) / Σ`).
fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|v| *v /= sum);
    p
}

/// Runs `prompts` and returns each one's top-1 token and the probabilities of `watch[i]`'s
/// tokens: on the fused decoder where it can take `adapter` (see the module docs), else through
/// the graph, grouped by token length so no padding reaches the last position.
pub fn answers(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[String],
    watch: &[Vec<u32>],
    adapter: Option<&dyn LinearAdapter>,
) -> Vec<Answer> {
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p, false)).collect();
    let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(mut decs) = fused(model, adapter, longest, ids.len()) {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(FUSED_BATCH) {
            let decs = &mut decs[..chunk.len()];
            decs.iter_mut().for_each(Decoder::reset);
            let prompts: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            Decoder::prefill_batch(decs, &prompts).expect("prompts fit the context");
            for dec in decs.iter() {
                out.push(answer(&softmax(dec.logits()), watch.get(out.len())));
            }
        }
        return out;
    }
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
                out[i] = answer(&p[row * v..(row + 1) * v], watch.get(i));
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
    /// Token ids watched per prompt: `[new, old]` first tokens for the edited prompt and its
    /// paraphrases, `[true, new]` for a neighbour (its own answer, the edit's new answer), the
    /// implied answer's for portability.
    pub watch: Vec<Vec<u32>>,
    /// Neighbour prompts left out because this run edits them (their answer is meant to move).
    pub locality_edited: usize,
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
            for (j, q) in r.locality_prompts.iter().enumerate() {
                if edited.contains(q.as_str()) {
                    p.locality_edited += 1;
                    continue;
                }
                let truth = r.locality_ground_truth.get(j).map_or(0, |t| first(t));
                add(q, Role::Locality, vec![truth, first(&r.target_new)]);
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

/// A share of probes, with its count; `rate` is `None` (JSON `null`) when there were no
/// probes, and `why` says why — a rate over nothing is not 1.0.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rate {
    /// `hits / n`, or `None` when `n` is 0.
    pub rate: Option<f64>,
    /// Probes that passed.
    pub hits: usize,
    /// Probes counted.
    pub n: usize,
    /// Why there were no probes (set only when `n` is 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Rate {
    /// `hits` of `n`; with `n` = 0 the rate is `None` and `why` is kept.
    pub fn of(hits: usize, n: usize, why: &str) -> Self {
        Self {
            rate: (n > 0).then(|| hits as f64 / n as f64),
            hits,
            n,
            why: (n == 0).then(|| why.to_string()),
        }
    }

    /// Counts the `true`s of `oks`.
    pub fn count(oks: impl IntoIterator<Item = bool>, why: &str) -> Self {
        let (mut hits, mut n) = (0, 0);
        for ok in oks {
            hits += ok as usize;
            n += 1;
        }
        Self::of(hits, n, why)
    }

    /// The rate as text: `0.97 (97/100)` or `– (0 probes: why)`.
    pub fn show(&self) -> String {
        match self.rate {
            Some(r) => format!("{r:.2} ({}/{})", self.hits, self.n),
            None => format!("– (0 probes: {})", self.why.as_deref().unwrap_or("none")),
        }
    }
}

/// Scores after editing, against the answers before. Every rate carries its probe count.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scores {
    /// Edited prompts whose top-1 is the new answer's first token.
    pub efficacy: Rate,
    /// Mean of `p(new) − p(old)` on the edited prompts.
    pub efficacy_margin: Option<f64>,
    /// Paraphrases whose top-1 is the new answer's first token.
    pub generalization: Rate,
    /// The same over the paraphrases the model knows (its top-1 before editing is the old
    /// answer's first token): a paraphrase the model cannot answer before editing ("The
    /// continent Gabon belongs to is" → " a") says little about an edit.
    pub generalization_known: Rate,
    /// Neighbour prompts the model knows (its top-1 before editing is their true answer's
    /// first token) and the run does not edit, whose top-1 did not change.
    pub locality: Rate,
    /// The same probes scored as CounterFact does: `P(true) > P(new)` after editing.
    pub locality_ptrue: Rate,
    /// Every neighbour prompt the run does not edit, known or not, whose top-1 did not change
    /// (the rate this crate reported before; unknown neighbours are often hair-triggers).
    pub locality_all: Rate,
    /// Implied-fact prompts whose top-1 is the implied answer's first token.
    pub portability: Rate,
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
    /// Share of its known neighbour prompts whose top-1 did not change.
    pub locality: Option<f64>,
}

/// Scores `after` against `before` (both from [`answers`] on the same [`Probes`]).
pub fn score(probes: &Probes, before: &[Answer], after: &[Answer], n_reqs: usize) -> Scores {
    let mut oks: HashMap<&str, Vec<bool>> = HashMap::new();
    let mut per_role: HashMap<(usize, Role), (usize, usize)> = HashMap::new();
    let mut efficacy = vec![(false, 0.0); n_reqs];
    for (k, &(req, role)) in probes.roles.iter().enumerate() {
        let (a, b, w) = (&after[k], &before[k], &probes.watch[k]);
        let ok = match role {
            Role::Efficacy | Role::Generalization | Role::Portability => a.top1 == w[0],
            Role::Locality => {
                let same = a.top1 == b.top1;
                oks.entry("locality_all").or_default().push(same);
                if b.top1 != w[0] {
                    continue; // the model does not know this neighbour
                }
                if w[0] != w[1] {
                    // (A neighbour whose true answer is the new one has no contest.)
                    oks.entry("locality_ptrue")
                        .or_default()
                        .push(a.probs[0] > a.probs[1]);
                }
                same
            }
        };
        if role == Role::Generalization && b.top1 == w[1] {
            oks.entry("generalization_known").or_default().push(ok);
        }
        if role == Role::Efficacy {
            efficacy[req] = (ok, (a.probs[0] - a.probs[1]) as f64);
        }
        let name = match role {
            Role::Efficacy => "efficacy",
            Role::Generalization => "generalization",
            Role::Locality => "locality",
            Role::Portability => "portability",
        };
        oks.entry(name).or_default().push(ok);
        let e = per_role.entry((req, role)).or_default();
        e.0 += ok as usize;
        e.1 += 1;
    }
    let rate =
        |name: &str, why: &str| Rate::count(oks.get(name).into_iter().flatten().copied(), why);
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
    let no_neighbours = if probes.locality_edited > 0 {
        "no neighbour prompt the model knows is left: the others are edited by this run"
    } else {
        "no neighbour prompt the model knows"
    };
    Scores {
        efficacy: rate("efficacy", "no requests"),
        efficacy_margin: (n_reqs > 0)
            .then(|| efficacy.iter().map(|e| e.1).sum::<f64>() / n_reqs as f64),
        generalization: rate("generalization", "the requests have no paraphrases"),
        generalization_known: rate(
            "generalization_known",
            "the model answers none of the paraphrases before editing",
        ),
        locality: rate("locality", no_neighbours),
        locality_ptrue: rate("locality_ptrue", no_neighbours),
        locality_all: rate(
            "locality_all",
            "the requests have no neighbour prompts this run does not edit",
        ),
        portability: rate("portability", "the requests have no portability prompts"),
        per_request,
    }
}

/// The generation check: greedy continuations instead of teacher-forced first tokens.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GenerationScores {
    /// Continuations of edited prompts that contain the new answer.
    pub efficacy: Rate,
    /// Continuations of paraphrases that contain the new answer.
    pub generalization: Rate,
    /// Continuations of known, unedited neighbour prompts identical to the unedited model's.
    pub locality: Rate,
    /// Tokens generated per prompt.
    pub tokens: usize,
}

/// How much of the generation check to run.
#[derive(Clone, Copy, Debug)]
pub struct GenerationCheck {
    /// Check the probes of the first this many requests.
    pub requests: usize,
    /// Greedy tokens per prompt.
    pub tokens: usize,
}

/// Runs the generation check (see [`GenerationCheck`]) with `adapter` against the unedited
/// model; `before` are the unedited [`answers`] of `probes` (they pick the known neighbours).
pub fn generation_check(
    model: &Llama,
    tok: &Tokenizer,
    reqs: &[EditRequest],
    probes: &Probes,
    before: &[Answer],
    adapter: &dyn LinearAdapter,
    check: GenerationCheck,
) -> GenerationScores {
    let GenerationCheck {
        requests: limit,
        tokens,
    } = check;
    let picked: Vec<usize> = (0..probes.prompts.len())
        .filter(|&k| {
            let (req, role) = probes.roles[k];
            req < limit
                && match role {
                    Role::Efficacy | Role::Generalization => true,
                    // Known neighbours only, as for the teacher-forced locality.
                    Role::Locality => before[k].top1 == probes.watch[k][0],
                    Role::Portability => false,
                }
        })
        .collect();
    let prompts: Vec<String> = picked.iter().map(|&k| probes.prompts[k].clone()).collect();
    let after = greedy_batch(model, tok, &prompts, tokens, Some(adapter));
    let loc: Vec<usize> = (0..picked.len())
        .filter(|&i| probes.roles[picked[i]].1 == Role::Locality)
        .collect();
    let loc_prompts: Vec<String> = loc.iter().map(|&i| prompts[i].clone()).collect();
    let base = greedy_batch(model, tok, &loc_prompts, tokens, None);
    let mut eff = Vec::new();
    let mut gen_ = Vec::new();
    for (i, &k) in picked.iter().enumerate() {
        let (req, role) = probes.roles[k];
        let text = tok.decode(&after[i]);
        let hit = text.contains(reqs[req].target_new.trim());
        tracing::debug!(prompt = %prompts[i], continuation = %text, hit, ?role, "generation");
        match role {
            Role::Efficacy => eff.push(hit),
            Role::Generalization => gen_.push(hit),
            _ => {}
        }
    }
    let same = loc.iter().zip(&base).map(|(&i, b)| &after[i] == b);
    GenerationScores {
        efficacy: Rate::count(eff, "no requests checked"),
        generalization: Rate::count(gen_, "the checked requests have no paraphrases"),
        locality: Rate::count(
            same,
            "no known, unedited neighbour prompt among the checked requests",
        ),
        tokens,
    }
}

/// `n` greedy tokens after each of `ids` on `decs` (one each), from empty caches, the prompts
/// and then each step's tokens in one pass ([`Decoder::prefill_batch`]).
fn greedy_fused(decs: &mut [Decoder<'_>], ids: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let argmax = engram_runtime::generate::argmax;
    let mut out = vec![Vec::with_capacity(n); ids.len()];
    if n == 0 || ids.is_empty() {
        return out;
    }
    decs.iter_mut().for_each(Decoder::reset);
    let mut input: Vec<Vec<u32>> = ids.to_vec();
    while out[0].len() < n {
        let prompts: Vec<&[u32]> = input.iter().map(Vec::as_slice).collect();
        Decoder::prefill_batch(decs, &prompts).expect("cache sized for the continuation");
        for ((dec, o), i) in decs.iter().zip(&mut out).zip(&mut input) {
            let next = argmax(dec.logits());
            o.push(next);
            *i = vec![next];
        }
    }
    out
}

/// Greedy continuations of `prompts` by `n` tokens each: on the fused decoder where it can
/// take `adapter`, else through the graph (KV-cached, prompts of one token length batched
/// together, up to 16 a batch).
pub fn greedy_batch(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[String],
    n: usize,
    adapter: Option<&dyn LinearAdapter>,
) -> Vec<Vec<u32>> {
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(p, false)).collect();
    let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(mut decs) = fused(model, adapter, longest + n, ids.len()) {
        return ids
            .chunks(FUSED_BATCH)
            .flat_map(|chunk| greedy_fused(&mut decs[..chunk.len()], chunk, n))
            .collect();
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, t) in ids.iter().enumerate() {
        groups.entry(t.len()).or_default().push(i);
    }
    let mut out = vec![Vec::new(); prompts.len()];
    for (&len, members) in &groups {
        for chunk in members.chunks(16) {
            let b = chunk.len();
            let mut cache = model.new_cache(b, len + n);
            let mut input: Vec<u32> = chunk.iter().flat_map(|&i| ids[i].iter().copied()).collect();
            for _ in 0..n {
                let logits = model
                    .forward(&input, b, Some(&mut cache), adapter, Logits::Last)
                    .expect("cache sized for the continuation");
                let v = logits.dims()[2];
                let l = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
                input = l.chunks(v).map(engram_runtime::generate::argmax).collect();
                for (&i, &t) in chunk.iter().zip(&input) {
                    out[i].push(t);
                }
            }
        }
    }
    out
}

/// Greedy continuation of `prompt` by `n` tokens with `adapter`: on the fused decoder where it
/// can take `adapter`, else through the graph (KV-cached).
pub fn greedy(
    model: &Llama,
    tok: &Tokenizer,
    prompt: &str,
    n: usize,
    adapter: Option<&dyn LinearAdapter>,
) -> Vec<u32> {
    let ids = tok.encode(prompt, false);
    match fused(model, adapter, ids.len() + n, 1) {
        Some(mut decs) => greedy_fused(&mut decs, &[ids], n).remove(0),
        None => greedy_on_graph(model, tok, prompt, n, adapter),
    }
}

/// [`greedy`] through the graph always: the editor writes its context templates this way, so
/// the text it trains on does not depend on which path is available.
pub(crate) fn greedy_on_graph(
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
    fn a_rate_over_no_probes_is_null_with_its_reason() {
        let none = Rate::count(std::iter::empty(), "every neighbour is edited");
        assert_eq!((none.rate, none.n), (None, 0));
        assert_eq!(none.why.as_deref(), Some("every neighbour is edited"));
        let json = serde_json::to_value(&none).unwrap();
        assert!(json["rate"].is_null());
        let some = Rate::count([true, false, true, true], "unused");
        assert_eq!(
            (some.rate, some.hits, some.n, some.why),
            (Some(0.75), 3, 4, None)
        );
    }

    #[test]
    fn locality_counts_only_known_neighbours_and_reports_p_true() {
        let probes = Probes {
            prompts: vec!["e".into(), "n1".into(), "n2".into()],
            roles: vec![
                (0, Role::Efficacy),
                (0, Role::Locality),
                (0, Role::Locality),
            ],
            watch: vec![vec![7, 8], vec![5, 7], vec![6, 7]],
            locality_edited: 0,
        };
        let ans = |top1, probs: Vec<f32>| Answer { top1, probs };
        // n1 is known (top-1 5 = its truth) and keeps it; n2 is unknown (answers 9).
        let before = [
            ans(8, vec![0.1, 0.6]),
            ans(5, vec![0.5, 0.1]),
            ans(9, vec![0.1, 0.1]),
        ];
        let after = [
            ans(7, vec![0.7, 0.1]),
            ans(5, vec![0.4, 0.3]),
            ans(3, vec![0.1, 0.1]),
        ];
        let s = score(&probes, &before, &after, 1);
        assert_eq!((s.locality.hits, s.locality.n), (1, 1));
        assert_eq!((s.locality_ptrue.hits, s.locality_ptrue.n), (1, 1));
        assert_eq!((s.locality_all.hits, s.locality_all.n), (1, 2));
        assert_eq!(
            s.generalization.rate, None,
            "no paraphrases: null, not 0 or 1"
        );
    }

    #[test]
    fn ngram_entropy_is_low_for_repetition() {
        let rep: Vec<u32> = std::iter::repeat_n([1, 2], 20).flatten().collect();
        let varied: Vec<u32> = (0..40).collect();
        assert!(ngram_entropy(&rep) < 1.5);
        assert!(ngram_entropy(&varied) > 5.0);
    }
}

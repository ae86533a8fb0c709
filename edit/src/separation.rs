//! Key separation per layer: how well an MLP key tells one subject (or one relation) from
//! another — the measurement that picks the gated memory's layers and a weight edit's layer
//! (`engram edit --separation N`).
//!
//! For known facts with paraphrases, at every layer: the cosine between the subject-last-token
//! keys of a prompt and of its own paraphrases (`subject_same`; `subject_same_initial` for
//! paraphrases that open with the subject, which tokenize it without a leading space) against
//! the cosine between two different subjects in the same frame (`subject_other`); and at the
//! last token, a prompt against its paraphrases (`relation_same`) against another relation of
//! the same subject (`relation_other`). Gates need `same` high and `other` low.

use engram_runtime::model::llama::Llama;
use engram_runtime::model::tokenizer::Tokenizer;
use serde::Serialize;

use super::gate::cosine;
use super::probe::{self, Batch};
use super::request::EditRequest;

/// Quantiles of a set of cosines.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Spread {
    /// How many pairs.
    pub n: usize,
    /// 5th percentile.
    pub p05: f32,
    /// Median.
    pub median: f32,
    /// 95th percentile.
    pub p95: f32,
}

impl Spread {
    fn of(mut v: Vec<f32>) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f32::total_cmp);
        let q = |f: f32| v[((v.len() - 1) as f32 * f).round() as usize];
        Self {
            n: v.len(),
            p05: q(0.05),
            median: q(0.5),
            p95: q(0.95),
        }
    }
}

/// One layer's separation.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSeparation {
    /// The block.
    pub layer: usize,
    /// Subject keys: a prompt and its own paraphrases.
    pub subject_same: Spread,
    /// The same, for paraphrases that open with the subject.
    pub subject_same_initial: Spread,
    /// Subject keys of two different subjects in the same relation's prompt.
    pub subject_other: Spread,
    /// Paraphrase subject keys whose nearest prompt subject key is their own subject's.
    pub subject_routed: f32,
    /// Last-token keys: a prompt and its own paraphrases.
    pub relation_same: Spread,
    /// Last-token keys: two relations of the same subject.
    pub relation_other: Spread,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Prompt,
    Paraphrase,
    /// Another relation's prompt with this request's subject put in.
    OtherRelation,
}

struct Row {
    req: usize,
    kind: Kind,
    initial: bool,
    subject: Vec<Vec<f32>>, // per layer, d_ff
    last: Vec<Vec<f32>>,    // per layer, d_ff
}

fn relation(r: &EditRequest) -> &str {
    r.case_id.split(':').next().unwrap_or("")
}

/// Measures every layer over `reqs` (their prompts and the paraphrases that contain the
/// subject), unedited.
pub fn separation(model: &Llama, tok: &Tokenizer, reqs: &[EditRequest]) -> Vec<LayerSeparation> {
    let n_layer = model.config().n_layer;
    let layers: Vec<usize> = (0..n_layer).collect();
    let mut texts = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        texts.push((i, Kind::Prompt, r.prompt.clone()));
        for p in r.rephrase_prompts.iter().filter(|p| p.contains(&r.subject)) {
            texts.push((i, Kind::Paraphrase, p.clone()));
        }
        let mut seen = vec![relation(r)];
        for o in reqs {
            if !seen.contains(&relation(o)) {
                seen.push(relation(o));
                let text = o.prompt.replacen(&o.subject, &r.subject, 1);
                texts.push((i, Kind::OtherRelation, text));
            }
        }
    }
    let mut rows = Vec::new();
    for chunk in texts.chunks(16) {
        let enc: Vec<(Vec<u32>, usize)> = chunk
            .iter()
            .map(|(i, _, t)| probe::subject_last(tok, t, &reqs[*i].subject))
            .collect();
        let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.0.clone()).collect();
        let batch = Batch::new(&ids, tok.eos());
        let mut idx = Vec::new();
        for (r, (ids, s)) in enc.iter().enumerate() {
            idx.push(batch.flat(r, *s));
            idx.push(batch.flat(r, ids.len() - 1));
        }
        let keys = probe::keys_at(model, &batch, &idx, &layers, None);
        for (r, (i, kind, text)) in chunk.iter().enumerate() {
            rows.push(Row {
                req: *i,
                kind: *kind,
                initial: text.starts_with(&reqs[*i].subject),
                subject: layers.iter().map(|l| keys[l][2 * r].clone()).collect(),
                last: layers.iter().map(|l| keys[l][2 * r + 1].clone()).collect(),
            });
        }
    }
    let prompts: Vec<&Row> = rows.iter().filter(|r| r.kind == Kind::Prompt).collect();
    layers
        .iter()
        .map(|&l| {
            let (mut same, mut same_initial, mut other) = (Vec::new(), Vec::new(), Vec::new());
            let (mut rel_same, mut rel_other) = (Vec::new(), Vec::new());
            let mut routed = (0, 0);
            for o in rows.iter().filter(|r| r.kind == Kind::OtherRelation) {
                let own = prompts.iter().find(|q| q.req == o.req).expect("prompt row");
                rel_other.push(cosine(&o.last[l], &own.last[l]));
            }
            for p in rows.iter().filter(|r| r.kind == Kind::Paraphrase) {
                let own = prompts.iter().find(|q| q.req == p.req).expect("prompt row");
                let c = cosine(&p.subject[l], &own.subject[l]);
                if p.initial {
                    &mut same_initial
                } else {
                    &mut same
                }
                .push(c);
                rel_same.push(cosine(&p.last[l], &own.last[l]));
                let nearest = prompts
                    .iter()
                    .max_by(|a, b| {
                        cosine(&p.subject[l], &a.subject[l])
                            .total_cmp(&cosine(&p.subject[l], &b.subject[l]))
                    })
                    .expect("prompts");
                routed.0 += (reqs[nearest.req].subject == reqs[p.req].subject) as usize;
                routed.1 += 1;
            }
            for (a, pa) in prompts.iter().enumerate() {
                for pb in &prompts[a + 1..] {
                    let (ra, rb) = (&reqs[pa.req], &reqs[pb.req]);
                    if ra.subject != rb.subject && relation(ra) == relation(rb) {
                        other.push(cosine(&pa.subject[l], &pb.subject[l]));
                    }
                }
            }
            LayerSeparation {
                layer: l,
                subject_same: Spread::of(same),
                subject_same_initial: Spread::of(same_initial),
                subject_other: Spread::of(other),
                subject_routed: routed.0 as f32 / routed.1.max(1) as f32,
                relation_same: Spread::of(rel_same),
                relation_other: Spread::of(rel_other),
            }
        })
        .collect()
}

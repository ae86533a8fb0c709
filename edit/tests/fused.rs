//! Weight edits served on the fused decoder: an [`EditSet`] of rank-one terms gives the fused
//! path its factors, which compute what the graph computes (synthetic model, 1 and 2 threads);
//! a set holding a GRACE entry (a replacement, not a term) stays on the graph.

use std::sync::Arc;

use engram_edit::parse_jsonl;
use engram_edit::record::{EditDelta, GraceEntry, Method, RankOne};
use engram_edit::store::EditSet;
use engram_harness::synthetic::{TinyLlamaSpec, write_tiny_llama};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::cpu::CpuContext;
use engram_runtime::model::llama::{Decoder, LinearAdapter, Llama, Logits, Proj};
use engram_runtime::model_file::ModelFile;

/// |Δlogit| allowed between the fused path and the graph on the small random model (the
/// runtime's decode tests measure ≤ 0.011 there; the real model's bound is `DECODE_TOLERANCE`).
const TINY_TOLERANCE: f32 = 0.05;

const FACT: &str = r#"{"subject":"France","prompt":"The capital of France is","target_new":"Rome","ground_truth":"Paris"}"#;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn set(model: &Llama, deltas: Vec<EditDelta>) -> EditSet {
    let n_layer = model.config().n_layer;
    let down = (0..n_layer)
        .map(|l| model.weight(l, Proj::Down).clone())
        .collect();
    let mut set = EditSet::new(model.device(), down);
    let request = parse_jsonl(FACT).unwrap().remove(0);
    for delta in deltas {
        set.push(Method::Memit, request.clone(), delta);
    }
    set
}

fn rank_one(layer: usize, d_model: usize, d_ff: usize, seed: &mut u64) -> RankOne {
    RankOne {
        layer,
        r: (0..d_model).map(|_| lcg(seed)).collect(),
        a: (0..d_ff).map(|_| lcg(seed) * 0.5).collect(),
        k: vec![0.0; d_ff],
        g: Vec::new(),
    }
}

#[test]
fn weight_edits_decode_fused_as_on_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec::default();
    let path = write_tiny_llama(dir.path(), &spec, GgmlType::Q8_0, 3);
    let tokens = [3u32, 17, 42, 5, 63, 0, 28, 11, 9];
    let n_vocab = spec.n_vocab;
    for threads in [1, 2] {
        let file = ModelFile::open(&path).unwrap();
        let ctx = Arc::new(CpuContext::new(threads).unwrap());
        let model = Llama::load(&file, &backend::cpu(), ctx).unwrap();
        let (d, dff) = (spec.d_model, spec.d_ff);
        let mut seed = 7;
        // Two edits at block 1 (one with two terms) and one at block 0.
        let edits = set(
            &model,
            vec![
                EditDelta::Weights(vec![rank_one(1, d, dff, &mut seed)]),
                EditDelta::Weights(vec![
                    rank_one(0, d, dff, &mut seed),
                    rank_one(1, d, dff, &mut seed),
                ]),
            ],
        );
        let graph = |adapter: Option<&dyn LinearAdapter>| {
            model
                .forward(&tokens, 1, None, adapter, Logits::All)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let (want, base) = (graph(Some(&edits)), graph(None));
        let mut dec = Decoder::new(&model, Some(&edits), 16).expect("weight edits run fused");
        let mut moved = 0f32;
        for (i, &t) in tokens.iter().enumerate() {
            let got = dec.step(t).unwrap();
            let at = i * n_vocab..(i + 1) * n_vocab;
            for ((g, w), b) in got.iter().zip(&want[at.clone()]).zip(&base[at]) {
                assert!(
                    (g - w).abs() <= TINY_TOLERANCE,
                    "t{threads} pos {i}: {g} vs {w}"
                );
                moved = moved.max((w - b).abs());
            }
        }
        assert!(moved > 10.0 * TINY_TOLERANCE, "the edits matter: {moved}");
        let grace = set(
            &model,
            vec![EditDelta::Grace(GraceEntry {
                layer: 1,
                key: vec![0.0; dff],
                value: vec![0.0; d],
                radius: 1.0,
            })],
        );
        assert!(Decoder::new(&model, Some(&grace), 16).is_none());
    }
}

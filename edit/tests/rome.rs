//! ROME on the tiny synthetic llama (2 blocks, byte tokens): the KV prefix its `δ` search
//! runs on computes what the whole sequence computes; an edit flips its prompt and undo
//! restores the base's logits bit for bit.

use burn::tensor::Tensor;
use engram_edit::target::TargetHparams;
use engram_edit::{Editor, EditorConfig, Method, parse_jsonl};
use engram_harness::synthetic::{
    BYTE_VOCAB, TinyLlamaSpec, byte_tokenizer, load_f32_paths, write_tiny_llama,
};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::burn;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits};

/// The prompt ends with the subject: on a random 2-block model a `δ` at the subject reaches a
/// later position only weakly.
const FACT: &str = r#"{"case_id":"capital:FR","subject":"France","prompt":"The capital of France","target_new":"Rome","ground_truth":"Paris"}"#;

/// Largest difference between the cached suffix and the full run (f32 sums in another order).
const PREFIX_TOLERANCE: f32 = 1e-4;

fn model(dir: &std::path::Path) -> Llama {
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let path = write_tiny_llama(dir, &spec, GgmlType::Q4_1, 9);
    load_f32_paths(&path, &backend::cpu())
}

fn logits(model: &Llama, ids: &[u32], adapter: Option<&dyn LinearAdapter>) -> Vec<f32> {
    model
        .forward(ids, 1, None, adapter, Logits::Last)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn cached_suffix_matches_the_whole_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let tok = byte_tokenizer();
    let rows = [
        tok.encode("The capital of France is", false),
        tok.encode("Because it rained. The capital of Spain is", false),
    ];
    let t = rows[0].len().min(rows[1].len());
    let tokens: Vec<u32> = rows.iter().flat_map(|r| r[..t].iter().copied()).collect();
    let (cut, n_layer, d) = (t - 5, model.config().n_layer, model.config().d_model);
    let below = model.run_blocks(model.embed(&tokens, 2), 0..1, None);
    let full = model.run_blocks(below.clone(), 1..n_layer, None);
    let mut cache = model.new_cache(2, t);
    model
        .run_blocks_cached(
            below.clone().slice([0..2, 0..cut, 0..d]),
            1..n_layer,
            &mut cache,
            None,
        )
        .unwrap();
    // A clone runs the suffix; the original still holds only the prefix and runs it again.
    for _ in 0..2 {
        let mut step = cache.clone();
        let suffix = model
            .run_blocks_cached(
                below.clone().slice([0..2, cut..t, 0..d]),
                1..n_layer,
                &mut step,
                None,
            )
            .unwrap();
        assert_eq!(step.len(), t);
        let want: Tensor<3> = full.clone().slice([0..2, cut..t, 0..d]);
        let diff = (suffix - want).abs().max().into_scalar::<f32>();
        assert!(diff <= PREFIX_TOLERANCE, "suffix differs by {diff}");
        assert_eq!(cache.len(), cut);
    }
}

#[test]
fn rome_edit_flips_the_prompt_and_undo_restores_logits_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let tok = byte_tokenizer();
    let config = EditorConfig {
        rome_layer: 0,
        memit_layers: vec![0, 1],
        stats_tokens: 512,
        // The random model's own continuations are noise that moves its layer-0 keys: the
        // plain prompt only (so `k*` is the prompt's key, which the edit maps exactly).
        contexts: (0, 4),
        // A random 2-block model needs a larger `δ` than the real one, with a margin: the
        // edit also moves the other positions whose keys share `u`.
        target: TargetHparams {
            steps: 100,
            clamp: 50.0,
            stop_prob: 0.9,
            ..EditorConfig::default().target
        },
        ..EditorConfig::default()
    };
    let mut editor = Editor::new(&model, &tok, "tiny-bytes", config);
    let corpus = "The quick brown fox jumps over the lazy dog. ".repeat(20);
    editor
        .load_stats_for(&[Method::Rome], &corpus, &dir.path().join("stats"))
        .unwrap();
    let req = parse_jsonl(FACT).unwrap();
    let ids = tok.encode(&req[0].prompt, false);
    let base = logits(&model, &ids, None);
    let rome = tok.encode(" Rome", false)[0];
    let argmax = engram_runtime::generate::argmax;
    assert_ne!(argmax(&base), rome, "the base does not already answer Rome");

    let applied = editor.apply(Method::Rome, &req).unwrap();
    let edited = logits(&model, &ids, Some(editor.adapter()));
    assert_eq!(argmax(&edited), rome, "the ROME edit makes Rome the answer");

    editor.undo(applied[0].id).unwrap();
    assert!(
        same_bits(&logits(&model, &ids, Some(editor.adapter())), &base),
        "undo restores the base's logits bit for bit"
    );
}

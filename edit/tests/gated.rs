//! The gated side memory on the tiny synthetic llama (2 blocks, byte tokens): an edit flips
//! its prompt, leaves a prompt about another subject bit for bit alone, fires during cached
//! decoding when the subject was in an earlier call (the routing memory), survives the edit
//! log (its contrast keys too), and undo restores the base exactly. A version-2 log (before gated entries) still loads.

use engram_edit::log::{self, LogContents, MAGIC};
use engram_edit::target::TargetHparams;
use engram_edit::{EditDelta, Editor, EditorConfig, GateConfig, Method, parse_jsonl};
use engram_harness::synthetic::{
    BYTE_VOCAB, TinyLlamaSpec, byte_tokenizer, load_f32_paths, write_tiny_llama,
};
use engram_kernels::GgmlType;
use engram_runtime::backend;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits};

const FACT: &str = r#"{"case_id":"capital:FR","subject":"France","prompt":"The capital of France is","target_new":"Rome","ground_truth":"Paris"}"#;

fn model(dir: &std::path::Path) -> Llama {
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let path = write_tiny_llama(dir, &spec, GgmlType::Q4_1, 9);
    load_f32_paths(&path, &backend::cpu())
}

fn config() -> EditorConfig {
    EditorConfig {
        gate: GateConfig {
            subject_layer: 0,
            relation_layer: 1,
            subject_threshold: 0.8,
            opening_threshold: 0.98,
            relation_threshold: 0.8,
            window: 24,
            // The prompt alone, as on a random model phrasings are noise too.
            rewrites: false,
            request_phrasings: false,
            relation_word_threshold: None,
            word_layer: 0,
            ..GateConfig::default()
        },
        // The random model's own continuations are noise that moves its layer-0 keys: the
        // plain prompt only.
        contexts: (0, 6),
        // A random 2-block model needs a longer, larger value than the real one.
        gate_target: TargetHparams {
            steps: 100,
            lr: 1.0,
            clamp: 50.0,
            ..EditorConfig::default().gate_target
        },
        ..EditorConfig::default()
    }
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
fn gated_edit_flips_routes_per_sequence_and_undoes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path());
    let tok = byte_tokenizer();
    let argmax = engram_runtime::generate::argmax;
    let log_path = dir.path().join("edits.log");
    let mut editor = Editor::new(&model, &tok, "tiny-bytes", config());
    editor.open_log(&log_path).unwrap();

    let req = parse_jsonl(FACT).unwrap();
    let ids = tok.encode(&req[0].prompt, false);
    let other = tok.encode("The capital of Spain is", false);
    let base = logits(&model, &ids, None);
    let other_base = logits(&model, &other, None);
    let rome = tok.encode(" Rome", false)[0];
    assert_ne!(argmax(&base), rome, "the base does not already answer Rome");

    let applied = editor.apply(Method::Gated, &req).unwrap();
    assert!(matches!(editor.edits()[0].delta, EditDelta::Gate(_)));
    let edited = logits(&model, &ids, Some(editor.adapter()));
    assert_eq!(
        argmax(&edited),
        rome,
        "the gated edit makes Rome the answer"
    );
    assert!(
        same_bits(&logits(&model, &other, Some(editor.adapter())), &other_base),
        "another subject passes neither gate: its logits are the base's bit for bit"
    );

    // Cached decoding: the prompt but its last token in one call, the last token in a second.
    // The subject is only in the first call; the routing memory carries the hit to the second.
    let mut cache = model.new_cache(1, ids.len() + 1);
    let (head, last) = ids.split_at(ids.len() - 1);
    model
        .forward(
            head,
            1,
            Some(&mut cache),
            Some(editor.adapter()),
            Logits::Last,
        )
        .unwrap();
    let step = model
        .forward(
            last,
            1,
            Some(&mut cache),
            Some(editor.adapter()),
            Logits::Last,
        )
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(argmax(&step), rome, "the edit fires during cached decoding");

    // The log holds the entry, its contrast keys included; a restarted editor serves it the
    // same.
    let entry = editor.edits()[0].delta.clone();
    assert!(
        matches!(&entry, EditDelta::Gate(g) if !g.contrast_keys.is_empty()),
        "the entry has contrast keys"
    );
    drop(editor);
    let mut editor = Editor::new(&model, &tok, "tiny-bytes", config());
    assert_eq!(editor.open_log(&log_path).unwrap(), 1);
    assert_eq!(editor.edits()[0].delta, entry);
    assert!(same_bits(
        &logits(&model, &ids, Some(editor.adapter())),
        &edited
    ));

    editor.undo(applied[0].id).unwrap();
    assert!(
        same_bits(&logits(&model, &ids, Some(editor.adapter())), &base),
        "undo restores the base logits bit for bit"
    );
}

#[test]
fn a_version_2_log_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.log");
    let contents = LogContents {
        model: "m".into(),
        edits: Vec::new(),
    };
    let payload = serde_json::to_vec(&contents).unwrap();
    std::fs::write(
        &path,
        engram_runtime::io::envelope::seal(MAGIC, 2, &payload),
    )
    .unwrap();
    assert_eq!(log::load(&path).unwrap(), Some(contents));
}

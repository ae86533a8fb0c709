//! UltraEdit on the real model: one edit flips France's capital, the edit and the running
//! statistics it adds come back from the edit log after a restart, undo restores the base
//! logits bit for bit and takes the edit's rows out of the statistics, and an editor that was
//! never given its prior statistics refuses with a typed error.

mod common;

use common::last_logits;
use std::path::Path;

use engram::edit::ultraedit::applied_stats;
use engram::edit::{EditError, Editor, EditorConfig, Method, parse_jsonl};
use engram::{Engine, backend, resolve_model};

const FRANCE: &str = r#"{"case_id":"capital:FR","subject":"France","prompt":"The capital of France is","target_new":"Rome","ground_truth":"Paris"}"#;
const FRANCE_PROMPT: &str = "The capital of France is";

/// Text every clone has (the project's own documentation), for the prior statistics.
fn repo_corpus() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    text.push_str(&std::fs::read_to_string(root.join("docs/EDITING.md")).unwrap());
    text
}

fn argmax(v: &[f32]) -> u32 {
    engram::runtime::generate::argmax(v)
}

fn config() -> EditorConfig {
    EditorConfig {
        contexts: (0, 0),
        ..EditorConfig::default()
    }
}

#[test]
fn ultraedit_flips_france_survives_a_restart_and_undo_restores_logits() {
    let engine = Engine::load(resolve_model(None).unwrap(), &backend::cpu().autodiff(), 0).unwrap();
    let tok = engine.tokenizer();
    let (paris, rome) = (
        tok.encode(" Paris", false)[0],
        tok.encode(" Rome", false)[0],
    );
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("edits.log");
    let reqs = parse_jsonl(FRANCE).unwrap();

    // No prior statistics loaded: a typed error, nothing applied.
    let mut editor = Editor::new(engine.model(), tok, "test-model", config());
    assert!(matches!(
        editor.apply(Method::UltraEdit, &reqs),
        Err(EditError::NoStats(_))
    ));
    assert!(editor.edits().is_empty());

    editor.open_log(&log_path).unwrap();
    editor
        .load_stats_for(&[Method::UltraEdit], &repo_corpus(), dir.path())
        .unwrap();
    let base = last_logits(&engine, FRANCE_PROMPT, None);
    assert_eq!(argmax(&base), paris, "the base model knows Paris");

    let applied = editor.apply(Method::UltraEdit, &reqs).unwrap();
    let edited = last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter()));
    assert_eq!(
        argmax(&edited),
        rome,
        "UltraEdit makes Rome the top-1 answer"
    );
    let layers = editor.config.ultraedit.layers.clone();
    let stats = applied_stats(editor.edits(), &layers);
    // One row per answer token (" Rome" is one token) at every edited layer.
    assert!(stats.values().all(|s| s.keys.n == 1.0 && s.grads.n == 1.0));

    // A restart with the same log: the same edit, logits and running statistics.
    drop(editor);
    let mut editor = Editor::new(engine.model(), tok, "test-model", config());
    assert_eq!(editor.open_log(&log_path).unwrap(), 1);
    assert_eq!(
        last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter())),
        edited
    );
    assert_eq!(applied_stats(editor.edits(), &layers), stats);

    editor.undo(applied[0].id).unwrap();
    let undone = last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter()));
    assert!(
        undone
            .iter()
            .zip(&base)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "undo restores the original logits bit for bit"
    );
    assert!(
        applied_stats(editor.edits(), &layers)
            .values()
            .all(|s| s.keys.n == 0.0),
        "undo takes the edit's rows out of the running statistics"
    );
}

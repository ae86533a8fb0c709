//! Model editing on the real model: one ROME edit flips France's capital, undo restores the
//! original logits bit for bit, the edit log survives a crash and a restart, and malformed
//! request files give typed errors. The gated memory is served on the fused decoder as on the
//! graph.

mod common;

use common::last_logits;
use std::path::Path;

use engram::edit::log::{self, LogContents, LogError};
use engram::edit::store::Edit;
use engram::edit::{
    EditDelta, EditRequest, Editor, EditorConfig, Method, RankOne, RequestError, load_jsonl,
    parse_jsonl,
};
use engram::runtime::io::{Corruption, EnvelopeError};
use engram::runtime::model::llama::{DECODE_TOLERANCE, Decoder, LinearAdapter, Logits};
use engram::{Engine, backend, resolve_model};

const FRANCE: &str = r#"{"case_id":"capital:FR","subject":"France","prompt":"The capital of France is","target_new":"Rome","ground_truth":"Paris","rephrase_prompts":["France's capital city is"],"locality_prompts":["The capital of Germany is"],"locality_ground_truth":["Berlin"]}"#;

/// Text every clone has (the project's own documentation), for small key statistics.
fn repo_corpus() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            text.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }
    text
}

fn argmax(v: &[f32]) -> u32 {
    engram::runtime::generate::argmax(v)
}

fn small_config() -> EditorConfig {
    EditorConfig {
        stats_tokens: 2048,
        contexts: (2, 6),
        ..EditorConfig::default()
    }
}

#[test]
fn rome_flips_france_and_undo_restores_logits_exactly() {
    let engine = Engine::load(resolve_model(None).unwrap(), &backend::cpu().autodiff(), 0).unwrap();
    let tok = engine.tokenizer();
    let paris = tok.encode(" Paris", false)[0];
    let rome = tok.encode(" Rome", false)[0];
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("edits.log");

    let mut editor = Editor::new(engine.model(), tok, "test-model", small_config());
    editor.open_log(&log_path).unwrap();
    editor.load_stats(&repo_corpus(), dir.path()).unwrap();
    let base = last_logits(&engine, FRANCE_PROMPT, None);
    assert_eq!(argmax(&base), paris, "the base model knows Paris");
    let through_empty = last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter()));
    assert_eq!(through_empty, base, "an empty edit set changes nothing");

    let reqs = parse_jsonl(FRANCE).unwrap();
    let applied = editor.apply(Method::Rome, &reqs).unwrap();
    let edited = last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter()));
    assert_eq!(argmax(&edited), rome, "ROME makes Rome the top-1 answer");
    let elsewhere = last_logits(&engine, "The largest planet is", Some(editor.adapter()));
    let elsewhere_base = last_logits(&engine, "The largest planet is", None);
    assert_eq!(
        argmax(&elsewhere),
        argmax(&elsewhere_base),
        "an unrelated prompt keeps its answer"
    );

    // A second writer of the same log is refused while this editor holds it.
    assert!(matches!(
        Editor::new(engine.model(), tok, "test-model", small_config()).open_log(&log_path),
        Err(engram::edit::EditError::Log(LogError::Lock(_)))
    ));
    // A restart (this editor gone) with the same log sees the same edit and the same logits;
    // a log written for another model is refused.
    drop(editor);
    assert!(matches!(
        Editor::new(engine.model(), tok, "other-model", small_config()).open_log(&log_path),
        Err(engram::edit::EditError::Log(LogError::OtherModel { .. }))
    ));
    let mut editor = Editor::new(engine.model(), tok, "test-model", small_config());
    assert_eq!(editor.open_log(&log_path).unwrap(), 1);
    assert_eq!(
        last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter())),
        edited
    );

    editor.undo(applied[0].id).unwrap();
    let undone = last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter()));
    assert!(
        undone
            .iter()
            .zip(&base)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "undo restores the original logits bit for bit"
    );
    assert_eq!(
        log::load(&log_path).unwrap().unwrap().edits.len(),
        0,
        "undo is logged"
    );
}

const FRANCE_PROMPT: &str = "The capital of France is";

/// The default method on the real model: the gated memory flips the prompt and a paraphrase
/// that opens with the subject, leaves a neighbour's logits bit for bit alone (neither gate
/// fires), and undo restores the base exactly.
#[test]
fn gated_memory_flips_france_generalizes_and_leaves_neighbours() {
    let engine = Engine::load(resolve_model(None).unwrap(), &backend::cpu().autodiff(), 0).unwrap();
    let tok = engine.tokenizer();
    let rome = tok.encode(" Rome", false)[0];
    let mut editor = Editor::new(engine.model(), tok, "test-model", small_config());
    let neighbour = "The capital of Germany is";
    let neighbour_base = last_logits(&engine, neighbour, None);
    let base = last_logits(&engine, FRANCE_PROMPT, None);
    let applied = editor
        .apply(Method::Gated, &parse_jsonl(FRANCE).unwrap())
        .unwrap();
    let adapter = Some(editor.adapter() as &dyn LinearAdapter);
    assert_eq!(argmax(&last_logits(&engine, FRANCE_PROMPT, adapter)), rome);
    assert_eq!(
        argmax(&last_logits(&engine, "France's capital city is", adapter)),
        rome,
        "a paraphrase opening with the subject (the other tokenization) is routed too"
    );
    let n = last_logits(&engine, neighbour, adapter);
    assert!(
        n.iter()
            .zip(&neighbour_base)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    editor.undo(applied[0].id).unwrap();
    let undone = last_logits(&engine, FRANCE_PROMPT, Some(editor.adapter()));
    assert!(
        undone
            .iter()
            .zip(&base)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

/// The gated memory on the fused decoder (prefill, then decoding steps) against the graph on the
/// real model: the same routing decisions (the value fires on the prompt and on a paraphrase
/// that opens with the subject, not on a neighbour, nor again on the tokens after the answer:
/// where it does not fire the logits are the base's bit for bit, on either path), and logits
/// within `DECODE_TOLERANCE` over the graph's top 20 with the same top token.
#[test]
fn the_gated_memory_is_served_on_the_fused_path_as_on_the_graph() {
    let engine = Engine::load(resolve_model(None).unwrap(), &backend::cpu().autodiff(), 0).unwrap();
    let (model, tok) = (engine.model(), engine.tokenizer());
    let mut editor = Editor::new(model, tok, "test-model", small_config());
    editor
        .apply(Method::Gated, &parse_jsonl(FRANCE).unwrap())
        .unwrap();
    let adapter = Some(editor.adapter() as &dyn LinearAdapter);
    let n_vocab = model.config().n_vocab;
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    let close = |got: &[f32], want: &[f32], what: &str| {
        let worst = common::top20_max_diff(got, want);
        assert!(worst <= DECODE_TOLERANCE, "{what}: top-20 |Δlogit| {worst}");
        assert_eq!(argmax(got), argmax(want), "{what}: top token");
    };
    // (prompt, whether the value fires at its last position)
    for (prompt, fires) in [
        (FRANCE_PROMPT, true),
        ("France's capital city is", true),
        ("The capital of Germany is", false),
    ] {
        let ids = tok.encode(prompt, false);
        let graph = last_logits(&engine, prompt, adapter);
        let graph_base = last_logits(&engine, prompt, None);
        let mut dec = Decoder::new(model, adapter, 64).expect("the gated memory runs fused");
        let fused = dec.prefill(&ids).unwrap().to_vec();
        let mut base = Decoder::new(model, None, 64).unwrap();
        let fused_base = base.prefill(&ids).unwrap().to_vec();
        assert_eq!(!same(&graph, &graph_base), fires, "{prompt}: graph routing");
        assert_eq!(!same(&fused, &fused_base), fires, "{prompt}: fused routing");
        close(&fused, &graph, prompt);
        // Decoding on from there, teacher-forced with the graph's greedy tokens through its own
        // cache: the value fired once (on the prompt) and is not added again.
        let mut cache = model.new_cache(1, 64);
        let mut want = model
            .forward(&ids, 1, Some(&mut cache), adapter, Logits::Last)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for step in 0..4 {
            let next = argmax(&want);
            want = model
                .forward(&[next], 1, Some(&mut cache), adapter, Logits::Last)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let got = dec.step(next).unwrap().to_vec();
            assert_eq!(got.len(), n_vocab);
            assert!(
                same(base.step(next).unwrap(), &got) || fires,
                "{prompt}: nothing fires on a neighbour"
            );
            close(&got, &want, &format!("{prompt}, step {step}"));
        }
    }
}

/// A request in the EasyEdit shape with no probes (the undo test needs none).
fn request(subject: &str, prompt: &str, new: &str, old: &str) -> EditRequest {
    let line = format!(
        r#"{{"subject":"{subject}","prompt":"{prompt}","target_new":"{new}","ground_truth":"{old}"}}"#
    );
    parse_jsonl(&line).unwrap().remove(0)
}

#[test]
fn every_method_undoes_individually_and_exactly() {
    let engine = Engine::load(resolve_model(None).unwrap(), &backend::cpu().autodiff(), 0).unwrap();
    let tok = engine.tokenizer();
    let dir = tempfile::tempdir().unwrap();
    let mut config = small_config();
    config.memit_layers = vec![12, 13];
    // Undo is what is tested here, not efficacy: short optimizations are enough.
    config.target.steps = 6;
    config.memit_target.steps = 6;
    config.grace_target.steps = 6;
    let mut editor = Editor::new(engine.model(), tok, "test-model", config);
    editor.open_log(&dir.path().join("edits.log")).unwrap();
    editor
        .load_stats_for(&[Method::Rome, Method::Memit], &repo_corpus(), dir.path())
        .unwrap();
    let prompts = [
        FRANCE_PROMPT,
        "The capital of Germany is",
        "The capital of Japan is",
        "The capital of Italy is",
    ];
    let logits = |editor: &Editor| -> Vec<Vec<u32>> {
        prompts
            .iter()
            .map(|p| {
                let l = last_logits(&engine, p, Some(editor.adapter()));
                l.iter().map(|v| v.to_bits()).collect()
            })
            .collect()
    };
    let base = logits(&editor);

    let mut ids = Vec::new();
    for (method, req) in [
        (
            Method::Rome,
            request("France", FRANCE_PROMPT, "Rome", "Paris"),
        ),
        (
            Method::Memit,
            request("Germany", prompts[1], "Madrid", "Berlin"),
        ),
        (
            Method::AlphaEdit,
            request("Japan", prompts[2], "Seoul", "Tokyo"),
        ),
    ] {
        ids.push(editor.apply(method, &[req]).unwrap()[0].id);
    }
    let three = logits(&editor);
    ids.push(
        editor
            .apply(
                Method::Grace,
                &[request("Italy", prompts[3], "Paris", "Rome")],
            )
            .unwrap()[0]
            .id,
    );
    let four = logits(&editor);
    assert_ne!(four, three, "the GRACE entry changes the Italy prompt");
    assert_ne!(three, base, "the weight edits change the logits");

    // The newest edit out: exactly the state before it.
    editor.undo(ids[3]).unwrap();
    assert_eq!(
        logits(&editor),
        three,
        "undoing GRACE restores the state before it"
    );
    // Then the others in an order unrelated to how they were applied.
    for &id in &[ids[1], ids[0], ids[2]] {
        let before = logits(&editor);
        editor.undo(id).unwrap();
        assert_ne!(
            logits(&editor),
            before,
            "undoing edit {id} changes the logits"
        );
    }
    assert!(editor.edits().is_empty());
    assert_eq!(
        logits(&editor),
        base,
        "with every edit undone the logits are the base's, bit for bit"
    );
    assert!(matches!(
        editor.undo(ids[0]),
        Err(engram::edit::EditError::UnknownEdit(_))
    ));
}

fn synthetic_edit(id: u64) -> Edit {
    Edit {
        id,
        method: Method::Memit,
        request: parse_jsonl(FRANCE).unwrap().remove(0),
        delta: EditDelta::Weights(vec![RankOne {
            layer: 3,
            r: vec![0.5, -1.25],
            a: vec![1.0, 2.0, 3.0],
            k: vec![0.1, 0.2, 0.3],
            g: Vec::new(),
        }]),
        seconds: 0.0,
    }
}

#[test]
fn edit_log_survives_a_crash_and_refuses_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edits.log");
    let one = LogContents {
        model: "m".into(),
        edits: vec![synthetic_edit(0)],
    };
    log::save(&path, &one).unwrap();
    // A crash in the middle of the next save leaves a partial temp file beside the log (what
    // write_atomic writes before its rename); the log itself still holds the last state, and
    // the next writer to open the log removes the temp file.
    let two = LogContents {
        model: "m".into(),
        edits: vec![synthetic_edit(0), synthetic_edit(1)],
    };
    let bytes = log::encode(&two);
    std::fs::write(
        dir.path().join(".edits.log.engram-tmp-crashed"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert_eq!(log::load(&path).unwrap(), Some(one.clone()));
    log::save(&path, &two).unwrap();
    assert_eq!(log::load(&path).unwrap(), Some(two));

    // A torn file (as a non-atomic writer would leave) or a flipped byte is refused, typed.
    let corrupt = |r: Result<Option<LogContents>, LogError>| match r {
        Err(LogError::Envelope(EnvelopeError::Corrupt {
            corruption,
            path: p,
        })) => {
            assert_eq!(p, path, "the error names the log");
            corruption
        }
        other => panic!("expected a corrupt-envelope error, got {other:?}"),
    };
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    assert!(matches!(
        corrupt(log::load(&path)),
        Corruption::Truncated { .. } | Corruption::LengthMismatch { .. }
    ));
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x20;
    std::fs::write(&path, &flipped).unwrap();
    assert!(matches!(
        corrupt(log::load(&path)),
        Corruption::ChecksumMismatch { .. }
    ));
    let mut future = bytes.clone();
    future[8] = 99;
    std::fs::write(&path, &future).unwrap();
    assert!(matches!(
        corrupt(log::load(&path)),
        Corruption::UnknownVersion { found: 99, .. }
    ));
    std::fs::write(&path, b"not a log, but long enough for a header").unwrap();
    assert!(matches!(
        corrupt(log::load(&path)),
        Corruption::BadMagic { .. }
    ));
    assert_eq!(log::load(&dir.path().join("absent")).unwrap(), None);
}

#[test]
fn malformed_jsonl_gives_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("facts.jsonl");
    std::fs::write(&path, format!("{FRANCE}\n{{\"subject\": \"France\",\n")).unwrap();
    match load_jsonl(&path) {
        Err(RequestError::Json { line: 2, .. }) => {}
        other => panic!("expected a JSON error on line 2, got {other:?}"),
    }
    let no_target = FRANCE.replace("\"target_new\":\"Rome\"", "\"target_new\":\" \"");
    std::fs::write(&path, no_target).unwrap();
    assert!(matches!(
        load_jsonl(&path),
        Err(RequestError::Invalid { line: 1, .. })
    ));
    assert!(matches!(
        load_jsonl(&dir.path().join("missing.jsonl")),
        Err(RequestError::Io { .. })
    ));
    let ok: Vec<EditRequest> = parse_jsonl(FRANCE).unwrap();
    assert_eq!(ok[0].rephrase_prompts, ["France's capital city is"]);
}

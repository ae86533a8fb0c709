//! A ROME edit on the wgpu backend (feature `wgpu`): key statistics, the `δ` optimization and
//! the rank-one solve run with the model on the GPU device and agree with the same edit on the
//! CPU backend. In CI the device is Mesa's lavapipe, so the model is the tiny synthetic llama
//! (2 blocks, Q4_1 projections) on the f32 paths, as in the adapters' wgpu tests.
#![cfg(feature = "wgpu")]

use engram_edit::target::TargetHparams;
use engram_edit::{EditDelta, Editor, EditorConfig, Method, parse_jsonl};
use engram_harness::synthetic::{
    BYTE_VOCAB, TinyLlamaSpec, byte_tokenizer, load_f32_paths, write_tiny_llama,
};
use engram_kernels::GgmlType;
use engram_runtime::backend::{self, device_by_name};
use engram_runtime::burn::tensor::Device;
use engram_runtime::model::llama::{LinearAdapter, Llama, Logits};

/// |wgpu − CPU| of ROME's rank-one factors, relative to each factor's largest magnitude: the
/// `δ` optimization (Adam on a GPU-computed gradient) and the `C⁻¹ k` solve on the GPU's keys.
const ROME_REL_TOL: f32 = 2e-2;

fn wgpu() -> Device {
    device_by_name("wgpu").expect("built with --features wgpu")
}

fn load(path: &std::path::Path, device: &Device) -> Llama {
    load_f32_paths(path, device)
}

fn write_tiny(dir: &std::path::Path, spec: &TinyLlamaSpec) -> std::path::PathBuf {
    write_tiny_llama(dir, spec, GgmlType::Q4_1, 9)
}

/// Largest |a − b| relative to the largest |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The subject ends the prompt, so `δ` (written at the subject's last token) sits at the
/// position that predicts the answer: a random 2-block model has no learned attention to carry
/// it from an earlier position, as a trained model's does.
const FACT: &str = r#"{"case_id":"capital:FR","subject":"France","prompt":"The capital of France","target_new":"Rome","ground_truth":"Paris"}"#;

/// Text for the key statistics: the project's README (every clone has it).
fn corpus() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

fn last_logits(model: &Llama, ids: &[u32], adapter: Option<&dyn LinearAdapter>) -> Vec<f32> {
    model
        .forward(ids, 1, None, adapter, Logits::Last)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// One ROME edit on `model`: the rank-one factors `(r, a)`, the top-1 after the prompt before
/// and after the edit, and whether undo restored the logits bit for bit.
fn rome(model: &Llama, cache: &std::path::Path) -> (Vec<f32>, Vec<f32>, u32, u32, bool) {
    let tok = byte_tokenizer();
    let config = EditorConfig {
        rome_layer: 0,
        memit_layers: vec![0, 1],
        grace_layer: 1,
        stats_tokens: 1024,
        // As in tests/rome.rs: on this random 2-block model the sampled contexts are noise that
        // moves the layer-0 keys, and ROME's key is now the context average (r-ROME), so the
        // plain prompt alone (`k*` = its key, which the edit maps exactly) and a larger `δ`.
        contexts: (0, 6),
        target: TargetHparams {
            steps: 100,
            clamp: 50.0,
            stop_prob: 0.9,
            ..EditorConfig::default().target
        },
        ..EditorConfig::default()
    };
    let mut editor = Editor::new(model, &tok, "tiny-bytes", config);
    editor
        .load_stats_for(&[Method::Rome], &corpus(), cache)
        .unwrap();
    let req = parse_jsonl(FACT).unwrap();
    let ids = tok.encode(&req[0].prompt, false);
    let base = last_logits(model, &ids, None);
    let applied = editor.apply(Method::Rome, &req).unwrap();
    let (r, a) = match &editor.edits()[0].delta {
        EditDelta::Weights(terms) => (terms[0].r.clone(), terms[0].a.clone()),
        _ => unreachable!("ROME writes weights"),
    };
    let edited = last_logits(model, &ids, Some(editor.adapter()));
    editor.undo(applied[0].id).unwrap();
    let undone = last_logits(model, &ids, Some(editor.adapter()));
    let exact = undone
        .iter()
        .zip(&base)
        .all(|(u, b)| u.to_bits() == b.to_bits());
    let argmax = engram_runtime::generate::argmax;
    (r, a, argmax(&base), argmax(&edited), exact)
}

/// A ROME edit on the GPU: key statistics, the `δ` optimization and the rank-one solve run
/// with the model on wgpu, write the same factors as on the CPU, flip the prompt's answer to
/// the new target's first token, and undo exactly.
#[test]
fn rome_edit_on_wgpu_matches_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinyLlamaSpec {
        n_vocab: BYTE_VOCAB,
        n_ctx: 128,
        ..TinyLlamaSpec::default()
    };
    let path = write_tiny(dir.path(), &spec);
    let (cpu_dir, gpu_dir) = (dir.path().join("cpu"), dir.path().join("gpu"));
    let (r_cpu, a_cpu, base_cpu, _, _) = rome(&load(&path, &backend::cpu()), &cpu_dir);
    let t = std::time::Instant::now();
    let (r_gpu, a_gpu, base_gpu, edited_gpu, exact) = rome(&load(&path, &wgpu()), &gpu_dir);
    let (err_r, err_a) = (rel_err(&r_gpu, &r_cpu), rel_err(&a_gpu, &a_cpu));
    eprintln!(
        "ROME on wgpu: {:.1?}; top-1 {base_gpu} → {edited_gpu}; wgpu vs CPU: r rel err \
         {err_r:.2e}, a rel err {err_a:.2e}",
        t.elapsed()
    );
    let target_first = byte_tokenizer().encode(" Rome", false)[0];
    assert_eq!(base_gpu, base_cpu, "same base answer");
    assert_ne!(
        base_gpu, target_first,
        "the base does not already answer the target"
    );
    assert_eq!(edited_gpu, target_first, "the GPU edit flips the answer");
    assert!(exact, "undo on the GPU restores the logits bit for bit");
    assert!(err_r <= ROME_REL_TOL, "r differs by {err_r}");
    assert!(err_a <= ROME_REL_TOL, "a differs by {err_a}");
}

//! The real base model (SmolLM2-135M-Instruct Q4_1), found or fetched by `resolve_model`. If it
//! cannot be resolved the test fails with the reason: nothing is skipped silently.

use std::time::Instant;

use engram_harness::fetch::{self, MODEL_SIZE};
use engram_kernels::GgmlType;
use engram_runtime::format::Gguf;
use engram_runtime::model_file::ModelFile;

fn model() -> ModelFile {
    let path = fetch::resolve_model(None).unwrap_or_else(|e| panic!("no model: {e}"));
    ModelFile::open(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn smollm2_table_and_metadata() {
    let m = model();
    let g = m.gguf();
    assert_eq!(m.bytes().len() as u64, MODEL_SIZE);
    assert_eq!(g.tensors().len(), 272);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(
        g.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49_152
    );
    assert!(g.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap() > 0.0);

    let emb = g.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ty, emb.dims.as_slice()),
        (GgmlType::Q8_0, &[576, 49_152][..])
    );
    let q = g.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.ty, GgmlType::Q4_1);
    assert_eq!(q.n_bytes, q.n_elements() / 32 * 20);

    let mut covered = 0;
    for t in g.tensors() {
        let r = t.byte_range();
        assert!(
            r.start >= g.data_offset() && r.end <= m.bytes().len(),
            "{}",
            t.name
        );
        assert_eq!((r.start - g.data_offset()) % g.alignment(), 0, "{}", t.name);
        covered += t.n_bytes;
    }
    assert!(covered <= m.bytes().len() - g.data_offset());

    let view = m.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(view.bytes().len(), q.n_bytes);
    assert_eq!(view.dims(), [576, 576]);
    let moved = std::thread::spawn(move || (view.name().to_owned(), view.ty()))
        .join()
        .unwrap();
    assert_eq!(moved, ("blk.0.attn_q.weight".to_owned(), GgmlType::Q4_1));
    assert!(m.tensor("no.such.tensor").is_err());
}

#[test]
fn smollm2_summary_prints() {
    let m = model();
    let s = m.summary();
    assert_eq!(s.tensors.len(), 272);
    assert_eq!(
        s.tensor_bytes,
        s.by_type.iter().map(|t| t.n_bytes).sum::<usize>()
    );
    // 30 layers x 3 KV heads x 64 head dim x 2 (K,V) x 4 bytes x 8192 tokens.
    assert_eq!(s.context_length, Some(8192));
    assert_eq!(s.kv_cache_bytes, Some(30 * 3 * 64 * 2 * 4 * 8192));
    let text = s.to_string();
    assert!(
        text.contains("token_embd.weight") && text.contains("q4_1"),
        "{text}"
    );
    assert!(text.contains("(49148 more)"), "{text}");
}

#[test]
fn smollm2_parses_quickly() {
    let m = model();
    let start = Instant::now();
    let g = Gguf::parse(m.bytes()).unwrap();
    let took = start.elapsed();
    assert_eq!(g.tensors().len(), 272);
    // Release target is well under 100 ms; debug builds of tests get slack.
    let limit_ms = if cfg!(debug_assertions) { 2000 } else { 100 };
    assert!(took.as_millis() < limit_ms, "parse took {took:?}");
}

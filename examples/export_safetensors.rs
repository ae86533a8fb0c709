//! Writes a Hugging Face checkpoint (`config.json`, `tokenizer.json`, `tokenizer_config.json`,
//! safetensors weights) from a GGUF model: every tensor dequantized to F32 (or rounded to F16 /
//! BF16), renamed to Hugging Face's names, a llama model's q/k rows back in Hugging Face's order.
//! `engram ... --model OUT_DIR` then runs it directly.
//!
//! ```text
//! cargo run --release --example export_safetensors -- [MODEL.gguf] OUT_DIR [f32|f16|bf16] [SHARDS]
//! ```
//! MODEL defaults to `$ENGRAM_MODEL` / the cached SmolLM2 (`engram model-path`).

use std::path::PathBuf;

use engram::harness::fetch::resolve_model;
use engram::kernels::GgmlType;
use engram::runtime::checkpoint::export::write_checkpoint;
use engram::runtime::model_file::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: export_safetensors [MODEL.gguf] OUT_DIR [f32|f16|bf16] [SHARDS]";
    let (model, rest) = match args.first() {
        Some(a) if a.ends_with(".gguf") => (PathBuf::from(a), &args[1..]),
        Some(_) => (resolve_model(None)?, &args[..]),
        None => return Err(usage.into()),
    };
    let out = PathBuf::from(rest.first().ok_or(usage)?);
    let dtype = match rest.get(1).map(String::as_str).unwrap_or("f32") {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        _ => return Err(usage.into()),
    };
    let shards = match rest.get(2) {
        Some(n) => n.parse()?,
        None => 1,
    };
    let file = ModelFile::open(&model)?;
    write_checkpoint(&file, &out, dtype, shards)?;
    println!(
        "{} -> {} ({} tensors, {}, {shards} shard(s))",
        model.display(),
        out.display(),
        file.gguf().tensors().len(),
        dtype.name()
    );
    Ok(())
}

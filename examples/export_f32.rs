//! Writes a GGUF model with every tensor dequantized to F32, metadata kept (`general.file_type`
//! set to 0, all F32): the input llama.cpp's quantizer takes to make the other quant types of
//! the same weights (`scripts/kquant_reference.py`).
//!
//! ```text
//! cargo run --release --example export_f32 -- [MODEL.gguf] OUT.gguf
//! ```
//! MODEL defaults to `$ENGRAM_MODEL` / the cached SmolLM2 (`engram model-path`).

use std::path::PathBuf;

use engram::harness::fetch::resolve_model;
use engram::runtime::checkpoint::export::write_f32_gguf;
use engram::runtime::model_file::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (model, out) = match args.as_slice() {
        [out] => (resolve_model(None)?, out.clone()),
        [model, out] => (model.clone(), out.clone()),
        _ => return Err("usage: export_f32 [MODEL.gguf] OUT.gguf".into()),
    };
    let file = ModelFile::open(&model)?;
    let bytes = write_f32_gguf(&file, &out)?;
    println!(
        "{} -> {} ({} tensors, {bytes} bytes, all F32)",
        model.display(),
        out.display(),
        file.gguf().tensors().len(),
    );
    Ok(())
}

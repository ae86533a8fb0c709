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
use engram::kernels::{GgmlType, dequantize_row};
use engram::runtime::format::{GgufBuilder, MetaValue};
use engram::runtime::io::write_bytes_atomic;
use engram::runtime::model_file::ModelFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (model, out) = match args.as_slice() {
        [out] => (resolve_model(None)?, out.clone()),
        [model, out] => (model.clone(), out.clone()),
        _ => return Err("usage: export_f32 [MODEL.gguf] OUT.gguf".into()),
    };
    let file = ModelFile::open(&model)?;
    let gguf = file.gguf();
    let mut b = GgufBuilder::new().alignment(gguf.alignment() as u32);
    for (key, value) in gguf.metadata() {
        let value = match key.as_str() {
            "general.file_type" => MetaValue::U32(0),
            _ => value.clone(),
        };
        b = b.metadata(key.clone(), value);
    }
    for info in gguf.tensors() {
        let raw = &file.bytes()[info.byte_range()];
        let mut values = vec![0.0f32; info.n_elements()];
        for (src, dst) in raw
            .chunks_exact(info.ty.row_bytes(info.row_len()).expect("checked at load"))
            .zip(values.chunks_exact_mut(info.row_len()))
        {
            dequantize_row(info.ty, src, dst);
        }
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        b = b.tensor(info.name.clone(), &info.dims, GgmlType::F32, &le);
    }
    let bytes = b.build();
    write_bytes_atomic(&out, &bytes)?;
    println!(
        "{} -> {} ({} tensors, {} bytes, all F32)",
        model.display(),
        out.display(),
        gguf.tensors().len(),
        bytes.len()
    );
    Ok(())
}

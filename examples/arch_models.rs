//! Writes the seeded tiny GGUF models of every family the graph runs
//! (`engram::harness::synthetic_arch`) and of every tokenizer kind
//! (`engram::harness::synthetic_vocab`, as `vocab_{case}.gguf`), one file per case, and the
//! texts the tokenizer parity test compares (`tokenizer_texts.json`, so the script reads them
//! from here instead of keeping a copy), for `scripts/arch_reference.py` to run llama.cpp on.
//!
//! ```text
//! cargo run --example arch_models -- OUT_DIR
//! ```

use std::path::PathBuf;

use engram::harness::synthetic_arch::{ARCH_CASES, ARCH_SEED, QUANT_CASES, arch_gguf, case_key};
use engram::harness::synthetic_vocab::{TOKENIZER_TEXTS, VOCAB_CASES, vocab_gguf};
use engram::kernels::GgmlType;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: arch_models OUT_DIR")?;
    std::fs::create_dir_all(&dir)?;
    let f32 = ARCH_CASES.map(|c| (c, GgmlType::F32));
    for (case, ty) in f32.into_iter().chain(QUANT_CASES) {
        let path = dir.join(format!("{}.gguf", case_key(case, ty)));
        std::fs::write(&path, arch_gguf(case, ty, ARCH_SEED))?;
        println!("{}", path.display());
    }
    for case in VOCAB_CASES {
        let path = dir.join(format!("vocab_{}.gguf", case.name()));
        std::fs::write(&path, vocab_gguf(case))?;
        println!("{}", path.display());
    }
    let path = dir.join("tokenizer_texts.json");
    std::fs::write(&path, serde_json::to_string_pretty(&TOKENIZER_TEXTS)?)?;
    println!("{}", path.display());
    Ok(())
}

//! Fuzzes `Gguf::parse`: any input must give `Ok` or a typed error, never a panic, an
//! out-of-bounds read or an allocation beyond the input's size. When a file parses, every tensor
//! it describes must lie inside the input with a size matching its type and dimensions.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The same source file engram-runtime compiles as `engram_runtime::format`.
#[allow(dead_code, unused_imports, missing_docs)]
#[path = "../../runtime/src/format/mod.rs"]
mod format;

use format::Gguf;

fuzz_target!(|data: &[u8]| {
    match Gguf::parse(data) {
        Ok(g) => {
            for t in g.tensors() {
                let range = t.byte_range();
                assert!(range.end <= data.len());
                let row = t.ty.row_bytes(t.row_len()).expect("checked at parse");
                assert_eq!(row * t.n_rows(), t.n_bytes);
                assert!(g.tensor(&t.name).is_some());
            }
            for (k, _) in g.metadata() {
                assert!(g.get(k).is_some());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});

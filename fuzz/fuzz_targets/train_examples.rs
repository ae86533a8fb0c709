//! Fuzzes `engram train`'s example reader: every line through `parse_example_line` (serde
//! types, non-empty prompt and completion, bounded sizes), as the CLI's `read_jsonl` does.
//! Never a panic; every example that passes is well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../adapters/src/trainer/example.rs"]
mod example;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(Some(ex)) = example::parse_example_line(line) {
            assert!(ex.check().is_ok());
            assert!(!ex.prompt.is_empty() && !ex.completion.is_empty());
        }
    }
});

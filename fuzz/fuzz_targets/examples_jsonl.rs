//! Fuzzes the examples reader `engram learn` / `engram eval` use (and stdin streaming): every
//! line through `parse_line` (fields and types, non-empty, bounded, `deny_unknown_fields`), as
//! `load_jsonl_numbered` does. Never a panic; every example that passes is well formed.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../learn/src/live/example.rs"]
mod example;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (i, line) in text.lines().enumerate() {
        match example::parse_line(line, Path::new("fuzz.jsonl"), i + 1) {
            Ok(Some(x)) => assert!(x.check().is_ok()),
            Ok(None) => assert!(line.trim().is_empty()),
            Err(e) => assert!(e.to_string().starts_with("fuzz.jsonl:")),
        }
    }
});

//! Fuzzes the edit-request JSONL reader `engram edit --facts` uses: `parse_jsonl_numbered` (every
//! line checked: subject in prompt, non-empty prompts and target, bounded sizes) and
//! `check_all_fit` against a 64-token context with one token a byte. Never a panic; what passes
//! is non-empty and bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../edit/src/request.rs"]
mod request;

fuzz_target!(|data: &[u8]| {
    // The CLI reads the file with `read_to_string`: invalid UTF-8 is an I/O error before this.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reqs) = request::parse_jsonl_numbered(text) else {
        return;
    };
    assert!(!reqs.is_empty());
    for (line, r) in &reqs {
        assert!(*line >= 1 && !r.target_new.trim().is_empty());
        assert!(r.prompt.len() <= request::MAX_PROMPT_BYTES);
    }
    if request::check_all_fit(&reqs, str::len, 64).is_ok() {
        for (_, r) in &reqs {
            assert!(r.prompt.len() + r.target_new.len() < 64);
        }
    }
});

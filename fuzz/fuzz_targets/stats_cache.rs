//! Fuzzes the key-statistics cache reader as `Editor::load_stats` runs it: the envelope
//! (`envelope::open`), then `stats_cache::decode` (header length, JSON key, `dim²` values) for
//! a fixed key; the editor then refuses a `dim` other than the model's. The first byte picks
//! the input's meaning: odd, a whole file; even, a payload sealed in a valid envelope first.
//! Never a panic, never an allocation from an unchecked size.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/atomic.rs"]
mod atomic;
#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/envelope.rs"]
mod envelope;
#[allow(dead_code, missing_docs)]
#[path = "../../edit/src/stats_cache.rs"]
mod stats_cache;

use stats_cache::{MAGIC, StatsKey, VERSION};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealed;
    let file = if mode % 2 == 1 {
        rest
    } else {
        sealed = envelope::seal(MAGIC, VERSION, rest);
        &sealed
    };
    let Ok((_, body)) = envelope::open(file, MAGIC, &[VERSION]) else {
        return;
    };
    let key = StatsKey {
        model: "tiny".into(),
        corpus: 0,
        max_tokens: 0,
        layer: 0,
    };
    if let Some(s) = stats_cache::decode(body, &key) {
        assert_eq!(s.mom2.len(), s.dim * s.dim);
    }
});

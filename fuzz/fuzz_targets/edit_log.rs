//! Fuzzes the edit log's decoding as `Editor::open_log` runs it: the envelope
//! (`envelope::open`: magic, version, length, CRC-32), the JSON payload
//! (`LogContents::decode`) and every edit's shape against a tiny model (`Edit::check_shape`:
//! 2 blocks, width 64, MLP 96). The first byte picks the input's meaning: odd, a whole file;
//! even, a payload sealed in a valid envelope first (so the fuzzer reaches the JSON without
//! having to forge CRCs). Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/atomic.rs"]
mod atomic;
#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/envelope.rs"]
mod envelope;
#[allow(dead_code, missing_docs)]
#[path = "../../edit/src/record.rs"]
mod record;
#[allow(dead_code, missing_docs)]
#[path = "../../edit/src/request.rs"]
mod request;

/// `edit/src/log.rs`'s `MAGIC` and `READS`.
const MAGIC: &[u8; 8] = b"ENGEDLOG";
const READS: &[u32] = &[2, 3, 4];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealed;
    let file = if mode % 2 == 1 {
        rest
    } else {
        sealed = envelope::seal(MAGIC, 3, rest);
        &sealed
    };
    let Ok((_, body)) = envelope::open(file, MAGIC, READS) else {
        return;
    };
    let Ok(log) = record::LogContents::decode(body) else {
        return;
    };
    for e in &log.edits {
        let _ = e.check_shape(2, 64, 96);
    }
});

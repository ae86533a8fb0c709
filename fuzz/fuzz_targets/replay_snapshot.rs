//! Fuzzes the replay snapshot reader (`persist::from_bytes`): the envelope, then every field of
//! the payload through the bounds-checked codec, then `ReplayBuffer::from_parts`, which
//! rejects any state no writer produces. The learning state's files use the same envelope and
//! codec. The first byte picks the input's meaning: odd, a whole file; even, a payload sealed
//! in a valid envelope first. Never a panic, never an allocation from an unchecked count.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/atomic.rs"]
mod atomic;
#[allow(dead_code, missing_docs)]
#[path = "../../learn/src/buffer.rs"]
mod buffer;
#[allow(dead_code, missing_docs)]
#[path = "../../learn/src/codec.rs"]
mod codec;
#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/envelope.rs"]
mod envelope;
#[allow(dead_code, missing_docs)]
#[path = "../../runtime/src/io/lock.rs"]
mod lock;
#[allow(dead_code, missing_docs)]
#[path = "../../learn/src/persist.rs"]
mod persist;

use atomic::remove_stale_temps;
use lock::{LockError, WriterLock};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let sealed;
    let file = if mode % 2 == 1 {
        rest
    } else {
        sealed = envelope::seal(persist::MAGIC, persist::VERSION, rest);
        &sealed
    };
    if let Ok(buf) = persist::from_bytes(file) {
        assert!(buf.len() <= buf.capacity());
    }
});

//! Crash-safe replay-buffer snapshots: one envelope (`engram_runtime::io::envelope`) file
//! (magic `ENGRAMRB`, version, length, CRC-32) written atomically.
//!
//! Payload layout (little-endian), version 2:
//!
//! | bytes | field |
//! |---|---|
//! | 4 × 3 | capacity, dim, n_logits |
//! | 1 + 1 + 4 | retention (0 reservoir, 1 class-balanced), sampling (0 uniform, 1 power-law, 2 recall-interval), sampling parameter (f32 alpha bits or u32 interval) |
//! | 8 × 3 | rng state, items seen, replay clock |
//! | 4 + n × 12 | label count, then (label u32, seen u64) |
//! | 4 + n × (28 + 4·dim + 4·n_logits) | slot count, then per slot: label u32, task u32, seen_at u64, last_replay u64, replays u32, inputs, logits |
//!
//! The envelope is checked (length, magic, version, checksum) before any field is trusted;
//! then every count is bounded by the capacity, so a truncated, corrupt or crafted file is a
//! typed error. Offsets in [`SnapshotError::Truncated`] are payload offsets (add
//! [`envelope::HEADER_LEN`] for the file's).

use std::path::Path;

use super::envelope::{self, Corruption, EnvelopeError};
use super::{LockError, WriterLock};
use engram_kernels::replay::{CoreState, Policy, RestoreError, Retention, Sampling, SlotMeta};

use super::buffer::{MAX_CAPACITY, Parts, ReplayBuffer, check_size};
use super::codec::{Reader, Short, Writer};

/// The envelope's magic.
pub const MAGIC: &[u8; 8] = b"ENGRAMRB";
/// The one version this build reads and writes (1 was the pre-envelope layout).
pub const VERSION: u32 = 2;

/// Why a snapshot could not be read or written; a failed save leaves the old file in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file failed, or its envelope is damaged (names the file).
    #[error(transparent)]
    File(#[from] EnvelopeError),
    /// Another writer holds the snapshot's lock, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The bytes' envelope is damaged, foreign or of an unknown version.
    #[error("replay snapshot: {0}")]
    Envelope(#[from] Corruption),
    /// The payload ends before a field.
    #[error("replay snapshot truncated: {0}")]
    Truncated(#[from] Short),
    /// A field holds a value no writer produces.
    #[error("replay snapshot corrupt: {0}")]
    Corrupt(String),
}

/// Serializes `buf` to a sealed snapshot (the format above).
pub fn to_bytes(buf: &ReplayBuffer) -> Vec<u8> {
    envelope::seal(MAGIC, VERSION, &payload(buf))
}

fn payload(buf: &ReplayBuffer) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        64 + buf.len() * (28 + 4 * (buf.dim() + buf.n_logits())) + 12 * buf.classes().len(),
    ));
    write_payload(&mut w, buf);
    w.0
}

/// Appends `buf`'s payload (the format above) to `w`: for containers that hold a replay
/// buffer inside a payload of their own.
pub fn write_payload(w: &mut Writer, buf: &ReplayBuffer) {
    for v in [buf.capacity(), buf.dim(), buf.n_logits()] {
        w.len(v);
    }
    let policy = buf.policy();
    w.0.push(match policy.retention {
        Retention::Reservoir => 0,
        Retention::ClassBalanced => 1,
    });
    let (kind, param) = match policy.sampling {
        Sampling::Uniform => (0u8, 0u32),
        Sampling::PowerLawRecency { alpha } => (1, alpha.to_bits()),
        Sampling::RecallInterval { interval } => (2, interval),
    };
    w.0.push(kind);
    w.u32(param);
    let s = buf.state();
    for v in [s.rng, s.seen, s.step] {
        w.u64(v);
    }
    w.len(buf.classes().len());
    for c in buf.classes() {
        w.u32(c.label);
        w.u64(c.seen);
    }
    w.len(buf.len());
    for (i, m) in buf.metas().iter().enumerate() {
        w.u32(m.label);
        w.u32(m.task);
        w.u64(m.seen_at);
        w.u64(m.last_replay);
        w.u32(m.replays);
        w.f32s(buf.row(i));
        w.f32s(buf.logit_row(i));
    }
}

/// Parses a sealed snapshot.
pub fn from_bytes(bytes: &[u8]) -> Result<ReplayBuffer, SnapshotError> {
    let (_, body) = envelope::open(bytes, MAGIC, &[VERSION])?;
    from_payload(body)
}

fn from_payload(body: &[u8]) -> Result<ReplayBuffer, SnapshotError> {
    let mut r = Reader::new(body);
    let buf = read_payload(&mut r)?;
    if r.remaining() != 0 {
        return Err(SnapshotError::Corrupt(format!(
            "{} trailing bytes",
            r.remaining()
        )));
    }
    Ok(buf)
}

/// Reads a payload written by [`write_payload`] from `r`, leaving `r` after it.
pub fn read_payload(r: &mut Reader) -> Result<ReplayBuffer, SnapshotError> {
    let capacity = r.u32("capacity")? as usize;
    let dim = r.u32("dim")? as usize;
    let n_logits = r.u32("n_logits")? as usize;
    check_size(capacity, dim, n_logits).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
    let retention = match r.take("retention", 1)?[0] {
        0 => Retention::Reservoir,
        1 => Retention::ClassBalanced,
        k => return Err(SnapshotError::Corrupt(format!("retention kind {k}"))),
    };
    let kind = r.take("sampling", 1)?[0];
    let param = r.u32("sampling parameter")?;
    let sampling = match kind {
        0 => Sampling::Uniform,
        1 => Sampling::PowerLawRecency {
            alpha: f32::from_bits(param),
        },
        2 => Sampling::RecallInterval { interval: param },
        k => return Err(SnapshotError::Corrupt(format!("sampling kind {k}"))),
    };
    let state = CoreState {
        rng: r.u64("rng")?,
        seen: r.u64("seen")?,
        step: r.u64("step")?,
    };
    let n_classes = r.u32("label count")? as usize;
    if n_classes > engram_kernels::replay::MAX_CLASSES {
        return Err(SnapshotError::Corrupt(format!("{n_classes} labels")));
    }
    let mut class_seen = Vec::with_capacity(n_classes);
    for _ in 0..n_classes {
        class_seen.push((r.u32("label")?, r.u64("label seen")?));
    }
    let n_slots = r.u32("slot count")? as usize;
    if n_slots > capacity.min(MAX_CAPACITY) {
        return Err(SnapshotError::Corrupt(format!(
            "{n_slots} slots in a buffer of {capacity}"
        )));
    }
    let mut metas = Vec::with_capacity(n_slots);
    let mut rows = Vec::with_capacity(n_slots * dim);
    let mut logit_rows = Vec::with_capacity(n_slots * n_logits);
    for _ in 0..n_slots {
        metas.push(SlotMeta {
            label: r.u32("slot label")?,
            task: r.u32("slot task")?,
            seen_at: r.u64("slot seen_at")?,
            last_replay: r.u64("slot last_replay")?,
            replays: r.u32("slot replays")?,
        });
        r.f32s("slot inputs", dim, &mut rows)?;
        r.f32s("slot logits", n_logits, &mut logit_rows)?;
    }
    let parts = Parts {
        capacity,
        dim,
        n_logits,
        policy: Policy {
            retention,
            sampling,
        },
        state,
        class_seen,
        metas,
        rows,
        logit_rows,
    };
    ReplayBuffer::from_parts(parts).map_err(|e: RestoreError| {
        SnapshotError::Corrupt(format!("inconsistent buffer state: {e:?}"))
    })
}

/// Writes `buf` to `path` atomically (temp file, fsync, rename): a crash leaves the old
/// snapshot or the new one, never a torn file.
pub fn save(buf: &ReplayBuffer, path: &Path) -> Result<(), SnapshotError> {
    let _lock = WriterLock::for_replace(path)?;
    Ok(envelope::write_file(path, MAGIC, VERSION, &payload(buf))?)
}

/// Reads a snapshot written by [`save`].
pub fn load(path: &Path) -> Result<ReplayBuffer, SnapshotError> {
    from_payload(envelope::read_file(path, MAGIC, &[VERSION])?.payload())
}

//! Snapshot round trips and every way a snapshot file can be wrong.

use engram_kernels::replay::{Policy, Retention, Sampling};

use super::buffer::ReplayBuffer;
use super::persist::{self, SnapshotError};
use engram_runtime::io::Corruption;

fn buffer() -> ReplayBuffer {
    let policy = Policy {
        retention: Retention::ClassBalanced,
        sampling: Sampling::PowerLawRecency { alpha: 0.7 },
    };
    let mut b = ReplayBuffer::new(8, 3, 2, policy, 9).unwrap();
    for i in 0..40u32 {
        let x = [i as f32, -(i as f32), 0.5];
        let _ = b.insert(&x, i % 3, i / 10, Some(&[1.0, i as f32])).unwrap();
        if i % 7 == 0 {
            b.sample(3);
        }
    }
    b
}

#[test]
fn a_saved_buffer_loads_identical_and_draws_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.bin");
    let mut a = buffer();
    persist::save(&a, &path).unwrap();
    let mut b = persist::load(&path).unwrap();
    assert_eq!(a, b);
    for _ in 0..5 {
        assert_eq!(a.sample(4), b.sample(4));
    }
}

#[test]
fn every_truncation_and_every_flipped_byte_is_a_typed_error() {
    let bytes = persist::to_bytes(&buffer());
    for len in 0..bytes.len() {
        assert!(persist::from_bytes(&bytes[..len]).is_err(), "length {len}");
    }
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(persist::from_bytes(&bad).is_err(), "byte {i}");
    }
    let mut bad = bytes.clone();
    bad[20] ^= 1;
    assert!(matches!(
        persist::from_bytes(&bad),
        Err(SnapshotError::Envelope(Corruption::ChecksumMismatch { .. }))
    ));
}

#[test]
fn magic_and_version_are_checked_first() {
    let mut bytes = persist::to_bytes(&buffer());
    bytes[8] = 3;
    assert!(matches!(
        persist::from_bytes(&bytes),
        Err(SnapshotError::Envelope(Corruption::UnknownVersion {
            found: 3,
            ..
        }))
    ));
    bytes[0] = b'X';
    assert!(matches!(
        persist::from_bytes(&bytes),
        Err(SnapshotError::Envelope(Corruption::BadMagic { .. }))
    ));
}

#[test]
fn a_checksummed_but_inconsistent_file_is_refused() {
    // Claim more slots than the capacity, then fix the checksum up: the bound still catches it.
    let b = ReplayBuffer::new(2, 1, 0, Policy::default(), 0).unwrap();
    let mut bytes = persist::to_bytes(&b);
    let n = bytes.len();
    let slots_at = n - 8;
    bytes[slots_at..slots_at + 4].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        persist::from_bytes(&bytes),
        Err(SnapshotError::Corrupt(_))
    ));
}

#[test]
fn a_failed_save_keeps_the_previous_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.bin");
    let a = buffer();
    persist::save(&a, &path).unwrap();
    // A directory in place of the parent makes the write fail.
    let bad = dir.path().join("replay.bin").join("child.bin");
    assert!(persist::save(&a, &bad).is_err());
    assert_eq!(persist::load(&path).unwrap(), a);
}

#[test]
fn bad_rows_are_refused_and_change_nothing() {
    use super::buffer::BufferError;
    let mut b = buffer();
    let before = b.clone();
    assert!(matches!(
        b.insert(&[1.0, 2.0], 0, 0, Some(&[0.0, 0.0])),
        Err(BufferError::Shape { what: "input", .. })
    ));
    assert!(matches!(
        b.insert(&[1.0, 2.0, f32::NAN], 0, 0, Some(&[0.0, 0.0])),
        Err(BufferError::NonFinite { what: "input" })
    ));
    assert!(matches!(
        b.insert(&[1.0, 2.0, 3.0], 0, 0, None),
        Err(BufferError::Shape { what: "logits", .. })
    ));
    assert_eq!(b, before);
    assert!(matches!(
        ReplayBuffer::new(0, 3, 0, Policy::default(), 0),
        Err(BufferError::BadSize { .. })
    ));
}

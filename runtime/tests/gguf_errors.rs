//! Every way a GGUF file can be malformed, built in code: each gives its own error variant with
//! the right offset and key/tensor name, and none panics.

use engram_kernels::GgmlType;
use engram_runtime::format::gguf::{MAX_DIM, MAX_TENSOR_NAME_LEN};
use engram_runtime::format::gguf_writer::RawTensor;
use engram_runtime::format::{Gguf, GgufBuilder, GgufError, MetaValue};

/// Bytes before the first metadata entry: magic, version, tensor count, metadata count.
const HEADER: usize = 24;

fn raw(name: &str, dims: &[u64], type_id: u32, data: Vec<u8>, offset: Option<u64>) -> RawTensor {
    RawTensor {
        name: name.to_owned(),
        dims: dims.to_vec(),
        type_id,
        data,
        offset_override: offset,
    }
}

fn f32_tensor(b: GgufBuilder, name: &str, n: usize) -> GgufBuilder {
    b.tensor(name, &[n], GgmlType::F32, &vec![0u8; 4 * n])
}

/// With no metadata, the first tensor's info starts right after the header; for a one-letter
/// name its n_dims field is at 33, its dims at 37.
const FIRST_INFO: usize = HEADER;
const FIRST_N_DIMS: usize = HEADER + 9;
const FIRST_DIMS: usize = HEADER + 13;

fn err(bytes: &[u8]) -> GgufError {
    match Gguf::parse(bytes) {
        Ok(g) => panic!("parsed a malformed file: {g:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_magic() {
    let mut bytes = GgufBuilder::new().build();
    bytes[..4].copy_from_slice(b"GGML");
    assert_eq!(err(&bytes), GgufError::BadMagic { found: *b"GGML" });
}

#[test]
fn version_1_and_4_are_refused() {
    for version in [0, 1, 4, 0x0300_0000] {
        let bytes = GgufBuilder::new().version(version).build();
        assert_eq!(err(&bytes), GgufError::UnsupportedVersion { version });
    }
}

#[test]
fn version_2_parses() {
    let bytes = f32_tensor(GgufBuilder::new().version(2), "w", 8).build();
    assert_eq!(Gguf::parse(&bytes).unwrap().version(), 2);
}

#[test]
fn truncated_header() {
    let bytes = GgufBuilder::new().build();
    match err(&bytes[..10]) {
        GgufError::Truncated {
            offset: 8,
            needed: 8,
            available: 2,
            what,
        } => {
            assert_eq!(what, "tensor count")
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_metadata_names_the_key() {
    let bytes = GgufBuilder::new()
        .metadata("general.name", MetaValue::Str("hello world".into()))
        .build();
    // Key string: 24..44, type 44..48, value length 48..56, value 56..67, padding to 96.
    assert_eq!(bytes.len(), 96);
    match err(&bytes[..60]) {
        GgufError::Truncated {
            offset: 56, what, ..
        } => {
            assert!(what.contains("\"general.name\""), "{what}")
        }
        e => panic!("{e:?}"),
    }
    match err(&bytes[..40]) {
        GgufError::Truncated {
            offset: 32, what, ..
        } => {
            assert!(what.contains("key of metadata entry 0"), "{what}")
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_tensor_table_names_the_tensor() {
    let name = "blk.0.attn_q.weight";
    let bytes = f32_tensor(GgufBuilder::new(), name, 8).build();
    // Name 24..51, n_dims 51..55, dim 55..63, type 63..67, offset 67..75. (The tensor count is
    // checked against 32 bytes a tensor first, so the cut must come after byte 56.)
    match err(&bytes[..65]) {
        GgufError::Truncated {
            offset: 63, what, ..
        } => assert!(what.contains(name), "{what}"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_data() {
    let bytes = f32_tensor(GgufBuilder::new(), "w", 8).build();
    let len = bytes.len();
    match err(&bytes[..len - 1]) {
        GgufError::TensorOutOfBounds {
            tensor,
            start: 64,
            end: 96,
            file_len,
        } => {
            assert_eq!((tensor.as_str(), file_len), ("w", len - 1))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn absurd_counts() {
    let mut bytes = GgufBuilder::new().build();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        err(&bytes),
        GgufError::CountTooLarge {
            offset: 16,
            count: u64::MAX,
            ..
        }
    ));

    let mut bytes = GgufBuilder::new().build();
    bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        err(&bytes),
        GgufError::CountTooLarge {
            offset: 8,
            count: 0x100_0000_0000,
            max: 0,
            ..
        }
    ));

    // An array claiming 2^60 u32 elements: refused before allocating.
    let mut bytes = GgufBuilder::new()
        .metadata("a", MetaValue::Array(vec![MetaValue::U32(1)]))
        .build();
    // key 24..33, type 33..37, elem type 37..41, count 41..49; 15 bytes follow (one u32 and
    // padding), so at most 3 elements could be there.
    bytes[41..49].copy_from_slice(&(1u64 << 60).to_le_bytes());
    match err(&bytes) {
        GgufError::CountTooLarge {
            offset: 41,
            what,
            count,
            max: 3,
        } => {
            assert!(what.contains("\"a\""), "{what}");
            assert_eq!(count, 1 << 60);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn strings_too_long() {
    let mut bytes = GgufBuilder::new()
        .metadata("k", MetaValue::Str("v".into()))
        .build();
    bytes[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(
        err(&bytes),
        GgufError::StringTooLong {
            offset: 24,
            len: 0x100_0000_0000,
            ..
        }
    ));

    let name = "n".repeat(MAX_TENSOR_NAME_LEN + 1);
    let bytes = f32_tensor(GgufBuilder::new(), &name, 8).build();
    match err(&bytes) {
        GgufError::StringTooLong {
            offset: FIRST_INFO,
            len: 64,
            max: 63,
            what,
        } => {
            assert!(what.contains("tensor 0"), "{what}")
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn invalid_utf8() {
    let mut bytes = GgufBuilder::new()
        .metadata("k", MetaValue::Str("v".into()))
        .build();
    // key 24..33, type 33..37, length 37..45, "v" at 45.
    bytes[45] = 0xff;
    match err(&bytes) {
        GgufError::InvalidUtf8 { offset, what } => {
            assert_eq!(offset, 45);
            assert!(what.contains("\"k\""), "{what}");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn unknown_value_type() {
    let mut bytes = GgufBuilder::new().metadata("k", MetaValue::U8(1)).build();
    bytes[33..37].copy_from_slice(&13u32.to_le_bytes());
    assert_eq!(
        err(&bytes),
        GgufError::UnknownValueType {
            offset: 33,
            key: "k".into(),
            type_id: 13
        }
    );
}

#[test]
fn bad_bool() {
    let mut bytes = GgufBuilder::new()
        .metadata("k", MetaValue::Bool(true))
        .build();
    bytes[37] = 2;
    assert!(matches!(err(&bytes), GgufError::WrongType { key, .. } if key == "k"));
}

#[test]
fn arrays_nested_too_deep() {
    let mut v = MetaValue::Array(vec![MetaValue::U8(1)]);
    for _ in 0..4 {
        v = MetaValue::Array(vec![v]);
    }
    let bytes = GgufBuilder::new().metadata("deep", v).build();
    assert!(matches!(err(&bytes), GgufError::NestingTooDeep { key, max: 4, .. } if key == "deep"));
}

#[test]
fn duplicate_key() {
    let bytes = GgufBuilder::new()
        .metadata("k", MetaValue::U8(1))
        .metadata("k", MetaValue::U8(2))
        .build();
    assert_eq!(
        err(&bytes),
        GgufError::DuplicateKey {
            offset: 38,
            key: "k".into()
        }
    );
}

#[test]
fn unknown_tensor_type() {
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("w", &[8], 99, vec![0; 32], None))
        .build();
    assert_eq!(
        err(&bytes),
        GgufError::UnknownTensorType {
            offset: FIRST_DIMS + 8,
            tensor: "w".into(),
            type_id: 99
        }
    );
}

#[test]
fn misaligned_offset() {
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("w", &[8], 0, vec![0; 32], Some(4)))
        .build();
    assert_eq!(
        err(&bytes),
        GgufError::MisalignedTensor {
            offset: FIRST_DIMS + 12,
            tensor: "w".into(),
            data_offset: 4,
            alignment: 32
        }
    );
}

#[test]
fn out_of_bounds() {
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("w", &[8], 0, vec![0; 32], Some(1 << 20)))
        .build();
    assert!(matches!(
        err(&bytes),
        GgufError::TensorOutOfBounds { tensor, start, .. } if tensor == "w" && start == 64 + (1 << 20)
    ));
    // An offset near u64::MAX overflows rather than wrapping.
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("w", &[8], 0, vec![0; 32], Some(u64::MAX - 31)))
        .build();
    assert!(matches!(err(&bytes), GgufError::TensorOutOfBounds { tensor, .. } if tensor == "w"));
}

#[test]
fn dims_overflow_and_caps() {
    for dims in [
        vec![1u64 << 40, 1 << 40],
        vec![MAX_DIM + 1],
        vec![u64::MAX],
        vec![1 << 32, 1 << 32, 1 << 32, 1 << 32],
    ] {
        let bytes = GgufBuilder::new()
            .raw_tensor(raw("w", &dims, 0, vec![0; 32], None))
            .build();
        assert_eq!(
            err(&bytes),
            GgufError::DimsTooLarge {
                offset: FIRST_DIMS,
                tensor: "w".into(),
                dims
            }
        );
    }
    // An empty row does not bound the row count (found by cargo-fuzz).
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("w", &[0, 1 << 40, 1 << 40], 0, vec![], None))
        .build();
    assert!(matches!(err(&bytes), GgufError::DimsTooLarge { .. }));
    // Elements fit but bytes (x4 for f32) do not.
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("w", &[1 << 40, 1 << 22], 0, vec![0; 32], None))
        .build();
    assert!(matches!(err(&bytes), GgufError::DimsTooLarge { .. }));
}

#[test]
fn dim_counts() {
    for n in [0usize, 5] {
        let bytes = GgufBuilder::new()
            .raw_tensor(raw("w", &vec![1; n], 0, vec![0; 4], None))
            .build();
        assert_eq!(
            err(&bytes),
            GgufError::BadDimCount {
                offset: FIRST_N_DIMS,
                tensor: "w".into(),
                n_dims: n as u32
            }
        );
    }
}

#[test]
fn bad_alignment_values() {
    for a in [0u32, 3, 48] {
        let bytes = f32_tensor(GgufBuilder::new().alignment(a), "w", 8).build();
        assert_eq!(err(&bytes), GgufError::BadAlignment { value: a.into() });
    }
    let bytes = GgufBuilder::new()
        .metadata("general.alignment", MetaValue::Str("32".into()))
        .build();
    assert!(matches!(err(&bytes), GgufError::WrongType { key, .. } if key == "general.alignment"));
}

#[test]
fn other_alignments_are_honoured() {
    for a in [1u32, 8, 64, 4096] {
        let bytes = f32_tensor(f32_tensor(GgufBuilder::new().alignment(a), "a", 3), "b", 5).build();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!(g.alignment(), a as usize);
        assert_eq!(g.data_offset() % a as usize, 0);
        for t in g.tensors() {
            assert_eq!((t.offset - g.data_offset()) % a as usize, 0);
        }
    }
}

#[test]
fn duplicate_tensor_name() {
    let bytes = f32_tensor(f32_tensor(GgufBuilder::new(), "w", 8), "w", 8).build();
    // Second info starts after the first: 24 + 9 + 4 + 8 + 4 + 8.
    assert_eq!(
        err(&bytes),
        GgufError::DuplicateTensor {
            offset: 57,
            tensor: "w".into()
        }
    );
}

#[test]
fn overlapping_tensors() {
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("a", &[16], 0, vec![0; 64], None))
        .raw_tensor(raw("b", &[8], 0, vec![0; 32], Some(32)))
        .build();
    match err(&bytes) {
        GgufError::OverlappingTensors {
            first,
            second,
            offset,
        } => {
            assert_eq!((first.as_str(), second.as_str()), ("a", "b"));
            let data_offset = (HEADER + 2 * 33).next_multiple_of(32);
            assert_eq!(offset, data_offset + 32);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn row_not_a_block_multiple() {
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("q", &[33, 2], GgmlType::Q4_1.id(), vec![0; 40], None))
        .build();
    assert_eq!(
        err(&bytes),
        GgufError::NotBlockMultiple {
            offset: FIRST_INFO,
            tensor: "q".into(),
            ty_name: "q4_1",
            row_len: 33,
            block_size: 32
        }
    );
}

#[test]
fn errors_print_what_and_where() {
    let bytes = GgufBuilder::new()
        .raw_tensor(raw("blk.0.attn_q.weight", &[8], 77, vec![0; 32], None))
        .build();
    let msg = err(&bytes).to_string();
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.contains("77"),
        "{msg}"
    );
    assert!(msg.contains("offset"), "{msg}");
}

//! Valid files built in code read back exactly; every prefix and thousands of seeded mutations
//! of one give errors, never panics.

use engram_kernels::GgmlType;
use engram_runtime::format::{Gguf, GgufBuilder, GgufError, MetaValue};

fn all_values() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("u8", MetaValue::U8(200)),
        ("i8", MetaValue::I8(-100)),
        ("u16", MetaValue::U16(60_000)),
        ("i16", MetaValue::I16(-30_000)),
        ("u32", MetaValue::U32(4_000_000_000)),
        ("i32", MetaValue::I32(-2_000_000_000)),
        ("f32", MetaValue::F32(1.5e-5)),
        ("bool", MetaValue::Bool(true)),
        ("str", MetaValue::Str("héllo ✓".into())),
        ("u64", MetaValue::U64(u64::MAX)),
        ("i64", MetaValue::I64(i64::MIN)),
        ("f64", MetaValue::F64(10000.0)),
        (
            "strs",
            MetaValue::Array(
                ["<s>", "", "Ġthe"]
                    .map(|s| MetaValue::Str(s.into()))
                    .to_vec(),
            ),
        ),
        (
            "i32s",
            MetaValue::Array(vec![MetaValue::I32(-1), MetaValue::I32(7)]),
        ),
        (
            "u8s",
            MetaValue::Array(vec![MetaValue::U8(1), MetaValue::U8(2)]),
        ),
        ("empty", MetaValue::Array(vec![])),
        (
            "nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::F64(1.0)]),
                MetaValue::Array(vec![MetaValue::F64(2.0), MetaValue::F64(3.0)]),
            ]),
        ),
    ]
}

/// A small valid file: every value type and a tensor of each of several types.
fn sample() -> Vec<u8> {
    let mut b = GgufBuilder::new();
    for (k, v) in all_values() {
        b = b.metadata(k, v);
    }
    b.metadata("general.architecture", MetaValue::Str("llama".into()))
        .tensor("f32", &[3], GgmlType::F32, &[1; 12])
        .tensor("q4_1", &[64, 2], GgmlType::Q4_1, &[2; 80])
        .tensor("q8_0", &[32, 1, 2], GgmlType::Q8_0, &[3; 68])
        .tensor("f16", &[2, 2, 2, 2], GgmlType::F16, &[4; 32])
        .build()
}

#[test]
fn every_value_type_round_trips_in_order() {
    let bytes = sample();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.version(), 3);
    let expected = all_values();
    assert_eq!(g.metadata().len(), expected.len() + 1);
    for ((k, v), (ek, ev)) in g.metadata().iter().zip(&expected) {
        assert_eq!((k.as_str(), v), (*ek, ev));
    }
}

#[test]
fn tensors_read_back_at_aligned_offsets() {
    let bytes = sample();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.data_offset() % 32, 0);
    let names: Vec<&str> = g.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["f32", "q4_1", "q8_0", "f16"]);
    let q = g.tensor("q4_1").unwrap();
    assert_eq!(
        (q.ty, q.dims.as_slice(), q.n_bytes),
        (GgmlType::Q4_1, &[64, 2][..], 80)
    );
    assert_eq!((q.n_elements(), q.n_rows(), q.row_len()), (128, 2, 64));
    for (t, fill) in g.tensors().iter().zip(1u8..) {
        assert_eq!(t.offset % 32, 0);
        assert!(
            bytes[t.byte_range()].iter().all(|&b| b == fill),
            "{}",
            t.name
        );
    }
    assert_eq!(g.tensor("f16").unwrap().n_rows(), 8);
    assert!(g.tensor("nope").is_none());
}

#[test]
fn typed_getters() {
    let bytes = sample();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.get_u32("u8").unwrap(), 200);
    assert_eq!(g.get_u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(g.get_f32("f32").unwrap(), 1.5e-5);
    assert_eq!(g.get_f32("f64").unwrap(), 10000.0);
    assert_eq!(g.get_str("str").unwrap(), "héllo ✓");
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_eq!(g.get_str_array("strs").unwrap(), ["<s>", "", "Ġthe"]);
    assert_eq!(g.get_i32_array("i32s").unwrap(), [-1, 7]);
    assert_eq!(g.get_i32_array("u8s").unwrap(), [1, 2]);
    assert!(g.get_str_array("empty").unwrap().is_empty());

    assert_eq!(
        g.get_u32("missing"),
        Err(GgufError::MissingKey {
            key: "missing".into()
        })
    );
    for key in ["i8", "u64", "i64"] {
        assert!(matches!(g.get_u32(key), Err(GgufError::WrongType { key: k, .. }) if k == key));
    }
    assert!(
        matches!(g.get_u32("str"), Err(GgufError::WrongType { found, .. }) if found == "string")
    );
    assert!(matches!(g.get_f32("u32"), Err(GgufError::WrongType { .. })));
    assert!(matches!(g.get_str("u8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(
        g.get_str_array("i32s"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.get_i32_array("strs"),
        Err(GgufError::WrongType { .. })
    ));
    assert!(matches!(
        g.get_i32_array("u8"),
        Err(GgufError::WrongType { .. })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for len in 0..bytes.len() {
        assert!(
            Gguf::parse(&bytes[..len]).is_err(),
            "prefix of {len} bytes parsed"
        );
    }
}

/// xorshift64*: a tiny seeded generator so the mutation run is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that tend to hit edge cases when written over a length, count or offset field.
const INTERESTING: [u64; 10] = [0, 1, 3, 4, 31, 32, 63, 64, u32::MAX as u64, u64::MAX];

#[test]
fn seeded_mutations_never_panic() {
    let base = sample();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..5000 {
        let mut bytes = base.clone();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 => {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
                2 if bytes.len() >= 8 => {
                    let i = rng.below(bytes.len() - 7);
                    let v = INTERESTING[rng.below(INTERESTING.len())];
                    bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
                3 => {
                    let len = rng.below(bytes.len() + 1);
                    bytes.truncate(len);
                }
                _ => {
                    let i = rng.below(bytes.len() + 1);
                    bytes.insert(i, rng.next() as u8);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        match Gguf::parse(&bytes) {
            Ok(g) => {
                ok += 1;
                for t in g.tensors() {
                    assert!(t.byte_range().end <= bytes.len());
                    assert_eq!(t.ty.row_bytes(t.row_len()).unwrap() * t.n_rows(), t.n_bytes);
                }
            }
            Err(e) => {
                failed += 1;
                let _ = e.to_string();
            }
        }
    }
    // Most mutations must be caught; some (a flipped data byte) leave a valid file.
    assert!(
        failed > 2500,
        "only {failed} of 5000 mutations rejected ({ok} parsed)"
    );
}

/// Inputs that once crashed `cargo fuzz run gguf_parse`: each must now parse or fail cleanly.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gguf_fuzz_regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = Gguf::parse(&bytes);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}

/// A band of rows of a 2-D tensor is a tensor of its own: the rows' bytes, its own dims and a
/// name that says where it came from (`split_band_name` reads it back).
#[test]
fn a_row_band_is_a_zero_copy_tensor_of_its_rows() {
    use engram_runtime::model_file::{ModelFile, split_band_name};
    let values: Vec<f32> = (0..4 * 32).map(|i| i as f32).collect();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = engram_runtime::format::GgufBuilder::new()
        .tensor("w", &[32, 4], engram_kernels::GgmlType::F32, &bytes)
        .tensor("v", &[32], engram_kernels::GgmlType::F32, &bytes[..128])
        .build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, file).unwrap();
    let model = ModelFile::open(&path).unwrap();
    let w = model.tensor("w").unwrap();
    let band = w.rows(1..3).unwrap();
    assert_eq!(band.dims(), [32, 2]);
    assert_eq!(band.bytes(), &bytes[128..384]);
    assert_eq!(band.name(), "w[rows 1..3]");
    assert_eq!(split_band_name(band.name()), Some(("w", 1..3)));
    assert_eq!(split_band_name("w"), None);
    assert!(w.rows(3..5).is_none() && w.rows(2..2).is_none() && band.rows(0..1).is_none());
    assert!(model.tensor("v").unwrap().rows(0..1).is_none());
}

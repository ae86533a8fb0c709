//! GGUF metadata values: the type ids of the spec, and reading one value (arrays included).

use super::cursor::Cursor;
use super::gguf_error::GgufError;

/// Longest metadata string value accepted (chat templates are a few KiB).
pub const MAX_STRING_LEN: usize = 16 << 20;
/// Most elements in one metadata array (the largest real vocabularies are ~256 Ki tokens).
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Deepest nesting of arrays in arrays.
pub const MAX_ARRAY_DEPTH: usize = 4;

/// One metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `GGUF_TYPE_UINT8` (0).
    U8(u8),
    /// `GGUF_TYPE_INT8` (1).
    I8(i8),
    /// `GGUF_TYPE_UINT16` (2).
    U16(u16),
    /// `GGUF_TYPE_INT16` (3).
    I16(i16),
    /// `GGUF_TYPE_UINT32` (4).
    U32(u32),
    /// `GGUF_TYPE_INT32` (5).
    I32(i32),
    /// `GGUF_TYPE_FLOAT32` (6).
    F32(f32),
    /// `GGUF_TYPE_BOOL` (7), one byte that must be 0 or 1.
    Bool(bool),
    /// `GGUF_TYPE_STRING` (8), UTF-8.
    Str(String),
    /// `GGUF_TYPE_ARRAY` (9): elements all of one type (an empty array forgets which).
    Array(Vec<MetaValue>),
    /// `GGUF_TYPE_UINT64` (10).
    U64(u64),
    /// `GGUF_TYPE_INT64` (11).
    I64(i64),
    /// `GGUF_TYPE_FLOAT64` (12).
    F64(f64),
}

impl MetaValue {
    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::Str(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    /// The spec's name for this value's type (`"u32"`, `"string"`, `"array"`...).
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_id())
    }

    /// The value as an `i128` when it is an integer of any width (bools are not integers).
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The string, when this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, when this is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The spec's name for a value type id.
pub(crate) fn type_name(id: u32) -> &'static str {
    match id {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// Fewest bytes one value of type `id` takes in the file, used to cap array counts by the bytes
/// left before allocating (`None` for an unknown id).
fn min_encoded_len(id: u32) -> Option<u64> {
    Some(match id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,  // u64 length, empty string
        9 => 12, // u32 element type + u64 count, empty array
        10..=12 => 8,
        _ => return None,
    })
}

/// Reads one value of type `type_id` for metadata key `key`; `depth` counts enclosing arrays.
pub(crate) fn read_value(
    cur: &mut Cursor<'_>,
    key: &str,
    type_id: u32,
    type_offset: usize,
    depth: usize,
) -> Result<MetaValue, GgufError> {
    let what = || format!("value of metadata key {key:?}");
    Ok(match type_id {
        0 => MetaValue::U8(cur.u8(&what)?),
        1 => MetaValue::I8(cur.u8(&what)? as i8),
        2 => MetaValue::U16(cur.u16(&what)?),
        3 => MetaValue::I16(cur.u16(&what)? as i16),
        4 => MetaValue::U32(cur.u32(&what)?),
        5 => MetaValue::I32(cur.u32(&what)? as i32),
        6 => MetaValue::F32(f32::from_bits(cur.u32(&what)?)),
        7 => {
            let offset = cur.pos();
            match cur.u8(&what)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                other => {
                    return Err(GgufError::WrongType {
                        key: key.to_owned(),
                        expected: "bool 0 or 1",
                        found: format!("byte {other} at offset {offset}"),
                    });
                }
            }
        }
        8 => MetaValue::Str(cur.string(MAX_STRING_LEN, &what)?.to_owned()),
        9 => read_array(cur, key, depth)?,
        10 => MetaValue::U64(cur.u64(&what)?),
        11 => MetaValue::I64(cur.u64(&what)? as i64),
        12 => MetaValue::F64(f64::from_bits(cur.u64(&what)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                offset: type_offset,
                key: key.to_owned(),
                type_id,
            });
        }
    })
}

fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
    let start = cur.pos();
    if depth >= MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: start,
            key: key.to_owned(),
            max: MAX_ARRAY_DEPTH,
        });
    }
    let what = || format!("array header of metadata key {key:?}");
    let elem_type = cur.u32(&what)?;
    let Some(min_len) = min_encoded_len(elem_type) else {
        return Err(GgufError::UnknownValueType {
            offset: start,
            key: key.to_owned(),
            type_id: elem_type,
        });
    };
    let count_offset = cur.pos();
    let count = cur.u64(&what)?;
    // Each element needs at least `min_len` bytes, so what is left bounds the count (and so the
    // allocation) whatever the file claims.
    let max = MAX_ARRAY_LEN.min(cur.remaining() as u64 / min_len);
    if count > max {
        return Err(GgufError::CountTooLarge {
            offset: count_offset,
            what: format!("array of metadata key {key:?}"),
            count,
            max,
        });
    }
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        items.push(read_value(cur, key, elem_type, start, depth + 1)?);
    }
    Ok(MetaValue::Array(items))
}

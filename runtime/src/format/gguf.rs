//! GGUF v2/v3 reader over `&[u8]`: header, metadata, tensor table, all validated once at parse.
//!
//! Layout (little-endian; ggml's `docs/gguf.md`):
//! `"GGUF"`, u32 version, u64 tensor count, u64 metadata count, the metadata (key string, u32
//! type, value), the tensor infos (name string, u32 n_dims, u64 dims, u32 ggml type, u64 offset
//! relative to the data section), padding to `general.alignment` (default 32), the data section.
//!
//! After [`Gguf::parse`] succeeds every tensor's type is known, its dimensions fit, its row is a
//! whole number of blocks, and its data lies aligned inside the file without overlapping another.

use std::collections::{HashMap, HashSet};

use engram_kernels::GgmlType;

use super::cursor::Cursor;
pub use super::gguf_error::GgufError;
use super::gguf_meta::read_value;
pub use super::gguf_meta::{MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_STRING_LEN, MetaValue};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Most metadata entries accepted.
pub const MAX_METADATA: u64 = 1 << 20;
/// Most tensors accepted.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Longest metadata key accepted.
pub const MAX_KEY_LEN: usize = 1 << 10;
/// Longest tensor name accepted (ggml's `GGML_MAX_NAME` is 64 including the NUL).
pub const MAX_TENSOR_NAME_LEN: usize = 63;
/// Most dimensions of a tensor (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Largest single dimension accepted.
pub const MAX_DIM: u64 = 1 << 40;

/// A parsed, validated GGUF file: its metadata and tensor table. Tensor data stays in the bytes
/// it was parsed from; [`TensorInfo::offset`] and [`TensorInfo::n_bytes`] locate it there.
#[derive(Debug, Clone)]
pub struct Gguf {
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: usize,
    alignment: usize,
}

/// Where one tensor's data is and how to read it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name (`"blk.0.attn_q.weight"`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the row length (contiguous), then rows, ...
    pub dims: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub n_bytes: usize,
}

impl TensorInfo {
    /// Number of elements (product of the dimensions).
    pub fn n_elements(&self) -> usize {
        // Checked at parse: the product fits.
        self.dims.iter().product()
    }

    /// Number of rows (product of every dimension after the first).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product()
    }

    /// Elements in one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1)
    }

    /// The tensor's absolute byte range in the file.
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.n_bytes
    }
}

impl Gguf {
    /// Parses and validates a whole GGUF file held in `bytes`.
    ///
    /// Costs one pass over the header and tables; tensor data is not read. Nothing is allocated
    /// in proportion to a count before the count is checked against the bytes left.
    pub fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
        let mut cur = Cursor::new(bytes);
        let magic: [u8; 4] = cur.array(&|| "magic".to_owned())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = cur.u32(&|| "version".to_owned())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let n_tensors_offset = cur.pos();
        let n_tensors = cur.u64(&|| "tensor count".to_owned())?;
        let n_kv_offset = cur.pos();
        let n_kv = cur.u64(&|| "metadata count".to_owned())?;

        // Smallest metadata entry: empty key (8) + type (4) + u8 value (1).
        let max_kv = MAX_METADATA.min(cur.remaining() as u64 / 13);
        if n_kv > max_kv {
            return Err(GgufError::CountTooLarge {
                offset: n_kv_offset,
                what: "metadata count".to_owned(),
                count: n_kv,
                max: max_kv,
            });
        }
        let metadata = read_metadata(&mut cur, n_kv as usize)?;
        let alignment = alignment_of(&metadata)?;

        // Smallest tensor info: name (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
        let max_tensors = MAX_TENSORS.min(cur.remaining() as u64 / 32);
        if n_tensors > max_tensors {
            return Err(GgufError::CountTooLarge {
                offset: n_tensors_offset,
                what: "tensor count".to_owned(),
                count: n_tensors,
                max: max_tensors,
            });
        }
        let raw = read_tensor_infos(&mut cur, n_tensors as usize, alignment)?;

        let data_offset =
            cur.pos()
                .checked_next_multiple_of(alignment)
                .ok_or(GgufError::BadAlignment {
                    value: alignment as u64,
                })?;
        let tensors = place_tensors(raw, data_offset, bytes.len())?;
        let tensor_index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Gguf {
            version,
            metadata,
            tensors,
            tensor_index,
            data_offset,
            alignment,
        })
    }

    /// A table built in code over tensors that live elsewhere (a safetensors checkpoint's
    /// shards: [`crate::model_file::ModelFile::open`]): `metadata` in GGUF's keys, `tensors`
    /// with offsets into their own files. Names must be unique (the caller's invariant; a
    /// duplicate panics).
    pub fn from_parts(metadata: Vec<(String, MetaValue)>, tensors: Vec<TensorInfo>) -> Gguf {
        let mut tensor_index = HashMap::with_capacity(tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let dup = tensor_index.insert(t.name.clone(), i);
            assert!(dup.is_none(), "duplicate tensor {:?}", t.name);
        }
        Gguf {
            version: 3,
            metadata,
            tensors,
            tensor_index,
            data_offset: 0,
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// The file's GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// Metadata `key` as a `u32`: any integer type whose value fits.
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        let n = v
            .as_integer()
            .ok_or_else(|| wrong_type(key, "integer", v))?;
        u32::try_from(n).map_err(|_| GgufError::WrongType {
            key: key.to_owned(),
            expected: "integer fitting in u32",
            found: format!("{} {n}", v.type_name()),
        })
    }

    /// Metadata `key` as an `f32`: an f32, or an f64 (rounded).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match *self.require(key)? {
            MetaValue::F32(x) => Ok(x),
            MetaValue::F64(x) => Ok(x as f32),
            ref v => Err(wrong_type(key, "f32 or f64", v)),
        }
    }

    /// Metadata `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "string", v))
    }

    /// Metadata `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let v = self.require(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| wrong_type(key, "string array", v))?;
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| wrong_type(key, "string array", item))
            })
            .collect()
    }

    /// Metadata `key` as an array of `i32`: elements of any integer type whose values fit.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        let v = self.require(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| wrong_type(key, "i32 array", v))?;
        items
            .iter()
            .map(|item| {
                item.as_integer()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| wrong_type(key, "i32 array", item))
            })
            .collect()
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Absolute offset of the data section (aligned).
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// `general.architecture` (`"llama"`).
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.type_name().to_owned(),
    }
}

fn read_metadata(cur: &mut Cursor<'_>, n_kv: usize) -> Result<Vec<(String, MetaValue)>, GgufError> {
    let mut metadata: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv);
    let mut seen: HashSet<&str> = HashSet::with_capacity(n_kv);
    for i in 0..n_kv {
        let key_offset = cur.pos();
        let key = cur.string(MAX_KEY_LEN, &|| format!("key of metadata entry {i}"))?;
        if !seen.insert(key) {
            return Err(GgufError::DuplicateKey {
                offset: key_offset,
                key: key.to_owned(),
            });
        }
        let type_offset = cur.pos();
        let type_id = cur.u32(&|| format!("value type of metadata key {key:?}"))?;
        let value = read_value(cur, key, type_id, type_offset, 0)?;
        metadata.push((key.to_owned(), value));
    }
    Ok(metadata)
}

fn alignment_of(metadata: &[(String, MetaValue)]) -> Result<usize, GgufError> {
    const KEY: &str = "general.alignment";
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let n = v.as_integer().ok_or_else(|| wrong_type(KEY, "u32", v))?;
    let value = u64::try_from(n).unwrap_or(0);
    match usize::try_from(value) {
        Ok(a) if a.is_power_of_two() => Ok(a),
        _ => Err(GgufError::BadAlignment { value }),
    }
}

/// A tensor info as read, before its offset is made absolute and bounds-checked.
struct RawTensor {
    name: String,
    dims: Vec<usize>,
    ty: GgmlType,
    rel_offset: u64,
    n_bytes: usize,
}

fn read_tensor_infos(
    cur: &mut Cursor<'_>,
    n_tensors: usize,
    alignment: usize,
) -> Result<Vec<RawTensor>, GgufError> {
    let mut out = Vec::with_capacity(n_tensors);
    let mut seen: HashSet<String> = HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let info_offset = cur.pos();
        let name = cur
            .string(MAX_TENSOR_NAME_LEN, &|| format!("name of tensor {i}"))?
            .to_owned();
        if !seen.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor {
                offset: info_offset,
                tensor: name,
            });
        }
        let what = || format!("info of tensor {name:?}");
        let n_dims_offset = cur.pos();
        let n_dims = cur.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                offset: n_dims_offset,
                tensor: name,
                n_dims,
            });
        }
        let dims_offset = cur.pos();
        let mut raw_dims = [0u64; MAX_DIMS];
        for d in raw_dims.iter_mut().take(n_dims as usize) {
            *d = cur.u64(&what)?;
        }
        let raw_dims = &raw_dims[..n_dims as usize];
        let type_offset = cur.pos();
        let type_id = cur.u32(&what)?;
        let ty_offset_field = cur.pos();
        let rel_offset = cur.u64(&what)?;

        let too_large = || GgufError::DimsTooLarge {
            offset: dims_offset,
            tensor: name.clone(),
            dims: raw_dims.to_vec(),
        };
        let mut dims = Vec::with_capacity(raw_dims.len());
        let mut n_elements: usize = 1;
        for &d in raw_dims {
            let d = usize::try_from(d).ok().filter(|&d| d as u64 <= MAX_DIM);
            let d = d.ok_or_else(too_large)?;
            n_elements = n_elements.checked_mul(d).ok_or_else(too_large)?;
            dims.push(d);
        }
        let Some(ty) = GgmlType::from_u32(type_id) else {
            return Err(GgufError::UnknownTensorType {
                offset: type_offset,
                tensor: name,
                type_id,
            });
        };
        let row_len = dims[0];
        let Some(row_bytes) = ty.row_bytes(row_len) else {
            if row_len % ty.block_size() != 0 {
                return Err(GgufError::NotBlockMultiple {
                    offset: info_offset,
                    tensor: name,
                    ty_name: ty.name(),
                    row_len: row_len as u64,
                    block_size: ty.block_size(),
                });
            }
            return Err(too_large());
        };
        // Not bounded by the element count when dims[0] is 0, so checked on its own.
        let n_rows = dims[1..]
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(too_large)?;
        let n_bytes = row_bytes.checked_mul(n_rows).ok_or_else(too_large)?;
        if rel_offset % alignment as u64 != 0 {
            return Err(GgufError::MisalignedTensor {
                offset: ty_offset_field,
                tensor: name,
                data_offset: rel_offset,
                alignment,
            });
        }
        out.push(RawTensor {
            name,
            dims,
            ty,
            rel_offset,
            n_bytes,
        });
    }
    Ok(out)
}

/// Makes offsets absolute, checks each tensor lies inside the file and none overlap.
fn place_tensors(
    raw: Vec<RawTensor>,
    data_offset: usize,
    file_len: usize,
) -> Result<Vec<TensorInfo>, GgufError> {
    let mut tensors = Vec::with_capacity(raw.len());
    for t in raw {
        let start = (data_offset as u64).checked_add(t.rel_offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes as u64));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name,
                start: u64::MAX,
                end: u64::MAX,
                file_len,
            });
        };
        if end > file_len as u64 {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name,
                start,
                end,
                file_len,
            });
        }
        tensors.push(TensorInfo {
            name: t.name,
            dims: t.dims,
            ty: t.ty,
            // end <= file_len: both fit in usize.
            offset: start as usize,
            n_bytes: t.n_bytes,
        });
    }
    let mut order: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].n_bytes > 0)
        .collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for pair in order.windows(2) {
        let (a, b) = (&tensors[pair[0]], &tensors[pair[1]]);
        if b.offset < a.offset + a.n_bytes {
            return Err(GgufError::OverlappingTensors {
                first: a.name.clone(),
                second: b.name.clone(),
                offset: b.offset,
            });
        }
    }
    Ok(tensors)
}

//! Builds GGUF v3 files in memory: tiny files for tests and, later, exported models.
//!
//! [`GgufBuilder::tensor`] takes a checked, typed tensor; [`GgufBuilder::raw_tensor`] writes
//! whatever it is given (unknown type ids, odd dimensions, a chosen offset) so tests can craft
//! malformed files.

use engram_kernels::GgmlType;

use super::gguf::{DEFAULT_ALIGNMENT, GGUF_MAGIC};
use super::gguf_meta::MetaValue;

/// A tensor as it will be written; every field is taken as is.
#[derive(Debug, Clone)]
pub struct RawTensor {
    /// Name.
    pub name: String,
    /// Dimensions, ggml order (`dims[0]` = row length); written as u64 after a u32 count.
    pub dims: Vec<u64>,
    /// ggml type id.
    pub type_id: u32,
    /// Data, appended to the data section at the next aligned position.
    pub data: Vec<u8>,
    /// Offset to write in the tensor table instead of where the data actually goes.
    pub offset_override: Option<u64>,
}

/// Assembles a GGUF file: metadata entries and tensors, in the order added.
#[derive(Debug, Clone)]
pub struct GgufBuilder {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<RawTensor>,
}

impl Default for GgufBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufBuilder {
    /// An empty GGUF v3 file with the default alignment (32).
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the version number written in the header (layout is always v2/v3's).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Lays tensor data out at multiples of `alignment` and records it as `general.alignment`
    /// (u32). Any value is accepted, so tests can write bad ones; layout uses it only when it is a
    /// power of two.
    pub fn alignment(mut self, alignment: u32) -> Self {
        if alignment.is_power_of_two() {
            self.alignment = alignment as usize;
        }
        self.metadata
            .push(("general.alignment".to_owned(), MetaValue::U32(alignment)));
        self
    }

    /// Adds a metadata entry.
    ///
    /// # Panics
    /// If `value` is an array whose elements are not all of one type.
    pub fn metadata(mut self, key: impl Into<String>, value: MetaValue) -> Self {
        check_homogeneous(&value);
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor of type `ty` with dimensions `dims` (ggml order) and its encoded `data`.
    ///
    /// # Panics
    /// If `data` is not exactly the size `dims` and `ty` call for.
    pub fn tensor(
        self,
        name: impl Into<String>,
        dims: &[usize],
        ty: GgmlType,
        data: &[u8],
    ) -> Self {
        let name = name.into();
        let row_len = dims.first().copied().unwrap_or(1);
        let n_rows: usize = dims.iter().skip(1).product();
        let expected = ty
            .row_bytes(row_len)
            .and_then(|r| r.checked_mul(n_rows))
            .unwrap_or_else(|| panic!("tensor {name:?}: dims {dims:?} do not fit {}", ty.name()));
        assert_eq!(
            data.len(),
            expected,
            "tensor {name:?}: {} bytes given, {dims:?} of {} needs {expected}",
            data.len(),
            ty.name()
        );
        self.raw_tensor(RawTensor {
            name,
            dims: dims.iter().map(|&d| d as u64).collect(),
            type_id: ty.id(),
            data: data.to_vec(),
            offset_override: None,
        })
    }

    /// Adds a tensor exactly as described, unchecked.
    pub fn raw_tensor(mut self, tensor: RawTensor) -> Self {
        self.tensors.push(tensor);
        self
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            write_value(&mut out, value);
        }
        let mut data_len = 0usize;
        let mut placed = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let at = data_len.next_multiple_of(self.alignment);
            placed.push(at);
            data_len = at + t.data.len();
            write_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            let offset = t.offset_override.unwrap_or(at as u64);
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let data_start = out.len().next_multiple_of(self.alignment);
        out.resize(data_start, 0);
        for (t, at) in self.tensors.iter().zip(placed) {
            out.resize(data_start + at, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }
}

/// Appends a GGUF string (u64 length, bytes).
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a metadata value's encoding (without its type id). An empty array is written with
/// element type u8.
pub fn write_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::Str(s) => write_string(out, s),
        MetaValue::Array(items) => {
            let elem_type = items.first().map_or(0, MetaValue::type_id);
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

fn check_homogeneous(value: &MetaValue) {
    if let MetaValue::Array(items) = value {
        if let Some(first) = items.first() {
            let id = first.type_id();
            assert!(
                items.iter().all(|i| i.type_id() == id),
                "GGUF arrays hold one element type"
            );
        }
        items.iter().for_each(check_homogeneous);
    }
}

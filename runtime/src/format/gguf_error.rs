//! What can be wrong with a GGUF file, and where.

/// A GGUF file that cannot be read, or a metadata lookup that failed.
///
/// Parse errors carry the byte `offset` from the start of the file where the problem was found
/// and, where there is one, the metadata key or tensor name involved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic at offset 0 is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// A version other than 2 or 3 (v1 used 32-bit counts and is not read).
    #[error("unsupported GGUF version {version} at offset 4 (engram reads versions 2 and 3)")]
    UnsupportedVersion {
        /// The version number in the header.
        version: u32,
    },
    /// The file ends before a field does.
    #[error("truncated at offset {offset} reading {what}: need {needed} bytes, {available} left")]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the file.
        available: usize,
        /// The field, with its key or tensor name.
        what: String,
    },
    /// A count (metadata entries, tensors, array elements) above the cap or larger than the
    /// bytes left could hold.
    #[error("{what} at offset {offset}: count {count} exceeds the limit of {max}")]
    CountTooLarge {
        /// Where the count is stored.
        offset: usize,
        /// What is being counted, with its key where there is one.
        what: String,
        /// The count in the file.
        count: u64,
        /// The largest count accepted here.
        max: u64,
    },
    /// A string longer than the cap for its kind.
    #[error("{what} at offset {offset}: string length {len} exceeds the limit of {max}")]
    StringTooLong {
        /// Where the length is stored.
        offset: usize,
        /// The length in the file.
        len: u64,
        /// The longest accepted here.
        max: usize,
        /// The field, with its key or tensor name.
        what: String,
    },
    /// A string that is not UTF-8.
    #[error("{what} at offset {offset}: string is not valid UTF-8")]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: usize,
        /// The field, with its key or tensor name.
        what: String,
    },
    /// A metadata value type id outside the GGUF spec.
    #[error("metadata key {key:?} at offset {offset}: unknown value type id {type_id}")]
    UnknownValueType {
        /// Where the type id is stored.
        offset: usize,
        /// The key whose value it is.
        key: String,
        /// The id found.
        type_id: u32,
    },
    /// Arrays nested deeper than the cap.
    #[error("metadata key {key:?} at offset {offset}: arrays nested deeper than {max}")]
    NestingTooDeep {
        /// Where the innermost array starts.
        offset: usize,
        /// The key whose value it is.
        key: String,
        /// The deepest nesting accepted.
        max: usize,
    },
    /// The same metadata key twice.
    #[error("metadata key {key:?} at offset {offset} appears twice")]
    DuplicateKey {
        /// Where the second occurrence starts.
        offset: usize,
        /// The key.
        key: String,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment is {value}; it must be a power of two")]
    BadAlignment {
        /// The value in the file.
        value: u64,
    },
    /// A tensor with more than four dimensions (or none).
    #[error("tensor {tensor:?} at offset {offset}: {n_dims} dimensions (1 to 4 are allowed)")]
    BadDimCount {
        /// Where the dimension count is stored.
        offset: usize,
        /// The tensor.
        tensor: String,
        /// The count found.
        n_dims: u32,
    },
    /// A dimension above the cap, or dimensions whose product or byte size overflows.
    #[error("tensor {tensor:?} at offset {offset}: dimensions {dims:?} are too large")]
    DimsTooLarge {
        /// Where the dimensions are stored.
        offset: usize,
        /// The tensor.
        tensor: String,
        /// The dimensions found.
        dims: Vec<u64>,
    },
    /// A tensor type id engram does not know.
    #[error("tensor {tensor:?} at offset {offset}: unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// Where the type id is stored.
        offset: usize,
        /// The tensor.
        tensor: String,
        /// The id found.
        type_id: u32,
    },
    /// A row length that is not a whole number of the type's blocks.
    #[error(
        "tensor {tensor:?} at offset {offset}: row length {row_len} is not a multiple of \
         {ty_name}'s block size {block_size}"
    )]
    NotBlockMultiple {
        /// Where the tensor's info starts.
        offset: usize,
        /// The tensor.
        tensor: String,
        /// Name of the tensor's ggml type.
        ty_name: &'static str,
        /// `dims[0]`.
        row_len: u64,
        /// The type's block size.
        block_size: usize,
    },
    /// A tensor data offset that is not a multiple of the file's alignment.
    #[error(
        "tensor {tensor:?} at offset {offset}: data offset {data_offset} is not a multiple of \
         the alignment {alignment}"
    )]
    MisalignedTensor {
        /// Where the tensor's data offset is stored.
        offset: usize,
        /// The tensor.
        tensor: String,
        /// The offset relative to the data section, as stored.
        data_offset: u64,
        /// The file's alignment.
        alignment: usize,
    },
    /// Tensor data that extends past the end of the file.
    #[error(
        "tensor {tensor:?}: data at bytes {start}..{end} is outside the file of {file_len} bytes"
    )]
    TensorOutOfBounds {
        /// The tensor.
        tensor: String,
        /// Absolute start offset (saturated on overflow).
        start: u64,
        /// Absolute end offset (saturated on overflow).
        end: u64,
        /// Length of the file.
        file_len: usize,
    },
    /// Two tensors with the same name.
    #[error("tensor {tensor:?} at offset {offset}: the name appears twice")]
    DuplicateTensor {
        /// Where the second occurrence's info starts.
        offset: usize,
        /// The name.
        tensor: String,
    },
    /// Two tensors whose data ranges overlap.
    #[error("tensors {first:?} and {second:?} overlap at byte {offset}")]
    OverlappingTensors {
        /// The tensor whose data starts first.
        first: String,
        /// The tensor whose data starts inside the first's.
        second: String,
        /// Absolute start of the second tensor's data.
        offset: usize,
    },
    /// A metadata key that is not present.
    #[error("metadata key {key:?} is missing")]
    MissingKey {
        /// The key looked up.
        key: String,
    },
    /// A metadata value of a type the caller cannot use, or a number out of the caller's range.
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    WrongType {
        /// The key looked up.
        key: String,
        /// What the caller wanted.
        expected: &'static str,
        /// What the file has (the type, or the value when out of range).
        found: String,
    },
}

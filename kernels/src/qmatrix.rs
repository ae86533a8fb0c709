//! [`QMatrix`]: the one checked view of a quantized weight matrix that every matrix kernel takes,
//! so a type, a byte slice and two dimensions cannot drift apart between call sites.

use core::fmt;
use core::ops::Range;

use crate::quant::GgmlType;

/// A borrowed weight matrix of `rows × cols` values of one [`GgmlType`], stored as ggml blocks in
/// row-major order: a GGUF tensor with `ne0 = cols` and `ne1 = rows`, or any buffer laid out the
/// same way (a mapped file, a test vector, flash on a device).
///
/// [`QMatrix::new`] checks once that the bytes are exactly `rows` rows of whole blocks, so the
/// kernels that take it only check what their other arguments say.
///
/// ```
/// use engram_kernels::{GgmlType, QMatrix, QMatrixError};
///
/// let bytes = [0u8; 2 * 20]; // two Q4_1 rows of one 32-value block each
/// let w = QMatrix::new(GgmlType::Q4_1, &bytes, 2, 32).unwrap();
/// assert_eq!((w.rows(), w.cols(), w.row_bytes()), (2, 32, 20));
/// assert!(matches!(
///     QMatrix::new(GgmlType::Q4_1, &bytes, 3, 32),
///     Err(QMatrixError::Length { expected: 60, actual: 40, .. })
/// ));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    ty: GgmlType,
    bytes: &'a [u8], // rows × row_bytes
    rows: usize,
    cols: usize,
    row_bytes: usize, // bytes of one row of `cols` values
}

/// Why [`QMatrix::new`] refused a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QMatrixError {
    /// Q8_1 and Q8_K are activation formats: no kernel takes them as weights.
    NotAWeightType(GgmlType),
    /// A row of `cols` values is not a whole number of the type's blocks.
    PartialBlock {
        /// The storage type.
        ty: GgmlType,
        /// Values per row.
        cols: usize,
    },
    /// `rows × row bytes` does not fit in `usize`.
    TooLarge {
        /// The storage type.
        ty: GgmlType,
        /// Rows asked for.
        rows: usize,
        /// Values per row.
        cols: usize,
    },
    /// The byte slice is not exactly `rows × row bytes` long.
    Length {
        /// The storage type.
        ty: GgmlType,
        /// Rows asked for.
        rows: usize,
        /// Values per row.
        cols: usize,
        /// `rows × row bytes`.
        expected: usize,
        /// The slice's length.
        actual: usize,
    },
}

impl fmt::Display for QMatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotAWeightType(ty) => {
                write!(
                    f,
                    "{} is an activation format, not a weight type",
                    ty.name()
                )
            }
            Self::PartialBlock { ty, cols } => write!(
                f,
                "{cols} values per row are not whole {} blocks of {}",
                ty.name(),
                ty.block_size()
            ),
            Self::TooLarge { ty, rows, cols } => {
                write!(
                    f,
                    "{rows} × {cols} {} overflows the address space",
                    ty.name()
                )
            }
            Self::Length {
                ty,
                rows,
                cols,
                expected,
                actual,
            } => write!(
                f,
                "{rows} × {cols} {} takes {expected} bytes, got {actual}",
                ty.name()
            ),
        }
    }
}

impl core::error::Error for QMatrixError {}

impl<'a> QMatrix<'a> {
    /// Views `bytes` as `rows` rows of `cols` values of type `ty`.
    ///
    /// # Errors
    /// When `ty` is an activation-only format, `cols` is not a whole number of blocks, the size
    /// overflows, or `bytes.len() != rows × row bytes` (see [`QMatrixError`]).
    pub fn new(
        ty: GgmlType,
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<Self, QMatrixError> {
        if !ty.is_weight() {
            return Err(QMatrixError::NotAWeightType(ty));
        }
        let row_bytes = ty
            .row_bytes(cols)
            .ok_or(if cols.is_multiple_of(ty.block_size()) {
                QMatrixError::TooLarge { ty, rows, cols }
            } else {
                QMatrixError::PartialBlock { ty, cols }
            })?;
        let expected =
            rows.checked_mul(row_bytes)
                .ok_or(QMatrixError::TooLarge { ty, rows, cols })?;
        if bytes.len() != expected {
            return Err(QMatrixError::Length {
                ty,
                rows,
                cols,
                expected,
                actual: bytes.len(),
            });
        }
        Ok(Self {
            ty,
            bytes,
            rows,
            cols,
            row_bytes,
        })
    }

    /// The storage type.
    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// All the matrix's bytes (`rows × row_bytes`).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Rows (output features of a linear layer: ggml's `ne1`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (input features: ggml's `ne0`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The bytes of row `r`.
    ///
    /// # Panics
    /// When `r >= rows`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        self.row_range(r..r + 1)
    }

    /// The bytes of the rows `rows`.
    ///
    /// # Panics
    /// When the range is reversed or ends past the last row.
    pub fn row_range(&self, rows: Range<usize>) -> &'a [u8] {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "QMatrix: rows {rows:?} out of 0..{}",
            self.rows
        );
        &self.bytes[rows.start * self.row_bytes..rows.end * self.row_bytes]
    }
}

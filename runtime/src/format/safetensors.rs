//! safetensors files (Hugging Face checkpoints), parsed from `&[u8]` by the `safetensors`
//! crate — Hugging Face's own reader, the format's reference: it caps the header, checks that
//! the tensors tile the data section exactly and that the buffer is as long as the header says —
//! and then checked for what engram's kernels read: F32, F16 or BF16 elements, aligned.

use engram_kernels::GgmlType;
use safetensors::{Dtype, SafeTensors};

/// One tensor of a safetensors file: where its bytes are in the file and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetensorsTensor {
    /// The tensor's name in the file (`"model.layers.0.self_attn.q_proj.weight"`).
    pub name: String,
    /// Element type.
    pub ty: GgmlType,
    /// Shape, outermost first (PyTorch order: a linear layer is `[out, in]`).
    pub shape: Vec<usize>,
    /// Absolute byte range of the data in the file.
    pub bytes: std::ops::Range<usize>,
}

/// A safetensors file that cannot be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsError {
    /// The header or the data section is malformed or truncated (the crate's message).
    #[error("malformed or truncated safetensors data: {0}")]
    Malformed(String),
    /// A tensor's element type is not one engram reads.
    #[error("tensor {name:?} has dtype {dtype}; engram reads F32, F16 and BF16")]
    Dtype {
        /// The tensor.
        name: String,
        /// Its dtype as the file names it.
        dtype: String,
    },
    /// A tensor's data does not start at a multiple of its element size.
    #[error("tensor {name:?} starts at byte {offset}, not a multiple of its element size")]
    Misaligned {
        /// The tensor.
        name: String,
        /// Absolute offset in the file.
        offset: usize,
    },
}

/// The tensors of the safetensors file held in `bytes`, in file order.
pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<SafetensorsTensor>, SafetensorsError> {
    let (header_len, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| SafetensorsError::Malformed(e.to_string()))?;
    let data_start = 8 + header_len;
    let infos = metadata.tensors();
    let mut out = Vec::with_capacity(infos.len());
    for name in metadata.offset_keys() {
        let info = infos[&name];
        let (ty, size) = match info.dtype {
            Dtype::F32 => (GgmlType::F32, 4),
            Dtype::F16 => (GgmlType::F16, 2),
            Dtype::BF16 => (GgmlType::BF16, 2),
            other => {
                return Err(SafetensorsError::Dtype {
                    name,
                    dtype: other.to_string(),
                });
            }
        };
        let (start, end) = info.data_offsets;
        let offset = data_start + start;
        if offset % size != 0 {
            return Err(SafetensorsError::Misaligned { name, offset });
        }
        out.push(SafetensorsTensor {
            name,
            ty,
            shape: info.shape.clone(),
            bytes: offset..data_start + end,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn file(dtype: Dtype, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let view = TensorView::new(dtype, shape.to_vec(), data).unwrap();
        safetensors::serialize([("w", view)], None).unwrap()
    }

    #[test]
    fn reads_types_and_refuses_bad_input() {
        let data: Vec<u8> = (0..24).collect();
        let bytes = file(Dtype::F32, &[2, 3], &data);
        let t = parse_safetensors(&bytes).unwrap();
        assert_eq!((t[0].ty, &t[0].shape[..]), (GgmlType::F32, &[2, 3][..]));
        assert_eq!(&bytes[t[0].bytes.clone()], &data[..]);
        let t = parse_safetensors(&file(Dtype::BF16, &[12], &data)).unwrap();
        assert_eq!(t[0].ty, GgmlType::BF16);

        let err = parse_safetensors(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(err, SafetensorsError::Malformed(_)), "{err}");
        let err = parse_safetensors(&file(Dtype::I32, &[6], &data)).unwrap_err();
        assert!(
            matches!(&err, SafetensorsError::Dtype { name, dtype } if name == "w" && dtype == "I32"),
            "{err}"
        );
        assert!(matches!(
            parse_safetensors(b"\x01\0\0\0\0\0\0\0{").unwrap_err(),
            SafetensorsError::Malformed(_)
        ));
    }
}

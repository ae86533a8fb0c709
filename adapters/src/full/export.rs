//! A fully fine-tuned model back to a GGUF file.
//!
//! Each trained tensor is re-quantized to the type it has in the base file with the kernels'
//! reference quantizers (`quantize_row`), so the new file has the base's size,
//! layout and speed; every other tensor and all metadata are copied as they are. The file is
//! written to a temp file and renamed into place.
//!
//! Re-quantizing an untrained copy reproduces the base's blocks: a block's minimum and maximum
//! are grid points of its own 4- or 8-bit grid, so the quantizer finds the same scale and the
//! same codes (`tests/full.rs` measures it). Once trained, a weight lands on the nearest point
//! of its block's grid: updates smaller than half a quantization step (`d/2`, ~1% of a Q4_1
//! block's range) round away. [`ExportReport`] says how far the written weights are from the
//! master weights and how many tensors came out byte-identical to the base.

use std::path::{Path, PathBuf};

use engram_kernels::{GgmlType, quantize_row};
use engram_runtime::format::{GgufBuilder, MetaValue};
use engram_runtime::io::write_bytes_atomic;
use engram_runtime::model_file::{ModelFile, split_band_name};

use super::FullFinetune;

/// Exporting a fully fine-tuned model failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Another writer holds the output file's lock, or the lock could not be taken.
    #[error(transparent)]
    Lock(#[from] engram_runtime::io::LockError),
    /// The base file is not the one the weights were made from.
    #[error("tensor `{tensor}`: {what} (export over the model file the weights came from)")]
    Mismatch {
        /// The tensor's name.
        tensor: String,
        /// What differs.
        what: String,
    },
    /// engram has no quantizer for the tensor's type (the k-quants are read-only here).
    #[error("tensor `{tensor}` is {}: engram can read it but has no quantizer for it", ty.name())]
    NoQuantizer {
        /// The tensor's name.
        tensor: String,
        /// Its type in the base file.
        ty: GgmlType,
    },
    /// A trained weight is NaN or infinite.
    #[error("tensor `{tensor}` has a non-finite weight: refusing to write it")]
    NonFinite {
        /// The tensor's name.
        tensor: String,
    },
    /// The output path is the base file itself (still mapped and in use).
    #[error("{} is the base model file: write the export elsewhere", path.display())]
    OverwritesBase {
        /// The path.
        path: PathBuf,
    },
    /// Writing the file failed (the old file at that path, if any, is untouched).
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ExportReport {
    /// Tensors written from the master weights.
    pub requantized: usize,
    /// Tensors copied from the base unchanged (not trained).
    pub copied: usize,
    /// Re-quantized tensors whose bytes equal the base's (no update survived quantization).
    pub unchanged: usize,
    /// Largest `|written − master|` over all re-quantized weights.
    pub max_abs_error: f32,
    /// Root mean square of `written − master` over all re-quantized weights.
    pub rms_error: f32,
    /// Size of the file.
    pub bytes: usize,
}

impl FullFinetune {
    /// The model as GGUF bytes: `base`'s metadata and tensor table, with every trained tensor
    /// re-quantized to its type in `base`.
    ///
    /// # Errors
    /// [`ExportError::Mismatch`] when `base` lacks a trained tensor or has it in another shape,
    /// [`ExportError::NoQuantizer`] for a type engram cannot write,
    /// [`ExportError::NonFinite`] for a NaN or infinite weight.
    pub fn to_gguf(&self, base: &ModelFile) -> Result<(Vec<u8>, ExportReport), ExportError> {
        let gguf = base.gguf();
        let params = self.params();
        for id in params.ids() {
            let name = params.name(id);
            // A band of rows of a fused tensor (phi3's `attn_qkv`, `ffn_up`) is written into it.
            let (tensor, band) = match split_band_name(name) {
                Some((tensor, rows)) => (tensor, Some(rows)),
                None => (name, None),
            };
            let info = gguf.tensor(tensor).ok_or_else(|| ExportError::Mismatch {
                tensor: name.to_owned(),
                what: "not in the base file".into(),
            })?;
            let [rows, cols] = params.value(id).dims();
            let fits = match &band {
                Some(band) => {
                    info.row_len() == cols && band.len() == rows && band.end <= info.n_rows()
                }
                None => info.n_elements() == rows * cols && info.row_len() == cols,
            };
            if !fits {
                return Err(ExportError::Mismatch {
                    tensor: name.to_owned(),
                    what: format!("dims {:?} in the file, ({rows}, {cols}) trained", info.dims),
                });
            }
        }
        let mut b = GgufBuilder::new();
        for (key, value) in gguf.metadata() {
            b = match (key.as_str(), value) {
                // The builder lays data out by its own alignment and records it itself.
                ("general.alignment", MetaValue::U32(a)) => b.alignment(*a),
                _ => b.metadata(key.clone(), value.clone()),
            };
        }
        let mut report = ExportReport {
            requantized: 0,
            copied: 0,
            unchanged: 0,
            max_abs_error: 0.0,
            rms_error: 0.0,
            bytes: 0,
        };
        let (mut sq, mut n) = (0f64, 0usize);
        let master = |id| {
            params
                .value(id)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("float tensor")
        };
        for info in gguf.tensors() {
            let original = &base.bytes()[info.byte_range()];
            let bands: Vec<_> = params
                .ids()
                .filter_map(|id| {
                    let (tensor, rows) = split_band_name(params.name(id))?;
                    (tensor == info.name).then_some((rows, id))
                })
                .collect();
            let values = match params.find(&info.name) {
                Some(id) => master(id),
                None if !bands.is_empty() => {
                    let mut values = vec![0f32; info.n_elements()];
                    engram_kernels::dequantize_row(info.ty, original, &mut values);
                    let cols = info.row_len();
                    for (rows, id) in bands {
                        values[rows.start * cols..rows.end * cols].copy_from_slice(&master(id));
                    }
                    values
                }
                None => {
                    b = b.tensor(info.name.clone(), &info.dims, info.ty, original);
                    report.copied += 1;
                    continue;
                }
            };
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ExportError::NonFinite {
                    tensor: info.name.clone(),
                });
            }
            let bytes = quantize(info.ty, &values).ok_or_else(|| ExportError::NoQuantizer {
                tensor: info.name.clone(),
                ty: info.ty,
            })?;
            let mut written = vec![0f32; values.len()];
            engram_kernels::dequantize_row(info.ty, &bytes, &mut written);
            for (w, m) in written.iter().zip(&values) {
                let e = (w - m).abs();
                report.max_abs_error = report.max_abs_error.max(e);
                sq += (e as f64).powi(2);
            }
            n += values.len();
            report.requantized += 1;
            report.unchanged += usize::from(bytes == original);
            b = b.tensor(info.name.clone(), &info.dims, info.ty, &bytes);
        }
        report.rms_error = (sq / n.max(1) as f64).sqrt() as f32;
        let out = b.build();
        report.bytes = out.len();
        Ok((out, report))
    }

    /// Writes [`FullFinetune::to_gguf`] to `path` atomically; engram (and llama.cpp) load the
    /// result as a model like the base.
    ///
    /// # Errors
    /// Those of [`FullFinetune::to_gguf`], [`ExportError::OverwritesBase`] when `path` is the
    /// base file, and [`ExportError::Io`].
    pub fn save_gguf(&self, base: &ModelFile, path: &Path) -> Result<ExportReport, ExportError> {
        let same = match (path.canonicalize(), base.path().canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same {
            return Err(ExportError::OverwritesBase {
                path: path.to_owned(),
            });
        }
        let (bytes, report) = self.to_gguf(base)?;
        let _lock = engram_runtime::io::WriterLock::for_replace(path)?;
        write_bytes_atomic(path, &bytes).map_err(|source| ExportError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(report)
    }
}

/// `values` encoded as `ty` (a whole number of blocks), or `None` when engram has no
/// quantizer for `ty` (the k-quants, Q8_1, Q8_K).
///
/// # Panics
/// When `values.len()` is not a multiple of `ty`'s block size.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    assert!(
        values.len().is_multiple_of(ty.block_size()),
        "{} values are not whole {} blocks",
        values.len(),
        ty.name()
    );
    // Q8_1 and Q8_K are activation formats: a weight file never holds them.
    if matches!(ty, GgmlType::Q8_1 | GgmlType::Q8K) {
        return None;
    }
    let mut out = vec![0u8; ty.row_bytes(values.len())?];
    quantize_row(ty, values, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every writable type round-trips its own dequantized values bit for bit.
    #[test]
    fn quantize_of_dequantized_blocks_is_the_identity() {
        let values: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 70.0)
            .collect();
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
        ] {
            let once = quantize(ty, &values).unwrap();
            let mut deq = vec![0f32; values.len()];
            engram_kernels::dequantize_row(ty, &once, &mut deq);
            let twice = quantize(ty, &deq).unwrap();
            let same = once.iter().zip(&twice).filter(|(a, b)| a == b).count();
            assert!(
                same * 1000 >= once.len() * 999,
                "{}: {same} of {} bytes equal",
                ty.name(),
                once.len()
            );
        }
        assert!(quantize(GgmlType::Q6K, &values).is_none());
    }
}

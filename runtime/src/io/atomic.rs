//! Crash-safe file replacement: write a temp file in the target's directory, fsync it, rename it
//! over the target, fsync the directory. A reader sees the old file or the new one, never a torn
//! one, and a failed write leaves the old file as it was.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Replaces `path` with what `write` produces, atomically.
///
/// `write` gets a buffered writer over a temp file next to `path`; if it fails, or anything
/// after it does, the temp file is removed and `path` is untouched.
pub fn write_atomic<F>(path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .tempfile_in(dir)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        write(&mut w)?;
        w.flush()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Makes the creations, renames and removals of entries in `dir` durable (fsync of the
/// directory). Unix only: elsewhere a directory cannot be opened as a file, and this is a no-op;
/// a file system that cannot sync directories (`EINVAL`) is taken at its word.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match File::open(dir)?.sync_all() {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
        other => other?,
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `.NAME.engram-tmp-`: the temp files of `dir/NAME` name their target, so the next writer can
/// tell them from the temp files of other files in the same directory.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.engram-tmp-")
}

/// Removes the temp files a killed [`write_atomic`] of `path` left beside it; returns how many.
/// Call it holding `path`'s writer lock ([`WriterLock::beside`](super::WriterLock::beside)):
/// without it, it may remove a live writer's temp file (whose rename then fails, leaving
/// `path` as it was).
pub fn remove_stale_temps(path: &Path) -> io::Result<usize> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let prefix = temp_prefix(path);
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(&prefix) && e.file_type()?.is_file() {
            match std::fs::remove_file(e.path()) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => removed += 1,
            }
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// [`write_atomic`] for bytes already in memory.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.bin");
        write_bytes_atomic(&p, b"first").unwrap();
        write_bytes_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let err = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn stale_temps_of_one_file_are_removed_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.bin");
        std::fs::write(dir.path().join(".log.bin.engram-tmp-a1"), b"torn").unwrap();
        std::fs::write(dir.path().join(".other.engram-tmp-b2"), b"x").unwrap();
        assert_eq!(remove_stale_temps(&p).unwrap(), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(remove_stale_temps(&dir.path().join("gone/x")).unwrap(), 0);
    }
}

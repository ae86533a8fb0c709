//! User-named directories replaced whole: a set of files (a PEFT adapter: config, safetensors,
//! llama.cpp GGUF) is committed as one generation, so other tools can read `DIR/…` directly and
//! a kill at any moment leaves the old set or the new one, never a mix.
//!
//! # Protocol
//!
//! For a target `parent/NAME` a [`DirWriter`] uses three hidden siblings: `.NAME.engram-lock`
//! (the [`WriterLock`]), `.NAME.engram-new` (the staging directory) and `.NAME.engram-old`
//! (the previous generation on its way out). The target is never modified in place.
//!
//! 1. Lock, then [`recover`] whatever an earlier writer left.
//! 2. Write every file into `.NAME.engram-new`, fsync each.
//! 3. Write the manifest `.engram-manifest` last (an envelope ([`super::envelope`]) listing each
//!    file's name, size and CRC-32), fsync it and the staging directory. The new generation
//!    is now *complete*: from here on recovery rolls forward.
//! 4. Rename `NAME` → `.NAME.engram-old` (if there is an old generation).
//! 5. Rename `.NAME.engram-new` → `NAME`; fsync `parent`.
//! 6. Remove `.NAME.engram-old`; fsync `parent`; unlock.
//!
//! Only renames of whole directories touch `NAME`, and both are atomic on every POSIX file
//! system (and Android's, macOS's). No `renameat2`/`RENAME_EXCHANGE` is needed: the one moment
//! `NAME` is absent (between 4 and 5) is repaired by recovery, which a reader runs first.
//!
//! # What a crash leaves, and what [`recover`] does
//!
//! | killed during / after | on disk | recover |
//! |---|---|---|
//! | 1–2 | `NAME` old, `new` without a valid manifest | remove `new` → old |
//! | 3, manifest torn | `NAME` old, `new` manifest fails its checksum | remove `new` → old |
//! | 3, manifest written | `NAME` old, `new` complete | roll forward: 4, 5, 6 → new |
//! | 4 | `NAME` absent, `old`, `new` complete | roll forward: 5, 6 → new |
//! | 5 | `NAME` new, `old` | remove `old` → new |
//! | 6 (part-removed `old`) | `NAME` new, part of `old` | remove `old` → new |
//!
//! "Complete" means the manifest opens (magic, version, length, checksum) and every file it
//! lists is present with its size and CRC-32, so even after a power cut that lost unsynced
//! data recovery never rolls forward to a torn set. If `NAME` is absent and `new` is not
//! complete (only possible if the file system reordered the renames), `old` is renamed back.
//!
//! Recovery runs under the writer lock. With no sibling left it does nothing and takes no lock
//! (a read-only adapter directory loads fine); while another writer holds the lock it does
//! nothing and reports [`Recovery::Busy`]: `NAME` is then a complete generation, or, for the
//! instant between steps 4 and 5, absent.
//!
//! A target that already exists is replaced only if it holds nothing but regular files that
//! its own manifest names, that the new generation writes, or that the writer declared
//! replaceable ([`DirWriter::replacing`]); anything else is [`DirError::Foreign`], so pointing a
//! writer at a directory of other work refuses instead of deleting it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::sync_dir;
use super::envelope;
pub use super::generation::{DirError, FileEntry, MAX_FILES, MAX_MANIFEST_BYTES};
use super::generation::{check_name, file_matches, io_err, read_json_manifest, write_entry};
use super::lock::{LockError, WriterLock, beside_path};

/// The manifest file inside a committed (or staged) directory.
pub const MANIFEST_FILE: &str = ".engram-manifest";
/// The manifest's envelope magic.
pub const MANIFEST_MAGIC: &[u8; 8] = b"ENGDIRMF";
/// The manifest format version written and read.
pub const MANIFEST_VERSION: u32 = 1;

const STAGING_TAG: &str = "engram-new";
const OLD_TAG: &str = "engram-old";
const LOCK_TAG: &str = "engram-lock";

#[derive(Serialize, Deserialize)]
struct DirManifest {
    files: Vec<FileEntry>,
}

/// The manifest of directory `dir`, if it has a valid one.
fn read_dir_manifest(dir: &Path) -> Result<Option<Vec<FileEntry>>, DirError> {
    let path = dir.join(MANIFEST_FILE);
    let read = read_json_manifest(
        &path,
        MANIFEST_MAGIC,
        MANIFEST_VERSION,
        |m: &DirManifest| m.files.len(),
    )?;
    let Some(m) = read else {
        return Ok(None);
    };
    for (i, f) in m.files.iter().enumerate() {
        check_name(dir, &f.name)?;
        if m.files[..i].iter().any(|g| g.name == f.name) {
            return Err(DirError::Manifest {
                path,
                what: format!("`{}` listed twice", f.name),
            });
        }
    }
    Ok(Some(m.files))
}

/// Whether staging directory `dir` holds a complete generation: a valid manifest and every
/// file it names with the recorded size and checksum.
fn is_complete(dir: &Path) -> Result<bool, DirError> {
    let files = match read_dir_manifest(dir) {
        Ok(Some(f)) => f,
        // Absent or torn: the writer died before finishing it.
        Ok(None) | Err(DirError::Manifest { .. } | DirError::BadName { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    for f in &files {
        let p = dir.join(&f.name);
        if !file_matches(&p, f.size, f.crc32).map_err(io_err(&p))? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn exists(path: &Path) -> Result<bool, DirError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn remove_tree(path: &Path) -> Result<(), DirError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), DirError> {
    fs::rename(from, to).map_err(io_err(from))
}

/// What [`recover`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Nothing was left over; nothing was touched.
    Clean,
    /// A writer holds the lock; nothing was touched.
    Busy,
    /// An incomplete new generation or a leftover old one (or a stale lock file) was removed;
    /// the target is unchanged.
    Cleaned,
    /// A complete new generation was committed.
    RolledForward,
    /// The target was missing and the old generation was put back.
    RolledBack,
}

/// The siblings of a target.
struct Siblings {
    target: PathBuf,
    parent: PathBuf,
    staging: PathBuf,
    old: PathBuf,
    lock: PathBuf,
}

impl Siblings {
    fn of(target: &Path) -> Result<Self, DirError> {
        if target.file_name().is_none() {
            return Err(DirError::BadTarget {
                path: target.to_path_buf(),
                what: "has no directory name (`.`, `..` or a root); name the directory itself",
            });
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Self {
            target: target.to_path_buf(),
            parent,
            staging: beside_path(target, STAGING_TAG),
            old: beside_path(target, OLD_TAG),
            lock: beside_path(target, LOCK_TAG),
        })
    }

    /// Rolls forward or back; the caller holds the lock.
    fn recover_locked(&self) -> Result<Recovery, DirError> {
        let staged = exists(&self.staging)?;
        let old = exists(&self.old)?;
        let target = exists(&self.target)?;
        let mut outcome = Recovery::Cleaned;
        if staged && is_complete(&self.staging)? {
            if target {
                remove_tree(&self.old)?;
                rename(&self.target, &self.old)?;
            }
            rename(&self.staging, &self.target)?;
            outcome = Recovery::RolledForward;
        } else {
            remove_tree(&self.staging)?;
            if !target && old {
                rename(&self.old, &self.target)?;
                outcome = Recovery::RolledBack;
            }
        }
        sync_dir(&self.parent).map_err(io_err(&self.parent))?;
        remove_tree(&self.old)?;
        sync_dir(&self.parent).map_err(io_err(&self.parent))?;
        Ok(outcome)
    }

    /// Refuses a target holding anything but files this generation may replace.
    fn check_replaceable(
        &self,
        writes: &[FileEntry],
        replacing: &[String],
    ) -> Result<(), DirError> {
        let meta = match fs::symlink_metadata(&self.target) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&self.target)(e)),
        };
        if !meta.is_dir() {
            return Err(DirError::BadTarget {
                path: self.target.clone(),
                what: "exists and is not a directory (a symbolic link or a file)",
            });
        }
        let own = read_dir_manifest(&self.target)
            .ok()
            .flatten()
            .unwrap_or_default();
        let entries = fs::read_dir(&self.target).map_err(io_err(&self.target))?;
        for e in entries {
            let e = e.map_err(io_err(&self.target))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let is_file = e.file_type().map_err(io_err(&e.path()))?.is_file();
            let ours = name == MANIFEST_FILE
                || writes.iter().chain(&own).any(|f| f.name == name)
                || replacing.contains(&name);
            if !(is_file && ours) {
                return Err(DirError::Foreign {
                    dir: self.target.clone(),
                    entry: name,
                });
            }
        }
        Ok(())
    }
}

/// Finishes or undoes whatever a killed writer left beside `target` (see the module docs), so
/// that `target` is one complete generation and no staging, old or lock sibling remains.
/// Every opener and writer of a directory written by [`DirWriter`] runs it first.
pub fn recover(target: &Path) -> Result<Recovery, DirError> {
    if target.file_name().is_none() {
        // No writer can have used it (`DirWriter::create` refuses it): nothing to recover.
        return Ok(Recovery::Clean);
    }
    let s = Siblings::of(target)?;
    if !(exists(&s.staging)? || exists(&s.old)? || exists(&s.lock)?) {
        return Ok(Recovery::Clean);
    }
    let _lock = match WriterLock::acquire(&s.lock) {
        Ok(l) => l,
        Err(LockError::Busy { .. }) => return Ok(Recovery::Busy),
        Err(e) => return Err(e.into()),
    };
    if !(exists(&s.staging)? || exists(&s.old)?) {
        // Only a stale lock file (its holder was killed); dropping the lock removes it.
        return Ok(Recovery::Cleaned);
    }
    s.recover_locked()
}

/// Writes a new generation of a user-named directory; [`DirWriter::commit`] swaps it in. Holds
/// the directory's writer lock from [`DirWriter::create`] until it is committed or dropped; a
/// writer dropped without committing removes its staging directory and leaves the target as
/// it was.
pub struct DirWriter {
    s: Siblings,
    files: Vec<FileEntry>,
    replacing: Vec<String>,
    staged: bool,
    _lock: WriterLock,
}

impl DirWriter {
    /// Starts a new generation of `target` (its parent directories are created): takes the
    /// lock ([`DirError::Lock`] if another writer holds it), recovers, and checks that an
    /// existing `target` may be replaced.
    pub fn create(target: &Path) -> Result<Self, DirError> {
        let s = Siblings::of(target)?;
        fs::create_dir_all(&s.parent).map_err(io_err(&s.parent))?;
        let lock = WriterLock::acquire(&s.lock)?;
        s.recover_locked()?;
        s.check_replaceable(&[], &[]).or_else(|e| match e {
            // Names the caller will write or replace are only known later.
            DirError::Foreign { .. } => Ok(()),
            e => Err(e),
        })?;
        fs::create_dir(&s.staging).map_err(io_err(&s.staging))?;
        Ok(Self {
            s,
            files: Vec::new(),
            replacing: Vec::new(),
            staged: true,
            _lock: lock,
        })
    }

    /// Declares file names an existing target may hold that this generation drops (files an
    /// earlier tool wrote, such as PEFT's `README.md`). Without them, a target holding files
    /// neither its manifest nor this generation names is not replaced.
    pub fn replacing(mut self, names: &[&str]) -> Self {
        self.replacing.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Adds the file `name` with contents `bytes`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<(), DirError> {
        self.add_with(name, |w| w.write_all(bytes))
    }

    /// Adds the file `name` with what `fill` writes (streamed to disk, fsynced).
    pub fn add_with<F>(&mut self, name: &str, fill: F) -> Result<(), DirError>
    where
        F: FnOnce(&mut dyn Write) -> io::Result<()>,
    {
        check_name(&self.s.target, name)?;
        if self.files.iter().any(|f| f.name == name) {
            return Err(DirError::BadName {
                dir: self.s.target.clone(),
                name: name.to_owned(),
                what: "given twice",
            });
        }
        let (size, crc32) = write_entry(&self.s.staging, name, fill)?;
        self.files.push(FileEntry {
            name: name.to_owned(),
            size,
            crc32,
        });
        Ok(())
    }

    /// The files added so far.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Writes the manifest and swaps the new generation in (steps 3–6 of the protocol).
    pub fn commit(mut self) -> Result<(), DirError> {
        self.s.check_replaceable(&self.files, &self.replacing)?;
        let payload = serde_json::to_vec(&DirManifest {
            files: self.files.clone(),
        })
        .expect("a manifest serializes");
        let sealed = envelope::seal(MANIFEST_MAGIC, MANIFEST_VERSION, &payload);
        write_entry(&self.s.staging, MANIFEST_FILE, |w| w.write_all(&sealed))?;
        sync_dir(&self.s.staging).map_err(io_err(&self.s.staging))?;
        // Complete: from here recovery rolls forward, so the drop must not remove it.
        self.staged = false;
        if exists(&self.s.target)? {
            rename(&self.s.target, &self.s.old)?;
        }
        rename(&self.s.staging, &self.s.target)?;
        sync_dir(&self.s.parent).map_err(io_err(&self.s.parent))?;
        remove_tree(&self.s.old)?;
        sync_dir(&self.s.parent).map_err(io_err(&self.s.parent))?;
        Ok(())
    }
}

impl Drop for DirWriter {
    fn drop(&mut self) {
        if self.staged {
            let _ = fs::remove_dir_all(&self.s.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn write(target: &Path, files: &[(&str, &[u8])]) {
        let mut w = DirWriter::create(target).unwrap();
        for (n, b) in files {
            w.add(n, b).unwrap();
        }
        w.commit().unwrap();
    }

    #[test]
    fn commits_replace_the_whole_set_and_leave_no_siblings() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("adapter");
        write(&t, &[("a.json", b"1"), ("b.bin", b"22")]);
        assert_eq!(names(&t), [MANIFEST_FILE, "a.json", "b.bin"]);
        write(&t, &[("a.json", b"3")]);
        assert_eq!(names(&t), [MANIFEST_FILE, "a.json"]);
        assert_eq!(fs::read(t.join("a.json")).unwrap(), b"3");
        assert_eq!(names(root.path()), ["adapter"]);
        assert_eq!(recover(&t).unwrap(), Recovery::Clean);
    }

    #[test]
    fn a_dropped_writer_leaves_the_old_set() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("d");
        write(&t, &[("a", b"old")]);
        let mut w = DirWriter::create(&t).unwrap();
        w.add("a", b"new").unwrap();
        drop(w);
        assert_eq!(fs::read(t.join("a")).unwrap(), b"old");
        assert_eq!(names(root.path()), ["d"]);
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("d");
        let w = DirWriter::create(&t).unwrap();
        assert!(matches!(
            DirWriter::create(&t),
            Err(DirError::Lock(LockError::Busy { .. }))
        ));
        // A reader's recovery leaves the writer's staging alone.
        assert_eq!(recover(&t).unwrap(), Recovery::Busy);
        w.commit().unwrap();
    }

    #[test]
    fn foreign_directories_and_bad_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("work");
        fs::create_dir(&t).unwrap();
        fs::write(t.join("thesis.tex"), b"precious").unwrap();
        let mut w = DirWriter::create(&t).unwrap();
        w.add("a", b"x").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(&err, DirError::Foreign { entry, .. } if entry == "thesis.tex"));
        assert!(err.to_string().contains("work"), "{err}");
        assert_eq!(names(&t), ["thesis.tex"]);
        assert_eq!(names(root.path()), ["work"]);
        // Declared replaceable, it goes.
        let mut w = DirWriter::create(&t).unwrap().replacing(&["thesis.tex"]);
        w.add("a", b"x").unwrap();
        w.commit().unwrap();
        assert_eq!(names(&t), [MANIFEST_FILE, "a"]);
        let mut w = DirWriter::create(&t).unwrap();
        for bad in ["", "..", "a/b", ".engram-manifest", "a"] {
            if bad == "a" {
                w.add(bad, b"").unwrap();
            }
            assert!(
                matches!(w.add(bad, b""), Err(DirError::BadName { .. })),
                "{bad:?}"
            );
        }
        let file = root.path().join("f");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            DirWriter::create(&file),
            Err(DirError::BadTarget { .. })
        ));
        assert!(matches!(
            DirWriter::create(Path::new("/")),
            Err(DirError::BadTarget { .. })
        ));
    }

    /// Stages a complete or incomplete generation by hand, as a killed writer leaves it.
    fn stage(t: &Path, complete: bool, payload: &[u8]) {
        let s = Siblings::of(t).unwrap();
        let mut w = DirWriter::create(t).unwrap();
        w.add("a", payload).unwrap();
        if complete {
            let m = serde_json::to_vec(&DirManifest {
                files: w.files().to_vec(),
            })
            .unwrap();
            let sealed = envelope::seal(MANIFEST_MAGIC, MANIFEST_VERSION, &m);
            write_entry(&s.staging, MANIFEST_FILE, |o| o.write_all(&sealed)).unwrap();
        }
        w.staged = false; // "killed": the drop does not clean up
        drop(w);
        // A killed holder leaves its lock file.
        fs::write(&s.lock, b"").unwrap();
    }

    #[test]
    fn recovery_handles_every_crash_point() {
        let root = tempfile::tempdir().unwrap();
        let t = root.path().join("d");
        let s = Siblings::of(&t).unwrap();
        let read = || fs::read(t.join("a")).unwrap();
        write(&t, &[("a", b"old")]);

        // Killed while writing files: rolled back.
        stage(&t, false, b"new");
        assert_eq!(recover(&t).unwrap(), Recovery::Cleaned);
        assert_eq!(
            (read(), names(root.path())),
            (b"old".to_vec(), vec!["d".into()])
        );

        // Killed after the manifest: rolled forward.
        stage(&t, true, b"new");
        assert_eq!(recover(&t).unwrap(), Recovery::RolledForward);
        assert_eq!(
            (read(), names(root.path())),
            (b"new".to_vec(), vec!["d".into()])
        );

        // A torn file under a complete-looking manifest: not complete, rolled back.
        stage(&t, true, b"newer");
        fs::write(s.staging.join("a"), b"newe").unwrap();
        assert_eq!(recover(&t).unwrap(), Recovery::Cleaned);
        assert_eq!(read(), b"new");

        // Killed between the two renames: rolled forward.
        stage(&t, true, b"third");
        fs::rename(&t, &s.old).unwrap();
        assert_eq!(recover(&t).unwrap(), Recovery::RolledForward);
        assert_eq!(
            (read(), names(root.path())),
            (b"third".to_vec(), vec!["d".into()])
        );

        // Killed before removing the old generation (or part-way through).
        fs::create_dir(&s.old).unwrap();
        fs::write(s.old.join("a"), b"x").unwrap();
        assert_eq!(recover(&t).unwrap(), Recovery::Cleaned);
        assert_eq!(
            (read(), names(root.path())),
            (b"third".to_vec(), vec!["d".into()])
        );

        // Target missing, staging incomplete, old present: old goes back.
        stage(&t, false, b"fourth");
        fs::rename(&t, &s.old).unwrap();
        assert_eq!(recover(&t).unwrap(), Recovery::RolledBack);
        assert_eq!(
            (read(), names(root.path())),
            (b"third".to_vec(), vec!["d".into()])
        );

        // A stale lock file alone is removed.
        fs::write(&s.lock, b"").unwrap();
        assert_eq!(recover(&t).unwrap(), Recovery::Cleaned);
        assert_eq!(names(root.path()), ["d"]);
    }
}

//! State directories owned by engram (the learning runtime's home): files are committed in
//! generations, named by one manifest that is replaced with one atomic rename.
//!
//! `ROOT/MANIFEST` (a [`super::envelope`] file, magic `ENGSTATE`) names the current
//! generation and, for each logical file (`params`, `replay.bin`, …), the on-disk file that
//! holds it (`g7-replay.bin`), its size and CRC-32. A new generation writes new files under
//! new names beside the current ones (or [`Generation::keep`]s a file unchanged), then commits
//! by replacing `MANIFEST` ([`write_atomic`](super::write_atomic): temp, fsync, rename, fsync
//! directory). A crash before that rename leaves the old generation current; after it, the new
//! one. Nothing else ever changes a committed file.
//!
//! [`StateDir::open`] (the writer, under [`WriterLock`]) removes every entry the manifest does
//! not name: files of a generation that never committed, superseded ones, temp files.
//! [`read_state`] (a reader) takes no lock and never waits: it reads the manifest, then the
//! files, and starts over if a writer committed and removed a file under it meanwhile.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::sync_dir;
use super::envelope;
use super::generation::{
    DirError, check_name, file_matches, io_err, read_json_manifest, write_entry,
};
use super::lock::{LOCK_FILE, WriterLock};

/// The manifest file of a state directory.
pub const MANIFEST: &str = "MANIFEST";
/// The manifest's envelope magic.
pub const MAGIC: &[u8; 8] = b"ENGSTATE";
/// The manifest format version written and read.
pub const VERSION: u32 = 1;

/// How often [`read_state`] starts over when a writer commits under it.
const READ_RETRIES: usize = 16;

/// One logical file of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// The logical name (`replay.bin`).
    pub name: String,
    /// The file in the directory that holds it (`g7-replay.bin`).
    pub file: String,
    /// Length in bytes.
    pub size: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StateManifest {
    generation: u64,
    files: Vec<StateFile>,
}

fn read_manifest(root: &Path) -> Result<StateManifest, DirError> {
    let path = root.join(MANIFEST);
    let read = read_json_manifest(&path, MAGIC, VERSION, |m: &StateManifest| m.files.len())?;
    let Some(m) = read else {
        return Ok(StateManifest::default());
    };
    for (i, f) in m.files.iter().enumerate() {
        check_name(root, &f.name)?;
        check_name(root, &f.file)?;
        if f.file == MANIFEST
            || m.files[..i]
                .iter()
                .any(|g| g.name == f.name || g.file == f.file)
        {
            return Err(DirError::Manifest {
                path,
                what: format!("`{}` listed twice or reserved", f.name),
            });
        }
    }
    Ok(m)
}

/// A state directory opened for writing: holds its writer lock until dropped.
pub struct StateDir {
    root: PathBuf,
    current: StateManifest,
    _lock: WriterLock,
}

impl StateDir {
    /// Opens (creating it if missing) the state directory `root` for writing: takes its lock
    /// ([`DirError::Lock`] if another writer holds it), reads the manifest and removes every
    /// entry no generation names.
    pub fn open(root: &Path) -> Result<Self, DirError> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let lock = WriterLock::in_dir(root)?;
        let current = read_manifest(root)?;
        let dir = Self {
            root: root.to_path_buf(),
            current,
            _lock: lock,
        };
        dir.remove_unnamed()?;
        Ok(dir)
    }

    fn remove_unnamed(&self) -> Result<(), DirError> {
        let mut removed = false;
        for e in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let e = e.map_err(io_err(&self.root))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name == MANIFEST
                || name == LOCK_FILE
                || self.current.files.iter().any(|f| f.file == name)
            {
                continue;
            }
            // Only what a writer of ours leaves is ever removed: a generation's file that never
            // committed or was superseded (`g<N>-name`) or a manifest temp file. Anything else
            // means `root` is not (only) a state directory: refuse rather than delete it.
            if !is_ours(&name) {
                return Err(DirError::Foreign {
                    dir: self.root.clone(),
                    entry: name.into_owned(),
                });
            }
            let path = e.path();
            let is_dir = e.file_type().map_err(io_err(&path))?.is_dir();
            let r = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(io_err(&path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.root).map_err(io_err(&self.root))?;
        }
        Ok(())
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current generation (0: nothing committed yet).
    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    /// The current generation's files.
    pub fn files(&self) -> &[StateFile] {
        &self.current.files
    }

    /// The contents of the current generation's file `name`, checked against the manifest;
    /// `Ok(None)` if the generation has no such file.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, DirError> {
        match self.current.files.iter().find(|f| f.name == name) {
            None => Ok(None),
            Some(f) => read_checked(&self.root, f).map(Some),
        }
    }

    /// Starts the next generation; nothing is visible until [`Generation::commit`].
    pub fn begin(&mut self) -> Generation<'_> {
        Generation {
            generation: self.current.generation + 1,
            files: Vec::new(),
            written: Vec::new(),
            committed: false,
            dir: self,
        }
    }
}

/// Whether `name` is a file a state-directory writer makes: `g<N>-<logical name>` or a
/// temp file of the manifest's atomic write.
fn is_ours(name: &str) -> bool {
    let generation_file = name
        .strip_prefix('g')
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    generation_file || name.starts_with(&format!(".{MANIFEST}.engram-tmp-"))
}

fn read_checked(root: &Path, f: &StateFile) -> Result<Vec<u8>, DirError> {
    let path = root.join(&f.file);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    if bytes.len() as u64 != f.size || crc32fast::hash(&bytes) != f.crc32 {
        return Err(DirError::Manifest {
            path,
            what: format!(
                "{} bytes do not match the manifest's {} bytes and CRC-32 {:#010x}",
                bytes.len(),
                f.size,
                f.crc32
            ),
        });
    }
    Ok(bytes)
}

/// A generation being written. Dropped without [`Generation::commit`], its files are removed
/// and the current generation stays.
pub struct Generation<'a> {
    dir: &'a mut StateDir,
    generation: u64,
    files: Vec<StateFile>,
    written: Vec<String>,
    committed: bool,
}

impl Generation<'_> {
    /// The number this generation will have.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn check_new(&self, name: &str) -> Result<(), DirError> {
        check_name(&self.dir.root, name)?;
        if self.files.iter().any(|f| f.name == name) {
            return Err(DirError::BadName {
                dir: self.dir.root.clone(),
                name: name.to_owned(),
                what: "given twice",
            });
        }
        Ok(())
    }

    /// Writes the logical file `name` with contents `bytes`.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), DirError> {
        self.write_with(name, |w| w.write_all(bytes))
    }

    /// Writes the logical file `name` with what `fill` streams out (fsynced).
    pub fn write_with<F>(&mut self, name: &str, fill: F) -> Result<(), DirError>
    where
        F: FnOnce(&mut dyn Write) -> io::Result<()>,
    {
        self.check_new(name)?;
        let file = format!("g{}-{name}", self.generation);
        if file.len() > 255 {
            return Err(DirError::BadName {
                dir: self.dir.root.clone(),
                name: name.to_owned(),
                what: "too long with its generation prefix",
            });
        }
        self.written.push(file.clone());
        let (size, crc32) = write_entry(&self.dir.root, &file, fill)?;
        self.files.push(StateFile {
            name: name.to_owned(),
            file,
            size,
            crc32,
        });
        Ok(())
    }

    /// Carries the current generation's file `name` into this one unchanged (no copy).
    pub fn keep(&mut self, name: &str) -> Result<(), DirError> {
        self.check_new(name)?;
        let f = self
            .dir
            .current
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| DirError::BadName {
                dir: self.dir.root.clone(),
                name: name.to_owned(),
                what: "not in the current generation",
            })?;
        self.files.push(f.clone());
        Ok(())
    }

    /// Commits: replaces the manifest atomically, then removes the files only the previous
    /// generation named. Returns the new generation's number.
    pub fn commit(mut self) -> Result<u64, DirError> {
        let root = self.dir.root.clone();
        sync_dir(&root).map_err(io_err(&root))?;
        let next = StateManifest {
            generation: self.generation,
            files: std::mem::take(&mut self.files),
        };
        let payload = serde_json::to_vec(&next).expect("a manifest serializes");
        envelope::write_file(&root.join(MANIFEST), MAGIC, VERSION, &payload).map_err(
            |e| match e {
                envelope::EnvelopeError::Io { path, source } => DirError::Io { path, source },
                other => DirError::Manifest {
                    path: other.path().to_path_buf(),
                    what: other.to_string(),
                },
            },
        )?;
        self.committed = true;
        let previous = std::mem::replace(&mut self.dir.current, next);
        for f in previous.files {
            if !self.dir.current.files.iter().any(|g| g.file == f.file) {
                let path = root.join(&f.file);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err(&path)(e));
                    }
                    _ => {}
                }
            }
        }
        sync_dir(&root).map_err(io_err(&root))?;
        Ok(self.generation)
    }
}

impl Drop for Generation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            for f in &self.written {
                let _ = fs::remove_file(self.dir.root.join(f));
            }
        }
    }
}

/// A consistent copy of one committed generation, read without the lock.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The generation read (0: nothing committed yet).
    pub generation: u64,
    /// Each logical file's name and contents, in manifest order.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Snapshot {
    /// The contents of the logical file `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }
}

/// Reads the current generation of the state directory `root` whole, without the lock: if a
/// writer commits meanwhile and a file goes, it starts over from the new manifest. An absent
/// directory or manifest reads as generation 0 with no files.
pub fn read_state(root: &Path) -> Result<Snapshot, DirError> {
    let mut last_err = None;
    for _ in 0..READ_RETRIES {
        let m = read_manifest(root)?;
        let mut files = Vec::with_capacity(m.files.len());
        let mut failed = None;
        for f in &m.files {
            match read_checked(root, f) {
                Ok(b) => files.push((f.name.clone(), b)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failed else {
            return Ok(Snapshot {
                generation: m.generation,
                files,
            });
        };
        // Only a commit in between excuses a missing or changed file.
        if read_manifest(root)?.generation == m.generation {
            return Err(e);
        }
        last_err = Some(e);
    }
    Err(last_err.expect("at least one try"))
}

/// Whether a writer's file `f` still holds what the manifest says (for tests and `fsck`-like
/// tools).
pub fn verify(root: &Path, f: &StateFile) -> Result<bool, DirError> {
    let path = root.join(&f.file);
    file_matches(&path, f.size, f.crc32).map_err(io_err(&path))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_directory_with_files_of_its_own_is_refused_not_emptied() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("state");
        fs::create_dir(&r).unwrap();
        fs::write(r.join("notes.txt"), b"the user's").unwrap();
        assert!(matches!(
            StateDir::open(&r),
            Err(DirError::Foreign { entry, .. }) if entry == "notes.txt"
        ));
        assert_eq!(fs::read(r.join("notes.txt")).unwrap(), b"the user's");
        // Leftovers of our own writers are still cleaned.
        fs::remove_file(r.join("notes.txt")).unwrap();
        fs::write(r.join("g3-params"), b"uncommitted").unwrap();
        StateDir::open(&r).unwrap();
        assert!(!r.join("g3-params").exists());
    }
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn generations_commit_keep_and_collect() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(read_state(r).unwrap().generation, 0);
        let mut d = StateDir::open(r).unwrap();
        let mut g = d.begin();
        g.write("params", b"p1").unwrap();
        g.write("replay.bin", b"r1").unwrap();
        assert_eq!(g.commit().unwrap(), 1);
        let mut g = d.begin();
        g.keep("params").unwrap();
        g.write("replay.bin", b"r2").unwrap();
        assert!(g.keep("nothing").is_err());
        assert_eq!(g.commit().unwrap(), 2);
        assert_eq!(d.read("params").unwrap().unwrap(), b"p1");
        let s = read_state(r).unwrap();
        assert_eq!((s.generation, s.get("replay.bin")), (2, Some(&b"r2"[..])));
        assert_eq!(
            names(r),
            [LOCK_FILE, MANIFEST, "g1-params", "g2-replay.bin"],
            "superseded files go at commit"
        );
        assert!(d.files().iter().all(|f| verify(r, f).unwrap()));
    }

    #[test]
    fn an_uncommitted_generation_leaves_nothing_and_open_collects_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut d = StateDir::open(r).unwrap();
        let mut g = d.begin();
        g.write("a", b"1").unwrap();
        g.commit().unwrap();
        let mut g = d.begin();
        g.write("a", b"2").unwrap();
        drop(g);
        assert_eq!(read_state(r).unwrap().get("a"), Some(&b"1"[..]));
        // What a killed writer leaves: files of a generation that never committed, a temp file.
        fs::write(r.join("g2-a"), b"2").unwrap();
        fs::write(r.join(".MANIFEST.engram-tmp-xyz"), b"").unwrap();
        assert!(
            matches!(StateDir::open(r), Err(DirError::Lock(_))),
            "one writer at a time"
        );
        drop(d);
        let d = StateDir::open(r).unwrap();
        assert_eq!(names(r), [LOCK_FILE, MANIFEST, "g1-a"]);
        assert_eq!(d.generation(), 1);
    }

    #[test]
    fn a_damaged_file_or_manifest_is_a_typed_error_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let mut d = StateDir::open(r).unwrap();
        let mut g = d.begin();
        g.write("a", b"hello").unwrap();
        g.commit().unwrap();
        fs::write(r.join("g1-a"), b"hellO").unwrap();
        let err = read_state(r).unwrap_err();
        assert!(err.to_string().contains("g1-a"), "{err}");
        let bytes = fs::read(r.join(MANIFEST)).unwrap();
        fs::write(r.join(MANIFEST), &bytes[..bytes.len() - 1]).unwrap();
        let err = read_state(r).unwrap_err();
        assert!(matches!(&err, DirError::Manifest { path, .. } if path.ends_with(MANIFEST)));
    }
}

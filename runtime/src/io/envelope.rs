//! The one on-disk envelope of every engram state file (edit log, statistics cache, replay
//! snapshot, directory manifests): a fixed header, the payload, one checksum.
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic, one per format (`ENGEDLOG`, `ENGRAMRB`, …) |
//! | 4 | format version, `u32` little-endian |
//! | 8 | payload length `n`, `u64` little-endian |
//! | n | payload |
//! | 4 | CRC-32 (IEEE, `crc32fast`) of every byte before it: header and payload |
//!
//! Magic and version sit where all of engram's earlier formats put them (bytes 0..8 and
//! 8..12), so a file of an older layout is reported as [`Corruption::UnknownVersion`] with its
//! version, and a loader may dispatch to a legacy decoder on that. The checksum is a trailer so
//! a payload can be streamed ([`Sealer`]) without being held in memory; it covers the header
//! too, so a flipped version or length bit is caught even where it would otherwise look valid.
//!
//! [`open`] is the one reader: it checks length, magic, version, declared length and checksum,
//! in that order, before it hands out the payload; it works on a borrowed slice (a mapped
//! file, a read buffer, a test vector), never panics and never allocates from a length it read.
//! [`write_file`] seals and writes with [`super::write_atomic`] (temp file, fsync,
//! rename, fsync directory); [`read_file`] reads and opens, naming the path in its error.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::atomic::write_atomic;

/// Bytes before the payload: magic, version, payload length.
pub const HEADER_LEN: usize = 8 + 4 + 8;
/// Bytes after the payload: the CRC-32.
pub const TRAILER_LEN: usize = 4;

/// What is wrong with the bytes of an envelope. Offsets are from the start of the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file ends before `needed` bytes; it has `len`.
    #[error("truncated: {len} bytes, the {what} needs {needed}")]
    Truncated {
        /// The part that is cut: "header" or "payload and checksum".
        what: &'static str,
        /// The file length.
        len: u64,
        /// The length the header (or the fixed header size) requires.
        needed: u64,
    },
    /// The first eight bytes are not this format's magic.
    #[error(
        "not a {} file (magic {}, expected {})",
        Magic(expected),
        Magic(found),
        Magic(expected)
    )]
    BadMagic {
        /// The magic found.
        found: [u8; 8],
        /// The magic the caller expects.
        expected: [u8; 8],
    },
    /// A version this build does not read.
    #[error("format version {found}; this build reads {supported:?}")]
    UnknownVersion {
        /// The version in the file.
        found: u32,
        /// The versions the caller reads.
        supported: Vec<u32>,
    },
    /// The file is longer than its header says (trailing bytes).
    #[error(
        "length mismatch: the header declares a {declared}-byte payload, the file holds {actual}"
    )]
    LengthMismatch {
        /// Payload length in the header.
        declared: u64,
        /// Payload bytes present (file length minus header and checksum).
        actual: u64,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC-32 stored in the trailer.
        stored: u32,
        /// CRC-32 of the bytes read.
        computed: u32,
    },
}

/// Shows a magic as text where printable, escaped otherwise.
struct Magic<'a>(&'a [u8; 8]);

impl fmt::Display for Magic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Reading or writing an envelope file failed; names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The file system failed (including: the file does not exist, see
    /// [`EnvelopeError::is_not_found`]).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The bytes are not a valid envelope of the expected format.
    #[error("{}: {corruption}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        corruption: Corruption,
    },
}

impl EnvelopeError {
    /// The file named in the error.
    pub fn path(&self) -> &Path {
        match self {
            EnvelopeError::Io { path, .. } | EnvelopeError::Corrupt { path, .. } => path,
        }
    }

    /// True when the file does not exist (a loader's "nothing stored yet").
    pub fn is_not_found(&self) -> bool {
        matches!(self, EnvelopeError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl Corruption {
    /// This corruption, in the file `path`.
    pub fn at(self, path: &Path) -> EnvelopeError {
        EnvelopeError::Corrupt {
            path: path.to_path_buf(),
            corruption: self,
        }
    }
}

fn header(magic: &[u8; 8], version: u32, payload_len: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(magic);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..20].copy_from_slice(&payload_len.to_le_bytes());
    h
}

/// `payload` in an envelope: header, payload, checksum.
pub fn seal(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    let mut s = Sealer::new(&mut out, magic, version, payload.len() as u64)
        .expect("writing to a Vec cannot fail");
    s.write_all(payload).expect("writing to a Vec cannot fail");
    s.finish().expect("the payload has the declared length");
    out
}

/// Streams an envelope into a writer: the header on [`Sealer::new`], the payload through
/// [`Write`], the checksum on [`Sealer::finish`], which fails unless exactly the declared
/// number of payload bytes went through.
pub struct Sealer<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    declared: u64,
    written: u64,
}

impl<W: Write> Sealer<W> {
    /// Writes the header of a `payload_len`-byte payload to `inner`.
    pub fn new(mut inner: W, magic: &[u8; 8], version: u32, payload_len: u64) -> io::Result<Self> {
        let h = header(magic, version, payload_len);
        inner.write_all(&h)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h);
        Ok(Self {
            inner,
            crc,
            declared: payload_len,
            written: 0,
        })
    }

    /// Writes the checksum and hands the writer back; an error if the payload written is not
    /// the declared length (the envelope would not open).
    pub fn finish(mut self) -> io::Result<W> {
        if self.written != self.declared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "envelope payload of {} bytes, {} declared",
                    self.written, self.declared
                ),
            ));
        }
        self.inner
            .write_all(&self.crc.clone().finalize().to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.declared - self.written;
        if buf.len() as u64 > room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "envelope payload exceeds the declared {} bytes",
                    self.declared
                ),
            ));
        }
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks `bytes` as an envelope of the format `magic` in one of `versions` and returns the
/// version and the payload. Never panics; allocates only for an [`Corruption::UnknownVersion`]
/// (a copy of `versions`).
pub fn open<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    versions: &[u32],
) -> Result<(u32, &'a [u8]), Corruption> {
    let len = bytes.len() as u64;
    let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        // A short prefix of the magic is a cut file; anything else is foreign.
        let n = bytes.len().min(8);
        if bytes[..n] != magic[..n] {
            return Err(bad_magic(bytes, magic));
        }
        return Err(Corruption::Truncated {
            what: "header",
            len,
            needed: HEADER_LEN as u64,
        });
    };
    if head[..8] != magic[..] {
        return Err(bad_magic(bytes, magic));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if !versions.contains(&version) {
        return Err(Corruption::UnknownVersion {
            found: version,
            supported: versions.to_vec(),
        });
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&head[12..20]);
    let declared = u64::from_le_bytes(l);
    let fixed = (HEADER_LEN + TRAILER_LEN) as u64;
    let needed = declared.saturating_add(fixed);
    if len < needed {
        return Err(Corruption::Truncated {
            what: "payload and checksum",
            len,
            needed,
        });
    }
    if len > needed {
        return Err(Corruption::LengthMismatch {
            declared,
            actual: len - fixed,
        });
    }
    // len == needed: `rest` is the payload and the trailer exactly.
    let Some((payload, trailer)) = rest.split_last_chunk::<TRAILER_LEN>() else {
        return Err(Corruption::Truncated {
            what: "checksum",
            len,
            needed,
        });
    };
    let stored = u32::from_le_bytes(*trailer);
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    crc.update(payload);
    let computed = crc.finalize();
    if stored != computed {
        return Err(Corruption::ChecksumMismatch { stored, computed });
    }
    Ok((version, payload))
}

fn bad_magic(bytes: &[u8], magic: &[u8; 8]) -> Corruption {
    let mut found = [0u8; 8];
    let n = bytes.len().min(8);
    found[..n].copy_from_slice(&bytes[..n]);
    Corruption::BadMagic {
        found,
        expected: *magic,
    }
}

/// An envelope file read whole and checked: its version and payload.
#[derive(Clone, Debug)]
pub struct Sealed {
    version: u32,
    bytes: Vec<u8>,
}

impl Sealed {
    /// The format version of the file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The payload (checked against the checksum).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..self.bytes.len() - TRAILER_LEN]
    }
}

/// Reads `path` and [`open`]s it. The read is as long as the file (no length from inside the
/// file is trusted before [`open`] checks it).
pub fn read_file(path: &Path, magic: &[u8; 8], versions: &[u32]) -> Result<Sealed, EnvelopeError> {
    let bytes = std::fs::read(path).map_err(|source| EnvelopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let version = open(&bytes, magic, versions).map_err(|c| c.at(path))?.0;
    Ok(Sealed { version, bytes })
}

/// Seals `payload` and replaces `path` with it atomically (temp file, fsync, rename, fsync of
/// the directory): a crash leaves the old file or the new one.
pub fn write_file(
    path: &Path,
    magic: &[u8; 8],
    version: u32,
    payload: &[u8],
) -> Result<(), EnvelopeError> {
    write_file_with(path, magic, version, payload.len() as u64, |w| {
        w.write_all(payload)
    })
}

/// [`write_file`] for a payload of `payload_len` bytes that `fill` streams out (a large
/// statistics matrix, say, never held twice in memory). Fails, leaving `path` as it was, when
/// `fill` writes another number of bytes.
pub fn write_file_with<F>(
    path: &Path,
    magic: &[u8; 8],
    version: u32,
    payload_len: u64,
    fill: F,
) -> Result<(), EnvelopeError>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    write_atomic(path, |w| {
        let mut s = Sealer::new(w, magic, version, payload_len)?;
        fill(&mut s)?;
        s.finish().map(drop)
    })
    .map_err(|source| EnvelopeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[u8; 8] = b"ENGTEST\0";

    fn sample() -> Vec<u8> {
        seal(M, 3, b"hello, envelope")
    }

    #[test]
    fn round_trips_and_streams_the_same_bytes() {
        let s = sample();
        assert_eq!(s.len(), HEADER_LEN + 15 + TRAILER_LEN);
        assert_eq!(open(&s, M, &[1, 3]), Ok((3, &b"hello, envelope"[..])));
        let empty = seal(M, 1, b"");
        assert_eq!(open(&empty, M, &[1]), Ok((1, &b""[..])));
        let mut streamed = Vec::new();
        let mut w = Sealer::new(&mut streamed, M, 3, 15).unwrap();
        w.write_all(b"hello, ").unwrap();
        w.write_all(b"envelope").unwrap();
        w.finish().unwrap();
        assert_eq!(streamed, s);
    }

    #[test]
    fn a_stream_of_another_length_is_refused() {
        let mut out = Vec::new();
        let mut w = Sealer::new(&mut out, M, 1, 4).unwrap();
        w.write_all(b"abc").unwrap();
        assert!(w.finish().is_err());
        let mut out = Vec::new();
        let mut w = Sealer::new(&mut out, M, 1, 2).unwrap();
        assert!(w.write_all(b"abc").is_err());
    }

    #[test]
    fn every_corruption_class_is_named() {
        let s = sample();
        let mut foreign = s.clone();
        foreign[0] = b'X';
        assert!(matches!(
            open(&foreign, M, &[3]),
            Err(Corruption::BadMagic { found, expected }) if found[0] == b'X' && expected == *M
        ));
        assert!(matches!(
            open(b"GIF89a", M, &[3]),
            Err(Corruption::BadMagic { .. })
        ));
        assert_eq!(
            open(&s, M, &[1, 2]),
            Err(Corruption::UnknownVersion {
                found: 3,
                supported: vec![1, 2]
            })
        );
        let mut long = s.clone();
        long.push(0);
        assert_eq!(
            open(&long, M, &[3]),
            Err(Corruption::LengthMismatch {
                declared: 15,
                actual: 16
            })
        );
        let mut huge = s.clone();
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            open(&huge, M, &[3]),
            Err(Corruption::Truncated {
                needed: u64::MAX,
                ..
            })
        ));
        let mut flipped = s.clone();
        flipped[HEADER_LEN + 2] ^= 0x10;
        assert!(matches!(
            open(&flipped, M, &[3]),
            Err(Corruption::ChecksumMismatch { .. })
        ));
        let mut trailer = s.clone();
        *trailer.last_mut().unwrap() ^= 1;
        assert!(matches!(
            open(&trailer, M, &[3]),
            Err(Corruption::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let s = sample();
        for i in 0..s.len() {
            for bit in 0..8 {
                let mut b = s.clone();
                b[i] ^= 1 << bit;
                assert!(open(&b, M, &[3]).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn truncation_at_every_offset_is_reported_as_truncation() {
        let s = sample();
        for cut in 0..s.len() {
            match open(&s[..cut], M, &[3]) {
                Err(Corruption::Truncated { len, needed, .. }) => {
                    assert_eq!(len, cut as u64);
                    assert!(needed > len, "cut {cut}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn files_round_trip_and_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.bin");
        let err = read_file(&p, M, &[1]).unwrap_err();
        assert!(err.is_not_found() && err.path() == p);
        write_file(&p, M, 1, b"payload").unwrap();
        let r = read_file(&p, M, &[1]).unwrap();
        assert_eq!((r.version(), r.payload()), (1, &b"payload"[..]));
        write_file_with(&p, M, 2, 4, |w| w.write_all(b"ab").and(w.write_all(b"cd"))).unwrap();
        assert_eq!(read_file(&p, M, &[2]).unwrap().payload(), b"abcd");
        // A stream of the wrong length leaves the old file.
        assert!(write_file_with(&p, M, 2, 9, |w| w.write_all(b"short")).is_err());
        assert_eq!(read_file(&p, M, &[2]).unwrap().payload(), b"abcd");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let err = read_file(&p, M, &[2]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("state.bin") && msg.contains("truncated"),
            "{msg}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left");
    }
}

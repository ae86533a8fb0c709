//! Little-endian field codec for the payloads of engram's state files (replay snapshots, the
//! learning state): a growable writer and a bounds-checked reader that never reads past its
//! slice nor allocates from an unchecked count.

/// A field runs past the end of the payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at payload byte {offset} needs {need} bytes, payload has {len}")]
pub struct Short {
    /// The field being read.
    pub what: &'static str,
    /// Its offset.
    pub offset: usize,
    /// Bytes it needs.
    pub need: usize,
    /// Payload length.
    pub len: usize,
}

/// Appends fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    /// A `u32`.
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u64`.
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A length as `u32` (panics above `u32::MAX`: our writers never hold that much).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("a length that fits u32"));
    }

    /// `f32`s, without a count.
    pub fn f32s(&mut self, v: &[f32]) {
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// `u32`s, without a count.
    pub fn u32s(&mut self, v: &[u32]) {
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }

    /// A string: byte count, then UTF-8.
    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Reads fields from a payload, checking every length first.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Bytes read so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, what: &'static str, n: usize) -> Result<&'a [u8], Short> {
        if self.remaining() < n {
            return Err(Short {
                what,
                offset: self.pos,
                need: n,
                len: self.bytes.len(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(
            self.take(what, 4)?.try_into().expect("4 bytes"),
        ))
    }

    /// A `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(
            self.take(what, 8)?.try_into().expect("8 bytes"),
        ))
    }

    /// `n` `f32`s appended to `out` (the bytes are checked before anything is allocated).
    pub fn f32s(&mut self, what: &'static str, n: usize, out: &mut Vec<f32>) -> Result<(), Short> {
        let bytes = self.take(what, n.saturating_mul(4))?;
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
        );
        Ok(())
    }

    /// `n` `u32`s appended to `out`.
    pub fn u32s(&mut self, what: &'static str, n: usize, out: &mut Vec<u32>) -> Result<(), Short> {
        let bytes = self.take(what, n.saturating_mul(4))?;
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
        );
        Ok(())
    }

    /// A string written by [`Writer::str`]; `None` when it is not UTF-8.
    pub fn str(&mut self, what: &'static str) -> Result<Option<String>, Short> {
        let n = self.u32(what)? as usize;
        Ok(std::str::from_utf8(self.take(what, n)?)
            .ok()
            .map(str::to_owned))
    }
}

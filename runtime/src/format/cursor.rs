//! A bounds-checked little-endian reader over a byte slice. Every read either returns the value
//! or a [`GgufError::Truncated`] naming the offset and what was being read.

use super::gguf_error::GgufError;

/// Reads little-endian scalars and length-prefixed strings from `bytes`, front to back.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Current byte offset from the start of the buffer.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes; `what` describes the field for the error.
    pub(crate) fn take(
        &mut self,
        n: usize,
        what: &dyn Fn() -> String,
    ) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.pos,
                needed: n,
                available: self.remaining(),
                what: what(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &dyn Fn() -> String) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 byte length, then that many UTF-8 bytes. The length is checked against
    /// `max` and against the bytes left before anything is allocated.
    pub(crate) fn string(
        &mut self,
        max: usize,
        what: &dyn Fn() -> String,
    ) -> Result<&'a str, GgufError> {
        let offset = self.pos;
        let len = self.u64(what)?;
        if len > max as u64 {
            return Err(GgufError::StringTooLong {
                offset,
                len,
                max,
                what: what(),
            });
        }
        // `len <= max` fits in usize.
        let raw = self.take(len as usize, what)?;
        std::str::from_utf8(raw).map_err(|_| GgufError::InvalidUtf8 {
            offset: offset + 8,
            what: what(),
        })
    }
}

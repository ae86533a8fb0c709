//! Streaming decode: text out as soon as each UTF-8 character is complete.

use super::Tokenizer;

/// Streams decoded text token by token, holding back an incomplete UTF-8 sequence until the
/// token that completes it arrives. The concatenated output equals [`Tokenizer::decode`] of
/// all the ids pushed.
#[derive(Debug, Clone)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: &'t Tokenizer) -> StreamDecoder<'t> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds token `id`; returns the text it completes, if any.
    ///
    /// # Panics
    /// If `id` is outside the vocabulary.
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.pending
            .extend_from_slice(self.tokenizer.token_bytes(id));
        // Everything up to a trailing sequence that could still become valid is final.
        let mut complete = self.pending.len();
        let mut rest = self.pending.as_slice();
        while let Err(e) = std::str::from_utf8(rest) {
            match e.error_len() {
                Some(bad) => rest = &rest[e.valid_up_to() + bad..],
                None => {
                    complete = self.pending.len() - rest.len() + e.valid_up_to();
                    break;
                }
            }
        }
        self.take(complete)
    }

    /// Flushes whatever is pending (an incomplete sequence becomes U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        self.take(self.pending.len())
    }

    fn take(&mut self, len: usize) -> Option<String> {
        if len == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&self.pending[..len]).into_owned();
        self.pending.drain(..len);
        Some(text)
    }
}

impl Tokenizer {
    /// A [`StreamDecoder`] over this vocabulary.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

//! The statistics cache file's payload: what it was computed from ([`StatsKey`]) and
//! `E[k kᵀ]` of one layer ([`LayerStats`]), decoded with every length checked. Serde only: the
//! fuzz crate compiles this file directly (with the envelope) to fuzz the cache reader.

use serde::{Deserialize, Serialize};

/// The statistics cache's envelope magic.
pub const MAGIC: &[u8; 8] = b"ENGKCOV\0";
/// Format version written and read (1 was the pre-envelope layout).
pub const VERSION: u32 = 2;

/// Key statistics of one layer.
#[derive(Clone, Debug)]
pub struct LayerStats {
    /// The block.
    pub layer: usize,
    /// `E[k kᵀ]`, `(d_ff, d_ff)` row-major.
    pub mom2: Vec<f32>,
    /// `d_ff`.
    pub dim: usize,
    /// Tokens it was estimated from.
    pub tokens: usize,
}

/// Identifies what a cached file was computed from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsKey {
    /// Base model identity.
    pub model: String,
    /// FNV-1a of the corpus text.
    pub corpus: u64,
    /// Token budget.
    pub max_tokens: usize,
    /// The block.
    pub layer: usize,
}

/// Decodes a cache payload (the envelope already opened): a `u32` header length, the JSON header
/// (key, `dim`, tokens), then `dim²` little-endian f32. `None` when anything is off or the
/// file is for another key (a cache: any doubt means compute again).
pub fn decode(body: &[u8], key: &StatsKey) -> Option<LayerStats> {
    let hlen = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let header = body.get(4..4usize.checked_add(hlen)?)?;
    let (k, dim, tokens): (StatsKey, usize, usize) = serde_json::from_slice(header).ok()?;
    let data = body.get(4 + hlen..)?;
    if k != *key || data.len() != dim.checked_mul(dim)?.checked_mul(4)? {
        return None;
    }
    let mom2 = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(LayerStats {
        layer: k.layer,
        mom2,
        dim,
        tokens,
    })
}

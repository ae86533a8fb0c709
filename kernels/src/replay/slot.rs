//! The bookkeeping kept beside each stored item: what both the buffer (`core`) and the batch
//! draws (`sample`) read, so neither module imports the other's types.

/// Bookkeeping of one stored item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotMeta {
    /// Class label (for a language model: the domain or category).
    pub label: u32,
    /// Task the item arrived in.
    pub task: u32,
    /// Stream position at insertion (`seen` after counting it, so the first item has 1).
    pub seen_at: u64,
    /// Replay clock (number of `sample` calls) at its last replay; 0 with `replays == 0`.
    pub last_replay: u64,
    /// How many replay batches drew it.
    pub replays: u32,
}

//! Fixed-capacity replay buffer for continual learning, without an allocator.
//!
//! [`ReplayCore<T, N>`] keeps at most `N` items (a run-time `capacity <= N`, fixed at
//! construction) in `heapless` vectors, with per-slot bookkeeping ([`SlotMeta`]). A
//! [`Retention`] policy decides what a full buffer keeps (reservoir, class-balanced) and a
//! [`Sampling`] policy which items a replay batch draws (uniform, power-law recency,
//! recall-interval). All randomness comes from one seeded [`SplitMix64`] whose state is part of
//! [`CoreState`], so a buffer restored from disk makes exactly the draws the original would have.
//!
//! ```
//! use engram_kernels::replay::{Admission, Policy, ReplayCore};
//!
//! // Up to 4 feature vectors of 3 floats on a microcontroller: no heap anywhere.
//! let mut buf: ReplayCore<[f32; 3], 4> = ReplayCore::new(4, Policy::default(), 7);
//! for i in 0..10u32 {
//!     let _ = buf.insert([i as f32; 3], i % 2, 0).unwrap();
//! }
//! assert!(buf.is_full());
//! let mut batch = [0usize; 2];
//! assert_eq!(buf.sample(&mut batch), 2);
//! assert_ne!(batch[0], batch[1]);
//! # let _ = Admission::<()>::Rejected;
//! ```

mod core;
mod rng;
mod sample;
mod slot;
#[cfg(test)]
mod tests;

pub use self::core::{
    Admission, ClassCount, CoreState, InsertError, MAX_CLASSES, Policy, ReplayCore, RestoreError,
    Retention,
};
pub use self::rng::SplitMix64;
pub use self::sample::Sampling;
pub use self::slot::SlotMeta;

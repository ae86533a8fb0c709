//! [`Progress`]: how a long pass (a statistics pass, an optimization loop, a download) tells
//! the application how far it is, without the library choosing how that is shown.
//!
//! Library code takes a `&dyn Progress` (or holds one set through a builder setter such as
//! `Editor::set_progress`) and calls [`Progress::start`], [`Progress::advance`] and
//! [`Progress::finish`]; [`Silent`] ignores them. The `engram` binary draws them as terminal
//! progress bars; a device app may forward them to its UI or leave them silent.
//!
//! ```
//! use engram_runtime::progress::{Progress, Silent};
//!
//! fn pass(progress: &dyn Progress) {
//!     progress.start("rows", 3);
//!     for _ in 0..3 {
//!         progress.advance(1);
//!     }
//!     progress.finish();
//! }
//! pass(&Silent);
//! ```

/// An observer of a long pass. Passes may nest (a pass may start another before it finishes);
/// each `start` is matched by one `finish`, innermost first.
pub trait Progress: Sync {
    /// A pass named `what` begins, `total` units long (0: length unknown).
    fn start(&self, what: &str, total: u64);
    /// `n` more units of the innermost pass are done.
    fn advance(&self, n: u64);
    /// The innermost pass is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

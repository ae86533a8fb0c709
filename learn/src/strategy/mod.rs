//! Continual-learning strategies as composable [`Piece`](super::learner::Piece)s.
//!
//! | strategy | pieces | buffer |
//! |---|---|---|
//! | naive fine-tuning | none | none |
//! | joint (upper bound) | none, trained once on all tasks | none |
//! | ER | [`Er`] | reservoir |
//! | DER++ | [`DerPlusPlus`] | reservoir, with logits |
//! | online EWC | [`OnlineEwc`] | none |
//! | SI | [`Si`] | none |
//! | LwF | [`Lwf`] | none |
//! | ER + MKD | [`Er`] + [`MomentumKd`] | reservoir |
//! | iCaRL | [`Icarl`] | herding exemplars |

mod distill;
mod icarl;
pub(crate) mod regularize;
mod replay;
#[cfg(test)]
mod tests;

pub use distill::{Lwf, MomentumKd};
pub use icarl::Icarl;
pub use regularize::{OnlineEwc, Si};
pub use replay::{DerPlusPlus, Er};

//! [`EditContext`]: what every editing method reads, passed as one value.

use engram_runtime::model::llama::{LinearAdapter, Llama};
use engram_runtime::model::tokenizer::Tokenizer;
use engram_runtime::progress::Progress;

use super::target::TargetHparams;

/// The model being edited, its tokenizer, the context templates a fact is written under, the
/// edits already in place (a new edit is computed on top of them) and the settings of the
/// `δ` optimization. Cheap to copy: the methods narrow it (another `inner`, other settings)
/// with struct update syntax.
#[derive(Clone, Copy)]
pub struct EditContext<'a> {
    /// The frozen base model, on an autodiff device.
    pub model: &'a Llama,
    /// Its tokenizer.
    pub tok: &'a Tokenizer,
    /// Context templates (`"{}"` first, then `"<prefix>. {}"`), ROME's averaging set.
    pub contexts: &'a [String],
    /// The edits already applied, if any.
    pub inner: Option<&'a dyn LinearAdapter>,
    /// The `δ` optimization's settings.
    pub target: &'a TargetHparams,
    /// Told of each request's `δ` optimization in a batch.
    pub progress: &'a dyn Progress,
}

//! engram-edit: write, evaluate and undo single facts in the frozen model.
//!
//! Every method leaves the mapped base untouched. ROME, MEMIT, AlphaEdit and UltraEdit store rank-one
//! deltas on MLP down-projections; GRACE keeps a codebook beside one layer. [`Editor`] applies
//! them, keeps a crash-safe [`log`] and undoes any single edit; [`metrics`] scores them the way
//! EasyEdit does.
//!
//! ```no_run
//! use engram_edit::{Editor, EditorConfig, Method, parse_jsonl};
//! use engram_runtime::{backend, engine::Engine};
//!
//! let engine = Engine::load("model.gguf", &backend::cpu().autodiff(), 0)?;
//! let mut editor = Editor::new(engine.model(), engine.tokenizer(), "smollm2", EditorConfig::default());
//! editor.load_stats("some text the model reads to learn its key statistics ...", "stats".as_ref())?;
//! let reqs = parse_jsonl(r#"{"subject":"France","prompt":"The capital of France is","target_new":"Rome"}"#)?;
//! let applied = editor.apply(Method::Rome, &reqs)?;
//! editor.undo(applied[0].id)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use engram_runtime as runtime;

pub mod context;
mod delta;
pub mod editor;
pub mod gate;
pub mod grace;
pub mod linalg;
pub mod log;
pub mod memit;
pub mod metrics;
pub mod phrasing;
pub mod probe;
pub mod record;
pub mod request;
pub mod rome;
pub mod routing;
pub mod separation;
pub mod stats;
pub mod stats_cache;
pub mod store;
mod suffix;
pub mod target;
pub mod trace;
pub mod ultraedit;
pub mod value;

pub use context::EditContext;
pub use editor::{Applied, EditError, Editor, EditorConfig};
pub use gate::{GateConfig, GateEntry};
pub use request::{
    EditRequest, RequestError, check_all_fit, load_jsonl, load_jsonl_numbered, parse_jsonl,
    parse_jsonl_numbered,
};
pub use store::{Edit, EditDelta, EditSet, GraceEntry, Method, RankOne};

//! Many adapters over one mapped base. Every forward call names the adapter it uses; the
//! registry hands out `Arc`s, so replacing or removing an entry never changes an adapter under
//! a call that is running with it, and there is no "current adapter" state to race on.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use engram_runtime::generate::Adaptation;

use crate::trainer::Trainable;

/// A shareable adapter.
pub type SharedAdapter = Arc<dyn Trainable + Send + Sync>;

/// Named adapters.
#[derive(Default)]
pub struct AdapterRegistry {
    entries: RwLock<BTreeMap<String, SharedAdapter>>,
}

/// A registry operation was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum RegistryError {
    /// `insert` would overwrite an adapter (use `replace`).
    #[error("an adapter named `{0}` is already registered")]
    Exists(String),
    /// No adapter has this name.
    #[error("no adapter named `{0}`")]
    Unknown(String),
}

impl AdapterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `adapter` as `name`; refuses to overwrite.
    pub fn insert(&self, name: &str, adapter: SharedAdapter) -> Result<(), RegistryError> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if e.contains_key(name) {
            return Err(RegistryError::Exists(name.to_owned()));
        }
        e.insert(name.to_owned(), adapter);
        Ok(())
    }

    /// Sets `name` to `adapter`, returning the previous one (calls holding it keep it).
    pub fn replace(&self, name: &str, adapter: SharedAdapter) -> Option<SharedAdapter> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.insert(name.to_owned(), adapter)
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) -> Result<SharedAdapter, RegistryError> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.remove(name)
            .ok_or_else(|| RegistryError::Unknown(name.to_owned()))
    }

    /// The adapter called `name`.
    pub fn get(&self, name: &str) -> Result<SharedAdapter, RegistryError> {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.get(name)
            .cloned()
            .ok_or_else(|| RegistryError::Unknown(name.to_owned()))
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        e.keys().cloned().collect()
    }

    /// Runs `f` with the adaptation of `name` (`None`: the bare base model).
    pub fn with<R>(
        &self,
        name: Option<&str>,
        f: impl FnOnce(Adaptation<'_>) -> R,
    ) -> Result<R, RegistryError> {
        let Some(name) = name else {
            return Ok(f(Adaptation::default()));
        };
        let adapter = self.get(name)?;
        Ok(with_adaptation(&*adapter, f))
    }
}

/// Runs `f` with the [`Adaptation`] of `adapter` (its linear deltas and soft prompt).
pub fn with_adaptation<R>(adapter: &dyn Trainable, f: impl FnOnce(Adaptation<'_>) -> R) -> R {
    let prefix = adapter.prefix();
    f(Adaptation {
        linear: adapter.linear(),
        prefix: prefix.as_ref(),
    })
}

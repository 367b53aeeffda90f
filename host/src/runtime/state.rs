//! The WIT `state` interface as one call sees it: reads go through to the
//! processor's committed state as of the batch's start ([`StateReader`]),
//! overlaid with the batch's own writes; a call's writes are kept when it
//! returns normally and dropped when it traps, so a half-run call leaves no
//! trace. Where committed state lives is the caller's business: the run
//! loop keeps it in redb and commits [`StateOverlay::into_writes`] with the batch.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Writes, by key: `Some(value)` sets, `None` deletes.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Committed state, as of a snapshot: what a [`StateOverlay`] reads through to.
pub trait StateReader: Send {
    /// The committed value of `key` in `scope` (a processor's state namespace).
    ///
    /// # Errors
    ///
    /// A message when the store cannot be read; the call traps with it.
    fn get(&self, scope: &str, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
}

/// One processor's view of its state during a batch.
#[derive(Default)]
pub struct StateOverlay {
    scope: Arc<str>,
    reader: Option<Box<dyn StateReader>>,
    batch: Writes,
    call: Writes,
}

impl StateOverlay {
    /// A view of `scope`'s state as `reader` gives it, with no writes yet.
    pub fn new(scope: Arc<str>, reader: Box<dyn StateReader>) -> Self {
        StateOverlay {
            scope,
            reader: Some(reader),
            batch: Writes::new(),
            call: Writes::new(),
        }
    }

    /// Whose state this is (a processor's name, or its shadow's namespace).
    pub fn scope(&self) -> &Arc<str> {
        &self.scope
    }

    /// The value of `key`: the latest write of this batch, else the reader's.
    ///
    /// # Errors
    ///
    /// The reader's message when the store cannot be read.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if let Some(v) = self.call.get(key).or_else(|| self.batch.get(key)) {
            return Ok(v.clone());
        }
        match &self.reader {
            Some(r) => r.get(&self.scope, key),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value` (`None` deletes it) in the current call.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.call.insert(key, value);
    }

    /// Keeps the current call's writes (the call returned normally).
    pub fn keep_call(&mut self) {
        let call = std::mem::take(&mut self.call);
        self.batch.extend(call);
    }

    /// Drops the current call's writes (the call trapped).
    pub fn drop_call(&mut self) {
        self.call.clear();
    }

    /// How many keys the batch has written so far.
    pub fn writes(&self) -> usize {
        self.batch.len()
    }

    /// The scope and the kept writes, to commit.
    pub fn into_writes(self) -> (Arc<str>, Writes) {
        (self.scope, self.batch)
    }
}

//! The in-memory [`Store`]: the default when persistence is off.
//!
//! [`MemoryStore::volatile`] keeps nothing and reports itself non-persistent, so the broker
//! builds no changes at all and pays nothing. [`MemoryStore::retaining`] applies every change
//! to an in-memory key space with the same encoding as the disk store, so that what a broker
//! stores can be checked (and recovered) without a disk — a test double that exercises the
//! real encoding, not a mock.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::kv;
use super::{Change, Done, Recovered, Store, StoreError, Unsaved};

/// A store in memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// `None`: nothing is kept.
    kept: Option<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
    /// Sources of deferred changes, applied at the next flush or recovery.
    deferred: Mutex<Vec<Arc<dyn Unsaved>>>,
}

impl std::fmt::Debug for dyn Unsaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unsaved")
    }
}

impl MemoryStore {
    /// A store that keeps nothing (persistence disabled).
    pub const fn volatile() -> MemoryStore {
        MemoryStore {
            kept: None,
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// A store that keeps every change in memory (lost with the process).
    pub fn retaining() -> MemoryStore {
        MemoryStore {
            kept: Some(Mutex::new(BTreeMap::new())),
            deferred: Mutex::new(Vec::new()),
        }
    }
}

impl MemoryStore {
    /// Applies the changes deferred since the last flush.
    fn apply_deferred(&self) {
        let sources = std::mem::take(&mut *self.deferred.lock());
        for source in sources {
            self.submit(source.take_unsaved(), None);
        }
    }
}

impl Store for MemoryStore {
    fn is_persistent(&self) -> bool {
        self.kept.is_some()
    }

    fn submit(&self, changes: Vec<Change>, done: Option<Done>) {
        if let Some(kept) = &self.kept {
            let mut map = kept.lock();
            if let Err(kv::ApplyError::Encode(e)) = kv::apply(&mut *map, &changes) {
                tracing::error!(error = %e, "memory store: cannot encode a record");
            }
        }
        if let Some(done) = done {
            done(Ok(()));
        }
    }

    fn defer(&self, source: Arc<dyn Unsaved>) {
        if self.kept.is_some() {
            self.deferred.lock().push(source);
        }
    }

    fn flush(&self, done: Done) {
        self.apply_deferred();
        done(Ok(()));
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        let Some(kept) = &self.kept else {
            return Ok(Recovered::default());
        };
        self.apply_deferred();
        let map = kept.lock();
        let pairs = map
            .iter()
            .map(|(k, v)| Ok::<_, std::convert::Infallible>((k.clone(), v.clone())));
        kv::recover(pairs).map_err(|detail| StoreError::Corrupt {
            path: "<memory>".into(),
            detail,
        })
    }

    fn close(&self) {}

    fn failure(&self) -> Option<Arc<StoreError>> {
        None
    }

    fn has_failed(&self) -> bool {
        false
    }
}

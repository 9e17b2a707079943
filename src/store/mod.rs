//! Durable storage of the broker's state: persistent sessions, their subscriptions, queued and
//! in-flight messages, inbound QoS 2 packet identifiers, retained messages and delayed wills.
//!
//! The store is a **write-behind log of state changes**: the in-memory structures (sessions,
//! router) stay authoritative while the broker runs, and the store is read once, at start-up,
//! to rebuild them ([`Store::recover`]). Callers describe what changed ([`Change`]) and
//! submit it; the store applies submissions in order, many per engine commit (group commit),
//! and calls each submission's completion once its changes are durable under the configured
//! [`Durability`]. That completion is where acknowledgements that depend on a stored change
//! (PUBACK, PUBREC, PUBCOMP, SUBACK) are released — see `docs/persistence.md` for the rules.
//!
//! Two implementations: [`memory::MemoryStore`] (the default when persistence is off: nothing
//! is persistent and the broker builds no changes) and [`redb_store::RedbStore`].

pub mod inspect;
mod kv;
pub mod memory;
mod record;
pub mod redb_store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytestring::ByteString;

use crate::codec::{LastWill, PacketId, QoS};
use crate::message::SharedMessage;
use crate::session::{DeliveryExtra, Granted};

/// Version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Called once the changes of a submission are durable (or with the error that stopped them).
pub type Done = Box<dyn FnOnce(Result<(), Arc<StoreError>>) + Send>;

/// Everything the broker keeps across restarts. One instance per broker.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Whether this store survives a restart. When false the broker builds no changes at all.
    fn is_persistent(&self) -> bool;

    /// Queues `changes` to be applied atomically, after everything submitted before. `done`
    /// (if any) is called once they are durable: in `sync` mode after the fsync of the group
    /// commit that carried them, in `periodic` mode at once (they become durable with the
    /// next periodic flush). Never blocks; never calls `done` before earlier submissions'.
    fn submit(&self, changes: Vec<Change>, done: Option<Done>);

    /// Submits one change, not waited for (the common case of a delivery's deletion: no
    /// allocation for a batch of one).
    fn submit_one(&self, change: Change) {
        self.submit(vec![change], None);
    }

    /// Registers `source` for the next commit, which takes its changes then
    /// ([`Unsaved::take_unsaved`], called without any lock of the caller's held). Never calls
    /// `source` before returning (the caller may hold the lock `take_unsaved` takes).
    fn defer(&self, source: Arc<dyn Unsaved>);

    /// Makes everything submitted so far durable, then calls `done`.
    fn flush(&self, done: Done);

    /// Reads the whole state back. Called once, at start-up, before any `submit`.
    fn recover(&self) -> Result<Recovered, StoreError>;

    /// Flushes and stops the store's writer; later submissions fail. Blocks until done.
    fn close(&self);

    /// The error that stopped the store, if a write has failed.
    fn failure(&self) -> Option<Arc<StoreError>>;

    /// Whether a write has failed (a cheap check for every acknowledgement in `periodic`
    /// mode, which does not wait for the store).
    fn has_failed(&self) -> bool;
}

/// Something holding changes that are written at the next periodic commit rather than
/// submitted one by one (a session's deliveries in `periodic` mode: most are completed before
/// the commit and never need writing).
pub trait Unsaved: Send + Sync {
    /// The changes to write now; what is returned counts as stored from then on.
    fn take_unsaved(&self) -> Vec<Change>;
}

/// One change to the stored state. Keys are the client identifier (and a sequence number,
/// filter or packet id within it), or the topic for retained messages.
#[derive(Debug, Clone)]
pub enum Change {
    /// A persistent session exists, with this record.
    PutSession {
        /// Client identifier.
        client: ByteString,
        /// What is kept about it.
        record: SessionRecord,
    },
    /// The session ended: it and everything stored under its client id go.
    DeleteSession {
        /// Client identifier.
        client: ByteString,
    },
    /// A subscription was added or replaced.
    PutSubscription {
        /// Client identifier.
        client: ByteString,
        /// Topic filter as subscribed (`$share/...` included).
        filter: ByteString,
        /// What was granted.
        granted: Granted,
    },
    /// A subscription was removed.
    DeleteSubscription {
        /// Client identifier.
        client: ByteString,
        /// Topic filter.
        filter: ByteString,
    },
    /// A message was queued for (or, `released`, has been PUBRECed by) a session.
    PutQueued {
        /// Client identifier.
        client: ByteString,
        /// The session's sequence number of this delivery (its order, and its packet id).
        seq: u64,
        /// The delivery.
        entry: QueuedEntry,
        /// This is the first write of the delivery (queued just now), not an update: if its
        /// deletion reaches the store in the same commit, neither needs to be written.
        created: bool,
    },
    /// A delivery completed (or was dropped).
    DeleteQueued {
        /// Client identifier.
        client: ByteString,
        /// Sequence number.
        seq: u64,
    },
    /// An inbound QoS 2 PUBLISH was received and awaits PUBREL ([MQTT-4.3.3-2]).
    PutInbound {
        /// Client identifier.
        client: ByteString,
        /// Its packet identifier.
        packet_id: PacketId,
    },
    /// PUBREL released an inbound QoS 2 packet identifier.
    DeleteInbound {
        /// Client identifier.
        client: ByteString,
        /// Its packet identifier.
        packet_id: PacketId,
    },
    /// A retained message was stored (replacing the topic's previous one).
    PutRetained {
        /// The message (its topic is the key).
        message: SharedMessage,
    },
    /// A topic's retained message was removed.
    DeleteRetained {
        /// Topic name.
        topic: ByteString,
    },
    /// A will waits for its Will Delay Interval.
    PutWill {
        /// Client identifier.
        client: ByteString,
        /// The will.
        will: StoredWill,
    },
    /// A waiting will was published or cancelled.
    DeleteWill {
        /// Client identifier.
        client: ByteString,
    },
}

/// What is kept about a persistent session itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// When the client disconnected (unix milliseconds); `None` while it is connected (after
    /// a crash such a session counts as disconnected when the broker starts again).
    pub disconnected_at: Option<u64>,
    /// The session's last delivery sequence number when the record was written: after a
    /// restart numbering (and so packet ids) continues from at least here, never backwards.
    pub last_seq: u64,
}

/// A delivery queued for (or in flight to) a persistent session.
#[derive(Debug, Clone)]
pub struct QueuedEntry {
    /// The message.
    pub message: SharedMessage,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag of the delivery.
    pub retain: bool,
    /// Subscription identifiers and shared-subscription origin.
    pub extra: Option<Arc<DeliveryExtra>>,
    /// The client has PUBRECed it (QoS 2): after a restart PUBREL is sent, not the PUBLISH.
    pub released: bool,
}

/// A will waiting for its delay.
#[derive(Debug, Clone)]
pub struct StoredWill {
    /// The will (without its Will Delay Interval property).
    pub will: LastWill,
    /// When it is due (unix milliseconds).
    pub due: u64,
    /// User name of the client that left it (for the ACL and the publish hook).
    pub username: Option<ByteString>,
}

/// A session as read back by [`Store::recover`].
#[derive(Debug, Clone)]
pub struct RecoveredSession {
    /// Client identifier.
    pub client: ByteString,
    /// Its record.
    pub record: SessionRecord,
    /// Subscriptions, by filter.
    pub subscriptions: Vec<(ByteString, Granted)>,
    /// Queued and in-flight deliveries in sequence order.
    pub queue: Vec<(u64, QueuedEntry)>,
    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub inbound: Vec<PacketId>,
    /// A will waiting for its delay.
    pub will: Option<StoredWill>,
}

/// The whole stored state.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Persistent sessions.
    pub sessions: Vec<RecoveredSession>,
    /// Retained messages.
    pub retained: Vec<SharedMessage>,
}

/// Why the store cannot be opened, read or written. Every variant names the store's path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error (permission denied, read-only file system, disk full...).
    #[error("persistence store {path}: {what}: {source}")]
    Io {
        /// The store file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Another process (a running broker?) has the store open.
    #[error("persistence store {path} is in use by another process (is a broker running on it?)")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// Written by a build with another format.
    #[error(
        "persistence store {path} has format version {found}; this build reads version {supported} (move the store away or use a matching build)"
    )]
    IncompatibleVersion {
        /// The store file.
        path: PathBuf,
        /// Version found in the store (0: not an mqtt-server store).
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The store is damaged (truncated, corrupted, or not a store at all).
    #[error(
        "persistence store {path} is corrupt: {detail} (the broker will not start on it: restore a backup or move it away)"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The engine failed in another way.
    #[error("persistence store {path}: {detail}")]
    Engine {
        /// The store file.
        path: PathBuf,
        /// The engine's message.
        detail: String,
    },
    /// An earlier write failed; the store accepts no more.
    #[error("persistence store {path} stopped after an earlier write error")]
    Stopped {
        /// The store file.
        path: PathBuf,
    },
}

/// Opens the store the configuration asks for: a [`redb_store::RedbStore`] in
/// `persistence.path` when persistence is enabled, otherwise a non-persistent
/// [`memory::MemoryStore`].
pub fn open(config: &crate::config::PersistenceConfig) -> Result<Arc<dyn Store>, StoreError> {
    if !config.enabled {
        return Ok(Arc::new(memory::MemoryStore::volatile()));
    }
    Ok(Arc::new(redb_store::RedbStore::open(
        &config.path,
        config.durability,
        std::time::Duration::from_millis(config.flush_interval_ms),
    )?))
}

/// The store file inside a store directory.
pub fn store_file(dir: &Path) -> PathBuf {
    dir.join("mqtt-server.redb")
}

/// Wall-clock time in unix milliseconds (stored times must survive a restart, `Instant`s do
/// not).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

//! The persistent store on [redb](https://docs.rs/redb) (an embedded, crash-safe,
//! copy-on-write B-tree with checksummed, atomic commits; the choice is argued with figures in
//! `docs/persistence.md`).
//!
//! One dedicated writer thread (blocking I/O stays off the tokio workers) takes everything
//! submitted since its last commit, applies it in one write transaction and commits it with
//! one fsync (group commit), then calls the submissions' completions in order. In `sync` mode
//! it commits as soon as anything waits; in `periodic` mode once per flush interval (and on
//! `flush`, at close, or when a bounded number of changes wait), the submissions having been
//! acknowledged at once. Within a commit, records created and deleted again (a message queued
//! and acknowledged meanwhile) are not written at all.
//!
//! The first failed write stops the store: every completion after it gets the error, so no
//! acknowledgement that depends on a lost write is ever sent (redb itself refuses further
//! writes after an I/O error, `StorageError::PreviousIo`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::kv::{self, ApplyError, KvWrite};
use super::{Change, Done, FORMAT_VERSION, Recovered, Store, StoreError, Unsaved, store_file};
use crate::config::Durability;

/// Everything the broker keeps, in one ordered key space (see `record.rs`).
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// The engine's page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;
/// `format` → the format version (u32, little endian).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// What the writer thread is given.
enum Item {
    Changes(Vec<Change>, Option<Done>),
    One(Change),
    Flush(Done),
}

impl Item {
    /// The changes this item carries.
    fn changes(&self) -> &[Change] {
        match self {
            Item::Changes(changes, _) => changes,
            Item::One(change) => std::slice::from_ref(change),
            Item::Flush(_) => &[],
        }
    }
}

/// The queue between submitters and the writer thread.
#[derive(Default)]
struct Pending {
    items: Vec<Item>,
    /// Changes in `items`, and the message bytes they carry (periodic mode commits early past
    /// a bound).
    changes: usize,
    bytes: usize,
    /// Flush requests in `items`.
    flushes: usize,
    /// Sources of changes to take at the next commit ([`Store::defer`]).
    deferred: Vec<Arc<dyn Unsaved>>,
    closing: bool,
    failure: Option<Arc<StoreError>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Set with `Pending::failure`, readable without the lock.
    failed: std::sync::atomic::AtomicBool,
}

/// The redb-backed [`Store`].
pub struct RedbStore {
    path: PathBuf,
    /// Released at [`Store::close`], so that the file lock goes with it even while something
    /// still holds the store.
    db: Mutex<Option<Arc<redb::Database>>>,
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    durability: Durability,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Maps an engine error to a [`StoreError`] naming `path`.
fn storage_error(path: &Path, what: &'static str, e: redb::StorageError) -> StoreError {
    match e {
        redb::StorageError::Io(source) => StoreError::Io {
            path: path.to_owned(),
            what,
            source,
        },
        redb::StorageError::Corrupted(detail) => StoreError::Corrupt {
            path: path.to_owned(),
            detail,
        },
        redb::StorageError::PreviousIo => StoreError::Stopped {
            path: path.to_owned(),
        },
        other => StoreError::Engine {
            path: path.to_owned(),
            detail: format!("{what}: {other}"),
        },
    }
}

fn database_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_owned(),
        },
        redb::DatabaseError::Storage(s) => storage_error(path, "cannot open", s),
        redb::DatabaseError::UpgradeRequired(v) => StoreError::IncompatibleVersion {
            path: path.to_owned(),
            found: u32::from(v),
            supported: FORMAT_VERSION,
        },
        other => StoreError::Engine {
            path: path.to_owned(),
            detail: format!("cannot open: {other}"),
        },
    }
}

/// Any other redb error (transactions, tables, commits) naming `path`.
fn engine_error(path: &Path, what: &'static str, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(source) => StoreError::Io {
            path: path.to_owned(),
            what,
            source,
        },
        redb::Error::Corrupted(detail) => StoreError::Corrupt {
            path: path.to_owned(),
            detail,
        },
        redb::Error::PreviousIo => StoreError::Stopped {
            path: path.to_owned(),
        },
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_owned(),
        },
        other => StoreError::Engine {
            path: path.to_owned(),
            detail: format!("{what}: {other}"),
        },
    }
}

/// The store's table inside one write transaction.
struct TableWriter<'t>(redb::Table<'t, &'static [u8], &'static [u8]>);

impl KvWrite for TableWriter<'_> {
    type Error = redb::StorageError;

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Self::Error> {
        self.0.insert(key, value).map(drop)
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.0.remove(key).map(drop)
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), Self::Error> {
        match kv::prefix_end(prefix) {
            Some(end) => self.0.retain_in(prefix..end.as_slice(), |_, _| false),
            None => self.0.retain_in(prefix.., |_, _| false),
        }
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store in directory `dir`. Fails — naming the path — if
    /// the directory cannot be created or written, the store is locked by another process,
    /// was written with another format, or is damaged.
    pub fn open(
        dir: &Path,
        durability: Durability,
        flush_every: Duration,
    ) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            what: "cannot create the store directory",
            source,
        })?;
        let path = store_file(dir);
        let db = open_database(&path)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            failed: std::sync::atomic::AtomicBool::new(false),
        });
        let db = Arc::new(db);
        let writer = {
            let (db, shared, file) = (db.clone(), shared.clone(), path.clone());
            std::thread::Builder::new()
                .name("mqtt-store".into())
                .spawn(move || write_loop(&db, &shared, &file, durability, flush_every))
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    what: "cannot start the store's writer thread",
                    source,
                })?
        };
        Ok(RedbStore {
            path,
            db: Mutex::new(Some(db)),
            shared,
            writer: Mutex::new(Some(writer)),
            durability,
        })
    }

    /// Opens a store only to read it (`mqtt-server store inspect`): no writer thread.
    pub(crate) fn open_database_for_reading(
        dir: &Path,
    ) -> Result<(PathBuf, redb::Database), StoreError> {
        let path = store_file(dir);
        if !path.exists() {
            return Err(StoreError::Io {
                path: path.clone(),
                what: "no store here",
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let db = open_database(&path)?;
        Ok((path, db))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens or creates the database file and checks (or, new, writes) its format version.
fn open_database(path: &Path) -> Result<redb::Database, StoreError> {
    let existed = path.exists();
    // Every page's checksum is verified at open, not only after a crash: a store altered or
    // damaged outside the engine is refused rather than trusted (the cost is one read of the
    // file: see docs/persistence.md). redb documents that a plain open of such a file may
    // panic; a panic is caught and reported as corruption all the same.
    let mut builder = redb::Builder::new();
    builder.set_check_integrity_on_open(true);
    // redb caches up to 1 GiB of pages by default. The store is read once, at start-up, and
    // then only written: a small cache keeps a large store from costing its size in memory.
    builder.set_cache_size(CACHE_BYTES);
    // (AssertUnwindSafe: after a panic the builder and the half-opened database are dropped,
    // never looked at again.)
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if existed {
            builder.open(path)
        } else {
            builder.create(path)
        }
    }));
    let db = match opened {
        Ok(result) => result.map_err(|e| database_error(path, e))?,
        Err(_) => {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: "the storage engine failed reading it".into(),
            });
        }
    };
    let read = db
        .begin_read()
        .map_err(|e| engine_error(path, "cannot read", e))?;
    let format = match read.open_table(META) {
        Ok(meta) => {
            let v = meta
                .get("format")
                .map_err(|e| engine_error(path, "cannot read", e))?
                .map(|g| g.value().to_vec());
            Some(v)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(engine_error(path, "cannot read", e)),
    };
    let has_state = match read.open_table(STATE) {
        Ok(_) => true,
        Err(redb::TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(engine_error(path, "cannot read", e)),
    };
    drop(read);
    match format {
        Some(Some(bytes)) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_le_bytes)
                .unwrap_or(0);
            if found != FORMAT_VERSION {
                return Err(StoreError::IncompatibleVersion {
                    path: path.to_owned(),
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
        Some(None) | None if has_state => {
            return Err(StoreError::IncompatibleVersion {
                path: path.to_owned(),
                found: 0,
                supported: FORMAT_VERSION,
            });
        }
        _ => {
            // A new store (or one created by a crash before its first commit).
            let tx = db
                .begin_write()
                .map_err(|e| engine_error(path, "cannot write", e))?;
            {
                let mut meta = tx
                    .open_table(META)
                    .map_err(|e| engine_error(path, "cannot write", e))?;
                meta.insert("format", FORMAT_VERSION.to_le_bytes().as_slice())
                    .map_err(|e| engine_error(path, "cannot write", e))?;
                tx.open_table(STATE)
                    .map_err(|e| engine_error(path, "cannot write", e))?;
            }
            tx.commit()
                .map_err(|e| engine_error(path, "cannot write", e))?;
        }
    }
    Ok(db)
}

/// Changes waiting in `periodic` mode beyond which the writer commits before the interval
/// is over (they hold their messages in memory until then).
const PERIODIC_MAX_PENDING: usize = 32_768;
/// Message bytes waiting in `periodic` mode beyond which the writer commits early: bounds the
/// memory that messages already delivered are kept alive by the pending changes.
const PERIODIC_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The writer thread: group commits until the store is closed. In `sync` mode it commits
/// whenever something is waiting (the completions wait for it); in `periodic` mode every flush
/// interval, on a flush request, or when [`PERIODIC_MAX_PENDING`] changes are waiting — so
/// that a message delivered and acknowledged within the interval never reaches the disk.
fn write_loop(
    db: &redb::Database,
    shared: &Shared,
    path: &Path,
    durability: Durability,
    flush_every: Duration,
) {
    let periodic = durability == Durability::Periodic;
    let mut next_flush = Instant::now() + flush_every;
    loop {
        let (mut items, deferred, closing) = {
            let mut p = shared.pending.lock();
            loop {
                if p.closing {
                    break;
                }
                if periodic {
                    if p.flushes > 0
                        || p.changes >= PERIODIC_MAX_PENDING
                        || p.bytes >= PERIODIC_MAX_BYTES
                    {
                        break;
                    }
                    if shared.wake.wait_until(&mut p, next_flush).timed_out() {
                        break;
                    }
                } else if p.items.is_empty() && p.deferred.is_empty() {
                    shared.wake.wait(&mut p);
                } else {
                    break;
                }
            }
            p.changes = 0;
            p.bytes = 0;
            p.flushes = 0;
            (
                std::mem::take(&mut p.items),
                std::mem::take(&mut p.deferred),
                p.closing,
            )
        };
        // Deferred changes go last: anything submitted concerns what was stored before (a
        // deletion is only submitted for a delivery already in the store).
        for source in deferred {
            let changes = source.take_unsaved();
            if !changes.is_empty() {
                items.push(Item::Changes(changes, None));
            }
        }
        if periodic {
            next_flush = Instant::now() + flush_every;
        }
        if items.is_empty() {
            if closing {
                return;
            }
            continue;
        }
        let dead = cancelled(&items);
        match commit(db, path, &items, &dead) {
            Ok(()) => {
                for item in items {
                    match item {
                        Item::Changes(_, Some(done)) | Item::Flush(done) => done(Ok(())),
                        Item::Changes(_, None) | Item::One(_) => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "persistence: a write failed; the store stops and nothing more is acknowledged");
                let e = Arc::new(e);
                let rest = {
                    let mut p = shared.pending.lock();
                    p.failure = Some(e.clone());
                    shared
                        .failed
                        .store(true, std::sync::atomic::Ordering::Release);
                    std::mem::take(&mut p.items)
                };
                for item in items.into_iter().chain(rest) {
                    match item {
                        Item::Changes(_, Some(done)) | Item::Flush(done) => done(Err(e.clone())),
                        Item::Changes(_, None) | Item::One(_) => {}
                    }
                }
                return;
            }
        }
        if closing && shared.pending.lock().items.is_empty() {
            return;
        }
    }
}

/// The message bytes a change keeps alive while it waits.
fn message_bytes(change: &Change) -> usize {
    match change {
        Change::PutQueued { entry, .. } => entry.message.payload.len() + entry.message.topic.len(),
        Change::PutRetained { message } => message.payload.len() + message.topic.len(),
        _ => 0,
    }
}

/// Hashing for the writer's own bookkeeping (keys come from this process, not from peers).
type FastHash = foldhash::fast::RandomState;
/// Positions `(item, change)` in one commit.
type Positions = HashSet<(usize, usize), FastHash>;

/// What identifies a record that a commit may create and delete again.
#[derive(Debug, PartialEq, Eq, Hash)]
enum Transient<'a> {
    Queued(&'a str, u64),
    Inbound(&'a str, u16),
}

/// The positions `(item, change)` of changes that cancel out within one commit: a delivery
/// queued and completed, or an inbound QoS 2 id received and released, before the commit —
/// the common case for online clients. The record never existed before the commit (its
/// creation is in it), so writing neither the creation, its updates nor its deletion leaves
/// the store as applying them all would.
fn cancelled(items: &[Item]) -> Positions {
    let mut chains: HashMap<Transient<'_>, Vec<(usize, usize)>, FastHash> =
        HashMap::with_capacity_and_hasher(items.len(), FastHash::default());
    let mut dead = Positions::default();
    for (i, item) in items.iter().enumerate() {
        for (j, change) in item.changes().iter().enumerate() {
            match change {
                Change::PutQueued {
                    client,
                    seq,
                    created,
                    ..
                } => {
                    let key = Transient::Queued(client, *seq);
                    if *created {
                        chains.insert(key, vec![(i, j)]);
                    } else if let Some(chain) = chains.get_mut(&key) {
                        chain.push((i, j));
                    }
                }
                Change::DeleteQueued { client, seq } => {
                    if let Some(chain) = chains.remove(&Transient::Queued(client, *seq)) {
                        dead.extend(chain);
                        dead.insert((i, j));
                    }
                }
                Change::PutInbound { client, packet_id } => {
                    // Stored only when the id was not held: always a creation.
                    chains.insert(Transient::Inbound(client, packet_id.get()), vec![(i, j)]);
                }
                Change::DeleteInbound { client, packet_id } => {
                    if let Some(chain) = chains.remove(&Transient::Inbound(client, packet_id.get()))
                    {
                        dead.extend(chain);
                        dead.insert((i, j));
                    }
                }
                _ => {}
            }
        }
    }
    dead
}

/// Applies every submission in `items` but the `dead` changes, in one durable write
/// transaction.
fn commit(
    db: &redb::Database,
    path: &Path,
    items: &[Item],
    dead: &Positions,
) -> Result<(), StoreError> {
    let tx = db
        .begin_write()
        .map_err(|e| engine_error(path, "cannot write", e))?;
    {
        let table = tx
            .open_table(STATE)
            .map_err(|e| engine_error(path, "cannot write", e))?;
        let mut w = TableWriter(table);
        for (i, item) in items.iter().enumerate() {
            for (j, change) in item.changes().iter().enumerate() {
                if !dead.is_empty() && dead.contains(&(i, j)) {
                    continue;
                }
                kv::apply(&mut w, std::slice::from_ref(change)).map_err(|e| match e {
                    ApplyError::Engine(e) => storage_error(path, "cannot write", e),
                    ApplyError::Encode(detail) => StoreError::Engine {
                        path: path.to_owned(),
                        detail: format!("cannot encode a record: {detail}"),
                    },
                })?;
            }
        }
    }
    tx.commit()
        .map_err(|e| engine_error(path, "cannot commit", e))
}

impl Store for RedbStore {
    fn is_persistent(&self) -> bool {
        true
    }

    fn submit(&self, changes: Vec<Change>, done: Option<Done>) {
        match (self.durability, done) {
            (Durability::Periodic, Some(done)) => {
                // `periodic` acknowledges at once: the changes reach the engine in order, and
                // become durable with the next periodic flush (the documented window).
                let accepted = self.push(Item::Changes(changes, None));
                done(accepted);
            }
            (_, done) => {
                // A refusal has been reported to `done` already.
                let _ = self.push(Item::Changes(changes, done));
            }
        }
    }

    fn submit_one(&self, change: Change) {
        let _ = self.push(Item::One(change));
    }

    fn defer(&self, source: Arc<dyn Unsaved>) {
        let mut p = self.shared.pending.lock();
        if p.failure.is_some() || p.closing {
            return;
        }
        p.deferred.push(source);
        let wake = self.durability == Durability::Sync && p.deferred.len() == 1;
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
    }

    fn flush(&self, done: Done) {
        let _ = self.push(Item::Flush(done));
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        let db = self.db.lock().clone().ok_or_else(|| StoreError::Stopped {
            path: self.path.clone(),
        })?;
        read_all(&db, &self.path)
    }

    fn close(&self) {
        self.shared.pending.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.lock().take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "persistence: the store's writer thread panicked");
        }
        // The writer has ended and dropped its handle: this releases the file and its lock.
        self.db.lock().take();
    }

    fn failure(&self) -> Option<Arc<StoreError>> {
        self.shared.pending.lock().failure.clone()
    }

    fn has_failed(&self) -> bool {
        self.shared
            .failed
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl RedbStore {
    /// Queues `item` for the writer; refused (its completion called with the error) once the
    /// store has failed or is closing. Returns whether it was accepted.
    fn push(&self, item: Item) -> Result<(), Arc<StoreError>> {
        let mut p = self.shared.pending.lock();
        let refused = match (&p.failure, p.closing) {
            (Some(e), _) => Some(e.clone()),
            (None, true) => Some(Arc::new(StoreError::Stopped {
                path: self.path.clone(),
            })),
            (None, false) => None,
        };
        if let Some(e) = refused {
            drop(p);
            if let Item::Changes(_, Some(done)) | Item::Flush(done) = item {
                done(Err(e.clone()));
            }
            return Err(e);
        }
        // The writer is woken when it has something to do: in `sync` mode by the first item
        // after a commit, in `periodic` mode only by a flush request or a full batch.
        let wake = match &item {
            Item::Flush(_) => {
                p.flushes += 1;
                true
            }
            Item::Changes(..) | Item::One(_) => {
                let changes = item.changes();
                let full = |p: &Pending| {
                    p.changes >= PERIODIC_MAX_PENDING || p.bytes >= PERIODIC_MAX_BYTES
                };
                let was_full = full(&p);
                p.changes += changes.len();
                p.bytes += changes.iter().map(message_bytes).sum::<usize>();
                match self.durability {
                    Durability::Sync => p.items.is_empty(),
                    Durability::Periodic => !was_full && full(&p),
                }
            }
        };
        p.items.push(item);
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads every record of an open database.
pub(crate) fn read_all(db: &redb::Database, path: &Path) -> Result<Recovered, StoreError> {
    let read = db
        .begin_read()
        .map_err(|e| engine_error(path, "cannot read", e))?;
    let table = read
        .open_table(STATE)
        .map_err(|e| engine_error(path, "cannot read", e))?;
    let iter = table
        .iter()
        .map_err(|e| engine_error(path, "cannot read", e))?;
    let pairs = iter.map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())));
    kv::recover(pairs).map_err(|detail| StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{PacketId, QoS};
    use crate::message::Message;
    use crate::store::QueuedEntry;

    fn put(client: &str, seq: u64, created: bool) -> Change {
        Change::PutQueued {
            client: client.into(),
            seq,
            entry: QueuedEntry {
                message: Arc::new(Message::new("t", "p", QoS::AtLeastOnce, false)),
                qos: QoS::AtLeastOnce,
                retain: false,
                extra: None,
                released: !created,
            },
            created,
        }
    }

    fn del(client: &str, seq: u64) -> Change {
        Change::DeleteQueued {
            client: client.into(),
            seq,
        }
    }

    fn items(batches: Vec<Vec<Change>>) -> Vec<Item> {
        batches
            .into_iter()
            .map(|c| Item::Changes(c, None))
            .collect()
    }

    #[test]
    fn a_delivery_queued_and_completed_in_one_commit_is_not_written() {
        let it = items(vec![
            vec![put("a", 1, true), put("a", 2, true)],
            vec![put("a", 1, false)],
            vec![del("a", 1)],
        ]);
        let dead = cancelled(&it);
        let expected: Positions = [(0, 0), (1, 0), (2, 0)].into_iter().collect();
        assert_eq!(
            dead, expected,
            "creation, update and deletion of a/1; a/2 stays"
        );
    }

    #[test]
    fn a_deletion_of_a_record_written_earlier_is_kept() {
        // The record exists on disk (its creation is not in this commit): the update and the
        // deletion must both be applied.
        let it = items(vec![vec![put("a", 1, false)], vec![del("a", 1)]]);
        assert!(cancelled(&it).is_empty());
        // Deleted, then queued again (a shared-subscription message kept by its member).
        let it = items(vec![vec![del("a", 5), put("a", 5, false)]]);
        assert!(cancelled(&it).is_empty());
    }

    #[test]
    fn inbound_qos2_ids_released_within_the_commit_are_not_written() {
        let id = PacketId::new(9).expect("non-zero");
        let it = items(vec![
            vec![Change::PutInbound {
                client: "p".into(),
                packet_id: id,
            }],
            vec![Change::DeleteInbound {
                client: "p".into(),
                packet_id: id,
            }],
            vec![Change::DeleteInbound {
                client: "q".into(),
                packet_id: id,
            }],
        ]);
        let dead = cancelled(&it);
        assert_eq!(dead, [(0, 0), (1, 0)].into_iter().collect::<Positions>());
    }

    #[test]
    fn elided_changes_leave_the_same_state_as_applying_them_all() {
        let dir = std::env::temp_dir().join(format!("redb-elide-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store =
            RedbStore::open(&dir, Durability::Sync, Duration::from_millis(100)).expect("open");
        let session = Change::PutSession {
            client: "a".into(),
            record: crate::store::SessionRecord {
                expiry_interval: 60,
                disconnected_at: None,
                last_seq: 0,
            },
        };
        store.submit(vec![session, put("a", 1, true), put("a", 2, true)], None);
        store.submit(vec![del("a", 1), put("a", 3, true), del("a", 3)], None);
        let (tx, rx) = std::sync::mpsc::channel();
        store.flush(Box::new(move |r| {
            let _ = tx.send(r.is_ok());
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        let state = store.recover().expect("recover");
        let seqs: Vec<u64> = state.sessions[0].queue.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![2]);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

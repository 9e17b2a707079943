//! The persistent store on [redb](https://docs.rs/redb) (an embedded, crash-safe,
//! copy-on-write B-tree with checksummed, atomic commits; the choice is argued with figures in
//! `docs/persistence.md`).
//!
//! One dedicated writer thread (blocking I/O stays off the tokio workers) takes everything
//! submitted since its last commit, applies it in one write transaction and commits it — one
//! fsync for all of it in `sync` mode (group commit) — then calls the submissions' completions
//! in order. In `periodic` mode commits are not fsynced (`Durability::None`) and a durable
//! commit is made every flush interval, on `flush`, and at close.
//!
//! The first failed write stops the store: every completion after it gets the error, so no
//! acknowledgement that depends on a lost write is ever sent (redb itself refuses further
//! writes after an I/O error, `StorageError::PreviousIo`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::kv::{self, ApplyError, KvWrite};
use super::{Change, Done, FORMAT_VERSION, Recovered, Store, StoreError, store_file};
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
    Flush(Done),
}

/// The queue between submitters and the writer thread.
#[derive(Default)]
struct Pending {
    items: Vec<Item>,
    closing: bool,
    failure: Option<Arc<StoreError>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
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

/// The writer thread: group commits until the store is closed.
fn write_loop(
    db: &redb::Database,
    shared: &Shared,
    path: &Path,
    durability: Durability,
    flush_every: Duration,
) {
    let periodic = durability == Durability::Periodic;
    // Periodic mode: changes committed without fsync since the last durable commit.
    let mut dirty = false;
    let mut next_flush = Instant::now() + flush_every;
    loop {
        let (items, closing) = {
            let mut p = shared.pending.lock();
            while p.items.is_empty() && !p.closing {
                if periodic && dirty {
                    if shared.wake.wait_until(&mut p, next_flush).timed_out() {
                        break;
                    }
                } else {
                    shared.wake.wait(&mut p);
                }
            }
            (std::mem::take(&mut p.items), p.closing)
        };
        let flush_asked = items.iter().any(|i| matches!(i, Item::Flush(_)));
        let durable = !periodic || flush_asked || closing || Instant::now() >= next_flush;
        if items.is_empty() && !(dirty && durable) {
            if closing {
                return;
            }
            continue;
        }
        let result = commit(db, path, &items, durable);
        if durable {
            next_flush = Instant::now() + flush_every;
        }
        match result {
            Ok(()) => {
                dirty = !durable;
                for item in items {
                    match item {
                        Item::Changes(_, Some(done)) | Item::Flush(done) => done(Ok(())),
                        Item::Changes(_, None) => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "persistence: a write failed; the store stops and nothing more is acknowledged");
                let e = Arc::new(e);
                let rest = {
                    let mut p = shared.pending.lock();
                    p.failure = Some(e.clone());
                    std::mem::take(&mut p.items)
                };
                for item in items.into_iter().chain(rest) {
                    match item {
                        Item::Changes(_, Some(done)) | Item::Flush(done) => done(Err(e.clone())),
                        Item::Changes(_, None) => {}
                    }
                }
                return;
            }
        }
        if closing && shared.pending.lock().items.is_empty() && !dirty {
            return;
        }
    }
}

/// Applies every submission in `items` in one write transaction.
fn commit(
    db: &redb::Database,
    path: &Path,
    items: &[Item],
    durable: bool,
) -> Result<(), StoreError> {
    let mut tx = db
        .begin_write()
        .map_err(|e| engine_error(path, "cannot write", e))?;
    tx.set_durability(if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    })
    .map_err(|e| StoreError::Engine {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    {
        let table = tx
            .open_table(STATE)
            .map_err(|e| engine_error(path, "cannot write", e))?;
        let mut w = TableWriter(table);
        for item in items {
            if let Item::Changes(changes, _) = item {
                kv::apply(&mut w, changes).map_err(|e| match e {
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
        let was_empty = p.items.is_empty();
        p.items.push(item);
        drop(p);
        if was_empty {
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

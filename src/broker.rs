//! The broker: shared state of the whole server, and the public handle an application holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::path::PathBuf;

use crate::auth::AclSlot;
use crate::auth::acl::Acl;
use crate::auth::credentials::Credentials;
use crate::auth::enhanced::{Authenticator, Authenticators};
use crate::auth::scram::ScramSha256;
use crate::config::Config;
use crate::hooks::{Hooks, NoHooks};
use crate::local_client::LocalClient;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::router::Router;
use crate::session::Journal;
use crate::session::registry::SessionRegistry;
use crate::store::Store;
use crate::transport::tls::ReloadableTls;
use crate::transport::{ListenerContext, tcp};

/// How long [`Broker::shutdown`] waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors of the broker's lifecycle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `start` was called twice.
    #[error("the broker is already started")]
    AlreadyStarted,
    /// `start` was called after `shutdown`.
    #[error("the broker has been shut down")]
    ShutDown,
    /// A password, ACL or certificate file could not be loaded (the message names the path).
    #[error("{0}")]
    Security(String),
    /// The persistence store could not be opened or read (the message names the path).
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// A write to the persistence store failed; the broker stops acknowledging and shuts down.
    #[error("persistence failed: {0}")]
    StoreFailed(String),
}

/// State shared by every task of one broker.
pub(crate) struct BrokerCore {
    pub config: Config,
    pub router: Router,
    pub sessions: SessionRegistry,
    /// The broker-wide user store (`[auth] password_file`, `add_credentials`).
    pub credentials: Arc<Credentials>,
    pub authenticators: parking_lot::RwLock<Authenticators>,
    /// The authentication and ACL settings of each listener, in configuration order.
    pub listener_auth: Vec<ListenerAuth>,
    /// Every password and ACL file to (re)load, with where its contents go.
    security_files: Vec<SecurityFile>,
    /// Failed logins per IP address, for bans.
    pub login_failures: crate::auth::ban::LoginFailures,
    /// The built-in SCRAM-SHA-256 method's user store (fed by `add_credentials`).
    pub scram: Arc<ScramSha256>,
    pub hooks: Arc<dyn Hooks>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub connection_slots: Arc<Semaphore>,
    next_connection: AtomicU64,
    local_addrs: Mutex<Option<Vec<SocketAddr>>>,
    /// The certificates of the TLS listeners, reloaded with the security files.
    tls: Mutex<Vec<Arc<ReloadableTls>>>,
    /// The store, opened by `start` (see [`BrokerCore::store`]).
    pub(crate) store: std::sync::OnceLock<Arc<dyn Store>>,
}

/// The store of a broker that has none open: keeps nothing.
static VOLATILE: crate::store::memory::MemoryStore = crate::store::memory::MemoryStore::volatile();

/// The authentication and ACL settings one listener applies (its own files, or `[auth]`'s).
#[derive(Debug, Clone)]
pub(crate) struct ListenerAuth {
    /// Users checked on this listener.
    pub credentials: Arc<Credentials>,
    /// Whether a password file backs `credentials` (an empty one then admits no user name).
    pub password_file: bool,
    /// The ACL in force on this listener, if an ACL file is configured for it.
    pub acl: Option<Arc<AclSlot>>,
}

/// A password or ACL file and the store its contents are loaded into.
#[derive(Debug)]
enum SecurityFile {
    Passwords(PathBuf, Arc<Credentials>),
    Acl(PathBuf, Arc<AclSlot>),
}

/// The stores of `[auth]` and of each listener, and the files that fill them.
fn security_setup(
    config: &Config,
    credentials: &Arc<Credentials>,
) -> (Vec<ListenerAuth>, Vec<SecurityFile>) {
    let mut files = Vec::new();
    let global_acl = config.auth.acl_file.as_ref().map(|path| {
        let slot = Arc::new(AclSlot::new(Arc::new(Acl::default())));
        files.push(SecurityFile::Acl(path.clone(), slot.clone()));
        slot
    });
    if let Some(path) = &config.auth.password_file {
        files.push(SecurityFile::Passwords(path.clone(), credentials.clone()));
    }
    let listeners = config
        .listeners
        .iter()
        .map(|l| {
            let (creds, password_file) = match &l.password_file {
                Some(path) => {
                    let own = Arc::new(Credentials::default());
                    files.push(SecurityFile::Passwords(path.clone(), own.clone()));
                    (own, true)
                }
                None => (credentials.clone(), config.auth.password_file.is_some()),
            };
            let acl = match &l.acl_file {
                Some(path) => {
                    let slot = Arc::new(AclSlot::new(Arc::new(Acl::default())));
                    files.push(SecurityFile::Acl(path.clone(), slot.clone()));
                    Some(slot)
                }
                None => global_acl.clone(),
            };
            ListenerAuth {
                credentials: creds,
                password_file,
                acl,
            }
        })
        .collect();
    (listeners, files)
}

impl BrokerCore {
    /// The store (a non-persistent one unless `[persistence]` is enabled and the broker
    /// started).
    pub fn store(&self) -> &dyn Store {
        match self.store.get() {
            Some(store) => store.as_ref(),
            None => &VOLATILE,
        }
    }

    /// An empty journal for one operation's stored changes.
    pub fn journal(&self) -> Journal {
        Journal::new(
            self.store.get().is_some_and(|s| s.is_persistent()),
            self.config.persistence.durability == crate::config::Durability::Sync,
        )
    }

    /// Whether acknowledgements wait for the store (persistence with `sync` durability). In
    /// `periodic` mode submissions complete at once, so acknowledgements are sent directly.
    pub fn acks_wait_for_store(&self) -> bool {
        self.config.persistence.durability == crate::config::Durability::Sync
            && self.store.get().is_some_and(|s| s.is_persistent())
    }

    /// Submits `journal` without waiting for it.
    pub fn submit(&self, journal: Journal) {
        journal.submit(self.store(), None);
    }

    /// The enhanced-authentication method `method`, if the broker offers it.
    pub fn authenticator(&self, method: &str) -> Option<Arc<dyn Authenticator>> {
        self.authenticators.read().get(method)
    }

    /// A fresh id for a connection (or an in-process client).
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for BrokerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An MQTT broker. Create it with a [`Config`], optionally install [`Hooks`], then
/// [`start`](Broker::start) it inside a tokio runtime.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mqtt_server::{Broker, Config};
/// let broker = Broker::new(Config::default());
/// broker.start().await?;
/// println!("listening on {:?}", broker.local_addrs());
/// broker.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Broker {
    core: Arc<BrokerCore>,
}

impl Broker {
    /// A broker with this configuration and no hooks. Nothing listens until [`Broker::start`].
    pub fn new(config: Config) -> Broker {
        Broker::with_hooks(config, NoHooks)
    }

    /// A broker whose CONNECT, PUBLISH and SUBSCRIBE decisions go through `hooks`.
    pub fn with_hooks(config: Config, hooks: impl Hooks) -> Broker {
        let slots = Arc::new(Semaphore::new(
            config.limits.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let router = Router::new(config.mqtt.shared_subscription_strategy);
        let credentials = Arc::new(Credentials::default());
        let (listener_auth, security_files) = security_setup(&config, &credentials);
        let scram = Arc::new(ScramSha256::new());
        let login_failures = crate::auth::ban::LoginFailures::new(
            config.auth.ban_after_failures,
            Duration::from_secs(config.auth.ban_secs),
        );
        let mut authenticators = Authenticators::default();
        authenticators.add(scram.clone());
        Broker {
            core: Arc::new(BrokerCore {
                config,
                router,
                sessions: SessionRegistry::default(),
                credentials,
                listener_auth,
                security_files,
                authenticators: parking_lot::RwLock::new(authenticators),
                login_failures,
                scram,
                hooks: Arc::new(hooks),
                metrics: Metrics::default(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                connection_slots: slots,
                next_connection: AtomicU64::new(1),
                local_addrs: Mutex::new(None),
                tls: Mutex::new(Vec::new()),
                store: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Binds every configured listener and starts accepting clients. Returns once all are
    /// bound (so [`Broker::local_addrs`] then tells the ports chosen for port 0); fails
    /// without listening anywhere if any address cannot be bound.
    pub async fn start(&self) -> Result<(), BrokerError> {
        if self.core.shutdown.is_cancelled() {
            return Err(BrokerError::ShutDown);
        }
        if self.core.local_addrs.lock().is_some() {
            return Err(BrokerError::AlreadyStarted);
        }
        self.load_security_files().map_err(BrokerError::Security)?;
        if self.core.store.get().is_none() {
            // Recovery completes before any listener accepts a client.
            crate::recovery::open(&self.core)?;
            if let Some(store) = self.core.store.get() {
                tokio::spawn(watch_store(self.core.clone(), store.clone()));
            }
        }
        let mut bound = Vec::new();
        for (i, cfg) in self.core.config.listeners.iter().enumerate() {
            let listener = tcp::bind(cfg.bind).map_err(|source| BrokerError::Bind {
                addr: cfg.bind,
                source,
            })?;
            let local_addr = listener.local_addr().map_err(|source| BrokerError::Bind {
                addr: cfg.bind,
                source,
            })?;
            let auth = self
                .core
                .listener_auth
                .get(i)
                .cloned()
                .unwrap_or_else(|| ListenerAuth {
                    credentials: self.core.credentials.clone(),
                    password_file: false,
                    acl: None,
                });
            let context = Arc::new(ListenerContext {
                local_addr,
                auth,
                allow_anonymous: cfg.anonymous_allowed(),
                use_identity_as_username: cfg
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.use_identity_as_username),
            });
            let tls = match &cfg.tls {
                Some(settings) => {
                    Some(Arc::new(ReloadableTls::new(settings.clone()).map_err(
                        |e| BrokerError::Security(format!("listener {}: {e}", cfg.bind)),
                    )?))
                }
                None => None,
            };
            bound.push((listener, context, tls));
        }
        let mut addrs = self.core.local_addrs.lock();
        if addrs.is_some() {
            return Err(BrokerError::AlreadyStarted);
        }
        *addrs = Some(bound.iter().map(|(_, c, _)| c.local_addr).collect());
        drop(addrs);
        *self.core.tls.lock() = bound.iter().filter_map(|(_, _, t)| t.clone()).collect();
        for (listener, context, tls) in bound {
            let kind = if tls.is_some() {
                "mqtt over tls"
            } else {
                "mqtt over tcp"
            };
            tracing::info!(addr = %context.local_addr, anonymous = context.allow_anonymous, "listening ({kind})");
            self.core
                .tasks
                .spawn(tcp::accept_loop(self.core.clone(), listener, context, tls));
        }
        Ok(())
    }

    /// Reads the password and ACL files named in the configuration (`[auth]` and each
    /// listener's). Every ACL file is parsed before anything is replaced, and each password
    /// file replaces its store only if it reads completely; an error names the file (and line).
    fn load_security_files(&self) -> Result<(), String> {
        let mut acls = Vec::new();
        for file in &self.core.security_files {
            if let SecurityFile::Acl(path, slot) = file {
                acls.push((Arc::new(Acl::load(path)?), slot, path));
            }
        }
        for file in &self.core.security_files {
            if let SecurityFile::Passwords(path, store) = file {
                let users = store.load_password_file(path)?;
                tracing::info!(path = %path.display(), users, "password file loaded");
            }
        }
        for (acl, slot, path) in acls {
            tracing::info!(path = %path.display(), rules = acl.rule_count(), "ACL file loaded");
            *slot.write() = acl;
        }
        Ok(())
    }

    /// Re-reads the password and ACL files (`[auth]` and per listener) and the TLS listeners'
    /// certificates: what the daemon does on SIGHUP. Existing connections stay; new checks and
    /// new handshakes use the new files. On an error the file in error keeps its previous
    /// contents and the error (naming the file, and the line) is returned.
    pub fn reload(&self) -> Result<(), String> {
        self.load_security_files()?;
        let listeners = self.core.tls.lock().clone();
        for tls in listeners {
            tls.reload().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The addresses the listeners are bound to (empty before [`Broker::start`]).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.core.local_addrs.lock().clone().unwrap_or_default()
    }

    /// The address of the first listener, if started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addrs().first().copied()
    }

    /// Adds (or replaces) a user; the password is stored as a salted PBKDF2-SHA512 hash, never
    /// in clear. Once any user exists, a client that sends a user name must match it.
    ///
    /// The same user can also log in with MQTT 5 enhanced authentication, method
    /// `SCRAM-SHA-256` (which stores its own salted keys, never the password) — provided the
    /// user name and password are printable ASCII (SCRAM's SASLprep is not implemented).
    pub fn add_credentials(&self, username: &str, password: &str) {
        self.core.credentials.add(username, password);
        if let Err(e) = self.core.scram.add_user(username, password) {
            tracing::debug!(%username, error = %e, "user not available to SCRAM-SHA-256");
        }
    }

    /// Offers an MQTT 5 enhanced-authentication method (MQTT 5.0 section 4.12) to clients whose
    /// CONNECT names it; replaces a method of the same name (including the built-in
    /// `SCRAM-SHA-256`).
    pub fn add_authenticator(&self, authenticator: Arc<dyn Authenticator>) {
        self.core.authenticators.write().add(authenticator);
    }

    /// An in-process client: publish and subscribe from the embedding program without a
    /// socket. It behaves like a network client with Clean Session 1 and this client id (a
    /// network client with the same id takes it over, and vice versa).
    pub fn local_client(&self, client_id: &str) -> LocalClient {
        LocalClient::connect(self.core.clone(), client_id)
    }

    #[cfg(test)]
    pub(crate) fn core_for_tests(&self) -> Arc<BrokerCore> {
        self.core.clone()
    }

    /// The broker's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.core.metrics.snapshot()
    }

    /// Number of sessions (connected clients plus stored persistent sessions).
    pub fn session_count(&self) -> usize {
        self.core.sessions.len()
    }

    /// Number of subscriptions held by all sessions.
    pub fn subscription_count(&self) -> usize {
        self.core.router.subscription_count()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.core.router.retained_count()
    }

    /// Stops accepting, closes every connection, and waits (up to 5 s) for their tasks to end.
    /// Idempotent.
    pub async fn shutdown(&self) {
        self.core.shutdown.cancel();
        // Connections wait on their session's Notify: wake them all to see the shutdown.
        for session in self.core.sessions.all() {
            session.notify.notify_waiters();
        }
        self.core.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.core.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the shutdown grace period");
        }
        if let Some(store) = self.core.store.get().cloned() {
            // The final durable flush (sessions' disconnect records included), off the async
            // workers: it blocks on the disk.
            if tokio::task::spawn_blocking(move || store.close())
                .await
                .is_err()
            {
                tracing::error!("persistence: closing the store failed");
            }
        }
    }

    /// Makes everything stored so far durable (with `durability = "periodic"`, what the next
    /// periodic flush would have written) and returns once it is on disk — the seed's
    /// `savePersistentSessions()`. Without persistence it returns at once. Fails if the store
    /// has stopped after a write error.
    pub async fn save_persistent_sessions(&self) -> Result<(), BrokerError> {
        let Some(store) = self.core.store.get() else {
            return Ok(());
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.flush(Box::new(move |result| {
            let _ = tx.send(result);
        }));
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::StoreFailed(e.to_string())),
            Err(_) => Err(BrokerError::StoreFailed(
                "the store closed before the flush completed".to_owned(),
            )),
        }
    }

    /// The error that stopped the persistence store, if a write failed (the broker then shuts
    /// itself down: see [`Broker::shutdown_token`]).
    pub fn store_failure(&self) -> Option<String> {
        self.core
            .store
            .get()
            .and_then(|s| s.failure())
            .map(|e| e.to_string())
    }

    /// A token cancelled when the broker shuts down (for tasks the application ties to it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.core.shutdown.clone()
    }
}

/// Watches the store: after a failed write nothing more can be acknowledged, so the broker
/// shuts down (a supervisor restarts it, and it recovers what was durable).
async fn watch_store(core: Arc<BrokerCore>, store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(e) = store.failure() {
            tracing::error!(error = %e, "persistence failed: shutting down");
            core.shutdown.cancel();
            for session in core.sessions.all() {
                session.notify.notify_waiters();
            }
            return;
        }
    }
}

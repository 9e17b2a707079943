//! The registry of sessions by client identifier: where a CONNECT finds the session to resume
//! or the connection to take over. Touched once per connect and disconnect, never per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytestring::ByteString;
use parking_lot::Mutex;

use super::{QueueLimits, Session};
use crate::store::Store;

/// Sessions by client id.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<ByteString, Arc<Session>>>,
    next_key: AtomicU64,
    /// The broker's store, set at start-up when it is persistent.
    store: std::sync::OnceLock<Arc<dyn Store>>,
}

/// The result of opening a session for a new connection.
#[derive(Debug)]
pub struct Opened {
    /// The session the connection now serves.
    pub session: Arc<Session>,
    /// Session Present: an existing session was resumed ([MQTT-3.2.2-2]).
    pub present: bool,
    /// A previous session that must be discarded (its subscriptions removed from the router).
    pub discarded: Option<Arc<Session>>,
}

impl SessionRegistry {
    /// Finds or creates the session of `client_id` for a new connection, disconnecting a
    /// connection that still serves it ([MQTT-3.1.4-2]: the server must disconnect the existing
    /// client). With `clean_start` set, or when the old session ends with its connection
    /// (expiry 0), any previous session is discarded and a fresh one created ([MQTT-3.1.2-6],
    /// [MQTT-3.1.2-4] in 5.0); otherwise the existing session is resumed and takes the new
    /// `expiry_interval` ([MQTT-3.1.2-4] in 3.1.1, [MQTT-3.1.2-5] in 5.0).
    pub fn open(
        &self,
        client_id: &ByteString,
        clean_start: bool,
        expiry_interval: u32,
        limits: QueueLimits,
    ) -> Opened {
        let mut map = self.sessions.lock();
        let mut discarded = None;
        if let Some(existing) = map.get(client_id) {
            existing.kick();
            let mut st = existing.state.lock();
            if !clean_start && st.expiry_interval != 0 && !st.discarded {
                st.expiry_interval = expiry_interval;
                drop(st);
                return Opened {
                    session: existing.clone(),
                    present: true,
                    discarded: None,
                };
            }
            drop(st);
            discarded = map.remove(client_id);
        }
        // Keys start at 1: 0 marks messages without a publishing session.
        let key = self.next_key.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session::new(
            key,
            client_id.clone(),
            expiry_interval,
            limits,
            self.store.get().cloned(),
        ));
        map.insert(client_id.clone(), session.clone());
        Opened {
            session,
            present: false,
            discarded,
        }
    }

    /// Removes `session` from the registry if it is still the one registered for its client id.
    pub fn remove_if_current(&self, session: &Arc<Session>) -> bool {
        let mut map = self.sessions.lock();
        match map.get(&session.client_id) {
            Some(current) if Arc::ptr_eq(current, session) => {
                map.remove(&session.client_id);
                true
            }
            _ => false,
        }
    }

    /// Removes `session` because its expiry interval ran out — only if it is still the one
    /// registered for its client id, still offline, and not resumed since `generation`.
    /// Checked under the registry lock, so a CONNECT cannot resume it meanwhile.
    pub fn expire(&self, session: &Arc<Session>, generation: u64) -> bool {
        let mut map = self.sessions.lock();
        let current = map
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session));
        let st = session.state.lock();
        if !current || st.connection.is_some() || st.generation != generation {
            return false;
        }
        drop(st);
        map.remove(&session.client_id);
        true
    }

    /// Gives new sessions the broker's persistent store (once, at start-up).
    pub fn set_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    /// Puts back a session read from the store at start-up (no CONNECT involved): an empty
    /// offline session the caller then fills. Replaces nothing: the registry is empty then.
    pub fn restore(
        &self,
        client_id: &ByteString,
        expiry_interval: u32,
        limits: QueueLimits,
    ) -> Arc<Session> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Arc::new(Session::new(
            key,
            client_id.clone(),
            expiry_interval,
            limits,
            self.store.get().cloned(),
        ));
        session.state.lock().stored = true;
        self.sessions
            .lock()
            .insert(client_id.clone(), session.clone());
        session
    }

    /// Number of sessions (connected or not).
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// True when there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every session (for shutdown and persistence).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().cloned().collect()
    }
}

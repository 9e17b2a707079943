//! The registry of sessions by client identifier: where a CONNECT finds the session to resume
//! or the connection to take over. Touched once per connect and disconnect, never per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytestring::ByteString;
use parking_lot::Mutex;

use super::{QueueLimits, Session};

/// Sessions by client id.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<ByteString, Arc<Session>>>,
    next_key: AtomicU64,
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
    /// client). With `clean` set, or when the old session was itself a clean one, any previous
    /// session is discarded and a fresh one created ([MQTT-3.1.2-6]); otherwise the existing
    /// session is resumed ([MQTT-3.1.2-4]).
    pub fn open(&self, client_id: &ByteString, clean: bool, limits: QueueLimits) -> Opened {
        let mut map = self.sessions.lock();
        let mut discarded = None;
        if let Some(existing) = map.get(client_id) {
            existing.kick();
            let mut st = existing.state.lock();
            if !clean && !st.clean && !st.discarded {
                st.clean = false;
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
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(key, client_id.clone(), clean, limits));
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

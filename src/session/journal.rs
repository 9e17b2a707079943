//! The stored changes one operation makes (a PUBLISH routed to persistent sessions, a
//! SUBSCRIBE, a PUBREL...), collected so that they reach the store as one atomic submission,
//! and the acknowledgement that must wait for them.
//!
//! Deliveries queued while a journal is open are *held*: their session does not send them
//! until the journal's changes are durable ([`Journal::submit`]). A delivery a client may have
//! received must survive a crash: otherwise, after a restart, the publisher — which got no
//! acknowledgement — sends the message again, and a QoS 2 subscriber that had received it
//! the first time receives it twice (the crash test `tests/persistence_crash.rs` found this).
//! Holding also keeps a delivery's deletion (after the client's acknowledgement) from
//! reaching the store before the delivery itself.

use std::sync::Arc;

use super::Session;
use crate::store::{Change, Done, Store};

/// Changes collected for one submission.
#[derive(Debug, Default)]
pub struct Journal {
    /// Whether the broker's store is persistent (otherwise nothing is ever collected).
    persistent: bool,
    /// Whether deliveries are held until durable (`sync`; in `periodic` mode submissions
    /// complete at once, so holding would only cost time).
    holds: bool,
    changes: Vec<Change>,
    /// Deliveries queued and held until the submission: (session, sequence number).
    held: Vec<(Arc<Session>, u64)>,
}

impl Journal {
    /// An empty journal for a broker whose store is (or is not) persistent, and holds (or
    /// not) deliveries until they are durable.
    pub fn new(persistent: bool, holds: bool) -> Journal {
        Journal {
            persistent,
            holds: persistent && holds,
            changes: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Whether changes are collected at all.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Adds a change (ignored when the store is not persistent).
    pub fn push(&mut self, change: Change) {
        if self.persistent {
            self.changes.push(change);
        }
    }

    /// Whether deliveries stored through this journal are held until durable.
    pub fn holds(&self) -> bool {
        self.holds
    }

    /// Records that `session` holds delivery `seq` until this journal is durable.
    pub(crate) fn hold(&mut self, session: &Arc<Session>, seq: u64) {
        self.held.push((session.clone(), seq));
    }

    /// Submits the changes (if any, or if `done` needs ordering behind earlier submissions).
    /// Once they are durable the held deliveries are released, then `done` runs. If the store
    /// fails instead, they stay held: the broker is stopping, and what was not stored must not
    /// be delivered (the publisher, never acknowledged, sends it again to the next start).
    /// Must not be called with a session locked: `done` may run at once.
    pub fn submit(mut self, store: &dyn Store, done: Option<Done>) {
        let changes = std::mem::take(&mut self.changes);
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            if !changes.is_empty() || done.is_some() {
                store.submit(changes, done);
            }
            return;
        }
        store.submit(
            changes,
            Some(Box::new(move |result| {
                if result.is_ok() {
                    for (session, seq) in held {
                        session.release(seq);
                    }
                }
                if let Some(done) = done {
                    done(result);
                }
            })),
        );
    }
}

impl Drop for Journal {
    /// Releases the held deliveries — after the submission, or (a bug) without one: a session
    /// must never stall on a delivery nobody will release.
    fn drop(&mut self) {
        debug_assert!(
            self.changes.is_empty(),
            "a journal with changes was dropped without being submitted"
        );
        for (session, seq) in self.held.drain(..) {
            session.release(seq);
        }
    }
}

//! Persistent sessions (`--persistent-sessions`): the client identifiers that connected with
//! Clean Session 0, and discarding their sessions at the end of a run.
//!
//! A broker keeps a persistent session after its client disconnects ([MQTT-3.1.2-4]), and a
//! broker with a durable store keeps it on disk, so every run would leave its clients'
//! sessions (subscriptions, and whatever was still queued for them) behind. At the end of a
//! run each of them is discarded the way the protocol offers: a CONNECT with Clean Session 1
//! for the same identifier, which makes the broker discard the previous session
//! ([MQTT-3.1.2-6]), followed by DISCONNECT, which ends the new one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::Endpoint;
use crate::report::secs;

/// Session discards in progress at once: below the smallest listen backlog of the brokers we
/// compare (Mosquitto's 100), beyond which the kernel drops SYNs.
const DISCARD_CONCURRENCY: usize = 64;

/// The identifiers that sent (or were about to send) a CONNECT with Clean Session 0.
#[derive(Debug, Default)]
pub struct SessionLog {
    ids: Mutex<BTreeSet<String>>,
}

impl SessionLog {
    /// Remembers `client_id` (once, however often it connects).
    pub fn remember(&self, client_id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if !ids.contains(client_id) {
            ids.insert(client_id.to_string());
        }
    }

    /// The identifiers remembered so far, in order; the log is empty afterwards.
    pub fn take(&self) -> Vec<String> {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *ids).into_iter().collect()
    }
}

/// What discarding the run's persistent sessions did, in the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionStats {
    /// Client identifiers that connected with Clean Session 0.
    pub persistent: u64,
    /// Sessions discarded at the end (Clean Session 1 CONNECT accepted, then DISCONNECT).
    pub discarded: u64,
    /// Discards that failed: the broker may still hold those sessions.
    pub failed: u64,
    /// Seconds the discards took.
    pub discard_s: f64,
    /// The first failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Discards the session of every identifier in `endpoint`'s log, a bounded number at a time.
/// `None` when the run did not use persistent sessions.
pub async fn discard_all(endpoint: &Arc<Endpoint>) -> Option<SessionStats> {
    let ids = endpoint.sessions.as_ref()?.take();
    let begin = Instant::now();
    let permits = Arc::new(Semaphore::new(DISCARD_CONCURRENCY));
    let mut set = JoinSet::new();
    for id in &ids {
        let (endpoint, permits, id) = (Arc::clone(endpoint), Arc::clone(&permits), id.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            endpoint
                .discard_session(&id)
                .await
                .map_err(|e| format!("discarding the session of {id}: {e}"))
        });
    }
    let mut stats = SessionStats {
        persistent: ids.len() as u64,
        discarded: 0,
        failed: 0,
        discard_s: 0.0,
        first_error: None,
    };
    while let Some(joined) = set.join_next().await {
        let outcome = joined.unwrap_or_else(|e| Err(format!("a discard task failed: {e}")));
        tally(&mut stats, outcome);
    }
    stats.discard_s = secs(u64::try_from(begin.elapsed().as_nanos()).unwrap_or(u64::MAX));
    Some(stats)
}

/// Counts one discard's outcome, keeping the first error.
fn tally(stats: &mut SessionStats, outcome: Result<(), String>) {
    match outcome {
        Ok(()) => stats.discarded += 1,
        Err(e) => {
            stats.failed += 1;
            stats.first_error.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_remembers_each_id_once_and_empties_on_take() {
        let log = SessionLog::default();
        log.remember("mb-1-sub-1");
        log.remember("mb-1-pub-0");
        log.remember("mb-1-sub-1");
        assert_eq!(log.take(), vec!["mb-1-pub-0", "mb-1-sub-1"]);
        assert!(log.take().is_empty());
    }

    #[test]
    fn tally_counts_and_keeps_the_first_error() {
        let mut stats = SessionStats {
            persistent: 3,
            discarded: 0,
            failed: 0,
            discard_s: 0.0,
            first_error: None,
        };
        tally(&mut stats, Ok(()));
        tally(&mut stats, Err("first".into()));
        tally(&mut stats, Err("second".into()));
        assert_eq!((stats.discarded, stats.failed), (1, 2));
        assert_eq!(stats.first_error.as_deref(), Some("first"));
    }
}

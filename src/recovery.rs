//! Start-up with a persistent store: sessions, subscriptions, queued and in-flight messages,
//! inbound QoS 2 state, retained messages and delayed wills are read back and rebuilt before
//! any listener accepts a client.
//!
//! Time runs on while the broker is down: a session whose expiry interval ran out since its
//! client disconnected ends now (its will, if any, is published), a will whose delay ran out is
//! published now, and expired messages are dropped ([MQTT-3.3.2-5]). A session whose client was
//! connected when the broker stopped counts as disconnected at start-up.

use std::sync::Arc;
use std::time::Instant;

use crate::broker::BrokerCore;
use crate::codec::QoS;
use crate::connection::{Handler, spawn_timer};
use crate::hooks::ClientInfo;
use crate::session::inflight::{InflightEntry, Stage};
use crate::session::{
    Journal, NEVER_EXPIRES, Outgoing, PendingWill, QueueLimits, Session, packet_id_for,
};
use crate::store::{Change, Recovered, RecoveredSession, SessionRecord, Store, unix_millis};
use crate::{ProtocolVersion, store};

/// What was recovered, for the start-up log line.
#[derive(Debug, Default)]
struct Counts {
    sessions: usize,
    expired: usize,
    queued: usize,
    retained: usize,
    wills: usize,
}

/// Opens the configured store and, if it is persistent, rebuilds the broker's state from it.
pub(crate) fn open(core: &Arc<BrokerCore>) -> Result<(), store::StoreError> {
    let store = store::open(&core.config.persistence)?;
    if !store.is_persistent() {
        return Ok(());
    }
    let started = Instant::now();
    let recovered = store.recover()?;
    core.sessions.set_store(store.clone());
    let _ = core.store.set(store.clone());
    let counts = rebuild(core, store.as_ref(), recovered);
    tracing::info!(
        path = %store::store_file(&core.config.persistence.path).display(),
        durability = ?core.config.persistence.durability,
        sessions = counts.sessions,
        expired_while_down = counts.expired,
        queued_messages = counts.queued,
        retained_messages = counts.retained,
        delayed_wills = counts.wills,
        ms = started.elapsed().as_millis() as u64,
        "persistence: state recovered"
    );
    Ok(())
}

fn rebuild(core: &Arc<BrokerCore>, store: &dyn Store, recovered: Recovered) -> Counts {
    let mut counts = Counts::default();
    let now = Instant::now();
    for message in recovered.retained {
        if message.is_expired(now) {
            store.submit(
                vec![Change::DeleteRetained {
                    topic: message.topic.clone(),
                }],
                None,
            );
        } else {
            counts.retained += 1;
            core.router.restore_retained(message);
        }
    }
    let limits = QueueLimits {
        max_inflight: usize::from(core.config.limits.max_inflight_messages),
        max_queued: core.config.limits.max_queued_messages,
        queue_qos0_offline: core.config.mqtt.queue_qos0_messages,
    };
    let now_unix = unix_millis();
    // Wills due now are published once every session is back, so that they reach them.
    let mut due_wills = Vec::new();
    let mut ended = Vec::new();
    for rs in recovered.sessions {
        let RecoveredSession {
            client,
            record,
            subscriptions,
            queue,
            inbound,
            will,
        } = rs;
        let session = core
            .sessions
            .restore(&client, record.expiry_interval, limits);
        let disconnected_at = record.disconnected_at.unwrap_or(now_unix);
        let offline_secs = now_unix.saturating_sub(disconnected_at) / 1000;
        let expired = record.expiry_interval != NEVER_EXPIRES
            && offline_secs >= u64::from(record.expiry_interval);
        let mut no_journal = Journal::new(false, false);
        for (filter, granted) in subscriptions {
            core.router.subscribe(
                &session,
                &filter,
                granted.options,
                granted.id,
                &mut no_journal,
            );
        }
        session.state.lock().next_seq = record.last_seq;
        restore_queue(&session, store, queue, now, &mut counts);
        {
            let mut st = session.state.lock();
            if !inbound.is_empty() {
                st.inbound_qos2 = Some(Box::new(inbound.into_iter().collect()));
            }
        }
        if record.disconnected_at.is_none() {
            store.submit(
                vec![Change::PutSession {
                    client: client.clone(),
                    record: SessionRecord {
                        disconnected_at: Some(now_unix),
                        ..record
                    },
                }],
                None,
            );
        }
        let mut will_delay = None;
        if let Some(w) = will {
            counts.wills += 1;
            let pending = PendingWill {
                will: Box::new(w.will),
                client: Arc::new(ClientInfo {
                    client_id: client.clone(),
                    username: w.username,
                    remote_addr: None,
                    // Only MQTT 5 has delayed wills.
                    protocol: ProtocolVersion::V5,
                }),
            };
            if w.due <= now_unix || expired {
                due_wills.push((session.clone(), pending));
            } else {
                let secs = (w.due - now_unix).div_ceil(1000);
                will_delay = Some(u32::try_from(secs).unwrap_or(u32::MAX));
                session.state.lock().pending_will = Some(pending);
            }
        }
        if expired {
            counts.expired += 1;
            ended.push(session);
            continue;
        }
        counts.sessions += 1;
        let remaining = if record.expiry_interval == NEVER_EXPIRES {
            NEVER_EXPIRES
        } else {
            u32::try_from(u64::from(record.expiry_interval) - offline_secs).unwrap_or(0)
        };
        if remaining != NEVER_EXPIRES || will_delay.is_some() {
            spawn_timer(core.clone(), session, will_delay, remaining);
        }
    }
    for (session, pending) in due_wills {
        // Stored as taken, so that it is not published again after another restart.
        store.submit(
            vec![Change::DeleteWill {
                client: session.client_id.clone(),
            }],
            None,
        );
        Handler::publish_will(core, &pending.client, &session, *pending.will);
    }
    for session in ended {
        tracing::debug!(client_id = %session.client_id, "session expired while the broker was down");
        core.sessions.remove_if_current(&session);
        core.router.remove_session(&session);
    }
    counts
}

/// Puts a session's stored deliveries back: those the client has PUBRECed into the in-flight
/// window (PUBREL is re-sent), the others into the queue, marked as possibly sent before
/// (DUP set, [MQTT-3.3.1-1]) — with the packet ids derived from their sequence numbers, the
/// ones they were sent with.
fn restore_queue(
    session: &Arc<Session>,
    store: &dyn Store,
    queue: Vec<(u64, store::QueuedEntry)>,
    now: Instant,
    counts: &mut Counts,
) {
    let mut st = session.state.lock();
    for (seq, e) in queue {
        st.next_seq = st.next_seq.max(seq);
        if e.released {
            st.inflight.push(InflightEntry {
                packet_id: packet_id_for(seq),
                message: e.message,
                qos: QoS::ExactlyOnce,
                retain: e.retain,
                stage: Stage::AwaitingPubComp,
                extra: e.extra,
                seq,
                on_disk: true,
            });
            continue;
        }
        if e.message.is_expired(now) {
            store.submit(
                vec![Change::DeleteQueued {
                    client: session.client_id.clone(),
                    seq,
                }],
                None,
            );
            continue;
        }
        counts.queued += 1;
        st.pending.push_back(Outgoing {
            message: e.message,
            qos: e.qos,
            retain: e.retain,
            extra: e.extra,
            seq,
            held: false,
            dup: true,
            on_disk: true,
        });
    }
}

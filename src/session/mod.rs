//! Per-client protocol state that outlives a connection: subscriptions, the queue of messages
//! waiting to be sent, the outbound in-flight window, and inbound QoS 2 packet identifiers.
//!
//! A [`Session`] is shared (`Arc`) between the connection that currently serves it, every
//! publisher that routes a message to it, and the registry. Its state sits behind one short
//! `parking_lot::Mutex` that is never held across an `.await` and never held while another lock
//! is taken (lock order: the router's locks may be held while a session lock is taken, never the
//! reverse). The connection's writer is woken through [`Session::notify`].

pub mod inflight;
pub mod journal;
pub mod registry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::auth::AclSlot;
use crate::codec::{Ack, LastWill, Packet, PacketId, QoS, SubscriptionOptions};
use crate::hooks::ClientInfo;
use crate::message::SharedMessage;
use crate::metrics::Metrics;
use crate::store::{Change, QueuedEntry, SessionRecord, Store, StoredWill, unix_millis};
use inflight::{Inflight, InflightEntry, Stage};
pub use journal::Journal;

/// Queue bounds of a session, copied from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Outbound QoS 1/2 deliveries awaiting acknowledgement.
    pub max_inflight: usize,
    /// Messages waiting behind the window (online or offline).
    pub max_queued: usize,
    /// Whether QoS 0 messages are queued while the client is offline.
    pub queue_qos0_offline: bool,
}

/// Session Expiry Interval meaning "never expires" (MQTT 5.0 section 3.1.2.11.2).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// What one delivery carries besides the message (MQTT 5 subscription identifiers, the shared
/// subscription it came through). Shared by reference: most deliveries have none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryExtra {
    /// Subscription Identifiers of every matching subscription of this session
    /// ([MQTT-3.3.4-3], [MQTT-3.3.4-4]).
    pub subscription_ids: Vec<u32>,
    /// The shared subscription (`$share/{group}/{filter}`) this delivery was chosen for, so
    /// that it can go to another member if this one leaves before acknowledging it.
    pub share: Option<ByteString>,
}

/// A message waiting in a session's queue.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The shared message.
    pub message: SharedMessage,
    /// Delivery QoS: the minimum of the published and the granted QoS.
    pub qos: QoS,
    /// Retain flag of this delivery ([MQTT-3.3.1-8], [MQTT-3.3.1-9]).
    pub retain: bool,
    /// Subscription identifiers and shared-subscription origin, if any.
    pub extra: Option<Arc<DeliveryExtra>>,
    /// The session's sequence number of this QoS 1/2 delivery (0 for QoS 0): its order in the
    /// store, and the source of its packet identifier ([`packet_id_for`]).
    pub seq: u64,
    /// Not to be sent yet: the journal that stores it has not been submitted (see
    /// [`Journal`]).
    pub held: bool,
    /// It may have been sent before (recovered from the store): sent with DUP set.
    pub dup: bool,
    /// Whether the store holds it (so that its completion must delete it there).
    pub on_disk: bool,
}

/// The packet identifier of delivery `seq`: its sequence number modulo 65 535, plus 1. Derived,
/// not allocated, so that a delivery recovered after a restart carries the packet id it may
/// already have been sent with — which exactly-once delivery to the client depends on
/// ([MQTT-4.3.3-3]: the receiver treats a PUBLISH with an id it has PUBRECed as a duplicate).
pub fn packet_id_for(seq: u64) -> PacketId {
    let id = u16::try_from(seq.wrapping_sub(1) % 65_535 + 1).unwrap_or(1);
    PacketId::new(id).unwrap_or(PacketId::MIN)
}

/// A subscription as its session records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Options granted (QoS is the maximum delivery QoS).
    pub options: SubscriptionOptions,
    /// Subscription Identifier given in the SUBSCRIBE (MQTT 5), 0 for none.
    pub id: u32,
}

/// A will waiting for its Will Delay Interval to run out (MQTT 5.0 section 3.1.3.2.2).
#[derive(Debug)]
pub struct PendingWill {
    /// The will message.
    pub will: Box<LastWill>,
    /// The client it belongs to (for the publish hook).
    pub client: Arc<ClientInfo>,
}

/// What the writer of a connection sends next.
#[derive(Debug)]
pub enum Outbound {
    /// A control packet (CONNACK, acks, SUBACK, PINGRESP...).
    Packet(Packet),
    /// A PUBLISH of a routed message.
    Publish {
        /// The message.
        message: SharedMessage,
        /// Delivery QoS.
        qos: QoS,
        /// Retain flag.
        retain: bool,
        /// Packet id for QoS 1/2.
        packet_id: Option<PacketId>,
        /// DUP flag: a re-delivery ([MQTT-3.3.1-1]).
        dup: bool,
        /// Subscription identifiers and shared-subscription origin.
        extra: Option<Arc<DeliveryExtra>>,
    },
}

/// The mutable part of a session.
#[derive(Debug)]
pub struct SessionState {
    /// Session Expiry Interval in seconds: 0 ends the session with its connection (Clean
    /// Session 1 in MQTT 3.1.1), [`NEVER_EXPIRES`] keeps it forever.
    pub expiry_interval: u32,
    /// Subscriptions held, filter (as subscribed, `$share/...` included) → what was granted.
    /// (Boxed and created on first use: most sessions hold none or few, and an idle
    /// connection should not pay for an empty map.)
    pub subscriptions: Option<Box<HashMap<ByteString, Granted>>>,
    /// Control packets for the connected client, sent before queued messages.
    pub control: VecDeque<Packet>,
    /// Messages not yet sent.
    pub pending: VecDeque<Outgoing>,
    /// Outbound QoS 1/2 deliveries awaiting acknowledgement.
    pub inflight: Inflight,
    /// Inbound QoS 2 packet ids received and not yet released by PUBREL ([MQTT-4.3.3-2]).
    /// (Boxed, created on first use and released when empty, like `subscriptions`.)
    pub inbound_qos2: Option<Box<HashSet<PacketId>>>,
    /// Id of the connection serving this session, if any.
    pub connection: Option<u64>,
    /// Incremented at every attach: a timer started while the session was offline (session
    /// expiry, will delay) does nothing if the session has been resumed since.
    pub generation: u64,
    /// Outbound in-flight window of the current connection: the configured maximum, lowered
    /// to the client's Receive Maximum ([MQTT-3.3.4-7]).
    pub inflight_cap: usize,
    /// A will waiting for its delay to run out.
    pub pending_will: Option<PendingWill>,
    /// User name of the connection serving (or that last served) the session, for the read
    /// checks of the ACL on every delivery.
    pub username: Option<ByteString>,
    /// The ACL of the listener the serving client came through (`None`: no ACL applies, as
    /// for the in-process client).
    pub acl: Option<Arc<AclSlot>>,
    /// The task timing this offline session's will delay and expiry, aborted when the session
    /// is resumed (so a reconnect storm does not pile up sleeping timers).
    pub timer: Option<tokio::task::AbortHandle>,
    /// Set once the session is discarded: no subscription may be added any more.
    pub discarded: bool,
    /// The writer must re-send the in-flight window before anything else (after a reconnect).
    pub resend_inflight: bool,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
    /// The congestion episode under way: the queue of this online session went above half of
    /// `max_queued_messages` (publishers then pause, see [`Enqueued::Congested`]). Boxed:
    /// rare, and every session carries the field.
    pub congestion: Option<Box<Congestion>>,
    /// Sequence number of the last QoS 1/2 delivery queued.
    pub next_seq: u64,
    /// Acknowledgements waiting for the store (they are sent in order, so later ones wait too).
    pub acks_in_store: u32,
    /// Whether a record of this session has been written to the store.
    pub stored: bool,
    /// `periodic` durability: deliveries not yet in the store wait for the next periodic
    /// commit, which takes them from the session ([`Session::take_unsaved`]); set while the
    /// session is registered for it.
    pub dirty: bool,
    limits: QueueLimits,
}

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// Unique key of this session object (subscriber key in the subscription tree).
    pub key: u64,
    /// Client identifier.
    pub client_id: ByteString,
    /// The state; see the module docs for the locking rules.
    pub state: Mutex<SessionState>,
    /// Wakes the writer of the connection serving this session.
    pub notify: Notify,
    /// Wakes publishers paused because this session's queue was congested, once it drains.
    pub drained: Notify,
    /// Whether a connection serves the session (read without the lock by shared-subscription
    /// member selection).
    pub online: AtomicBool,
    /// The broker's store, when it is persistent (`None` otherwise: nothing is written).
    pub store: Option<Arc<dyn Store>>,
}

/// How long publishers wait for a congested subscriber before treating it as a slow consumer
/// whose overflow is dropped rather than waited for.
pub const CONGESTION_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// A congested subscriber whose queue has not shrunk for this long is not reading: publishers
/// stop waiting for it at once rather than after the whole [`CONGESTION_GRACE`].
pub const CONGESTION_STALL: std::time::Duration = std::time::Duration::from_millis(20);

/// A congestion episode of one session: from its queue passing half of `max_queued_messages`
/// until it is back under a quarter.
#[derive(Debug)]
pub struct Congestion {
    /// When the episode began.
    pub since: std::time::Instant,
    /// When the queue last shrank during the episode (its client is reading).
    pub progress: std::time::Instant,
    /// Publishers no longer wait for this session: the grace passed, or it stalled.
    pub given_up: bool,
}

/// The outcome of [`Session::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    Queued,
    /// Queued, but the client's queue is over half full: the publisher should pause reading
    /// until it drains ([`Session::wait_drained`]), so that a burst slows publishers down
    /// rather than overflowing the queue and losing messages. A consumer that stays congested
    /// for [`CONGESTION_GRACE`] no longer pauses publishers: its overflow is dropped instead,
    /// so one stuck client cannot stall the others. Each publisher also has a pause budget
    /// (`connection::backpressure`), so that many slow subscribers, one after another, cannot
    /// either.
    Congested,
    /// Dropped: the queue is full, or QoS 0 for an offline client.
    Dropped,
}

impl SessionState {
    /// Ends a congestion episode once the queue is back under a quarter of its bound, waking
    /// the publishers that paused for it.
    /// `progressed`: the queue just shrank (the client is reading).
    fn release_drained(&mut self, drained: &Notify, progressed: bool) {
        let Some(c) = self.congestion.as_mut() else {
            return;
        };
        if self.pending.len() < self.limits.max_queued / 4 {
            self.congestion = None;
            drained.notify_waiters();
        } else if progressed {
            c.progress = std::time::Instant::now();
        }
    }
}

impl Session {
    /// A new, empty session; `store` is the broker's store if it is persistent.
    pub fn new(
        key: u64,
        client_id: ByteString,
        expiry_interval: u32,
        limits: QueueLimits,
        store: Option<Arc<dyn Store>>,
    ) -> Session {
        Session {
            key,
            client_id,
            state: Mutex::new(SessionState {
                expiry_interval,
                subscriptions: None,
                control: VecDeque::new(),
                pending: VecDeque::new(),
                inflight: Inflight::default(),
                inbound_qos2: None,
                connection: None,
                generation: 0,
                inflight_cap: limits.max_inflight,
                pending_will: None,
                username: None,
                acl: None,
                timer: None,
                discarded: false,
                resend_inflight: false,
                dropped: 0,
                congestion: None,
                next_seq: 0,
                acks_in_store: 0,
                stored: false,
                dirty: false,
                limits,
            }),
            notify: Notify::new(),
            drained: Notify::new(),
            online: AtomicBool::new(false),
            store,
        }
    }

    /// Whether changes to this session are stored: the store is persistent and the session
    /// outlives its connection.
    pub(crate) fn persists(&self, st: &SessionState) -> bool {
        self.store.is_some() && st.expiry_interval != 0 && !st.discarded
    }

    /// Submits `changes` directly (not waited for), if this session persists. Called with the
    /// session locked, so one session's changes reach the store in the order they were made.
    fn write(&self, st: &SessionState, changes: Vec<Change>) {
        if let Some(store) = &self.store
            && self.persists(st)
        {
            store.submit(changes, None);
        }
    }

    /// The deletion of delivery `seq` (after its acknowledgement, expiry or drop).
    fn write_dequeue(&self, st: &SessionState, seq: u64, on_disk: bool) {
        if seq != 0
            && on_disk
            && let Some(store) = &self.store
            && self.persists(st)
        {
            store.submit_one(Change::DeleteQueued {
                client: self.client_id.clone(),
                seq,
            });
        }
    }

    /// The session's record, as stored now.
    fn record(st: &SessionState, disconnected: bool) -> SessionRecord {
        SessionRecord {
            expiry_interval: st.expiry_interval,
            disconnected_at: disconnected.then(unix_millis),
            last_seq: st.next_seq,
        }
    }

    /// Registers this session for the next periodic commit (`periodic` durability), once.
    fn mark_dirty(self: &Arc<Self>, st: &mut SessionState) {
        if !st.dirty
            && let Some(store) = &self.store
        {
            st.dirty = true;
            store.defer(self.clone());
        }
    }

    /// Lets delivery `seq` be sent: the journal that stores it has been submitted.
    pub fn release(&self, seq: u64) {
        let mut st = self.state.lock();
        let Some(pos) = st.pending.iter().rposition(|o| o.seq == seq) else {
            return;
        };
        if let Some(o) = st.pending.get_mut(pos) {
            o.held = false;
        }
        let wake = pos == 0 && st.connection.is_some();
        drop(st);
        if wake {
            self.notify.notify_one();
        }
    }

    /// Whether an acknowledgement for this session must go through the store (to stay behind
    /// one that already does, [MQTT-4.6.0-2] to [MQTT-4.6.0-4]).
    pub fn acks_waiting(&self) -> bool {
        self.store.is_some() && self.state.lock().acks_in_store > 0
    }

    /// Counts an acknowledgement that now waits for the store.
    pub fn ack_deferred(&self) {
        self.state.lock().acks_in_store += 1;
    }

    /// Called by the store once the changes an acknowledgement waited for are durable: queues
    /// it for connection `conn` (if it still serves the session) and wakes the writer. After a
    /// store failure nothing is sent: the client will re-send.
    pub fn ack_stored(&self, conn: u64, packet: Packet, stored: bool) {
        let mut st = self.state.lock();
        st.acks_in_store = st.acks_in_store.saturating_sub(1);
        let send = stored && st.connection == Some(conn);
        if send {
            st.control.push_back(packet);
        }
        drop(st);
        if send {
            self.notify.notify_one();
        }
    }

    /// Records a will waiting for its delay (stored, due at `due` unix milliseconds).
    pub fn set_pending_will(&self, pending: PendingWill, due: u64) {
        let mut st = self.state.lock();
        let change = Change::PutWill {
            client: self.client_id.clone(),
            will: StoredWill {
                will: (*pending.will).clone(),
                due,
                username: pending.client.username.clone(),
            },
        };
        st.pending_will = Some(pending);
        self.write(&st, vec![change]);
    }

    /// Queues `message` for delivery at `qos`. Returns false if it was dropped: the queue is
    /// full (`max_queued_messages`; the newest message is dropped, as Mosquitto does), or it is
    /// QoS 0 and the client is offline ([MQTT-3.1.2-5] lets a server discard QoS 0 messages for
    /// an offline client).
    /// A QoS 1/2 delivery to a persistent session is stored through `journal`, and held until
    /// the journal is submitted.
    pub fn enqueue(
        self: &Arc<Self>,
        message: &SharedMessage,
        qos: QoS,
        retain: bool,
        extra: Option<Arc<DeliveryExtra>>,
        metrics: &Metrics,
        journal: &mut Journal,
    ) -> Enqueued {
        let mut st = self.state.lock();
        if let Some(slot) = &st.acl
            && !slot
                .read()
                .check_receive(&self.client_id, st.username.as_deref(), &message.topic)
        {
            // Read access is checked on every delivery (as Mosquitto does): this is what keeps
            // a denied topic out of a broad subscription, and checks retained messages and
            // wills against the client they are delivered to.
            drop(st);
            Metrics::inc(&metrics.acl_denied);
            return Enqueued::Dropped;
        }
        let online = st.connection.is_some();
        if !online && qos == QoS::AtMostOnce && !st.limits.queue_qos0_offline {
            return Enqueued::Dropped;
        }
        if st.pending.len() >= st.limits.max_queued {
            st.dropped += 1;
            let dropped = st.dropped;
            drop(st);
            Metrics::inc(&metrics.messages_dropped);
            // At most one line per second for the whole broker, so a flood cannot flood the log.
            if metrics.drop_warning_due() {
                tracing::warn!(
                    client_id = %self.client_id,
                    dropped_for_this_client = dropped,
                    dropped_in_total = metrics.snapshot().messages_dropped,
                    "queue full (max_queued_messages): dropping new messages for slow or offline clients"
                );
            }
            return Enqueued::Dropped;
        }
        // Wake the connection only when its queue goes from empty to non-empty: with work
        // queued it is awake already (or waiting for window room, which its own acks make),
        // and it drains the whole queue before waiting again. One wake-up per burst, not per
        // message.
        let wake = online && st.pending.is_empty();
        let seq = if qos == QoS::AtMostOnce {
            0
        } else {
            st.next_seq += 1;
            st.next_seq
        };
        let stored = seq != 0 && journal.is_persistent() && self.persists(&st);
        let held = stored && journal.holds();
        if stored && !held {
            // `periodic`: written by the next periodic commit, if still queued by then.
            self.mark_dirty(&mut st);
        }
        if held {
            journal.push(Change::PutQueued {
                client: self.client_id.clone(),
                seq,
                entry: QueuedEntry {
                    message: message.clone(),
                    qos,
                    retain,
                    extra: extra.clone(),
                    released: false,
                },
                created: true,
            });
            journal.hold(self, seq);
        }
        st.pending.push_back(Outgoing {
            message: message.clone(),
            qos,
            retain,
            extra,
            seq,
            held,
            dup: false,
            on_disk: held,
        });
        let mut outcome = Enqueued::Queued;
        if online && st.pending.len() >= st.limits.max_queued / 2 {
            let now = std::time::Instant::now();
            let c = st.congestion.get_or_insert_with(|| {
                Box::new(Congestion {
                    since: now,
                    progress: now,
                    given_up: false,
                })
            });
            if !c.given_up && now.duration_since(c.since) < CONGESTION_GRACE {
                outcome = Enqueued::Congested;
            }
        }
        drop(st);
        if wake {
            self.notify.notify_one();
        }
        outcome
    }

    /// Queues a control packet for connection `conn`; dropped if `conn` no longer serves this
    /// session (an acknowledgement meant for a connection that was taken over must not reach
    /// its successor). Only that connection's own task calls this, and it takes its outbound
    /// queue before waiting again, so no wake-up is needed (nor are there any in the ack
    /// handlers below).
    pub fn send_control(&self, conn: u64, packet: Packet) {
        let mut st = self.state.lock();
        if st.connection == Some(conn) {
            st.control.push_back(packet);
        }
    }

    /// Moves what the writer of connection `conn` should send next into `out`, in order:
    /// control packets, then (after a reconnect) the in-flight window again with DUP set, then
    /// queued messages while the in-flight window has room. Returns false when `conn` no
    /// longer serves this session (taken over or closed): the writer must stop.
    pub fn take_outbound(&self, conn: u64, out: &mut Vec<Outbound>, max_items: usize) -> bool {
        let mut st = self.state.lock();
        if st.connection != Some(conn) {
            return false;
        }
        out.extend(st.control.drain(..).map(Outbound::Packet));
        if st.control.capacity() > 64 {
            // Give back what a burst of acknowledgements grew.
            st.control = VecDeque::new();
        }
        if st.resend_inflight {
            st.resend_inflight = false;
            // [MQTT-4.4.0-1] on reconnect with Clean Session 0, re-send unacknowledged PUBLISH
            // packets (DUP set, [MQTT-3.3.1-1]) and PUBREL packets, in their original order.
            for e in st.inflight.iter() {
                out.push(match e.stage {
                    Stage::AwaitingPubComp => {
                        Outbound::Packet(Packet::PubRel(Ack::new(e.packet_id)))
                    }
                    _ => Outbound::Publish {
                        message: e.message.clone(),
                        qos: e.qos,
                        retain: e.retain,
                        packet_id: Some(e.packet_id),
                        dup: true,
                        extra: e.extra.clone(),
                    },
                });
            }
        }
        if st.pending.is_empty() && st.pending.capacity() > 64 {
            // Likewise for a burst of messages, once it has been sent.
            st.pending = VecDeque::new();
        }
        let mut now: Option<Instant> = None;
        let queued_before = st.pending.len();
        while out.len() < max_items {
            let Some(front) = st.pending.front() else {
                break;
            };
            if front.held {
                // Its journal is not submitted yet; everything behind it waits too
                // ([MQTT-4.6.0-6]).
                break;
            }
            if front.message.expires_at.is_some()
                && front
                    .message
                    .is_expired(*now.get_or_insert_with(Instant::now))
            {
                // [MQTT-3.3.2-5] an expired message whose onward delivery has not started is
                // deleted for this subscriber.
                if let Some(o) = st.pending.pop_front() {
                    self.write_dequeue(&st, o.seq, o.on_disk);
                }
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                if let Some(o) = st.pending.pop_front() {
                    out.push(Outbound::Publish {
                        message: o.message,
                        qos: o.qos,
                        retain: o.retain,
                        packet_id: None,
                        dup: false,
                        extra: o.extra,
                    });
                }
                continue;
            }
            // Messages leave the queue strictly in order ([MQTT-4.6.0-6]): a QoS 1/2 message at
            // the head waits for window room, and so does everything behind it.
            // [MQTT-3.3.4-9] never more unacknowledged QoS 1/2 PUBLISHes than the client's
            // Receive Maximum.
            if st.inflight.len() >= st.inflight_cap {
                break;
            }
            let packet_id = packet_id_for(front.seq);
            if st.inflight.contains(packet_id) {
                // A delivery 65 535 sequence numbers older still holds this id: wait for it.
                break;
            }
            let Some(o) = st.pending.pop_front() else {
                break;
            };
            let stage = if o.qos == QoS::AtLeastOnce {
                Stage::AwaitingPubAck
            } else {
                Stage::AwaitingPubRec
            };
            st.inflight.push(InflightEntry {
                packet_id,
                message: o.message.clone(),
                qos: o.qos,
                retain: o.retain,
                stage,
                extra: o.extra.clone(),
                seq: o.seq,
                on_disk: o.on_disk,
            });
            out.push(Outbound::Publish {
                message: o.message,
                qos: o.qos,
                retain: o.retain,
                packet_id: Some(packet_id),
                dup: o.dup,
                extra: o.extra,
            });
        }
        let progressed = st.pending.len() < queued_before;
        st.release_drained(&self.drained, progressed);
        true
    }

    /// Takes the next queued message for an in-process client, which receives messages
    /// directly (no packet ids, no in-flight window: nothing can be lost in between).
    pub fn pop_pending(&self, conn: u64) -> Option<Outgoing> {
        let mut st = self.state.lock();
        if st.connection != Some(conn) {
            return None;
        }
        if st.pending.front().is_some_and(|o| o.held) {
            return None;
        }
        let next = st.pending.pop_front();
        if let Some(o) = &next {
            self.write_dequeue(&st, o.seq, o.on_disk);
        }
        st.release_drained(&self.drained, next.is_some());
        next
    }

    /// Handles PUBACK from the client.
    pub fn on_puback(&self, id: PacketId) {
        let mut st = self.state.lock();
        if let Some(e) = st.inflight.puback(id) {
            self.write_dequeue(&st, e.seq, e.on_disk);
        }
    }

    /// Forgets an in-flight delivery that was never sent because it exceeded the client's
    /// Maximum Packet Size: [MQTT-3.1.2-25] the server behaves as if it had completed sending it.
    pub fn forget_inflight(&self, id: PacketId) {
        let mut st = self.state.lock();
        for e in st.inflight.remove(id) {
            self.write_dequeue(&st, e.seq, e.on_disk);
        }
    }

    /// Number of inbound QoS 2 messages awaiting PUBREL (counted against the Receive Maximum
    /// the server announced, [MQTT-3.3.4-7]).
    pub fn inbound_qos2_count(&self) -> usize {
        self.state
            .lock()
            .inbound_qos2
            .as_ref()
            .map_or(0, |ids| ids.len())
    }

    /// Handles PUBREC from the client: the delivery now awaits PUBCOMP, which `journal` stores
    /// (so that after a restart PUBREL is sent, not the PUBLISH again). The caller answers
    /// PUBREL ([MQTT-4.3.3-1]) once `journal` is durable, for an unknown id too, so a client
    /// that lost track completes its flow.
    pub fn on_pubrec(&self, id: PacketId, journal: &mut Journal) {
        let mut st = self.state.lock();
        let Some(e) = st.inflight.pubrec(id) else {
            return;
        };
        let change = Change::PutQueued {
            client: self.client_id.clone(),
            seq: e.seq,
            entry: QueuedEntry {
                message: e.message.clone(),
                qos: e.qos,
                retain: e.retain,
                extra: e.extra.clone(),
                released: true,
            },
            created: false,
        };
        // (Not yet in the store, `periodic`: the next periodic commit writes it as it is then.)
        if e.seq != 0 && e.on_disk && self.persists(&st) {
            journal.push(change);
        }
    }

    /// Handles PUBCOMP from the client.
    pub fn on_pubcomp(&self, id: PacketId) {
        let mut st = self.state.lock();
        if let Some(e) = st.inflight.pubcomp(id) {
            self.write_dequeue(&st, e.seq, e.on_disk);
        }
    }

    /// Records an inbound QoS 2 PUBLISH. Returns true the first time this packet id is seen
    /// (route the message), false for a re-delivery before PUBREL ([MQTT-4.3.3-2]: the
    /// message must not be delivered onwards a second time).
    /// A persistent session stores the id through `journal` ([MQTT-4.3.3-2] holds across a
    /// restart).
    pub fn inbound_qos2_first(&self, id: PacketId, journal: &mut Journal) -> bool {
        let mut st = self.state.lock();
        let first = st.inbound_qos2.get_or_insert_with(Box::default).insert(id);
        if first && self.persists(&st) {
            journal.push(Change::PutInbound {
                client: self.client_id.clone(),
                packet_id: id,
            });
        }
        first
    }

    /// Handles PUBREL: releases the packet id ([MQTT-4.3.3-2]). Returns whether it was held.
    pub fn inbound_qos2_release(&self, id: PacketId, journal: &mut Journal) -> bool {
        let mut st = self.state.lock();
        let Some(ids) = st.inbound_qos2.as_mut() else {
            return false;
        };
        let held = ids.remove(&id);
        if ids.is_empty() {
            st.inbound_qos2 = None;
        }
        if held && self.persists(&st) {
            journal.push(Change::DeleteInbound {
                client: self.client_id.clone(),
                packet_id: id,
            });
        }
        held
    }

    /// Attaches connection `conn`. Control packets queued for an earlier connection are
    /// discarded; the in-flight window is re-sent first. An earlier connection still running
    /// is woken and finds it no longer serves this session (see [`Session::serves`]).
    /// `receive_maximum` is the client's Receive Maximum (65 535 when it sent none).
    /// Attaching cancels a will waiting for its delay ([MQTT-3.1.3-9]).
    pub fn attach(
        &self,
        conn: u64,
        receive_maximum: u16,
        username: Option<ByteString>,
        acl: Option<Arc<AclSlot>>,
    ) {
        let mut st = self.state.lock();
        let previous = st.connection.replace(conn);
        st.username = username;
        st.acl = acl;
        st.generation += 1;
        st.inflight_cap = st
            .limits
            .max_inflight
            .min(usize::from(receive_maximum))
            .max(1);
        let had_will = st.pending_will.take().is_some();
        if let Some(timer) = st.timer.take() {
            timer.abort();
        }
        if !self.persists(&st) && st.stored {
            // Resumed with a Session Expiry Interval of 0: the session now ends with this
            // connection, so it is no longer kept in the store.
            st.stored = false;
            if let Some(store) = &self.store {
                store.submit(
                    vec![Change::DeleteSession {
                        client: self.client_id.clone(),
                    }],
                    None,
                );
            }
        }
        if self.persists(&st) {
            st.stored = true;
            let mut changes = vec![Change::PutSession {
                client: self.client_id.clone(),
                record: Self::record(&st, false),
            }];
            if had_will {
                changes.push(Change::DeleteWill {
                    client: self.client_id.clone(),
                });
            }
            self.write(&st, changes);
        }
        self.online.store(true, Ordering::Release);
        st.control.clear();
        st.resend_inflight = !st.inflight.is_empty();
        let has_work = st.resend_inflight || !st.pending.is_empty();
        drop(st);
        if previous.is_some_and(|p| p != conn) {
            self.notify.notify_waiters();
        }
        if has_work {
            self.notify.notify_one();
        }
    }

    /// Disconnects whatever connection serves this session ([MQTT-3.1.4-2] takeover): it is
    /// woken, finds [`Session::serves`] false and closes.
    pub fn kick(&self) {
        let had = self.state.lock().connection.take().is_some();
        self.online.store(false, Ordering::Release);
        if had {
            self.notify.notify_waiters();
        }
    }

    /// Whether connection `conn` still serves this session.
    pub fn serves(&self, conn: u64) -> bool {
        self.state.lock().connection == Some(conn)
    }

    /// Detaches connection `conn` if it still serves this session; returns whether it did.
    /// QoS 0 messages still queued are dropped unless configured to be kept.
    pub fn detach(&self, conn: u64) -> bool {
        let mut st = self.state.lock();
        if st.connection != Some(conn) {
            return false;
        }
        st.connection = None;
        self.online.store(false, Ordering::Release);
        st.control.clear();
        if st.congestion.take().is_some() {
            self.drained.notify_waiters();
        }
        if !st.limits.queue_qos0_offline {
            st.pending.retain(|o| o.qos != QoS::AtMostOnce);
        }
        let record = Self::record(&st, true);
        self.write(
            &st,
            vec![Change::PutSession {
                client: self.client_id.clone(),
                record,
            }],
        );
        true
    }

    /// Marks the session discarded and returns the filters it held, for removal from the
    /// router. Idempotent: a second call returns nothing.
    pub fn discard(&self) -> Vec<ByteString> {
        let mut st = self.state.lock();
        if st.discarded {
            return Vec::new();
        }
        if st.stored
            && let Some(store) = &self.store
        {
            // Everything stored under this client id goes, in one change.
            store.submit(
                vec![Change::DeleteSession {
                    client: self.client_id.clone(),
                }],
                None,
            );
        }
        st.discarded = true;
        if let Some(timer) = st.timer.take() {
            timer.abort();
        }
        st.pending.clear();
        st.inflight.clear();
        st.inbound_qos2 = None;
        st.subscriptions
            .take()
            .map(|subs| subs.into_keys().collect())
            .unwrap_or_default()
    }

    /// Drops what this session holds that the client serving it now may not read: messages
    /// queued (or in flight) for a previous connection with another user name, or before the
    /// ACL changed. Read access is checked when a message is queued; this re-checks the
    /// backlog when the reader may have changed. Returns how many were dropped.
    pub fn refilter(&self) -> usize {
        let mut st = self.state.lock();
        let Some(slot) = st.acl.clone() else {
            return 0;
        };
        let acl = slot.read().clone();
        let username = st.username.clone();
        let allowed = |topic: &str| acl.check_receive(&self.client_id, username.as_deref(), topic);
        let before = st.pending.len() + st.inflight.len();
        let mut dropped = Vec::new();
        st.pending.retain(|o| {
            let keep = allowed(&o.message.topic);
            if !keep {
                dropped.push((o.seq, o.on_disk));
            }
            keep
        });
        let denied = st
            .inflight
            .drain_where(|e| e.stage != Stage::AwaitingPubComp && !allowed(&e.message.topic));
        dropped.extend(denied.iter().map(|e| (e.seq, e.on_disk)));
        for (seq, on_disk) in dropped {
            self.write_dequeue(&st, seq, on_disk);
        }
        let after = st.pending.len() + st.inflight.len();
        st.resend_inflight = !st.inflight.is_empty();
        before - after
    }

    /// The ACL slot of the client serving (or that last served) the session.
    pub fn acl_slot(&self) -> Option<Arc<AclSlot>> {
        self.state.lock().acl.clone()
    }

    /// Puts back a message taken by [`Session::take_shared`] that no other member could take
    /// (stored again through `journal`, which also carries its deletion).
    pub fn requeue(self: &Arc<Self>, mut item: Outgoing, journal: &mut Journal) {
        let mut st = self.state.lock();
        if item.seq != 0 && !item.on_disk && self.persists(&st) {
            self.mark_dirty(&mut st);
        }
        if item.seq != 0 && item.on_disk && self.persists(&st) {
            journal.push(Change::PutQueued {
                client: self.client_id.clone(),
                seq: item.seq,
                entry: QueuedEntry {
                    message: item.message.clone(),
                    qos: item.qos,
                    retain: item.retain,
                    extra: item.extra.clone(),
                    released: false,
                },
                created: false,
            });
        }
        item.held = false;
        st.pending.push_back(item);
    }

    /// Whether the session holds a subscription to exactly `filter`.
    pub fn has_subscription(&self, filter: &str) -> bool {
        self.state
            .lock()
            .subscriptions
            .as_ref()
            .is_some_and(|s| s.contains_key(filter))
    }

    /// Number of subscriptions the session holds.
    pub fn subscription_count(&self) -> usize {
        self.state
            .lock()
            .subscriptions
            .as_ref()
            .map_or(0, |s| s.len())
    }

    /// Takes the will waiting for its delay, if any (when the delay runs out or the session
    /// ends first).
    pub fn take_pending_will(&self) -> Option<PendingWill> {
        let mut st = self.state.lock();
        let will = st.pending_will.take();
        if will.is_some() {
            self.write(
                &st,
                vec![Change::DeleteWill {
                    client: self.client_id.clone(),
                }],
            );
        }
        will
    }

    /// Takes every message this session holds because of a shared subscription and has not
    /// completed (queued, or sent at QoS 1 and not yet PUBACKed), for delivery to another
    /// member of the group (MQTT 5.0 section 4.8.2). Their packet identifiers are freed.
    /// Their deletion from this session goes into `journal`.
    pub fn take_shared(&self, journal: &mut Journal) -> Vec<Outgoing> {
        let mut st = self.state.lock();
        let mut taken = Vec::new();
        // QoS 2 deliveries already sent stay with this session: [MQTT-4.8.2-4] they are
        // completed with this client when it reconnects, [MQTT-4.8.2-5] never sent to another.
        for e in st.inflight.drain_where(|e| {
            e.stage == Stage::AwaitingPubAck && e.extra.as_ref().is_some_and(|x| x.share.is_some())
        }) {
            taken.push(Outgoing {
                message: e.message,
                qos: e.qos,
                retain: e.retain,
                extra: e.extra,
                seq: e.seq,
                held: false,
                dup: false,
                on_disk: e.on_disk,
            });
        }
        let mut kept = VecDeque::with_capacity(st.pending.len());
        for o in st.pending.drain(..) {
            if o.extra.as_ref().is_some_and(|x| x.share.is_some()) {
                taken.push(o);
            } else {
                kept.push_back(o);
            }
        }
        st.pending = kept;
        if self.persists(&st) {
            for o in taken.iter().filter(|o| o.seq != 0 && o.on_disk) {
                journal.push(Change::DeleteQueued {
                    client: self.client_id.clone(),
                    seq: o.seq,
                });
            }
        }
        taken
    }

    /// Number of control packets waiting for the writer (acknowledgements the client has not
    /// yet been sent, typically because it does not read its socket).
    pub fn control_backlog(&self) -> usize {
        self.state.lock().control.len()
    }

    /// Waits until this session's queue has drained below a quarter of its bound or the
    /// session goes offline (returns true), or until `limit` (at most [`CONGESTION_GRACE`])
    /// has passed (false). A session whose queue has not shrunk for [`CONGESTION_STALL`] is not
    /// reading: the wait ends at once (false) and publishers stop waiting for it for the rest of
    /// the episode (its overflow is dropped).
    pub async fn wait_drained(self: Arc<Self>, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit.min(CONGESTION_GRACE);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            let stall_at = {
                let mut st = self.state.lock();
                let Some(c) = st.congestion.as_mut() else {
                    return true;
                };
                let stall_at = c.progress + CONGESTION_STALL;
                if !c.given_up && std::time::Instant::now() >= stall_at {
                    c.given_up = true;
                }
                if c.given_up {
                    return false;
                }
                tokio::time::Instant::from_std(stall_at)
            };
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = drained => {}
                _ = tokio::time::sleep_until(stall_at.min(deadline)) => {}
            }
        }
    }
}

impl crate::store::Unsaved for Session {
    /// The deliveries queued or in flight that the store does not hold yet (`periodic`
    /// durability), as changes for the periodic commit; they count as stored from now on.
    /// Deliveries completed since they were queued are simply gone: they never reach the disk.
    fn take_unsaved(&self) -> Vec<Change> {
        let mut st = self.state.lock();
        st.dirty = false;
        if !self.persists(&st) {
            return Vec::new();
        }
        let client = &self.client_id;
        let mut changes = Vec::new();
        let st = &mut *st;
        for e in st.inflight.iter_mut().filter(|e| !e.on_disk && e.seq != 0) {
            e.on_disk = true;
            changes.push(Change::PutQueued {
                client: client.clone(),
                seq: e.seq,
                entry: QueuedEntry {
                    message: e.message.clone(),
                    qos: e.qos,
                    retain: e.retain,
                    extra: e.extra.clone(),
                    released: e.stage == Stage::AwaitingPubComp,
                },
                created: true,
            });
        }
        for o in st.pending.iter_mut().filter(|o| !o.on_disk && o.seq != 0) {
            o.on_disk = true;
            changes.push(Change::PutQueued {
                client: client.clone(),
                seq: o.seq,
                entry: QueuedEntry {
                    message: o.message.clone(),
                    qos: o.qos,
                    retain: o.retain,
                    extra: o.extra.clone(),
                    released: false,
                },
                created: true,
            });
        }
        changes
    }
}

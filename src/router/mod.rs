//! Routing: the subscription trees (plain and shared), the retained-message store, and fan-out
//! to sessions.
//!
//! Routing happens on the task of the connection that received the PUBLISH, against trees that
//! every connection reads at once (`parking_lot::RwLock`, held only for the match and the
//! enqueue into each subscriber's session, never across an `.await`). There is no central
//! router task for messages to queue behind.

pub mod retained;
pub mod shared;
pub mod tree;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::codec::{QoS, SubscriptionOptions};
use crate::config::SharedStrategy;
use crate::message::{Message, SharedMessage};
use crate::metrics::Metrics;
use crate::session::{DeliveryExtra, Enqueued, Granted, Journal, Session};
use crate::store::Change;
use crate::topic;
use retained::RetainedTree;
use shared::SharedGroup;
use tree::SubscriptionTree;

/// One subscription as the trees store it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: Arc<Session>,
    /// Options granted (QoS is the maximum delivery QoS).
    pub options: SubscriptionOptions,
    /// Subscription Identifier (MQTT 5), 0 for none.
    pub id: u32,
}

/// Both subscription trees, under one lock.
#[derive(Debug, Default)]
struct Subscriptions {
    /// Ordinary subscriptions: filter → session key → subscriber.
    plain: SubscriptionTree<u64, Subscriber>,
    /// Shared subscriptions: inner filter → group name → group.
    shared: SubscriptionTree<ByteString, SharedGroup>,
    /// Members over all share groups.
    shared_members: usize,
}

/// What routing one message did.
#[derive(Debug, Default)]
pub struct Routed {
    /// Sessions the message was queued for (or dropped for, when their queue was full).
    pub matched: usize,
    /// A subscriber whose queue is congested: the publisher should pause (see
    /// [`Enqueued::Congested`]).
    pub congested: Option<Arc<Session>>,
}

/// Subscriptions and retained messages of the whole broker.
#[derive(Debug, Default)]
pub struct Router {
    subscriptions: RwLock<Subscriptions>,
    retained: RwLock<RetainedTree<SharedMessage>>,
    strategy: SharedStrategy,
}

/// The extra a delivery carries: subscription identifiers and the share it came through.
fn extra(ids: &[u32], share: Option<&ByteString>) -> Option<Arc<DeliveryExtra>> {
    if ids.is_empty() && share.is_none() {
        return None;
    }
    Some(Arc::new(DeliveryExtra {
        subscription_ids: ids.to_vec(),
        share: share.cloned(),
    }))
}

impl Router {
    /// An empty router whose shared subscriptions use `strategy`.
    pub fn new(strategy: SharedStrategy) -> Router {
        Router {
            strategy,
            ..Router::default()
        }
    }

    /// Delivers `message` to every session with a matching subscription — once per session,
    /// at the highest QoS any of its matching subscriptions granted and with the identifiers
    /// of all of them ([MQTT-3.3.4-2], [MQTT-3.3.4-4]) — and to one member of every matching
    /// share group (MQTT 5.0 section 4.8.2: a shared subscription is delivered on its own,
    /// beside the session's ordinary ones). `publisher_id` is the publishing client's id, for the
    /// `hash_client_id` shared strategy.
    /// Each subscriber's ACL (if any) is checked for read access on delivery. Deliveries to
    /// persistent sessions are stored through `journal`.
    pub fn route(
        &self,
        message: &SharedMessage,
        publisher_id: &str,
        metrics: &Metrics,
        journal: &mut Journal,
    ) -> Routed {
        let subs = self.subscriptions.read();
        // Inline room for the common case: no heap allocation per PUBLISH below 16 matches.
        let mut matched: SmallVec<[(u64, &Subscriber); 16]> = SmallVec::new();
        subs.plain.for_each_match(&message.topic, |key, sub| {
            // [MQTT-3.8.3-3] No Local: never back to the session that published it.
            if !(sub.options.no_local && *key == message.publisher) {
                matched.push((*key, sub));
            }
        });
        if matched.len() > 1 {
            matched.sort_unstable_by_key(|m| m.0);
        }
        let mut routed = Routed::default();
        let mut deliver = |session: &Arc<Session>, qos: QoS, retain, extra| {
            routed.matched += 1;
            if session.enqueue(message, qos, retain, extra, metrics, journal) == Enqueued::Congested
                && routed.congested.is_none()
            {
                routed.congested = Some(session.clone());
            }
        };
        for run in matched.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(_, first)) = run.first() else {
                continue;
            };
            let mut qos = first.options.qos;
            let mut as_published = first.options.retain_as_published;
            let mut ids: SmallVec<[u32; 4]> = SmallVec::new();
            for (_, sub) in run {
                qos = qos.max(sub.options.qos);
                as_published |= sub.options.retain_as_published;
                if sub.id != 0 {
                    ids.push(sub.id);
                }
            }
            // [MQTT-3.3.1-12] / [MQTT-3.3.1-13]: the RETAIN flag is kept only with Retain As
            // Published; otherwise 0 on delivery to an established subscription
            // ([MQTT-3.3.1-9]).
            let retain = as_published && message.retain;
            deliver(
                &first.session,
                message.qos.min(qos),
                retain,
                extra(&ids, None),
            );
        }
        subs.shared.for_each_match(&message.topic, |_, group| {
            if let Some(member) = group.pick(self.strategy, publisher_id, &message.topic, 0) {
                let retain = member.options.retain_as_published && message.retain;
                let ids: &[u32] = if member.id != 0 { &[member.id] } else { &[] };
                deliver(
                    &member.session,
                    message.qos.min(member.options.qos),
                    retain,
                    extra(ids, Some(&group.share)),
                );
            }
        });
        routed
    }

    /// Sends the messages a share-group member leaves unacknowledged to other members of the
    /// group (MQTT 5.0 section 4.8.2): an online member if there is one; otherwise they stay
    /// with `leaving` if its session persists (and is not `ending`), or go to an offline member.
    /// The moves are stored through `journal`.
    pub fn redeliver_shared(
        &self,
        leaving: &Arc<Session>,
        publisher_id: &str,
        ending: bool,
        metrics: &Metrics,
        journal: &mut Journal,
    ) {
        let items = leaving.take_shared(journal);
        if items.is_empty() {
            return;
        }
        let persistent = !ending && leaving.state.lock().expiry_interval != 0;
        let subs = self.subscriptions.read();
        let mut keep = Vec::new();
        for item in items {
            let Some(share) = item.extra.as_ref().and_then(|x| x.share.clone()) else {
                continue;
            };
            let group = topic::parse_shared(&share)
                .and_then(|(group, inner)| subs.shared.get(inner, &ByteString::from(group)));
            let member = group.and_then(|g| {
                g.pick(
                    self.strategy,
                    publisher_id,
                    &item.message.topic,
                    leaving.key,
                )
            });
            match member {
                Some(m)
                    if m.session.online.load(std::sync::atomic::Ordering::Acquire)
                        || !persistent =>
                {
                    let ids: &[u32] = if m.id != 0 { &[m.id] } else { &[] };
                    m.session.enqueue(
                        &item.message,
                        item.qos.min(m.options.qos),
                        item.retain,
                        extra(ids, Some(&share)),
                        metrics,
                        journal,
                    );
                }
                _ if persistent => keep.push(item),
                _ => Metrics::inc(&metrics.messages_dropped),
            }
        }
        drop(subs);
        for item in keep {
            leaving.requeue(item, journal);
        }
    }

    /// Applies a PUBLISH with the RETAIN flag to the store: a non-empty payload replaces the
    /// topic's retained message ([MQTT-3.3.1-5]); an empty one deletes it and is not stored
    /// ([MQTT-3.3.1-10], [MQTT-3.3.1-11]). The change is stored through `journal`.
    pub fn retain(&self, message: &SharedMessage, journal: &mut Journal) {
        if message.payload.is_empty() {
            if self.retained.write().remove(&message.topic).is_some() {
                journal.push(Change::DeleteRetained {
                    topic: message.topic.clone(),
                });
            }
            return;
        }
        // A decoded message's topic and payload are slices of the connection's read buffer;
        // a retained message may live for months, so it gets its own compact copy rather than
        // pinning a whole read chunk.
        let compact = Arc::new(Message {
            topic: ByteString::from(&*message.topic),
            payload: Bytes::copy_from_slice(&message.payload),
            retain: true,
            properties: message.properties.clone(),
            ..(**message).clone()
        });
        if journal.is_persistent() {
            journal.push(Change::PutRetained {
                message: compact.clone(),
            });
        }
        self.retained.write().insert(&message.topic, compact);
    }

    /// Puts back a retained message read from the store at start-up.
    pub fn restore_retained(&self, message: SharedMessage) {
        let topic = message.topic.clone();
        self.retained.write().insert(&topic, message);
    }

    /// Adds or replaces ([MQTT-3.8.4-3]) the subscription of `session` to `filter` (plain or
    /// `$share/{group}/{filter}`). Returns `None` if the session was discarded meanwhile (taken
    /// over with a clean start), otherwise whether it replaced an existing subscription.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &ByteString,
        options: SubscriptionOptions,
        id: u32,
        journal: &mut Journal,
    ) -> Option<bool> {
        let mut subs = self.subscriptions.write();
        let mut st = session.state.lock();
        if st.discarded {
            return None;
        }
        let granted = Granted { options, id };
        let existed = st
            .subscriptions
            .get_or_insert_with(Box::default)
            .insert(filter.clone(), granted)
            .is_some();
        if session.persists(&st) {
            journal.push(Change::PutSubscription {
                client: session.client_id.clone(),
                filter: filter.clone(),
                granted,
            });
        }
        drop(st);
        let subscriber = Subscriber {
            session: session.clone(),
            options,
            id,
        };
        match topic::parse_shared(filter) {
            Some((group, inner)) => {
                let key = ByteString::from(group);
                let added = match subs.shared.get_mut(inner, &key) {
                    Some(g) => !g.upsert(subscriber),
                    None => {
                        let mut g = SharedGroup::new(filter.clone());
                        g.upsert(subscriber);
                        subs.shared.insert(inner, key, g);
                        true
                    }
                };
                if added {
                    subs.shared_members += 1;
                }
            }
            None => {
                subs.plain.insert(filter, session.key, subscriber);
            }
        }
        Some(existed)
    }

    /// Removes the subscription of `session` to `filter`; returns whether it existed. The
    /// removal is stored through `journal`.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str, journal: &mut Journal) -> bool {
        let mut subs = self.subscriptions.write();
        let mut st = session.state.lock();
        let held = st
            .subscriptions
            .as_mut()
            .is_some_and(|map| map.remove(filter).is_some());
        if held && session.persists(&st) {
            journal.push(Change::DeleteSubscription {
                client: session.client_id.clone(),
                filter: ByteString::from(filter),
            });
        }
        drop(st);
        Self::remove_from(&mut subs, session.key, filter)
    }

    fn remove_from(subs: &mut Subscriptions, key: u64, filter: &str) -> bool {
        match topic::parse_shared(filter) {
            Some((group, inner)) => {
                let group_key = ByteString::from(group);
                let Some(g) = subs.shared.get_mut(inner, &group_key) else {
                    return false;
                };
                let removed = g.remove(key);
                let empty = g.members.is_empty();
                if empty {
                    subs.shared.remove(inner, &group_key);
                }
                if removed {
                    subs.shared_members -= 1;
                }
                removed
            }
            None => subs.plain.remove(filter, &key).is_some(),
        }
    }

    /// Removes the subscriptions of a discarded session.
    pub fn remove_session(&self, session: &Arc<Session>) {
        let filters = session.discard();
        if filters.is_empty() {
            return;
        }
        let mut subs = self.subscriptions.write();
        for filter in &filters {
            Self::remove_from(&mut subs, session.key, filter);
        }
    }

    /// Queues for `session` the retained messages matching `filter`, with the RETAIN flag set
    /// ([MQTT-3.3.1-6], [MQTT-3.3.1-8]) at the lower of their QoS and `granted`, carrying the
    /// subscription's identifier `id`. Expired ones are skipped ([MQTT-3.3.2-5]).
    pub fn send_retained(
        &self,
        session: &Arc<Session>,
        filter: &str,
        granted: QoS,
        id: u32,
        metrics: &Metrics,
        journal: &mut Journal,
    ) {
        let ids: &[u32] = if id != 0 { &[id] } else { &[] };
        let now = Instant::now();
        let store = self.retained.read();
        store.for_each_match(filter, |_, message| {
            if message.is_expired(now) {
                return;
            }
            session.enqueue(
                message,
                message.qos.min(granted),
                true,
                extra(ids, None),
                metrics,
                journal,
            );
        });
    }

    /// Number of subscriptions held (a share-group member counts as one).
    pub fn subscription_count(&self) -> usize {
        let subs = self.subscriptions.read();
        subs.plain.len() + subs.shared_members
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }
}

//! Routing: the subscription tree, the retained-message store, and fan-out to sessions.
//!
//! Routing happens on the task of the connection that received the PUBLISH, against a tree
//! that every connection reads at once (`parking_lot::RwLock`, held only for the match and the
//! enqueue into each subscriber's session, never across an `.await`). There is no central
//! router task for messages to queue behind.

pub mod retained;
pub mod tree;

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use parking_lot::RwLock;
use smallvec::SmallVec;

use crate::codec::{QoS, SubscriptionOptions};
use crate::message::{Message, SharedMessage};
use crate::metrics::Metrics;
use crate::session::{Enqueued, Session};
use retained::RetainedTree;
use tree::SubscriptionTree;

/// One subscription as the tree stores it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: Arc<Session>,
    /// Options granted (QoS is the maximum delivery QoS).
    pub options: SubscriptionOptions,
}

/// Subscriptions and retained messages of the whole broker.
#[derive(Debug, Default)]
pub struct Router {
    subscriptions: RwLock<SubscriptionTree<u64, Subscriber>>,
    retained: RwLock<RetainedTree<SharedMessage>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Delivers `message` to every session with a matching subscription, once per session at the
    /// highest QoS any of its matching subscriptions granted ([MQTT-3.3.5-1]), capped by the
    /// published QoS. Returns a subscriber whose queue is congested, if any: the publisher
    /// should pause (see [`Enqueued::Congested`]).
    pub fn route(&self, message: &SharedMessage, metrics: &Metrics) -> Option<Arc<Session>> {
        let tree = self.subscriptions.read();
        // Inline room for the common case: no heap allocation per PUBLISH below 16 matches.
        let mut matched: SmallVec<[(u64, &Subscriber); 16]> = SmallVec::new();
        tree.for_each_match(&message.topic, |key, sub| matched.push((*key, sub)));
        if matched.len() > 1 {
            // Overlapping subscriptions of one session: keep the highest QoS.
            matched
                .sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.options.qos.cmp(&a.1.options.qos)));
            matched.dedup_by_key(|m| m.0);
        }
        let mut congested = None;
        for (_, sub) in &matched {
            let qos = message.qos.min(sub.options.qos);
            // [MQTT-3.3.1-9] the retain flag is 0 on delivery to an established subscription.
            if sub.session.enqueue(message, qos, false, metrics) == Enqueued::Congested
                && congested.is_none()
            {
                congested = Some(sub.session.clone());
            }
        }
        congested
    }

    /// Applies a PUBLISH with the RETAIN flag to the store: a non-empty payload replaces the
    /// topic's retained message ([MQTT-3.3.1-5]); an empty one deletes it and is not stored
    /// ([MQTT-3.3.1-10], [MQTT-3.3.1-11]).
    pub fn retain(&self, message: &SharedMessage) {
        if message.payload.is_empty() {
            self.retained.write().remove(&message.topic);
            return;
        }
        // A decoded message's topic and payload are slices of the connection's read buffer;
        // a retained message may live for months, so it gets its own compact copy rather than
        // pinning a whole read chunk.
        let compact = Arc::new(Message {
            topic: ByteString::from(&*message.topic),
            payload: Bytes::copy_from_slice(&message.payload),
            qos: message.qos,
            retain: true,
            properties: message.properties.clone(),
        });
        self.retained.write().insert(&message.topic, compact);
    }

    /// Adds or replaces ([MQTT-3.8.4-3]) the subscription of `session` to `filter`. Returns
    /// false if the session was discarded meanwhile (taken over with clean session).
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &ByteString,
        options: SubscriptionOptions,
    ) -> bool {
        let mut tree = self.subscriptions.write();
        let mut st = session.state.lock();
        if st.discarded {
            return false;
        }
        st.subscriptions
            .get_or_insert_with(Box::default)
            .insert(filter.clone(), options);
        drop(st);
        tree.insert(
            filter,
            session.key,
            Subscriber {
                session: session.clone(),
                options,
            },
        );
        true
    }

    /// Removes the subscription of `session` to `filter`; returns whether it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        let mut tree = self.subscriptions.write();
        if let Some(subs) = session.state.lock().subscriptions.as_mut() {
            subs.remove(filter);
        }
        tree.remove(filter, &session.key).is_some()
    }

    /// Removes the subscriptions of a discarded session.
    pub fn remove_session(&self, session: &Arc<Session>) {
        let filters = session.discard();
        if filters.is_empty() {
            return;
        }
        let mut tree = self.subscriptions.write();
        for filter in &filters {
            tree.remove(filter, &session.key);
        }
    }

    /// Queues for `session` the retained messages matching `filter`, with the RETAIN flag set
    /// ([MQTT-3.3.1-6], [MQTT-3.3.1-8]) at the lower of their QoS and `granted`.
    pub fn send_retained(&self, session: &Session, filter: &str, granted: QoS, metrics: &Metrics) {
        let store = self.retained.read();
        store.for_each_match(filter, |_, message| {
            session.enqueue(message, message.qos.min(granted), true, metrics);
        });
    }

    /// Number of subscriptions held.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }
}

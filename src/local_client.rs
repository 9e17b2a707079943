//! The in-process client: lets the embedding program publish and subscribe through the broker
//! without a socket. It has a session like any client (so subscriptions, overlapping-filter
//! de-duplication, retained messages and queue limits behave the same), but receives messages
//! straight from its queue.

use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::broker::BrokerCore;
use crate::codec::{QoS, SubscriptionOptions};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::session::{QueueLimits, Session};
use crate::topic::{self, TopicError};

/// A message received by a [`LocalClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Topic it was published to.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// Delivery QoS (the lower of the published and the subscribed QoS).
    pub qos: QoS,
    /// Set when delivered because of a new subscription to a retained message.
    pub retain: bool,
}

/// An in-process MQTT client; see [`crate::Broker::local_client`]. Dropping it ends its
/// session.
#[derive(Debug)]
pub struct LocalClient {
    core: Arc<BrokerCore>,
    session: Arc<Session>,
    conn_id: u64,
}

impl LocalClient {
    pub(crate) fn connect(core: Arc<BrokerCore>, client_id: &str) -> LocalClient {
        let limits = QueueLimits {
            max_inflight: usize::from(core.config.limits.max_inflight_messages),
            max_queued: core.config.limits.max_queued_messages,
            queue_qos0_offline: false,
        };
        let opened = core
            .sessions
            .open(&ByteString::from(client_id), true, 0, limits);
        if let Some(old) = &opened.discarded {
            core.router.remove_session(old);
        }
        let conn_id = core.next_connection_id();
        // The application's own client: no ACL (it is for network clients).
        opened.session.attach(conn_id, u16::MAX, None, None);
        Metrics::inc(&core.metrics.connections_current);
        LocalClient {
            core,
            session: opened.session,
            conn_id,
        }
    }

    /// This client's identifier.
    pub fn client_id(&self) -> &str {
        &self.session.client_id
    }

    /// Publishes a message (routed at once, like a PUBLISH from a network client; the
    /// application's publish hook is not consulted for its own messages).
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), TopicError> {
        topic::validate_topic_name(topic)?;
        Metrics::inc(&self.core.metrics.messages_received);
        let message = Arc::new(Message {
            publisher: self.session.key,
            ..Message::new(topic, payload, qos, retain)
        });
        let mut journal = self.core.journal();
        if retain && self.core.config.mqtt.retain_available {
            self.core.router.retain(&message, &mut journal);
        }
        self.core.router.route(
            &message,
            &self.session.client_id,
            &self.core.metrics,
            &mut journal,
        );
        self.core.submit(journal);
        Ok(())
    }

    /// Subscribes to `filter` with maximum QoS `qos`; retained messages that match are queued
    /// for [`LocalClient::recv`] at once.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), TopicError> {
        topic::validate_topic_filter(filter)?;
        if topic::parse_shared(filter).is_some() {
            return Err(TopicError::InvalidShare);
        }
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        let mut journal = self.core.journal();
        if self
            .core
            .router
            .subscribe(
                &self.session,
                &ByteString::from(filter),
                options,
                0,
                &mut journal,
            )
            .is_some()
        {
            self.core.router.send_retained(
                &self.session,
                filter,
                qos,
                0,
                &self.core.metrics,
                &mut journal,
            );
        }
        self.core.submit(journal);
        Ok(())
    }

    /// Removes the subscription to `filter`; returns whether there was one.
    pub fn unsubscribe(&self, filter: &str) -> bool {
        let mut journal = self.core.journal();
        let existed = self
            .core
            .router
            .unsubscribe(&self.session, filter, &mut journal);
        self.core.submit(journal);
        existed
    }

    /// The next message, if one is queued.
    pub fn try_recv(&self) -> Option<ReceivedMessage> {
        self.session.pop_pending(self.conn_id).map(|o| {
            Metrics::inc(&self.core.metrics.messages_sent);
            ReceivedMessage {
                topic: o.message.topic.clone(),
                payload: o.message.payload.clone(),
                qos: o.qos,
                retain: o.retain,
            }
        })
    }

    /// Waits for the next message. Returns `None` once the broker shuts down or another client
    /// takes this client id over.
    pub async fn recv(&self) -> Option<ReceivedMessage> {
        loop {
            // Armed before the checks, so a wake-up between them and the await is not lost.
            let notified = self.session.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = self.try_recv() {
                return Some(m);
            }
            if self.core.shutdown.is_cancelled() || !self.session.serves(self.conn_id) {
                return None;
            }
            notified.await;
        }
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        Metrics::dec(&self.core.metrics.connections_current);
        if self.session.detach(self.conn_id) {
            self.core.sessions.remove_if_current(&self.session);
            self.core.router.remove_session(&self.session);
        }
    }
}

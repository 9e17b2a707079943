//! An application message as the broker routes it: immutable once published and shared by
//! reference between every subscriber it is delivered to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{Properties, QoS};

/// One application message. Wrapped in an `Arc` when routed, so the payload is never copied per
/// subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name it was published to.
    pub topic: ByteString,
    /// Payload bytes.
    pub payload: Bytes,
    /// QoS it was published with (the delivery QoS is the minimum of this and the granted QoS).
    pub qos: QoS,
    /// Retain flag as published.
    pub retain: bool,
    /// MQTT 5 properties forwarded to subscribers unchanged ([MQTT-3.3.2-4], [MQTT-3.3.2-17],
    /// [MQTT-3.3.2-18], [MQTT-3.3.2-20]) — except the Topic Alias, which belongs to the
    /// publisher's connection and is removed on receipt, and the Message Expiry Interval, which
    /// is rewritten per delivery from [`Message::expires_at`].
    pub properties: Option<Box<Properties>>,
    /// Key of the publishing session (0 for the broker and in-process publishers without a
    /// session), for the No Local subscription option ([MQTT-3.8.3-3]).
    pub publisher: u64,
    /// When the message expires (from its Message Expiry Interval): it is then no longer
    /// delivered to anyone ([MQTT-3.3.2-5]).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// A message without properties.
    pub fn new(
        topic: impl Into<ByteString>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: None,
            publisher: 0,
            expires_at: None,
        }
    }

    /// Sets `expires_at` from the properties' Message Expiry Interval, counted from now.
    pub fn with_expiry_from_properties(mut self) -> Message {
        self.expires_at = self
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .and_then(|secs| Instant::now().checked_add(Duration::from_secs(u64::from(secs))));
        self
    }

    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The Message Expiry Interval to forward at `now`: the received value minus the time the
    /// message has waited in the server ([MQTT-3.3.2-6]), rounded up so that a message still
    /// alive is never forwarded with 0.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let left = self.expires_at?.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
    }
}

/// A routed message, shared between subscribers.
pub type SharedMessage = Arc<Message>;

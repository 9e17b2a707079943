//! An application message as the broker routes it: immutable once published and shared by
//! reference between every subscriber it is delivered to.

use std::sync::Arc;

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
    /// MQTT 5 properties forwarded to subscribers unchanged.
    pub properties: Option<Box<Properties>>,
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
        }
    }
}

/// A routed message, shared between subscribers.
pub type SharedMessage = Arc<Message>;

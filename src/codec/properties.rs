//! MQTT 5.0 properties (section 2.2.2 of the MQTT 5.0 specification).
//!
//! One struct holds every property the specification defines; each packet type may carry only a
//! subset, which the decoder enforces. Absent properties are `None` / empty.

use bytes::Bytes;
use bytestring::ByteString;

/// All MQTT 5.0 properties. Identifiers are given beside each field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01 Payload Format Indicator (PUBLISH, will).
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval in seconds (PUBLISH, will).
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type (PUBLISH, will).
    pub content_type: Option<ByteString>,
    /// 0x08 Response Topic (PUBLISH, will).
    pub response_topic: Option<ByteString>,
    /// 0x09 Correlation Data (PUBLISH, will).
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier(s): one in SUBSCRIBE, possibly several in PUBLISH to a client.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval in seconds (CONNECT, CONNACK, DISCONNECT).
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier (CONNACK).
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13 Server Keep Alive (CONNACK).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<ByteString>,
    /// 0x16 Authentication Data (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information (CONNECT).
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval (will).
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information (CONNECT).
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information (CONNACK).
    pub response_information: Option<ByteString>,
    /// 0x1C Server Reference (CONNACK, DISCONNECT).
    pub server_reference: Option<ByteString>,
    /// 0x1F Reason String (CONNACK, acks, DISCONNECT, AUTH).
    pub reason_string: Option<ByteString>,
    /// 0x21 Receive Maximum (CONNECT, CONNACK).
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias (PUBLISH).
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS (CONNACK).
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available (CONNACK).
    pub retain_available: Option<u8>,
    /// 0x26 User Property, in order; may repeat (every packet with properties).
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27 Maximum Packet Size (CONNECT, CONNACK).
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available (CONNACK).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available (CONNACK).
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available (CONNACK).
    pub shared_subscription_available: Option<u8>,
}

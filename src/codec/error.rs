//! Codec errors. Each decode error names the normative statement it enforces, so that logs and
//! server-sent DISCONNECT reasons cite the specification for free.

use thiserror::Error;

/// Why a byte stream is not a valid MQTT packet. Any of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The announced packet is larger than the configured maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Total packet size announced by the fixed header.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The remaining length uses more than four bytes.
    #[error("[MQTT-1.5.5-1] malformed remaining length")]
    MalformedRemainingLength,
    /// Reserved packet type 0 (or 15 before MQTT 5).
    #[error("[MQTT-2.2.1] reserved control packet type {0}")]
    ReservedPacketType(u8),
    /// The fixed header flags are not the ones this packet type requires.
    #[error("[MQTT-2.2.2-2] invalid fixed header flags {flags:#06b} for packet type {packet_type}")]
    InvalidHeaderFlags {
        /// Packet type (high nibble).
        packet_type: u8,
        /// The flags that were sent (low nibble).
        flags: u8,
    },
    /// The body ended before a field did, or has bytes left after the last field.
    #[error("[MQTT-1.5] malformed packet: {0}")]
    Malformed(&'static str),
    /// A UTF-8 string field is not well-formed UTF-8.
    #[error("[MQTT-1.5.3-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A UTF-8 string field contains U+0000.
    #[error("[MQTT-1.5.3-2] string contains the null character U+0000")]
    NullCharacter,
    /// CONNECT with a protocol name other than `MQTT` (or `MQIsdp` for level 3).
    #[error("[MQTT-3.1.2-1] unsupported protocol name")]
    InvalidProtocolName,
    /// CONNECT with a protocol level this server does not support.
    #[error("[MQTT-3.1.2-2] unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    /// CONNECT with the reserved flag set.
    #[error("[MQTT-3.1.2-3] CONNECT reserved flag is not zero")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag, or Will QoS 3.
    #[error("[MQTT-3.1.2-13] invalid will flags")]
    InvalidWillFlags,
    /// Password flag set without the user name flag (3.1.1).
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    /// PUBLISH with both QoS bits set.
    #[error("[MQTT-3.3.1-4] PUBLISH with QoS 3")]
    InvalidQoS,
    /// A packet identifier of zero.
    #[error("[MQTT-2.3.1-1] packet identifier is zero")]
    ZeroPacketId,
    /// A topic name containing `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name contains a wildcard")]
    WildcardInTopicName,
    /// An empty topic name where one is required.
    #[error("[MQTT-4.7.3-1] topic name is empty")]
    EmptyTopic,
    /// A topic filter with misplaced wildcards or empty.
    #[error("[MQTT-4.7.1-2] invalid topic filter")]
    InvalidTopicFilter,
    /// SUBSCRIBE without any topic filter.
    #[error("[MQTT-3.8.3-3] SUBSCRIBE without topic filters")]
    EmptySubscribe,
    /// UNSUBSCRIBE without any topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    /// Reserved bits set in a SUBSCRIBE options byte, or requested QoS 3.
    #[error("[MQTT-3.8.3-4] invalid subscription options")]
    InvalidSubscriptionOptions,
    /// A property identifier that is unknown or not allowed in this packet.
    #[error("[MQTT-2.2.2-2] property {0:#04x} not allowed in this packet")]
    InvalidProperty(u8),
    /// A property that may appear once appears twice.
    #[error("[MQTT-2.2.2-2] property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// A property value out of its allowed range.
    #[error("property {0:#04x} has an invalid value")]
    InvalidPropertyValue(u8),
    /// A rule whose breach the specification calls a Protocol Error (MQTT 5 reason 0x82) rather
    /// than a Malformed Packet.
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// An MQTT 5 reason code that this packet type does not define.
    #[error("invalid reason code {0:#04x}")]
    InvalidReasonCode(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code a server sends in DISCONNECT (or CONNACK) for this error:
    /// 0x95 Packet too large, 0x81 Malformed Packet, 0x82 Protocol Error, 0x84 Unsupported version.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::PacketTooLarge { .. } => 0x95,
            // [MQTT-3.3.2-8] Topic Alias 0: 0x94 Topic Alias invalid.
            DecodeError::InvalidPropertyValue(0x23) => 0x94,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName => 0x84,
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::ProtocolError(_)
            | DecodeError::ZeroPacketId
            | DecodeError::EmptySubscribe
            | DecodeError::EmptyUnsubscribe => 0x82,
            _ => 0x81,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet body exceeds the 268 435 455 bytes a remaining length can express.
    #[error("packet too large to encode")]
    PacketTooLarge,
    /// A string or binary field exceeds 65 535 bytes.
    #[error("field longer than 65535 bytes")]
    FieldTooLong,
    /// A field the packet requires is missing (for example a packet id with QoS > 0).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}

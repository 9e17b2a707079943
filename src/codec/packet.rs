//! The MQTT control packets as Rust values, for every protocol level (3.1, 3.1.1 and 5.0).
//!
//! One set of types serves all three levels: fields that only MQTT 5 carries (properties, reason
//! codes on acknowledgements) are simply empty for the older levels. The encoder and decoder in
//! the sibling modules take the negotiated [`ProtocolVersion`] and read or write only what that
//! level has on the wire.

use bytes::Bytes;
use bytestring::ByteString;

use super::properties::Properties;

/// The protocol level a connection negotiated in its CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte carried in CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// True for MQTT 5.0, the only level with properties and reason codes everywhere.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: acknowledged by PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// QoS 2: four-packet handshake, delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a two-bit wire value, `None` for the reserved value 3.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier: never zero on the wire ([MQTT-2.3.1-1]).
pub type PacketId = std::num::NonZeroU16;

/// The will message a client registers in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic the will is published to.
    pub topic: ByteString,
    /// Will payload.
    pub payload: Bytes,
    /// QoS of the will publication.
    pub qos: QoS,
    /// Whether the will is published as a retained message.
    pub retain: bool,
    /// Will properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level requested by the client.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep-alive interval in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: ByteString,
    /// Will message, if the will flag was set.
    pub will: Option<LastWill>,
    /// User name, if the user name flag was set.
    pub username: Option<ByteString>,
    /// Password, if the password flag was set (binary data).
    pub password: Option<Bytes>,
    /// CONNECT properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect return code (3.1/3.1.1, 0..=5) or reason code (5.0).
    pub code: u8,
    /// CONNACK properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// PUBLISH, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this is a redelivery.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (may be empty in MQTT 5 when a topic alias is used).
    pub topic: ByteString,
    /// Packet identifier, present exactly when `qos > 0`.
    pub packet_id: Option<PacketId>,
    /// Application payload.
    pub payload: Bytes,
    /// PUBLISH properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Packet identifier being acknowledged.
    pub packet_id: PacketId,
    /// Reason code (MQTT 5; always 0 = success for older levels).
    pub reason: u8,
    /// Properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

impl Ack {
    /// A success acknowledgement without properties.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason: 0,
            properties: None,
        }
    }
}

/// Retain Handling subscription option (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS requested.
    pub qos: QoS,
    /// No Local (MQTT 5).
    pub no_local: bool,
    /// Retain As Published (MQTT 5).
    pub retain_as_published: bool,
    /// Retain Handling (MQTT 5).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Topic filters with their options, in order; never empty ([MQTT-3.8.3-3]).
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    /// SUBSCRIBE properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One return/reason code per filter, in order (0x00-0x02 granted QoS, 0x80+ failure).
    pub codes: Vec<u8>,
    /// SUBACK properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Topic filters, in order; never empty ([MQTT-3.10.3-2]).
    pub filters: Vec<ByteString>,
    /// UNSUBSCRIBE properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// One reason code per filter (MQTT 5 only; empty for older levels).
    pub codes: Vec<u8>,
    /// UNSUBACK properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// DISCONNECT, in either direction (server-sent only in MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (MQTT 5; 0 = normal disconnection).
    pub reason: u8,
    /// DISCONNECT properties (MQTT 5 only).
    pub properties: Option<Box<Properties>>,
}

/// AUTH (MQTT 5 only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code.
    pub reason: u8,
    /// AUTH properties.
    pub properties: Option<Box<Properties>>,
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (client → server).
    Connect(Box<Connect>),
    /// CONNACK (server → client).
    ConnAck(ConnAck),
    /// PUBLISH (both directions).
    Publish(Publish),
    /// PUBACK (both directions).
    PubAck(Ack),
    /// PUBREC (both directions).
    PubRec(Ack),
    /// PUBREL (both directions).
    PubRel(Ack),
    /// PUBCOMP (both directions).
    PubComp(Ack),
    /// SUBSCRIBE (client → server).
    Subscribe(Subscribe),
    /// SUBACK (server → client).
    SubAck(SubAck),
    /// UNSUBSCRIBE (client → server).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (server → client).
    UnsubAck(UnsubAck),
    /// PINGREQ (client → server).
    PingReq,
    /// PINGRESP (server → client).
    PingResp,
    /// DISCONNECT (client → server; both directions in MQTT 5).
    Disconnect(Disconnect),
    /// AUTH (MQTT 5, both directions).
    Auth(Auth),
}

impl Packet {
    /// The control packet type name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

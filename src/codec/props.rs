//! Reading MQTT 5 property blocks (section 2.2.2): a Variable Byte Integer length
//! followed by identifier/value pairs, checked against the set each packet may carry.

use super::primitives::Reader;
use super::topic_rules::has_wildcard;
use super::{DecodeError, Properties};

/// Property identifiers (MQTT 5.0 table 2-4).
pub(super) mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Which properties a packet may carry (MQTT 5.0 table 2-4), and which of them may repeat, as
/// bit sets over identifiers.
#[derive(Clone, Copy)]
pub(super) struct Allowed {
    ids: u64,
    repeatable: u64,
}

/// Builds the set of `ids`; User Property may always repeat (section 2.2.2.2).
const fn set(ids: &[u8]) -> Allowed {
    let mut bits = 0u64;
    let mut i = 0;
    while i < ids.len() {
        bits |= 1u64 << ids[i];
        i += 1;
    }
    Allowed {
        ids: bits,
        repeatable: 1u64 << id::USER_PROPERTY,
    }
}

/// [`set`], where Subscription Identifier may also repeat (PUBLISH only, 3.3.2.3.8).
const fn set_multi_sub_id(ids: &[u8]) -> Allowed {
    let s = set(ids);
    Allowed {
        ids: s.ids,
        repeatable: s.repeatable | 1u64 << id::SUBSCRIPTION_IDENTIFIER,
    }
}

impl Allowed {
    /// CONNECT properties (3.1.2.11).
    pub(super) const CONNECT: Allowed = set(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::REQUEST_PROBLEM_INFORMATION,
        id::REQUEST_RESPONSE_INFORMATION,
        id::RECEIVE_MAXIMUM,
        id::TOPIC_ALIAS_MAXIMUM,
        id::USER_PROPERTY,
        id::MAXIMUM_PACKET_SIZE,
    ]);
    /// Will properties (3.1.3.2).
    pub(super) const WILL: Allowed = set(&[
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::CONTENT_TYPE,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::WILL_DELAY_INTERVAL,
        id::USER_PROPERTY,
    ]);
    /// CONNACK properties (3.2.2.3).
    pub(super) const CONNACK: Allowed = set(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::ASSIGNED_CLIENT_IDENTIFIER,
        id::SERVER_KEEP_ALIVE,
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::RESPONSE_INFORMATION,
        id::SERVER_REFERENCE,
        id::REASON_STRING,
        id::RECEIVE_MAXIMUM,
        id::TOPIC_ALIAS_MAXIMUM,
        id::MAXIMUM_QOS,
        id::RETAIN_AVAILABLE,
        id::USER_PROPERTY,
        id::MAXIMUM_PACKET_SIZE,
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        id::SHARED_SUBSCRIPTION_AVAILABLE,
    ]);
    /// PUBLISH properties (3.3.2.3).
    pub(super) const PUBLISH: Allowed = set_multi_sub_id(&[
        id::PAYLOAD_FORMAT_INDICATOR,
        id::MESSAGE_EXPIRY_INTERVAL,
        id::CONTENT_TYPE,
        id::RESPONSE_TOPIC,
        id::CORRELATION_DATA,
        id::SUBSCRIPTION_IDENTIFIER,
        id::TOPIC_ALIAS,
        id::USER_PROPERTY,
    ]);
    /// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK properties.
    pub(super) const ACK: Allowed = set(&[id::REASON_STRING, id::USER_PROPERTY]);
    /// SUBSCRIBE properties (3.8.2.1).
    pub(super) const SUBSCRIBE: Allowed = set(&[id::SUBSCRIPTION_IDENTIFIER, id::USER_PROPERTY]);
    /// UNSUBSCRIBE properties (3.10.2.1).
    pub(super) const UNSUBSCRIBE: Allowed = set(&[id::USER_PROPERTY]);
    /// DISCONNECT properties (3.14.2.2).
    pub(super) const DISCONNECT: Allowed = set(&[
        id::SESSION_EXPIRY_INTERVAL,
        id::SERVER_REFERENCE,
        id::REASON_STRING,
        id::USER_PROPERTY,
    ]);
    /// AUTH properties (3.15.2.2).
    pub(super) const AUTH: Allowed = set(&[
        id::AUTHENTICATION_METHOD,
        id::AUTHENTICATION_DATA,
        id::REASON_STRING,
        id::USER_PROPERTY,
    ]);

    fn contains(self, id: u8) -> bool {
        id < 64 && self.ids & (1u64 << id) != 0
    }
}

/// Reads a property block (length included). An empty block gives `None`. Subscription
/// Identifier may repeat only in PUBLISH, User Property anywhere; every other property at most
/// once (section 2.2.2.2).
pub(super) fn decode_properties(
    r: &mut Reader<'_>,
    allowed: Allowed,
) -> Result<Option<Box<Properties>>, DecodeError> {
    let len = r.varint()? as usize;
    if len == 0 {
        return Ok(None);
    }
    let mut r = r.sub(len)?;
    let mut p = Box::<Properties>::default();
    let mut seen = 0u64;
    while !r.is_empty() {
        // The identifier is a Variable Byte Integer, but every defined one fits in a byte below
        // 0x80, so a first byte that is not an allowed identifier is rejected outright.
        let pid = r.u8()?;
        if !allowed.contains(pid) {
            return Err(DecodeError::InvalidProperty(pid));
        }
        let bit = 1u64 << pid;
        if seen & bit != 0 && allowed.repeatable & bit == 0 {
            return Err(DecodeError::DuplicateProperty(pid));
        }
        seen |= bit;
        read_value(&mut r, pid, &mut p)?;
    }
    // 3.1.2.11.10 / 3.15.2.2.3: Authentication Data without Authentication Method is a
    // Protocol Error
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(DecodeError::InvalidPropertyValue(id::AUTHENTICATION_DATA));
    }
    Ok(Some(p))
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader<'_>, pid: u8) -> Result<Option<u8>, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(Some(v)),
        _ => Err(DecodeError::InvalidPropertyValue(pid)),
    }
}

/// A two-byte property that must not be zero.
fn nonzero_u16(r: &mut Reader<'_>, pid: u8) -> Result<Option<u16>, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue(pid)),
        v => Ok(Some(v)),
    }
}

/// Reads the value of property `pid` into `p`.
fn read_value(r: &mut Reader<'_>, pid: u8, p: &mut Properties) -> Result<(), DecodeError> {
    match pid {
        // 3.3.2.3.2: 0 (unspecified bytes) or 1 (UTF-8 payload)
        id::PAYLOAD_FORMAT_INDICATOR => p.payload_format_indicator = flag(r, pid)?,
        id::MESSAGE_EXPIRY_INTERVAL => p.message_expiry_interval = Some(r.u32()?),
        id::CONTENT_TYPE => p.content_type = Some(r.string()?),
        id::RESPONSE_TOPIC => {
            let topic = r.string()?;
            // [MQTT-3.3.2-14] the Response Topic must not contain wildcards (and, being a
            // topic name, must not be empty [MQTT-4.7.3-1])
            if topic.is_empty() || has_wildcard(&topic) {
                return Err(DecodeError::InvalidPropertyValue(pid));
            }
            p.response_topic = Some(topic);
        }
        id::CORRELATION_DATA => p.correlation_data = Some(r.binary()?),
        id::SUBSCRIPTION_IDENTIFIER => match r.varint()? {
            // 3.3.2.3.8: a value of 0 is a Protocol Error (1..=268,435,455 is what fits)
            0 => return Err(DecodeError::InvalidPropertyValue(pid)),
            v => p.subscription_identifiers.push(v),
        },
        id::SESSION_EXPIRY_INTERVAL => p.session_expiry_interval = Some(r.u32()?),
        id::ASSIGNED_CLIENT_IDENTIFIER => p.assigned_client_identifier = Some(r.string()?),
        id::SERVER_KEEP_ALIVE => p.server_keep_alive = Some(r.u16()?),
        id::AUTHENTICATION_METHOD => p.authentication_method = Some(r.string()?),
        id::AUTHENTICATION_DATA => p.authentication_data = Some(r.binary()?),
        // 3.1.2.11.7: 0 or 1
        id::REQUEST_PROBLEM_INFORMATION => p.request_problem_information = flag(r, pid)?,
        id::WILL_DELAY_INTERVAL => p.will_delay_interval = Some(r.u32()?),
        // 3.1.2.11.6: 0 or 1
        id::REQUEST_RESPONSE_INFORMATION => p.request_response_information = flag(r, pid)?,
        id::RESPONSE_INFORMATION => p.response_information = Some(r.string()?),
        id::SERVER_REFERENCE => p.server_reference = Some(r.string()?),
        id::REASON_STRING => p.reason_string = Some(r.string()?),
        // 3.1.2.11.3 / 3.2.2.3.3: Receive Maximum 0 is a Protocol Error
        id::RECEIVE_MAXIMUM => p.receive_maximum = nonzero_u16(r, pid)?,
        id::TOPIC_ALIAS_MAXIMUM => p.topic_alias_maximum = Some(r.u16()?),
        // 3.3.2.3.4: Topic Alias 0 is not permitted
        id::TOPIC_ALIAS => p.topic_alias = nonzero_u16(r, pid)?,
        // 3.2.2.3.4: Maximum QoS is 0 or 1
        id::MAXIMUM_QOS => p.maximum_qos = flag(r, pid)?,
        // 3.2.2.3.5: Retain Available is 0 or 1
        id::RETAIN_AVAILABLE => p.retain_available = flag(r, pid)?,
        id::USER_PROPERTY => {
            let key = r.string()?;
            let value = r.string()?;
            p.user_properties.push((key, value));
        }
        id::MAXIMUM_PACKET_SIZE => match r.u32()? {
            // 3.1.2.11.4 / 3.2.2.3.6: Maximum Packet Size 0 is a Protocol Error
            0 => return Err(DecodeError::InvalidPropertyValue(pid)),
            v => p.maximum_packet_size = Some(v),
        },
        // 3.2.2.3.11-13: the *Available flags are 0 or 1
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => p.wildcard_subscription_available = flag(r, pid)?,
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            p.subscription_identifier_available = flag(r, pid)?
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => p.shared_subscription_available = flag(r, pid)?,
        _ => return Err(DecodeError::InvalidProperty(pid)),
    }
    Ok(())
}

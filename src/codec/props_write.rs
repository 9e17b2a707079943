//! Writing MQTT 5 property blocks (section 2.2.2), and measuring them beforehand.

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::primitives::{MAX_VARINT, field_len, put_binary, put_str, put_varint, varint_len};
use super::props::id;
use super::{EncodeError, Properties};

/// The size of the property block content (without its length prefix).
pub(super) fn properties_len(p: Option<&Properties>) -> usize {
    let Some(p) = p else { return 0 };
    let byte = |v: &Option<u8>| if v.is_some() { 2 } else { 0 };
    let two = |v: &Option<u16>| if v.is_some() { 3 } else { 0 };
    let four = |v: &Option<u32>| if v.is_some() { 5 } else { 0 };
    let bin = |v: Option<&[u8]>| v.map_or(0, |b| 1 + field_len(b));
    let s = |v: &Option<ByteString>| bin(v.as_ref().map(|s| s.as_bytes().as_ref()));
    let mut len = byte(&p.payload_format_indicator)
        + four(&p.message_expiry_interval)
        + s(&p.content_type)
        + s(&p.response_topic)
        + bin(p.correlation_data.as_deref())
        + four(&p.session_expiry_interval)
        + s(&p.assigned_client_identifier)
        + two(&p.server_keep_alive)
        + s(&p.authentication_method)
        + bin(p.authentication_data.as_deref())
        + byte(&p.request_problem_information)
        + four(&p.will_delay_interval)
        + byte(&p.request_response_information)
        + s(&p.response_information)
        + s(&p.server_reference)
        + s(&p.reason_string)
        + two(&p.receive_maximum)
        + two(&p.topic_alias_maximum)
        + two(&p.topic_alias)
        + byte(&p.maximum_qos)
        + byte(&p.retain_available)
        + four(&p.maximum_packet_size)
        + byte(&p.wildcard_subscription_available)
        + byte(&p.subscription_identifier_available)
        + byte(&p.shared_subscription_available);
    for &v in &p.subscription_identifiers {
        len += 1 + varint_len(v as usize);
    }
    for (k, v) in &p.user_properties {
        len += 1 + field_len(k.as_bytes()) + field_len(v.as_bytes());
    }
    len
}

/// The size of a whole property block: length prefix and content.
pub(super) fn block_len(p: Option<&Properties>) -> usize {
    let len = properties_len(p);
    varint_len(len) + len
}

/// Writes a whole property block: length prefix, then every present property in identifier
/// order (User Properties and Subscription Identifiers in their stored order).
pub(super) fn put_properties(
    buf: &mut BytesMut,
    p: Option<&Properties>,
) -> Result<(), EncodeError> {
    put_varint(buf, properties_len(p));
    let Some(p) = p else { return Ok(()) };
    let mut w = Writer { buf };
    w.byte(id::PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    w.four(id::MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    w.string(id::CONTENT_TYPE, &p.content_type)?;
    w.string(id::RESPONSE_TOPIC, &p.response_topic)?;
    w.binary(id::CORRELATION_DATA, p.correlation_data.as_deref())?;
    for &v in &p.subscription_identifiers {
        if v == 0 || v as usize > MAX_VARINT {
            return Err(EncodeError::Invalid("subscription identifier out of range"));
        }
        w.buf.put_u8(id::SUBSCRIPTION_IDENTIFIER);
        put_varint(w.buf, v as usize);
    }
    w.four(id::SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    w.string(
        id::ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
    )?;
    w.two(id::SERVER_KEEP_ALIVE, p.server_keep_alive);
    w.string(id::AUTHENTICATION_METHOD, &p.authentication_method)?;
    w.binary(id::AUTHENTICATION_DATA, p.authentication_data.as_deref())?;
    w.byte(
        id::REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    );
    w.four(id::WILL_DELAY_INTERVAL, p.will_delay_interval);
    w.byte(
        id::REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    );
    w.string(id::RESPONSE_INFORMATION, &p.response_information)?;
    w.string(id::SERVER_REFERENCE, &p.server_reference)?;
    w.string(id::REASON_STRING, &p.reason_string)?;
    w.two(id::RECEIVE_MAXIMUM, p.receive_maximum);
    w.two(id::TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    w.two(id::TOPIC_ALIAS, p.topic_alias);
    w.byte(id::MAXIMUM_QOS, p.maximum_qos);
    w.byte(id::RETAIN_AVAILABLE, p.retain_available);
    for (k, v) in &p.user_properties {
        w.buf.put_u8(id::USER_PROPERTY);
        put_str(w.buf, k)?;
        put_str(w.buf, v)?;
    }
    w.four(id::MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    w.byte(
        id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    w.byte(
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    );
    w.byte(
        id::SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    Ok(())
}

/// Writes single properties of each value type when present.
struct Writer<'b> {
    buf: &'b mut BytesMut,
}

impl Writer<'_> {
    fn byte(&mut self, pid: u8, v: Option<u8>) {
        if let Some(v) = v {
            self.buf.put_u8(pid);
            self.buf.put_u8(v);
        }
    }

    fn two(&mut self, pid: u8, v: Option<u16>) {
        if let Some(v) = v {
            self.buf.put_u8(pid);
            self.buf.put_u16(v);
        }
    }

    fn four(&mut self, pid: u8, v: Option<u32>) {
        if let Some(v) = v {
            self.buf.put_u8(pid);
            self.buf.put_u32(v);
        }
    }

    fn binary(&mut self, pid: u8, v: Option<&[u8]>) -> Result<(), EncodeError> {
        if let Some(v) = v {
            self.buf.put_u8(pid);
            put_binary(self.buf, v)?;
        }
        Ok(())
    }

    fn string(&mut self, pid: u8, v: &Option<ByteString>) -> Result<(), EncodeError> {
        self.binary(pid, v.as_ref().map(|s| s.as_bytes().as_ref()))
    }
}

//! SUBSCRIBE (3.8), SUBACK (3.9), UNSUBSCRIBE (3.10) and UNSUBACK (3.11).

use bytes::{BufMut, Bytes, BytesMut};

use super::primitives::{Reader, field_len, put_str};
use super::props::{Allowed, decode_properties};
use super::props_write::{block_len, put_properties};
use super::reason::ReasonSet;
use super::topic_rules::check_topic_filter;
use super::{
    DecodeError, EncodeError, ProtocolVersion, QoS, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// Subscription option bits (3.8.3.1 of MQTT 5.0).
const NO_LOCAL: u8 = 0x04;
const RETAIN_AS_PUBLISHED: u8 = 0x08;
const RETAIN_HANDLING_SHIFT: u8 = 4;

/// Decodes a SUBSCRIBE body.
pub(super) fn decode_subscribe(
    body: &Bytes,
    version: ProtocolVersion,
) -> Result<Subscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.packet_id()?;
    let properties = if version.is_v5() {
        decode_properties(&mut r, Allowed::SUBSCRIBE)?
    } else {
        None
    };
    // [MQTT-3.8.3-3] at least one topic filter / options pair
    if r.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        // [MQTT-4.7.1-2] / [MQTT-4.7.1-3] / [MQTT-4.8.2-1] a valid filter
        let shared = check_topic_filter(&filter)?;
        let options = decode_options(r.u8()?, version, shared)?;
        filters.push((filter, options));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// Decodes a subscription options byte.
fn decode_options(
    byte: u8,
    version: ProtocolVersion,
    shared: bool,
) -> Result<SubscriptionOptions, DecodeError> {
    // 3.1.1 [MQTT-3-8.3-4]: bits 7-2 are reserved; 5.0 [MQTT-3.8.3-5]: bits 7-6 are reserved
    let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
    if byte & reserved != 0 {
        return Err(DecodeError::InvalidSubscriptionOptions);
    }
    // [MQTT-3-8.3-4] (3.1.1) / 3.8.3.1 (5.0): Maximum QoS 3 is not allowed
    let qos = QoS::from_u8(byte & 3).ok_or(DecodeError::ProtocolError(
        "[MQTT-3.8.3-4] subscription options with Maximum QoS 3",
    ))?;
    let retain_handling = match (byte >> RETAIN_HANDLING_SHIFT) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        // 3.8.3.1: Retain Handling 3 is a Protocol Error
        _ => {
            return Err(DecodeError::ProtocolError(
                "3.8.3.1 subscription options with Retain Handling 3",
            ));
        }
    };
    let no_local = byte & NO_LOCAL != 0;
    // [MQTT-3.8.3-4] (5.0) No Local on a shared subscription is a Protocol Error
    if no_local && shared {
        return Err(DecodeError::ProtocolError(
            "[MQTT-3.8.3-4] No Local on a shared subscription",
        ));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: byte & RETAIN_AS_PUBLISHED != 0,
        retain_handling,
    })
}

/// Encodes a subscription options byte: only the QoS before MQTT 5.
fn options_byte(o: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut b = o.qos as u8;
    if version.is_v5() {
        if o.no_local {
            b |= NO_LOCAL;
        }
        if o.retain_as_published {
            b |= RETAIN_AS_PUBLISHED;
        }
        b |= (o.retain_handling as u8) << RETAIN_HANDLING_SHIFT;
    }
    b
}

/// The remaining length of a SUBSCRIBE.
pub(super) fn subscribe_len(s: &Subscribe, version: ProtocolVersion) -> usize {
    let mut len = 2 + props_len(s.properties.as_deref(), version);
    for (f, _) in &s.filters {
        len += field_len(f.as_bytes()) + 1;
    }
    len
}

/// Writes a SUBSCRIBE body.
pub(super) fn put_subscribe(
    buf: &mut BytesMut,
    s: &Subscribe,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    buf.put_u16(s.packet_id.get());
    if version.is_v5() {
        put_properties(buf, s.properties.as_deref())?;
    }
    for (f, o) in &s.filters {
        put_str(buf, f)?;
        buf.put_u8(options_byte(o, version));
    }
    Ok(())
}

/// Decodes a SUBACK body.
pub(super) fn decode_suback(body: &Bytes, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.packet_id()?;
    let (properties, set) = if version.is_v5() {
        (decode_properties(&mut r, Allowed::ACK)?, ReasonSet::SubAck)
    } else {
        (None, ReasonSet::SubAckV3)
    };
    let codes = r.rest();
    // [MQTT-3.8.4-5] (3.1.1) / [MQTT-3.8.4-6] (5.0) one code per filter of a SUBSCRIBE,
    // which has at least one
    if codes.is_empty() {
        return Err(DecodeError::Malformed("SUBACK without return codes"));
    }
    for &c in codes.iter() {
        // [MQTT-3.9.3-2] (3.1.1) / 3.9.3 (5.0) only the defined codes
        set.check(c)?;
    }
    Ok(SubAck {
        packet_id,
        codes: codes.to_vec(),
        properties,
    })
}

/// The remaining length of a SUBACK.
pub(super) fn suback_len(s: &SubAck, version: ProtocolVersion) -> usize {
    2 + props_len(s.properties.as_deref(), version) + s.codes.len()
}

/// Writes a SUBACK body.
pub(super) fn put_suback(
    buf: &mut BytesMut,
    s: &SubAck,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    buf.put_u16(s.packet_id.get());
    if version.is_v5() {
        put_properties(buf, s.properties.as_deref())?;
    }
    buf.put_slice(&s.codes);
    Ok(())
}

/// Decodes an UNSUBSCRIBE body.
pub(super) fn decode_unsubscribe(
    body: &Bytes,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.packet_id()?;
    let properties = if version.is_v5() {
        decode_properties(&mut r, Allowed::UNSUBSCRIBE)?
    } else {
        None
    };
    // [MQTT-3.10.3-2] at least one topic filter
    if r.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        // [MQTT-4.7.1-2] / [MQTT-4.7.1-3] / [MQTT-4.8.2-1] a valid filter
        check_topic_filter(&filter)?;
        filters.push(filter);
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The remaining length of an UNSUBSCRIBE.
pub(super) fn unsubscribe_len(u: &Unsubscribe, version: ProtocolVersion) -> usize {
    let mut len = 2 + props_len(u.properties.as_deref(), version);
    for f in &u.filters {
        len += field_len(f.as_bytes());
    }
    len
}

/// Writes an UNSUBSCRIBE body.
pub(super) fn put_unsubscribe(
    buf: &mut BytesMut,
    u: &Unsubscribe,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    buf.put_u16(u.packet_id.get());
    if version.is_v5() {
        put_properties(buf, u.properties.as_deref())?;
    }
    for f in &u.filters {
        put_str(buf, f)?;
    }
    Ok(())
}

/// Decodes an UNSUBACK body: just the packet id before MQTT 5.
pub(super) fn decode_unsuback(
    body: &Bytes,
    version: ProtocolVersion,
) -> Result<UnsubAck, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.packet_id()?;
    if !version.is_v5() {
        r.finish()?;
        return Ok(UnsubAck {
            packet_id,
            codes: Vec::new(),
            properties: None,
        });
    }
    let properties = decode_properties(&mut r, Allowed::ACK)?;
    let codes = r.rest();
    // [MQTT-3.11.3-1] one reason code per filter of an UNSUBSCRIBE, which has at least one
    if codes.is_empty() {
        return Err(DecodeError::Malformed("UNSUBACK without reason codes"));
    }
    for &c in codes.iter() {
        ReasonSet::UnsubAck.check(c)?;
    }
    Ok(UnsubAck {
        packet_id,
        codes: codes.to_vec(),
        properties,
    })
}

/// The remaining length of an UNSUBACK.
pub(super) fn unsuback_len(u: &UnsubAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + block_len(u.properties.as_deref()) + u.codes.len()
    } else {
        2
    }
}

/// Writes an UNSUBACK body; reason codes and properties only for MQTT 5.
pub(super) fn put_unsuback(
    buf: &mut BytesMut,
    u: &UnsubAck,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    buf.put_u16(u.packet_id.get());
    if version.is_v5() {
        put_properties(buf, u.properties.as_deref())?;
        buf.put_slice(&u.codes);
    }
    Ok(())
}

/// The size of a property block at `version`: nothing before MQTT 5.
fn props_len(p: Option<&super::Properties>, version: ProtocolVersion) -> usize {
    if version.is_v5() { block_len(p) } else { 0 }
}

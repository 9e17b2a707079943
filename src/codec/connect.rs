//! CONNECT (section 3.1) and CONNACK (section 3.2).

use bytes::{BufMut, Bytes, BytesMut};

use super::primitives::{Reader, field_len, put_binary, put_str};
use super::props::{Allowed, decode_properties};
use super::props_write::{block_len, put_properties};
use super::reason::ReasonSet;
use super::topic_rules::check_topic_name;
use super::{ConnAck, Connect, DecodeError, EncodeError, LastWill, ProtocolVersion, QoS};

/// Connect flag bits (3.1.2.3 of MQTT 3.1.1).
const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// Decodes a CONNECT body at the protocol level the packet itself announces.
pub(super) fn decode_connect(body: &Bytes) -> Result<Connect, DecodeError> {
    let mut r = Reader::new(body);
    let name = r.prefixed_raw()?;
    let level = r.u8()?;
    // [MQTT-3.1.2-1] the protocol name must be "MQTT" ("MQIsdp" for MQTT 3.1);
    // [MQTT-3.1.2-2] an unsupported level is answered with return code 0x01
    let protocol = match (name, level) {
        (b"MQIsdp", 3) => ProtocolVersion::V3_1,
        (b"MQTT", 4) => ProtocolVersion::V3_1_1,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp" | b"MQTT", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let flags = r.u8()?;
    check_flags(flags, protocol)?;
    let keep_alive = r.u16()?;
    let properties = if protocol.is_v5() {
        decode_properties(&mut r, Allowed::CONNECT)?
    } else {
        None
    };
    // The client identifier may be empty; whether that is accepted is the session's decision.
    let client_id = r.string()?;
    let will = if flags & WILL != 0 {
        let properties = if protocol.is_v5() {
            decode_properties(&mut r, Allowed::WILL)?
        } else {
            None
        };
        let topic = r.string()?;
        // [MQTT-3.1.3-10] the will topic is a topic name: non-empty, without wildcards
        check_topic_name(&topic, false)?;
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: QoS::from_u8((flags >> WILL_QOS_SHIFT) & 3)
                .ok_or(DecodeError::InvalidWillFlags)?,
            retain: flags & WILL_RETAIN != 0,
            properties,
        })
    } else {
        None
    };
    // [MQTT-3.1.2-19] / [MQTT-3.1.2-21] user name and password present exactly when flagged
    let username = if flags & USERNAME != 0 {
        Some(r.string()?)
    } else {
        None
    };
    let password = if flags & PASSWORD != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    r.finish()?;
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// Checks the connect flags byte.
fn check_flags(flags: u8, protocol: ProtocolVersion) -> Result<(), DecodeError> {
    // [MQTT-3.1.2-3] the reserved flag must be zero
    if flags & RESERVED != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will_qos = (flags >> WILL_QOS_SHIFT) & 3;
    if flags & WILL == 0 {
        // [MQTT-3.1.2-11] / [MQTT-3.1.2-13] / [MQTT-3.1.2-15] without a will, Will QoS and Will
        // Retain are zero
        if will_qos != 0 || flags & WILL_RETAIN != 0 {
            return Err(DecodeError::InvalidWillFlags);
        }
    } else if will_qos == 3 {
        // [MQTT-3.1.2-14] Will QoS must not be 3
        return Err(DecodeError::InvalidWillFlags);
    }
    // [MQTT-3.1.2-22] before MQTT 5 a password requires a user name (5.0 allows it alone)
    if !protocol.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    Ok(())
}

/// The protocol name written for each level.
fn protocol_name(protocol: ProtocolVersion) -> &'static [u8] {
    match protocol {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    }
}

/// The remaining length of a CONNECT, written at its own protocol level.
pub(super) fn connect_len(c: &Connect) -> usize {
    let v5 = c.protocol.is_v5();
    let mut len = field_len(protocol_name(c.protocol)) + 1 + 1 + 2;
    if v5 {
        len += block_len(c.properties.as_deref());
    }
    len += field_len(c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            len += block_len(w.properties.as_deref());
        }
        len += field_len(w.topic.as_bytes()) + field_len(&w.payload);
    }
    if let Some(u) = &c.username {
        len += field_len(u.as_bytes());
    }
    if let Some(p) = &c.password {
        len += field_len(p);
    }
    len
}

/// Writes a CONNECT body at its own protocol level. Like every writer it encodes what it is
/// given: protocol rules such as [MQTT-3.1.2-22] are the sender's business.
pub(super) fn put_connect(buf: &mut BytesMut, c: &Connect) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    put_binary(buf, protocol_name(c.protocol))?;
    buf.put_u8(c.protocol.level());
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(w) = &c.will {
        flags |= WILL | (w.qos as u8) << WILL_QOS_SHIFT;
        if w.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        put_properties(buf, c.properties.as_deref())?;
    }
    put_str(buf, &c.client_id)?;
    if let Some(w) = &c.will {
        if v5 {
            put_properties(buf, w.properties.as_deref())?;
        }
        put_str(buf, &w.topic)?;
        put_binary(buf, &w.payload)?;
    }
    if let Some(u) = &c.username {
        put_str(buf, u)?;
    }
    if let Some(p) = &c.password {
        put_binary(buf, p)?;
    }
    Ok(())
}

/// Decodes a CONNACK body.
pub(super) fn decode_connack(
    body: &Bytes,
    version: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let mut r = Reader::new(body);
    let flags = r.u8()?;
    let session_present = match version {
        // MQTT 3.1: the first byte is reserved and carries nothing
        ProtocolVersion::V3_1 => false,
        // [MQTT-3.2.2-1] bits 7-1 of the acknowledge flags are reserved and zero
        _ if flags & 0xFE != 0 => {
            return Err(DecodeError::Malformed("reserved CONNACK flags set"));
        }
        _ => flags & 1 != 0,
    };
    let code = r.u8()?;
    let (code, properties) = if version.is_v5() {
        let code = ReasonSet::ConnAck.check(code)?;
        (code, decode_properties(&mut r, Allowed::CONNACK)?)
    } else {
        // Return codes 6-255 are reserved in 3.1.1 but carry no structure: passed through.
        (code, None)
    };
    r.finish()?;
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

/// The remaining length of a CONNACK.
pub(super) fn connack_len(c: &ConnAck, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        2 + block_len(c.properties.as_deref())
    } else {
        2
    }
}

/// Writes a CONNACK body.
pub(super) fn put_connack(
    buf: &mut BytesMut,
    c: &ConnAck,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    // MQTT 3.1 has no Session Present flag: the byte is reserved
    let present = c.session_present && version != ProtocolVersion::V3_1;
    buf.put_u8(u8::from(present));
    buf.put_u8(c.code);
    if version.is_v5() {
        put_properties(buf, c.properties.as_deref())?;
    }
    Ok(())
}

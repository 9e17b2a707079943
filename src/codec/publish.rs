//! PUBLISH (section 3.3).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::primitives::{Reader, field_len, put_str};
use super::props::{Allowed, decode_properties};
use super::props_write::{block_len, put_properties};
use super::topic_rules::check_topic_name;
use super::{DecodeError, EncodeError, ProtocolVersion, Publish, QoS};

/// Fixed header flag bits of PUBLISH (3.3.1).
const DUP: u8 = 0x08;
const RETAIN: u8 = 0x01;

/// Checks the PUBLISH fixed header flags, as soon as the first byte is seen.
pub(super) fn check_flags(flags: u8) -> Result<QoS, DecodeError> {
    // [MQTT-3.3.1-4] a PUBLISH must not have both QoS bits set
    let qos = QoS::from_u8((flags >> 1) & 3).ok_or(DecodeError::InvalidQoS)?;
    // [MQTT-3.3.1-2] the DUP flag must be 0 for QoS 0 messages: treated as malformed
    if qos == QoS::AtMostOnce && flags & DUP != 0 {
        return Err(DecodeError::Malformed(
            "[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH",
        ));
    }
    Ok(qos)
}

/// Decodes a PUBLISH body; `flags` is the low nibble of the fixed header.
pub(super) fn decode_publish(
    flags: u8,
    mut body: Bytes,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos = check_flags(flags)?;
    let mut r = Reader::new(&body);
    let topic = r.string()?;
    // [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] non-empty — except that MQTT 5 allows an
    // empty topic together with a Topic Alias (3.3.2.3.4), which the session checks
    check_topic_name(&topic, version.is_v5())?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        // [MQTT-2.3.1-1] QoS 1 and 2 carry a non-zero packet identifier
        Some(r.packet_id()?)
    };
    let properties = if version.is_v5() {
        decode_properties(&mut r, Allowed::PUBLISH)?
    } else {
        None
    };
    // The payload is the rest of the body: advancing the body itself saves taking another
    // reference to the buffer.
    let header_len = r.position();
    body.advance(header_len.min(body.len()));
    Ok(Publish {
        dup: flags & DUP != 0,
        qos,
        retain: flags & RETAIN != 0,
        topic,
        packet_id,
        payload: body,
        properties,
    })
}

/// The fixed header's first byte for `p`. DUP is never set with QoS 0 ([MQTT-3.3.1-2]).
pub(super) fn first_byte(p: &Publish) -> u8 {
    let mut b = 0x30 | (p.qos as u8) << 1;
    if p.dup && p.qos != QoS::AtMostOnce {
        b |= DUP;
    }
    if p.retain {
        b |= RETAIN;
    }
    b
}

/// The remaining length of a PUBLISH.
pub(super) fn publish_len(p: &Publish, version: ProtocolVersion) -> usize {
    let mut len = field_len(p.topic.as_bytes()) + p.payload.len();
    if p.qos != QoS::AtMostOnce {
        len += 2;
    }
    if version.is_v5() {
        len += block_len(p.properties.as_deref());
    }
    len
}

/// Writes a PUBLISH body. A packet id on a QoS 0 message is not written.
pub(super) fn put_publish(
    buf: &mut BytesMut,
    p: &Publish,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    put_str(buf, &p.topic)?;
    if p.qos != QoS::AtMostOnce {
        let id = p.packet_id.ok_or(EncodeError::Invalid(
            "PUBLISH with QoS > 0 needs a packet id",
        ))?;
        buf.put_u16(id.get());
    }
    if version.is_v5() {
        put_properties(buf, p.properties.as_deref())?;
    }
    buf.put_slice(&p.payload);
    Ok(())
}

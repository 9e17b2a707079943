//! The short packets: PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7), DISCONNECT (3.14) and AUTH
//! (3.15), which in MQTT 5 carry a reason code and properties that may be left out.

use bytes::{BufMut, Bytes, BytesMut};

use super::primitives::Reader;
use super::props::{Allowed, decode_properties};
use super::props_write::{block_len, properties_len, put_properties};
use super::reason::ReasonSet;
use super::{Ack, Auth, DecodeError, Disconnect, EncodeError, Properties, ProtocolVersion};

/// Decodes a PUBACK/PUBREC/PUBREL/PUBCOMP body whose reason codes come from `set`.
pub(super) fn decode_ack(
    body: &Bytes,
    version: ProtocolVersion,
    set: ReasonSet,
) -> Result<Ack, DecodeError> {
    let mut r = Reader::new(body);
    let packet_id = r.packet_id()?;
    if !version.is_v5() {
        // 3.4.1 (3.1.1): the remaining length is exactly 2
        r.finish()?;
        return Ok(Ack::new(packet_id));
    }
    // 3.4.2.1: with a remaining length of 2 the reason code is 0x00 (Success)
    let reason = if r.is_empty() { 0 } else { set.check(r.u8()?)? };
    // 3.4.2.2.1: with a remaining length below 4 there are no properties
    let properties = if r.is_empty() {
        None
    } else {
        decode_properties(&mut r, Allowed::ACK)?
    };
    r.finish()?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

/// The remaining length of an acknowledgement, in its shortest MQTT 5 form.
pub(super) fn ack_len(a: &Ack, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 2;
    }
    2 + reason_props_len(a.reason, a.properties.as_deref(), true)
}

/// Writes an acknowledgement body.
pub(super) fn put_ack(
    buf: &mut BytesMut,
    a: &Ack,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    buf.put_u16(a.packet_id.get());
    if version.is_v5() {
        put_reason_props(buf, a.reason, a.properties.as_deref(), true)?;
    }
    Ok(())
}

/// Decodes a DISCONNECT body (empty before MQTT 5).
pub(super) fn decode_disconnect(
    body: &Bytes,
    version: ProtocolVersion,
) -> Result<Disconnect, DecodeError> {
    let mut r = Reader::new(body);
    if !version.is_v5() {
        // 3.14.1 (3.1.1): DISCONNECT has no variable header
        r.finish()?;
        return Ok(Disconnect::default());
    }
    // 3.14.2.1: a remaining length of 0 means reason 0x00 (Normal disconnection);
    // 3.14.2.2.1: below 2 there are no properties
    let (reason, properties) =
        reason_and_props(&mut r, ReasonSet::Disconnect, Allowed::DISCONNECT)?;
    Ok(Disconnect { reason, properties })
}

/// The remaining length of a DISCONNECT.
pub(super) fn disconnect_len(d: &Disconnect, version: ProtocolVersion) -> usize {
    if !version.is_v5() {
        return 0;
    }
    reason_props_len(d.reason, d.properties.as_deref(), true)
}

/// Writes a DISCONNECT body.
pub(super) fn put_disconnect(
    buf: &mut BytesMut,
    d: &Disconnect,
    version: ProtocolVersion,
) -> Result<(), EncodeError> {
    if version.is_v5() {
        put_reason_props(buf, d.reason, d.properties.as_deref(), true)?;
    }
    Ok(())
}

/// Decodes an AUTH body (the caller has made sure the level is MQTT 5).
pub(super) fn decode_auth(body: &Bytes) -> Result<Auth, DecodeError> {
    let mut r = Reader::new(body);
    // 3.15.2.1: a remaining length of 0 means reason 0x00 (Success)
    let (reason, properties) = reason_and_props(&mut r, ReasonSet::Auth, Allowed::AUTH)?;
    Ok(Auth { reason, properties })
}

/// The remaining length of an AUTH. The spec only allows leaving out both reason code and
/// properties, so a non-zero reason is always followed by a property length.
pub(super) fn auth_len(a: &Auth) -> usize {
    reason_props_len(a.reason, a.properties.as_deref(), false)
}

/// Writes an AUTH body.
pub(super) fn put_auth(buf: &mut BytesMut, a: &Auth) -> Result<(), EncodeError> {
    put_reason_props(buf, a.reason, a.properties.as_deref(), false)
}

/// Reads the optional reason code and optional properties that end DISCONNECT and AUTH.
fn reason_and_props(
    r: &mut Reader<'_>,
    set: ReasonSet,
    allowed: Allowed,
) -> Result<(u8, Option<Box<Properties>>), DecodeError> {
    if r.is_empty() {
        return Ok((0, None));
    }
    let reason = set.check(r.u8()?)?;
    let properties = if r.is_empty() {
        None
    } else {
        decode_properties(r, allowed)?
    };
    r.finish()?;
    Ok((reason, properties))
}

/// The size of a trailing reason code and property block in its shortest form: nothing for
/// success without properties, the reason alone if `reason_alone` allows it.
fn reason_props_len(reason: u8, p: Option<&Properties>, reason_alone: bool) -> usize {
    let plen = properties_len(p);
    if plen == 0 && reason == 0 {
        0
    } else if plen == 0 && reason_alone {
        1
    } else {
        1 + block_len(p)
    }
}

/// Writes what [`reason_props_len`] measures.
fn put_reason_props(
    buf: &mut BytesMut,
    reason: u8,
    p: Option<&Properties>,
    reason_alone: bool,
) -> Result<(), EncodeError> {
    let plen = properties_len(p);
    if plen == 0 && reason == 0 {
        return Ok(());
    }
    buf.put_u8(reason);
    if plen == 0 && reason_alone {
        return Ok(());
    }
    put_properties(buf, p)
}

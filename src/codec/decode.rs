//! Decoding: bytes → [`Packet`].

use bytes::{Buf, Bytes, BytesMut};

use super::ack::{decode_ack, decode_auth, decode_disconnect};
use super::connect::{decode_connack, decode_connect};
use super::publish::{self, decode_publish};
use super::reason::ReasonSet;
use super::subscribe::{decode_suback, decode_subscribe, decode_unsuback, decode_unsubscribe};
use super::{DecodeError, Packet, ProtocolVersion};

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (nothing is consumed), and an
/// error as soon as the bytes seen so far cannot be a valid packet — in particular as soon as the
/// fixed header announces more than `max_packet_size` bytes in total, before the body arrives.
/// `version` is the level negotiated by CONNECT (pass any level before CONNECT: a CONNECT packet
/// carries and is decoded with its own level).
///
/// After an error the connection is unusable: the offending packet may or may not have been
/// consumed. The decoded packet's strings and payload are slices of the buffer it arrived in.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((remaining, header_len)) = remaining_length(buf)? else {
        return Ok(None);
    };
    let size = header_len + remaining;
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    buf.advance(header_len);
    let body = buf.split_to(remaining).freeze();
    decode_body(first, body, version).map(Some)
}

/// The total length (fixed header included) of the packet at the start of `buf`, read from its
/// fixed header; `None` if the header is incomplete or invalid. For the sender's own encoded
/// packets (to find packet boundaries in a write buffer).
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let (remaining, header_len) = remaining_length(buf).ok()??;
    Some(header_len + remaining)
}

/// Checks the first byte of the fixed header: packet type and flags
/// ([MQTT-2.2.2-1], [MQTT-2.2.2-2]).
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    let required = match packet_type {
        // 2.1.2: type 0 is reserved, and so is 15 before MQTT 5 (where it is AUTH)
        0 => return Err(DecodeError::ReservedPacketType(0)),
        15 if !version.is_v5() => return Err(DecodeError::ReservedPacketType(15)),
        3 => return publish::check_flags(flags).map(|_| ()),
        // MQTT 3.1 gave these bits meaning on PUBREL, SUBSCRIBE and UNSUBSCRIBE (QoS 1, and
        // DUP on retries), so a 3.1 connection is not held to the later fixed values.
        6 | 8 | 10 if version == ProtocolVersion::V3_1 => return Ok(()),
        // [MQTT-3.6.1-1] / [MQTT-3.8.1-1] / [MQTT-3.10.1-1] PUBREL, SUBSCRIBE and UNSUBSCRIBE
        // have 0b0010
        6 | 8 | 10 => 0b0010,
        // every other type has 0 ([MQTT-2.2.2-1])
        _ => 0,
    };
    if flags != required {
        // [MQTT-2.2.2-2] invalid flags: the connection is closed
        return Err(DecodeError::InvalidHeaderFlags { packet_type, flags });
    }
    Ok(())
}

/// Reads the remaining length that follows the first byte: `Some((value, header length))`, or
/// `None` while more bytes are needed.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for (i, &byte) in buf.iter().skip(1).take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 2)));
        }
        if i == 3 {
            // [MQTT-1.5.5-1] at most four bytes: a fourth with the continuation bit is invalid
            return Err(DecodeError::MalformedRemainingLength);
        }
    }
    Ok(None)
}

/// Decodes the body of a packet whose fixed header has been checked.
fn decode_body(first: u8, body: Bytes, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let v5 = version.is_v5();
    Ok(match first >> 4 {
        1 => Packet::Connect(Box::new(decode_connect(&body)?)),
        2 => Packet::ConnAck(decode_connack(&body, version)?),
        3 => Packet::Publish(decode_publish(first & 0x0F, body, version)?),
        4 => Packet::PubAck(decode_ack(&body, version, ReasonSet::PubAckRec)?),
        5 => Packet::PubRec(decode_ack(&body, version, ReasonSet::PubAckRec)?),
        6 => Packet::PubRel(decode_ack(&body, version, ReasonSet::PubRelComp)?),
        7 => Packet::PubComp(decode_ack(&body, version, ReasonSet::PubRelComp)?),
        8 => Packet::Subscribe(decode_subscribe(&body, version)?),
        9 => Packet::SubAck(decode_suback(&body, version)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&body, version)?),
        11 => Packet::UnsubAck(decode_unsuback(&body, version)?),
        12 => empty(&body, Packet::PingReq)?,
        13 => empty(&body, Packet::PingResp)?,
        14 => Packet::Disconnect(decode_disconnect(&body, version)?),
        15 if v5 => Packet::Auth(decode_auth(&body)?),
        t => return Err(DecodeError::ReservedPacketType(t)),
    })
}

/// PINGREQ and PINGRESP have no variable header and no payload (3.12, 3.13).
fn empty(body: &Bytes, packet: Packet) -> Result<Packet, DecodeError> {
    if body.is_empty() {
        Ok(packet)
    } else {
        Err(DecodeError::Malformed("PINGREQ/PINGRESP with a body"))
    }
}

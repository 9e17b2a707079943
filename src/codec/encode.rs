//! Encoding: [`Packet`] → bytes.

use bytes::{BufMut, BytesMut};

use super::ack::{ack_len, auth_len, disconnect_len, put_ack, put_auth, put_disconnect};
use super::connect::{connack_len, connect_len, put_connack, put_connect};
use super::primitives::{MAX_VARINT, put_varint, varint_len};
use super::publish::{self, publish_len, put_publish};
use super::subscribe::{
    put_suback, put_subscribe, put_unsuback, put_unsubscribe, suback_len, subscribe_len,
    unsuback_len, unsubscribe_len,
};
use super::{EncodeError, Packet, ProtocolVersion};

/// Appends the wire form of `packet` for protocol level `version` to `buf`.
///
/// Before MQTT 5 properties and reason codes are left out, except CONNACK's return code and
/// SUBACK's return codes; in MQTT 5 acknowledgements, DISCONNECT and AUTH take their shortest
/// form. CONNECT is always written at its own `protocol` level. A packet id on a QoS 0 PUBLISH
/// is not written, nor is DUP on QoS 0. On error `buf` is left as it was.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = buf.len();
    let result = encode_unchecked(packet, version, buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// The total size in bytes (fixed header included) `packet` will have on the wire.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let remaining = remaining_len(packet, version);
    1 + varint_len(remaining) + remaining
}

/// [`encode`] without restoring `buf` on error.
fn encode_unchecked(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    if matches!(packet, Packet::Auth(_)) && !version.is_v5() {
        return Err(EncodeError::Invalid("AUTH exists only in MQTT 5"));
    }
    let remaining = remaining_len(packet, version);
    // [MQTT-1.5.5-1] / 2.1.4: the remaining length fits in four bytes
    if remaining > MAX_VARINT {
        return Err(EncodeError::PacketTooLarge);
    }
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(first_byte(packet));
    put_varint(buf, remaining);
    match packet {
        Packet::Connect(c) => put_connect(buf, c),
        Packet::ConnAck(c) => put_connack(buf, c, version),
        Packet::Publish(p) => put_publish(buf, p, version),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            put_ack(buf, a, version)
        }
        Packet::Subscribe(s) => put_subscribe(buf, s, version),
        Packet::SubAck(s) => put_suback(buf, s, version),
        Packet::Unsubscribe(u) => put_unsubscribe(buf, u, version),
        Packet::UnsubAck(u) => put_unsuback(buf, u, version),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => put_disconnect(buf, d, version),
        Packet::Auth(a) => put_auth(buf, a),
    }
}

/// The first byte of the fixed header: type and flags ([MQTT-2.2.2-1]).
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => publish::first_byte(p),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

/// The remaining length: everything after the fixed header.
fn remaining_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(c) => connect_len(c),
        Packet::ConnAck(c) => connack_len(c, version),
        Packet::Publish(p) => publish_len(p, version),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            ack_len(a, version)
        }
        Packet::Subscribe(s) => subscribe_len(s, version),
        Packet::SubAck(s) => suback_len(s, version),
        Packet::Unsubscribe(u) => unsubscribe_len(u, version),
        Packet::UnsubAck(u) => unsuback_len(u, version),
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(d) => disconnect_len(d, version),
        Packet::Auth(a) => auth_len(a),
    }
}

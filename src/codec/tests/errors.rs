//! One hand-made byte vector (at least) for every validation the decoder performs.

use super::{decode_err, decode_one};
use crate::codec::DecodeError::{self, *};
use crate::codec::ProtocolVersion::{self, V3_1, V3_1_1, V5};

/// A packet with first byte `first` and `body`, remaining length filled in.
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut n = body.len();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A property block: length prefix and `props`.
fn block(props: &[u8]) -> Vec<u8> {
    let mut out = vec![props.len() as u8];
    out.extend_from_slice(props);
    out
}

/// A CONNECT at `level` with protocol name `name`, `flags`, CONNECT properties `props` (MQTT 5
/// only) and then `payload`.
fn connect(name: &[u8], level: u8, flags: u8, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    if level == 5 {
        body.extend(block(props));
    }
    body.extend_from_slice(payload);
    pkt(0x10, &body)
}

/// A 3.1.1 CONNECT with `flags` and `payload`.
fn connect4(flags: u8, payload: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 4, flags, &[], payload)
}

/// A 5.0 CONNECT with properties `props` and client id "c".
fn connect5(props: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 5, 0x02, props, b"\x00\x01c")
}

fn assert_err(bytes: &[u8], version: ProtocolVersion, expected: DecodeError) {
    assert_eq!(
        decode_err(bytes, version),
        expected,
        "decoding {bytes:02x?} at {version:?}"
    );
}

#[test]
fn malformed_remaining_length() {
    // [MQTT-1.5.5-1]: reported as soon as the fourth byte has the continuation bit
    assert_err(
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF],
        V3_1_1,
        MalformedRemainingLength,
    );
    assert_err(
        &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
        V5,
        MalformedRemainingLength,
    );
}

#[test]
fn reserved_packet_types() {
    assert_err(&[0x00, 0x00], V3_1_1, ReservedPacketType(0));
    assert_err(&[0xF0, 0x00], V3_1_1, ReservedPacketType(15));
    assert_err(&[0xF0, 0x00], V3_1, ReservedPacketType(15));
    assert!(decode_one(&[0xF0, 0x00], V5).is_ok());
}

#[test]
fn fixed_header_flags() {
    let cases: &[(&[u8], u8, u8)] = &[
        (b"\x60\x02\x00\x01", 6, 0),              // PUBREL must be 0b0010
        (b"\x63\x02\x00\x01", 6, 3),              // PUBREL
        (b"\x80\x06\x00\x01\x00\x01a\x00", 8, 0), // SUBSCRIBE
        (b"\xA0\x05\x00\x01\x00\x01a", 10, 0),    // UNSUBSCRIBE
        (b"\x11\x00", 1, 1),                      // CONNECT must be 0
        (b"\x28\x02\x00\x00", 2, 8),              // CONNACK
        (b"\x42\x02\x00\x01", 4, 2),              // PUBACK
        (b"\x51\x02\x00\x01", 5, 1),              // PUBREC
        (b"\x72\x02\x00\x01", 7, 2),              // PUBCOMP
        (b"\x92\x03\x00\x01\x00", 9, 2),          // SUBACK
        (b"\xB1\x02\x00\x01", 11, 1),             // UNSUBACK
        (b"\xC1\x00", 12, 1),                     // PINGREQ
        (b"\xD4\x00", 13, 4),                     // PINGRESP
        (b"\xE2\x00", 14, 2),                     // DISCONNECT
    ];
    for &(bytes, packet_type, flags) in cases {
        for v in [V3_1_1, V5] {
            assert_err(bytes, v, InvalidHeaderFlags { packet_type, flags });
        }
    }
    assert_err(
        b"\xF1\x00",
        V5,
        InvalidHeaderFlags {
            packet_type: 15,
            flags: 1,
        },
    );
    // [MQTT-2.2.2-2] the error comes from the first byte alone, before the body is there
    assert_err(
        b"\x60",
        V3_1_1,
        InvalidHeaderFlags {
            packet_type: 6,
            flags: 0,
        },
    );
    // MQTT 3.1 set QoS/DUP bits on these packets, so a 3.1 connection accepts them.
    assert!(decode_one(b"\x8A\x06\x00\x01\x00\x01a\x00", V3_1).is_ok());
    assert!(decode_one(b"\x6A\x02\x00\x01", V3_1).is_ok());
    // but not on other packets: a CONNECT is checked whatever level the caller assumed
    assert_err(
        b"\x12\x00",
        V3_1,
        InvalidHeaderFlags {
            packet_type: 1,
            flags: 2,
        },
    );
    assert_err(
        b"\x41\x02\x00\x01",
        V3_1,
        InvalidHeaderFlags {
            packet_type: 4,
            flags: 1,
        },
    );
}

#[test]
fn publish_flags() {
    // [MQTT-3.3.1-4] QoS 3
    assert_err(b"\x36\x05\x00\x01a\x00\x01", V3_1_1, InvalidQoS);
    assert_err(b"\x36", V5, InvalidQoS);
    // [MQTT-3.3.1-2] DUP with QoS 0
    assert!(matches!(
        decode_err(b"\x38\x03\x00\x01a", V3_1_1),
        Malformed(_)
    ));
    assert!(matches!(decode_err(b"\x39", V5), Malformed(_)));
}

#[test]
fn zero_packet_ids() {
    // [MQTT-2.3.1-1]
    for v in [V3_1_1, V5] {
        assert_err(b"\x32\x05\x00\x01a\x00\x00", v, ZeroPacketId);
        assert_err(b"\x34\x05\x00\x01a\x00\x00", v, ZeroPacketId);
        assert_err(b"\x40\x02\x00\x00", v, ZeroPacketId);
        assert_err(b"\x50\x02\x00\x00", v, ZeroPacketId);
        assert_err(b"\x62\x02\x00\x00", v, ZeroPacketId);
        assert_err(b"\x70\x02\x00\x00", v, ZeroPacketId);
        assert_err(b"\x82\x06\x00\x00\x00\x01a\x00", v, ZeroPacketId);
        assert_err(b"\x90\x03\x00\x00\x00", v, ZeroPacketId);
        assert_err(b"\xA2\x05\x00\x00\x00\x01a", v, ZeroPacketId);
        assert_err(b"\xB0\x02\x00\x00", v, ZeroPacketId);
    }
}

#[test]
fn utf8_strings() {
    // [MQTT-1.5.3-1] ill-formed UTF-8: a bad continuation, a lone continuation byte, an
    // encoded surrogate, an overlong encoding
    for bad in [&b"\xC3\x28"[..], b"\x80", b"\xED\xA0\x80", b"\xC0\xAF"] {
        let mut payload = vec![0, bad.len() as u8];
        payload.extend_from_slice(bad);
        assert_err(&connect4(0x02, &payload), V3_1_1, InvalidUtf8);
        let mut publish = payload.clone();
        publish.extend_from_slice(b"data");
        assert_err(&pkt(0x30, &publish), V3_1_1, InvalidUtf8);
    }
    // [MQTT-1.5.3-2] U+0000
    assert_err(&connect4(0x02, b"\x00\x03a\x00b"), V3_1_1, NullCharacter);
    assert_err(b"\x30\x05\x00\x03a\x00b", V3_1_1, NullCharacter);
    // in a user name, a will topic, a topic filter, a user property
    assert_err(
        &connect4(0x82, b"\x00\x01c\x00\x01\x00"),
        V3_1_1,
        NullCharacter,
    );
    assert_err(
        &connect4(0x06, b"\x00\x01c\x00\x02a\x00\x00\x00"),
        V3_1_1,
        NullCharacter,
    );
    assert_err(b"\x82\x06\x00\x01\x00\x01\x00\x00", V3_1_1, NullCharacter);
    assert_err(&connect5(b"\x26\x00\x01k\x00\x01\x00"), V5, NullCharacter);
    // The password and the will payload are binary: anything goes.
    assert!(
        decode_one(
            &connect4(0xC2, b"\x00\x01c\x00\x01u\x00\x02\x00\xFF"),
            V3_1_1
        )
        .is_ok()
    );
    assert!(
        decode_one(
            &connect4(0x06, b"\x00\x01c\x00\x01t\x00\x02\x00\xFF"),
            V3_1_1
        )
        .is_ok()
    );
}

#[test]
fn protocol_name_and_level() {
    // [MQTT-3.1.2-1]
    assert_err(
        &connect(b"MQTX", 4, 2, &[], b"\x00\x01c"),
        V3_1_1,
        InvalidProtocolName,
    );
    assert_err(
        &connect(b"mqtt", 4, 2, &[], b"\x00\x01c"),
        V3_1_1,
        InvalidProtocolName,
    );
    assert_err(
        &connect(b"", 4, 2, &[], b"\x00\x01c"),
        V3_1_1,
        InvalidProtocolName,
    );
    // [MQTT-3.1.2-2]
    assert_err(
        &connect(b"MQTT", 3, 2, &[], b"\x00\x01c"),
        V3_1_1,
        UnsupportedProtocolLevel(3),
    );
    assert_err(
        &connect(b"MQTT", 6, 2, &[], b"\x00\x01c"),
        V3_1_1,
        UnsupportedProtocolLevel(6),
    );
    assert_err(
        &connect(b"MQIsdp", 4, 2, &[], b"\x00\x01c"),
        V3_1,
        UnsupportedProtocolLevel(4),
    );
    assert_err(
        &connect(b"MQTT", 0x84, 2, &[], b"\x00\x01c"),
        V3_1_1,
        UnsupportedProtocolLevel(0x84),
    );
    // The level is reported even if the rest of the packet is unreadable.
    assert_err(
        b"\x10\x07\x00\x04MQTT\x07",
        V3_1_1,
        UnsupportedProtocolLevel(7),
    );
}

#[test]
fn connect_flags() {
    // [MQTT-3.1.2-3]
    assert_err(&connect4(0x03, b"\x00\x01c"), V3_1_1, ConnectReservedFlag);
    assert_err(
        &connect(b"MQTT", 5, 0x01, &[], b"\x00\x01c"),
        V5,
        ConnectReservedFlag,
    );
    // [MQTT-3.1.2-11] / [MQTT-3.1.2-13]: will QoS without the will flag
    assert_err(&connect4(0x0A, b"\x00\x01c"), V3_1_1, InvalidWillFlags);
    assert_err(&connect4(0x12, b"\x00\x01c"), V3_1_1, InvalidWillFlags);
    // [MQTT-3.1.2-15]: will retain without the will flag
    assert_err(&connect4(0x22, b"\x00\x01c"), V3_1_1, InvalidWillFlags);
    // [MQTT-3.1.2-14]: will QoS 3
    assert_err(
        &connect4(0x1E, b"\x00\x01c\x00\x01t\x00\x00"),
        V3_1_1,
        InvalidWillFlags,
    );
    // [MQTT-3.1.2-22]: password without user name, before 5.0 only
    assert_err(
        &connect4(0x42, b"\x00\x01c\x00\x01p"),
        V3_1_1,
        PasswordWithoutUsername,
    );
    assert_err(
        &connect(b"MQIsdp", 3, 0x42, &[], b"\x00\x01c\x00\x01p"),
        V3_1,
        PasswordWithoutUsername,
    );
    assert!(decode_one(&connect(b"MQTT", 5, 0x42, &[], b"\x00\x01c\x00\x01p"), V5).is_ok());
}

#[test]
fn will_topic() {
    assert_err(
        &connect4(0x06, b"\x00\x01c\x00\x03a/#\x00\x00"),
        V3_1_1,
        WildcardInTopicName,
    );
    assert_err(
        &connect4(0x06, b"\x00\x01c\x00\x01+\x00\x00"),
        V3_1_1,
        WildcardInTopicName,
    );
    assert_err(
        &connect4(0x06, b"\x00\x01c\x00\x00\x00\x00"),
        V3_1_1,
        EmptyTopic,
    );
    // MQTT 5 will topics must not be empty either (no alias for wills)
    assert_err(
        &connect(b"MQTT", 5, 0x06, &[], b"\x00\x01c\x00\x00\x00\x00\x00"),
        V5,
        EmptyTopic,
    );
}

#[test]
fn publish_topic() {
    // [MQTT-3.3.2-2]
    assert_err(b"\x30\x05\x00\x03a/+", V3_1_1, WildcardInTopicName);
    assert_err(b"\x30\x04\x00\x01#x", V5, WildcardInTopicName);
    // [MQTT-4.7.3-1] empty before 5.0; allowed by the codec in 5.0 (Topic Alias)
    assert_err(b"\x30\x03\x00\x00x", V3_1_1, EmptyTopic);
    assert_err(b"\x30\x03\x00\x00x", V3_1, EmptyTopic);
    assert!(decode_one(b"\x30\x04\x00\x00\x00x", V5).is_ok());
}

#[test]
fn subscribe_payload() {
    // [MQTT-3.8.3-3]
    assert_err(b"\x82\x02\x00\x01", V3_1_1, EmptySubscribe);
    assert_err(b"\x82\x03\x00\x01\x00", V5, EmptySubscribe);
    // [MQTT-3-8.3-4] (3.1.1): reserved bits 7-2 and QoS 3
    for opts in [0x04u8, 0x08, 0x80] {
        assert_err(
            &pkt(0x82, &[0, 1, 0, 1, b'a', opts]),
            V3_1_1,
            InvalidSubscriptionOptions,
        );
    }
    assert!(matches!(
        decode_err(&pkt(0x82, &[0, 1, 0, 1, b'a', 0x03]), V3_1_1),
        ProtocolError(_)
    ));
    // 5.0: reserved bits 7-6 are malformed ([MQTT-3.8.3-5]); QoS 3, Retain Handling 3 and No
    // Local on a shared subscription are Protocol Errors (3.8.3.1, [MQTT-3.8.3-4]).
    for opts in [0x40u8, 0x80] {
        assert_err(
            &pkt(0x82, &[0, 1, 0, 0, 1, b'a', opts]),
            V5,
            InvalidSubscriptionOptions,
        );
    }
    for opts in [0x03u8, 0x30] {
        let e = decode_err(&pkt(0x82, &[0, 1, 0, 0, 1, b'a', opts]), V5);
        assert!(matches!(e, ProtocolError(_)), "{opts:#x}: {e:?}");
        assert_eq!(e.reason_code(), 0x82);
    }
    assert!(decode_one(&pkt(0x82, &[0, 1, 0, 0, 1, b'a', 0x2E]), V5).is_ok());
    assert!(matches!(
        decode_err(b"\x82\x10\x00\x01\x00\x00\x0A$share/g/a\x04", V5),
        ProtocolError(_)
    ));
    // Options missing after the last filter.
    assert!(matches!(
        decode_err(b"\x82\x05\x00\x01\x00\x01a", V3_1_1),
        Malformed(_)
    ));
}

/// Invalid topic filters, per [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1], [MQTT-4.8.2-1]
/// and [MQTT-4.8.2-2].
const BAD_FILTERS: &[&str] = &[
    "",
    "a/#/b",
    "#/",
    "a#",
    "a/b#",
    "+a",
    "a+",
    "a/+b/c",
    "++",
    "$share/",
    "$share/g",
    "$share//a",
    "$share/g+/a",
    "$share/g#/a",
    "$share/g/",
    "$share/g/a#",
];

#[test]
fn invalid_topic_filters() {
    for f in BAD_FILTERS {
        let mut sub = vec![0, 1, 0, f.len() as u8];
        sub.extend_from_slice(f.as_bytes());
        sub.push(1);
        let mut unsub = vec![0, 1, 0, f.len() as u8];
        unsub.extend_from_slice(f.as_bytes());
        assert_err(&pkt(0x82, &sub), V3_1_1, InvalidTopicFilter);
        assert_err(&pkt(0xA2, &unsub), V3_1_1, InvalidTopicFilter);
    }
    for good in [
        "#",
        "+",
        "/",
        "a/+/#",
        "+/+",
        "$SYS/#",
        "$share",
        "$share/g/#",
        "$sharex/a",
    ] {
        let mut sub = vec![0, 1, 0, good.len() as u8];
        sub.extend_from_slice(good.as_bytes());
        sub.push(1);
        assert!(decode_one(&pkt(0x82, &sub), V3_1_1).is_ok(), "{good}");
    }
}

#[test]
fn unsubscribe_payload() {
    // [MQTT-3.10.3-2]
    assert_err(b"\xA2\x02\x00\x01", V3_1_1, EmptyUnsubscribe);
    assert_err(b"\xA2\x03\x00\x01\x00", V5, EmptyUnsubscribe);
}

#[test]
fn properties_not_allowed_or_unknown() {
    // Unknown identifiers, including ones that would be multi-byte.
    for id in [0x00u8, 0x05, 0x2B, 0x7F, 0x80, 0xFF] {
        assert_err(&connect5(&[id, 0]), V5, InvalidProperty(id));
    }
    // Defined, but not for this packet (table 2-4).
    assert_err(&connect5(b"\x23\x00\x01"), V5, InvalidProperty(0x23));
    assert_err(
        &connect5(b"\x18\x00\x00\x00\x01"),
        V5,
        InvalidProperty(0x18),
    );
    assert_err(
        b"\xA2\x08\x00\x01\x02\x0B\x01\x00\x01a",
        V5,
        InvalidProperty(0x0B),
    );
    assert_err(
        b"\x40\x06\x00\x01\x00\x02\x23\x00",
        V5,
        InvalidProperty(0x23),
    );
    assert_err(
        b"\xE0\x07\x00\x05\x27\x00\x00\x00\x01",
        V5,
        InvalidProperty(0x27),
    );
    assert_err(
        b"\x30\x07\x00\x01a\x02\x11\x00\x00",
        V5,
        InvalidProperty(0x11),
    );
    // A will property block has its own set: Session Expiry Interval is not in it.
    assert_err(
        &connect(
            b"MQTT",
            5,
            0x06,
            &[],
            b"\x00\x01c\x05\x11\x00\x00\x00\x01\x00\x01t\x00\x00",
        ),
        V5,
        InvalidProperty(0x11),
    );
}

#[test]
fn duplicate_properties() {
    assert_err(
        &connect5(b"\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02"),
        V5,
        DuplicateProperty(0x11),
    );
    // Subscription Identifier may repeat in PUBLISH only.
    assert_err(
        b"\x82\x0B\x00\x01\x04\x0B\x01\x0B\x02\x00\x01a\x00",
        V5,
        DuplicateProperty(0x0B),
    );
    assert!(decode_one(b"\x30\x08\x00\x01a\x04\x0B\x01\x0B\x02", V5).is_ok());
    assert_err(
        b"\x40\x0C\x00\x01\x00\x08\x1F\x00\x01a\x1F\x00\x01b",
        V5,
        DuplicateProperty(0x1F),
    );
    // User Property may repeat anywhere.
    assert!(decode_one(&connect5(b"\x26\x00\x00\x00\x00\x26\x00\x00\x00\x00"), V5).is_ok());
}

#[test]
fn property_values() {
    use crate::codec::DecodeError::InvalidPropertyValue as V;
    // PUBLISH: Payload Format Indicator 2, Topic Alias 0, Subscription Identifier 0, a
    // Response Topic with a wildcard
    assert_err(b"\x30\x06\x00\x01a\x02\x01\x02", V5, V(0x01));
    assert_err(b"\x30\x07\x00\x01a\x03\x23\x00\x00", V5, V(0x23));
    assert_err(b"\x30\x06\x00\x01a\x02\x0B\x00", V5, V(0x0B));
    assert_err(b"\x30\x09\x00\x01a\x05\x08\x00\x02a#", V5, V(0x08));
    // CONNECT: Request Problem/Response Information 2, Receive Maximum 0, Maximum Packet
    // Size 0, Authentication Data without Authentication Method
    assert_err(&connect5(b"\x17\x02"), V5, V(0x17));
    assert_err(&connect5(b"\x19\x02"), V5, V(0x19));
    assert_err(&connect5(b"\x21\x00\x00"), V5, V(0x21));
    assert_err(&connect5(b"\x27\x00\x00\x00\x00"), V5, V(0x27));
    assert_err(&connect5(b"\x16\x00\x01x"), V5, V(0x16));
    assert!(decode_one(&connect5(b"\x15\x00\x01m\x16\x00\x01x"), V5).is_ok());
    // CONNACK: Maximum QoS 2, Retain Available 2, the three *Available flags 2
    for id in [0x24u8, 0x25, 0x28, 0x29, 0x2A] {
        assert_err(&pkt(0x20, &[0, 0, 2, id, 2]), V5, V(id));
        assert!(decode_one(&pkt(0x20, &[0, 0, 2, id, 1]), V5).is_ok());
    }
    // SUBSCRIBE: Subscription Identifier 0
    assert_err(b"\x82\x09\x00\x01\x02\x0B\x00\x00\x01a\x00", V5, V(0x0B));
}

#[test]
fn reason_codes() {
    let cases: &[(&[u8], u8)] = &[
        (b"\x40\x03\x00\x01\x92", 0x92), // PUBACK: 0x92 is PUBREL/PUBCOMP only
        (b"\x50\x03\x00\x01\x01", 0x01), // PUBREC
        (b"\x62\x03\x00\x01\x10", 0x10), // PUBREL: only 0x00 and 0x92
        (b"\x70\x03\x00\x01\x80", 0x80), // PUBCOMP
        (b"\xE0\x01\x05", 0x05),         // DISCONNECT
        (b"\xE0\x01\x84", 0x84),         // DISCONNECT: 0x84 is CONNACK only
        (b"\xF0\x01\x01", 0x01),         // AUTH: only 0x00, 0x18, 0x19
        (b"\xF0\x02\x80\x00", 0x80),     // AUTH
        (b"\x20\x03\x00\x01\x00", 0x01), // CONNACK 5.0
        (b"\x90\x04\x00\x01\x00\x03", 0x03), // SUBACK
        (b"\xB0\x04\x00\x01\x00\x01", 0x01), // UNSUBACK
    ];
    for &(bytes, code) in cases {
        assert_err(bytes, V5, InvalidReasonCode(code));
    }
    // [MQTT-3.9.3-2] SUBACK return codes in 3.1.1
    assert_err(b"\x90\x03\x00\x01\x03", V3_1_1, InvalidReasonCode(3));
    assert_err(b"\x90\x03\x00\x01\x87", V3_1_1, InvalidReasonCode(0x87));
    // 3.1.1 CONNACK return codes are passed through.
    assert!(decode_one(b"\x20\x02\x00\x06", V3_1_1).is_ok());
}

#[test]
fn truncated_and_leftover_bodies() {
    let malformed: &[(&[u8], ProtocolVersion)] = &[
        // leftover bytes
        (b"\x40\x03\x00\x01\x00", V3_1_1),
        (b"\xB0\x03\x00\x01\x00", V3_1_1),
        (b"\xC0\x01\x00", V3_1_1),
        (b"\xD0\x01\x00", V5),
        (b"\xE0\x01\x00", V3_1_1),
        (b"\x20\x03\x00\x00\x00", V3_1_1),
        (b"\x40\x05\x00\x01\x00\x00\x00", V5),
        (b"\xE0\x03\x00\x00\x00", V5),
        // ends early
        (b"\x40\x01\x00", V3_1_1),
        (b"\x32\x04\x00\x01a\x00", V3_1_1),
        (b"\x30\x02\x00\x05", V3_1_1),
        (b"\x20\x01\x00", V3_1_1),
        (b"\x20\x02\x00\x00", V5),
        (b"\x10\x05\x00\x04MQT", V3_1_1),
        (b"\x10\x00", V3_1_1),
        (b"\x82\x04\x00\x01\x00\x05", V3_1_1),
        // a property block longer than the packet, a property value cut short
        (b"\x30\x05\x00\x01a\x05\x01", V5),
        (b"\x30\x07\x00\x01a\x03\x02\x00\x00", V5),
        // a Subscription Identifier of five bytes
        (b"\x30\x0A\x00\x01a\x06\x0B\x80\x80\x80\x80\x01", V5),
        // SUBACK and 5.0 UNSUBACK without codes
        (b"\x90\x02\x00\x01", V3_1_1),
        (b"\xB0\x03\x00\x01\x00", V5),
        // CONNACK reserved flag bits
        (b"\x20\x02\x02\x00", V3_1_1),
    ];
    for &(bytes, v) in malformed {
        let err = decode_err(bytes, v);
        assert!(
            matches!(err, Malformed(_)),
            "{bytes:02x?} at {v:?}: {err:?}"
        );
    }
    // CONNECT with a byte after the last field
    let mut c = connect4(0x02, b"\x00\x01c\x00");
    assert!(matches!(decode_err(&c, V3_1_1), Malformed(_)));
    c.truncate(c.len() - 2);
    c[1] -= 2;
    assert!(matches!(decode_err(&c, V3_1_1), Malformed(_)));
}

//! encode → decode gives the packet back, `encoded_len` is exact, and partial buffers wait.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::prelude::*;

use super::strategies::{packet, versioned_packet};
use super::{VERSIONS, decode_one, to_bytes};
use crate::codec::{
    Ack, EncodeError, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, decode, encode,
    encoded_len,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn round_trip((version, packet) in versioned_packet()) {
        let bytes = to_bytes(&packet, version);
        prop_assert_eq!(decode_one(&bytes, version), Ok(packet));
    }

    #[test]
    fn every_prefix_waits_and_consumes_nothing((version, packet) in versioned_packet()) {
        let bytes = to_bytes(&packet, version);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert_eq!(decode(&mut buf, version, usize::MAX), Ok(None));
            prop_assert_eq!(&buf[..], &bytes[..cut]);
        }
    }

    #[test]
    fn back_to_back_packets_decode_in_order((version, packets) in proptest::sample::select(
        VERSIONS.to_vec()).prop_flat_map(|v| (Just(v), proptest::collection::vec(packet(v), 1..6))))
    {
        // Several packets of one level in one buffer, with a partial one at the end.
        let mut buf = BytesMut::new();
        for p in &packets {
            prop_assert!(encode(p, version, &mut buf).is_ok());
        }
        buf.extend_from_slice(&[0x30, 0x05, 0x00]);
        for p in packets {
            prop_assert_eq!(decode(&mut buf, version, usize::MAX), Ok(Some(p)));
        }
        prop_assert_eq!(decode(&mut buf, version, usize::MAX), Ok(None));
        prop_assert_eq!(buf.len(), 3);
    }
}

/// A QoS 0 PUBLISH with the given payload size.
fn publish_of(size: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteString::from_static("t"),
        packet_id: None,
        payload: Bytes::from(vec![0xAB; size]),
        properties: None,
    })
}

#[test]
fn remaining_length_boundaries_round_trip() {
    // Remaining lengths 127/128, 16383/16384 and 2097151/2097152 switch varint sizes; the body
    // is 3 bytes of topic plus the payload.
    for (remaining, header) in [
        (0x7F, 2),
        (0x80, 3),
        (16_383, 3),
        (16_384, 4),
        (2_097_151, 4),
        (2_097_152, 5),
    ] {
        let packet = publish_of(remaining - 3);
        let bytes = to_bytes(&packet, ProtocolVersion::V3_1_1);
        assert_eq!(bytes.len(), header + remaining);
        assert_eq!(decode_one(&bytes, ProtocolVersion::V3_1_1), Ok(packet));
    }
}

#[test]
fn decoded_fields_share_the_receive_buffer() {
    let bytes = to_bytes(&publish_of(100), ProtocolVersion::V3_1_1);
    let mut buf = BytesMut::from(&bytes[..]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Ok(Some(Packet::Publish(p))) = decode(&mut buf, ProtocolVersion::V3_1_1, 1000) else {
        panic!("no publish");
    };
    let inside = |ptr: *const u8| (start..end).contains(&(ptr as usize));
    assert!(inside(p.payload.as_ptr()));
    assert!(inside(p.topic.as_bytes().as_ptr()));
}

#[test]
fn encode_appends_to_existing_content() {
    let mut buf = BytesMut::from(&b"xyz"[..]);
    encode(&Packet::PingReq, ProtocolVersion::V3_1_1, &mut buf).unwrap();
    assert_eq!(&buf[..], b"xyz\xC0\x00");
}

#[test]
fn encode_errors_leave_the_buffer_unchanged() {
    let long = ByteString::from("x".repeat(65_536));
    let mut p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: ByteString::from_static("a"),
        packet_id: None,
        payload: Bytes::new(),
        properties: None,
    };
    let mut buf = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        encode(
            &Packet::Publish(p.clone()),
            ProtocolVersion::V3_1_1,
            &mut buf
        ),
        Err(EncodeError::Invalid(
            "PUBLISH with QoS > 0 needs a packet id"
        ))
    );
    p.packet_id = PacketId::new(1);
    p.topic = long.clone();
    assert_eq!(
        encode(
            &Packet::Publish(p.clone()),
            ProtocolVersion::V3_1_1,
            &mut buf
        ),
        Err(EncodeError::FieldTooLong)
    );
    p.topic = ByteString::from_static("a");
    p.properties = Some(Box::new(Properties {
        user_properties: vec![(ByteString::from_static("k"), long)],
        ..Properties::default()
    }));
    assert_eq!(
        encode(&Packet::Publish(p.clone()), ProtocolVersion::V5, &mut buf),
        Err(EncodeError::FieldTooLong)
    );
    // The same packet is fine at 3.1.1, which has no properties.
    assert!(encode(&Packet::Publish(p), ProtocolVersion::V3_1_1, &mut buf).is_ok());
    assert_eq!(&buf[..4], b"keep");
    assert_eq!(buf.len(), 4 + 2 + 3 + 2);
}

#[test]
fn oversized_packet_is_refused() {
    let packet = publish_of(268_435_455 - 2);
    assert_eq!(
        encoded_len(&packet, ProtocolVersion::V3_1_1),
        1 + 4 + 268_435_456
    );
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&packet, ProtocolVersion::V3_1_1, &mut buf),
        Err(EncodeError::PacketTooLarge)
    );
    assert!(buf.is_empty());
}

#[test]
fn auth_needs_mqtt_5() {
    let mut buf = BytesMut::new();
    let auth = Packet::Auth(crate::codec::Auth::default());
    assert!(matches!(
        encode(&auth, ProtocolVersion::V3_1_1, &mut buf),
        Err(EncodeError::Invalid(_))
    ));
    assert!(buf.is_empty());
}

#[test]
fn v5_acks_take_their_shortest_form() {
    let id = PacketId::new(0x1234).unwrap();
    let v5 = ProtocolVersion::V5;
    let ack = |reason, properties| Ack {
        packet_id: id,
        reason,
        properties,
    };
    assert_eq!(
        &to_bytes(&Packet::PubAck(ack(0, None)), v5)[..],
        b"\x40\x02\x12\x34"
    );
    // Empty properties count as none.
    let empty = Some(Box::<Properties>::default());
    assert_eq!(
        &to_bytes(&Packet::PubRec(ack(0, empty)), v5)[..],
        b"\x50\x02\x12\x34"
    );
    assert_eq!(
        &to_bytes(&Packet::PubRel(ack(0x92, None)), v5)[..],
        b"\x62\x03\x12\x34\x92"
    );
    let reason = Some(Box::new(Properties {
        reason_string: Some(ByteString::from_static("no")),
        ..Properties::default()
    }));
    assert_eq!(
        &to_bytes(&Packet::PubComp(ack(0, reason)), v5)[..],
        b"\x70\x09\x12\x34\x00\x05\x1F\x00\x02no"
    );
    // Older levels drop reason and properties.
    let v3 = ProtocolVersion::V3_1_1;
    assert_eq!(
        &to_bytes(&Packet::PubAck(ack(0x80, None)), v3)[..],
        b"\x40\x02\x12\x34"
    );
    let d = crate::codec::Disconnect {
        reason: 0x04,
        properties: None,
    };
    assert_eq!(
        &to_bytes(&Packet::Disconnect(d.clone()), v5)[..],
        b"\xE0\x01\x04"
    );
    assert_eq!(&to_bytes(&Packet::Disconnect(d), v3)[..], b"\xE0\x00");
    let auth = crate::codec::Auth {
        reason: 0x18,
        properties: None,
    };
    assert_eq!(&to_bytes(&Packet::Auth(auth), v5)[..], b"\xF0\x02\x18\x00");
    assert_eq!(
        &to_bytes(&Packet::Auth(Default::default()), v5)[..],
        b"\xF0\x00"
    );
}

#[test]
fn qos0_publish_drops_dup_and_packet_id() {
    let p = Publish {
        dup: true,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: ByteString::from_static("a"),
        packet_id: PacketId::new(5),
        payload: Bytes::from_static(b"x"),
        properties: None,
    };
    assert_eq!(
        &to_bytes(&Packet::Publish(p), ProtocolVersion::V3_1_1)[..],
        b"\x31\x04\x00\x01ax"
    );
}

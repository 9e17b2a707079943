//! Hand-written byte vectors, built from the examples in the specifications, checked in both
//! directions.

use bytes::Bytes;
use bytestring::ByteString;

use super::{decode_one, to_bytes};
use crate::codec::{
    Ack, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties, ProtocolVersion,
    Publish, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// `bytes` decodes to `packet` at `version`, and `packet` encodes to `bytes`.
fn both_ways(bytes: &[u8], version: ProtocolVersion, packet: Packet) {
    assert_eq!(decode_one(bytes, version), Ok(packet.clone()));
    assert_eq!(&to_bytes(&packet, version)[..], bytes);
}

fn s(v: &'static str) -> ByteString {
    ByteString::from_static(v)
}

fn id(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}

/// The CONNECT of the MQTT 3.1.1/5.0 examples: flags 0xCE (user name, password, will QoS 1,
/// will, clean session) and keep alive 10.
fn example_connect(protocol: ProtocolVersion, properties: Option<Box<Properties>>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 10,
        client_id: s("cid"),
        will: Some(LastWill {
            topic: s("w/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }),
        username: Some(s("user")),
        password: Some(Bytes::from_static(b"pw")),
        properties,
    }))
}

#[test]
fn connect_3_1_1_spec_example() {
    // Variable header of figure 3.6 (3.1.1), then the payload fields in order.
    let bytes = b"\x10\x23\
        \x00\x04MQTT\x04\xCE\x00\x0A\
        \x00\x03cid\x00\x03w/t\x00\x03bye\x00\x04user\x00\x02pw";
    both_ways(
        bytes,
        ProtocolVersion::V3_1_1,
        example_connect(ProtocolVersion::V3_1_1, None),
    );
}

#[test]
fn connect_5_spec_example() {
    // Variable header of the 5.0 example (3.1.2.12): properties length 5, Session Expiry
    // Interval 10; then an empty will property block before the will topic.
    let bytes = b"\x10\x2A\
        \x00\x04MQTT\x05\xCE\x00\x0A\x05\x11\x00\x00\x00\x0A\
        \x00\x03cid\x00\x00\x03w/t\x00\x03bye\x00\x04user\x00\x02pw";
    let props = Properties {
        session_expiry_interval: Some(10),
        ..Properties::default()
    };
    both_ways(
        bytes,
        ProtocolVersion::V5,
        example_connect(ProtocolVersion::V5, Some(Box::new(props))),
    );
}

#[test]
fn connect_3_1_mqisdp() {
    // The MQTT 3.1 layout: protocol name "MQIsdp", level 3, clean session, keep alive 60.
    let bytes = b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3C\x00\x04test";
    let packet = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V3_1,
        clean_start: true,
        keep_alive: 60,
        client_id: s("test"),
        will: None,
        username: None,
        password: None,
        properties: None,
    }));
    both_ways(bytes, ProtocolVersion::V3_1, packet.clone());
    // CONNECT is decoded at its own level, whatever the caller passes.
    assert_eq!(decode_one(bytes, ProtocolVersion::V5), Ok(packet));
}

#[test]
fn connect_5_password_without_username_and_empty_client_id() {
    let bytes = b"\x10\x12\x00\x04MQTT\x05\x40\x00\x00\x00\x00\x00\x00\x03pwd";
    let packet = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 0,
        client_id: s(""),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"pwd")),
        properties: None,
    }));
    both_ways(bytes, ProtocolVersion::V3_1_1, packet);
}

#[test]
fn connack_each_level() {
    let ack = |present, code| {
        Packet::ConnAck(ConnAck {
            session_present: present,
            code,
            properties: None,
        })
    };
    both_ways(b"\x20\x02\x01\x00", ProtocolVersion::V3_1_1, ack(true, 0));
    both_ways(b"\x20\x02\x00\x05", ProtocolVersion::V3_1, ack(false, 5));
    both_ways(
        b"\x20\x03\x00\x87\x00",
        ProtocolVersion::V5,
        ack(false, 0x87),
    );
    let props = Properties {
        maximum_qos: Some(1),
        topic_alias_maximum: Some(10),
        ..Properties::default()
    };
    both_ways(
        b"\x20\x08\x01\x00\x05\x22\x00\x0A\x24\x01",
        ProtocolVersion::V5,
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: 0,
            properties: Some(Box::new(props)),
        }),
    );
}

#[test]
fn publish_each_level() {
    let publish = |qos, topic, properties| {
        Packet::Publish(Publish {
            dup: qos != QoS::AtMostOnce,
            qos,
            retain: true,
            topic,
            packet_id: (qos != QoS::AtMostOnce).then(|| id(10)),
            payload: Bytes::from_static(b"hi"),
            properties,
        })
    };
    both_ways(
        b"\x3B\x09\x00\x03a/b\x00\x0Ahi",
        ProtocolVersion::V3_1_1,
        publish(QoS::AtLeastOnce, s("a/b"), None),
    );
    both_ways(
        b"\x31\x07\x00\x03a/bhi",
        ProtocolVersion::V3_1,
        publish(QoS::AtMostOnce, s("a/b"), None),
    );
    // MQTT 5: empty topic with a Topic Alias, two Subscription Identifiers (one of two bytes)
    let props = Properties {
        topic_alias: Some(3),
        subscription_identifiers: vec![1, 200],
        ..Properties::default()
    };
    both_ways(
        b"\x3D\x0F\x00\x00\x00\x0A\x08\x0B\x01\x0B\xC8\x01\x23\x00\x03hi",
        ProtocolVersion::V5,
        publish(QoS::ExactlyOnce, s(""), Some(Box::new(props))),
    );
}

#[test]
fn acks_each_level() {
    for (first, make) in [
        (0x40u8, Packet::PubAck as fn(Ack) -> Packet),
        (0x50, Packet::PubRec),
        (0x62, Packet::PubRel),
        (0x70, Packet::PubComp),
    ] {
        for v in super::VERSIONS {
            both_ways(&[first, 2, 0, 7], v, make(Ack::new(id(7))));
        }
    }
    // MQTT 5 long forms are read too: explicit success reason and empty properties.
    assert_eq!(
        decode_one(b"\x40\x04\x00\x07\x00\x00", ProtocolVersion::V5),
        Ok(Packet::PubAck(Ack::new(id(7))))
    );
    assert_eq!(
        decode_one(b"\x40\x03\x00\x07\x00", ProtocolVersion::V5),
        Ok(Packet::PubAck(Ack::new(id(7))))
    );
}

#[test]
fn subscribe_each_level() {
    let sub = |opts: Vec<(ByteString, SubscriptionOptions)>, properties| {
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: opts,
            properties,
        })
    };
    let qos = |q| SubscriptionOptions {
        qos: q,
        ..SubscriptionOptions::default()
    };
    // The 3.1.1 example payload (3.8.3): "a/b" QoS 1 and "c/d" QoS 2.
    both_ways(
        b"\x82\x0E\x00\x01\x00\x03a/b\x01\x00\x03c/d\x02",
        ProtocolVersion::V3_1_1,
        sub(
            vec![
                (s("a/b"), qos(QoS::AtLeastOnce)),
                (s("c/d"), qos(QoS::ExactlyOnce)),
            ],
            None,
        ),
    );
    let opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let props = Properties {
        subscription_identifiers: vec![5],
        ..Properties::default()
    };
    both_ways(
        b"\x82\x09\x00\x01\x02\x0B\x05\x00\x01a\x2D",
        ProtocolVersion::V5,
        sub(vec![(s("a"), opts)], Some(Box::new(props))),
    );
    both_ways(
        b"\x82\x12\x00\x01\x00\x00\x0C$share/g/a/#\x02",
        ProtocolVersion::V5,
        sub(vec![(s("$share/g/a/#"), qos(QoS::ExactlyOnce))], None),
    );
}

#[test]
fn suback_unsubscribe_unsuback() {
    let suback = |codes: &[u8]| {
        Packet::SubAck(SubAck {
            packet_id: id(1),
            codes: codes.to_vec(),
            properties: None,
        })
    };
    both_ways(
        b"\x90\x05\x00\x01\x00\x02\x80",
        ProtocolVersion::V3_1_1,
        suback(&[0, 2, 0x80]),
    );
    both_ways(
        b"\x90\x05\x00\x01\x00\x01\x8F",
        ProtocolVersion::V5,
        suback(&[1, 0x8F]),
    );
    let unsub = Packet::Unsubscribe(Unsubscribe {
        packet_id: id(2),
        filters: vec![s("a/b"), s("+/#")],
        properties: None,
    });
    both_ways(
        b"\xA2\x0C\x00\x02\x00\x03a/b\x00\x03+/#",
        ProtocolVersion::V3_1_1,
        unsub.clone(),
    );
    both_ways(
        b"\xA2\x0D\x00\x02\x00\x00\x03a/b\x00\x03+/#",
        ProtocolVersion::V5,
        unsub,
    );
    let unsuback = |codes: &[u8]| {
        Packet::UnsubAck(UnsubAck {
            packet_id: id(2),
            codes: codes.to_vec(),
            properties: None,
        })
    };
    both_ways(b"\xB0\x02\x00\x02", ProtocolVersion::V3_1_1, unsuback(&[]));
    both_ways(
        b"\xB0\x05\x00\x02\x00\x00\x11",
        ProtocolVersion::V5,
        unsuback(&[0, 0x11]),
    );
}

#[test]
fn ping_and_disconnect() {
    for v in super::VERSIONS {
        both_ways(b"\xC0\x00", v, Packet::PingReq);
        both_ways(b"\xD0\x00", v, Packet::PingResp);
        both_ways(b"\xE0\x00", v, Packet::Disconnect(Disconnect::default()));
    }
    let props = Properties {
        session_expiry_interval: Some(0),
        ..Properties::default()
    };
    both_ways(
        b"\xE0\x07\x04\x05\x11\x00\x00\x00\x00",
        ProtocolVersion::V5,
        Packet::Disconnect(Disconnect {
            reason: 4,
            properties: Some(Box::new(props)),
        }),
    );
}

#[test]
fn user_properties_keep_their_order() {
    let props = Properties {
        user_properties: vec![(s("b"), s("1")), (s("a"), s("2")), (s("b"), s("3"))],
        reason_string: Some(s("r")),
        ..Properties::default()
    };
    let packet = Packet::PubAck(Ack {
        packet_id: id(1),
        reason: 0x10,
        properties: Some(Box::new(props)),
    });
    both_ways(
        b"\x40\x1D\x00\x01\x10\x19\x1F\x00\x01r\
          \x26\x00\x01b\x00\x011\x26\x00\x01a\x00\x012\x26\x00\x01b\x00\x013",
        ProtocolVersion::V5,
        packet,
    );
}

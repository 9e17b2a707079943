//! Writes the seed corpora under `fuzz/seeds/` with the crate's own encoder.
//!
//! ```text
//! cd fuzz && cargo run --example make_seeds
//! ```
//!
//! - `seeds/decode/`: one file per packet type and protocol level (MQTT 3.1, 3.1.1, 5.0),
//!   each a valid encoding, with and without MQTT 5 properties, plus one file holding a whole
//!   client session (several packets back to back).
//! - `seeds/connection/`: client byte streams: a CONNECT at each level followed by the
//!   packets a client sends (PUBLISH at QoS 0/1/2, PUBREL, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
//!   DISCONNECT, AUTH…), as a real client session would.
//! - `seeds/config/`: the configuration files of the repository (copied by hand, see the
//!   README), not written by this program.
//!
//! Existing files with the same names are overwritten; nothing else is touched.

use std::fs;
use std::num::NonZeroU16;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use mqtt_server::codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    Publish, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
    encode,
};

const VERSIONS: [(ProtocolVersion, &str); 3] = [
    (ProtocolVersion::V3_1, "v31"),
    (ProtocolVersion::V3_1_1, "v311"),
    (ProtocolVersion::V5, "v5"),
];

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

fn s(text: &str) -> ByteString {
    ByteString::from(text.to_owned())
}

/// MQTT 5 properties of the kind each packet may carry, or `None` below MQTT 5.
fn props(v5: bool, f: impl FnOnce(&mut Properties)) -> Option<Box<Properties>> {
    if !v5 {
        return None;
    }
    let mut p = Properties::default();
    f(&mut p);
    Some(Box::new(p))
}

fn connect(version: ProtocolVersion, id: &str, clean: bool, full: bool) -> Packet {
    let v5 = version.is_v5();
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 60,
        client_id: s(id),
        will: full.then(|| LastWill {
            topic: s("will/topic"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: props(v5, |p| {
                p.will_delay_interval = Some(1);
                p.payload_format_indicator = Some(1);
                p.message_expiry_interval = Some(60);
                p.content_type = Some(s("text/plain"));
            }),
        }),
        username: full.then(|| s("user")),
        password: full.then(|| Bytes::from_static(b"secret")),
        properties: if full {
            props(v5, |p| {
                p.session_expiry_interval = Some(30);
                p.receive_maximum = Some(10);
                p.maximum_packet_size = Some(65536);
                p.topic_alias_maximum = Some(5);
                p.request_problem_information = Some(1);
                p.request_response_information = Some(1);
                p.user_properties = vec![(s("k"), s("v"))];
            })
        } else {
            None
        },
    }))
}

fn publish(v5: bool, topic: &str, qos: QoS, retain: bool, id: u16, full: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: s(topic),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        payload: Bytes::from_static(b"hello"),
        properties: if full {
            props(v5, |p| {
                p.topic_alias = Some(1);
                p.message_expiry_interval = Some(10);
                p.response_topic = Some(s("reply/here"));
                p.correlation_data = Some(Bytes::from_static(b"corr"));
                p.user_properties = vec![(s("a"), s("b"))];
            })
        } else {
            None
        },
    })
}

fn ack(v5: bool, id: u16, full: bool) -> Ack {
    Ack {
        packet_id: pid(id),
        reason: 0,
        properties: if full {
            props(v5, |p| p.reason_string = Some(s("ok")))
        } else {
            None
        },
    }
}

fn subscribe(v5: bool, id: u16, filters: &[(&str, QoS)], full: bool) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, qos)| {
                let options = SubscriptionOptions {
                    qos: *qos,
                    no_local: v5 && full,
                    retain_as_published: v5 && full,
                    retain_handling: if v5 && full {
                        RetainHandling::SendIfNew
                    } else {
                        RetainHandling::SendAtSubscribe
                    },
                };
                (s(f), options)
            })
            .collect(),
        properties: if full {
            props(v5, |p| p.subscription_identifiers = vec![7])
        } else {
            None
        },
    })
}

fn unsubscribe(v5: bool, id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        filters: filters.iter().map(|f| s(f)).collect(),
        properties: props(v5, |p| p.user_properties = vec![(s("u"), s("p"))]),
    })
}

/// Every packet type, in both directions, valid at `version`.
fn every_packet(version: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = version.is_v5();
    let mut all = vec![
        ("connect", connect(version, "seed", true, false)),
        ("connect-full", connect(version, "seed", false, true)),
        (
            "connack",
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: 0,
                properties: props(v5, |p| {
                    p.assigned_client_identifier = Some(s("auto-1"));
                    p.server_keep_alive = Some(30);
                    p.maximum_qos = Some(1);
                    p.retain_available = Some(1);
                    p.topic_alias_maximum = Some(10);
                    p.wildcard_subscription_available = Some(1);
                    p.subscription_identifier_available = Some(1);
                    p.shared_subscription_available = Some(1);
                }),
            }),
        ),
        (
            "publish-q0",
            publish(v5, "a/b", QoS::AtMostOnce, false, 0, false),
        ),
        (
            "publish-q1",
            publish(v5, "a/b", QoS::AtLeastOnce, true, 1, false),
        ),
        (
            "publish-q2",
            publish(v5, "a/b", QoS::ExactlyOnce, false, 2, true),
        ),
        ("puback", Packet::PubAck(ack(v5, 1, false))),
        ("pubrec", Packet::PubRec(ack(v5, 2, true))),
        ("pubrel", Packet::PubRel(ack(v5, 2, false))),
        ("pubcomp", Packet::PubComp(ack(v5, 2, true))),
        (
            "subscribe",
            subscribe(
                v5,
                3,
                &[("a/+/c", QoS::AtMostOnce), ("#", QoS::ExactlyOnce)],
                true,
            ),
        ),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: pid(3),
                codes: vec![0, 2, 0x80],
                properties: props(v5, |p| p.reason_string = Some(s("r"))),
            }),
        ),
        ("unsubscribe", unsubscribe(v5, 4, &["a/+/c", "#"])),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(4),
                codes: if v5 { vec![0, 0x11] } else { Vec::new() },
                properties: None,
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        ("disconnect", Packet::Disconnect(Disconnect::default())),
    ];
    if v5 {
        all.push((
            "disconnect-full",
            Packet::Disconnect(Disconnect {
                reason: 0x04,
                properties: props(true, |p| {
                    p.session_expiry_interval = Some(0);
                    p.reason_string = Some(s("bye"));
                }),
            }),
        ));
        all.push((
            "auth",
            Packet::Auth(Auth {
                reason: 0x18,
                properties: props(true, |p| {
                    p.authentication_method = Some(s("SCRAM-SHA-256"));
                    p.authentication_data = Some(Bytes::from_static(b"n,,n=user,r=abc"));
                }),
            }),
        ));
    }
    all
}

/// Client sessions: what a client sends after its CONNECT.
fn sessions(version: ProtocolVersion) -> Vec<(&'static str, Vec<Packet>)> {
    let v5 = version.is_v5();
    let mut all = vec![
        ("connect-only", vec![connect(version, "c1", true, false)]),
        (
            "pub-q0",
            vec![
                connect(version, "c2", true, false),
                publish(v5, "t/x", QoS::AtMostOnce, false, 0, false),
                Packet::Disconnect(Disconnect::default()),
            ],
        ),
        (
            "pub-q1-retain",
            vec![
                connect(version, "c3", true, false),
                publish(v5, "t/retained", QoS::AtLeastOnce, true, 1, false),
                Packet::PingReq,
                Packet::Disconnect(Disconnect::default()),
            ],
        ),
        (
            "pub-q2-flow",
            vec![
                connect(version, "c4", true, false),
                publish(v5, "t/q2", QoS::ExactlyOnce, false, 7, true),
                Packet::PubRel(ack(v5, 7, false)),
                Packet::Disconnect(Disconnect::default()),
            ],
        ),
        (
            "sub-pub-self",
            vec![
                connect(version, "c5", true, false),
                subscribe(
                    v5,
                    1,
                    &[
                        ("t/+", QoS::ExactlyOnce),
                        ("$share/g/t/#", QoS::AtLeastOnce),
                    ],
                    true,
                ),
                publish(v5, "t/a", QoS::AtLeastOnce, false, 2, false),
                publish(v5, "t/b", QoS::ExactlyOnce, false, 3, false),
                Packet::PubAck(ack(v5, 1, false)),
                Packet::PubRec(ack(v5, 2, false)),
                Packet::PubComp(ack(v5, 2, false)),
                unsubscribe(v5, 4, &["t/+"]),
                Packet::PingReq,
                Packet::Disconnect(Disconnect::default()),
            ],
        ),
        (
            "persistent-will",
            vec![
                connect(version, "c6", false, true),
                subscribe(v5, 1, &[("will/#", QoS::AtLeastOnce)], false),
                publish(v5, "$SYS/x", QoS::AtMostOnce, false, 0, false),
            ],
        ),
        (
            "protocol-error-second-connect",
            vec![
                connect(version, "c7", true, false),
                connect(version, "c7", true, false),
            ],
        ),
    ];
    if v5 {
        all.push((
            "alias-and-auth",
            vec![
                connect(version, "c8", true, true),
                publish(true, "t/alias", QoS::AtMostOnce, false, 0, true),
                Packet::Auth(Auth::default()),
                Packet::Disconnect(Disconnect {
                    reason: 0x04,
                    properties: None,
                }),
            ],
        ));
    }
    all
}

fn write(dir: &Path, name: &str, packets: &[Packet], version: ProtocolVersion) {
    let mut out = BytesMut::new();
    for packet in packets {
        if let Err(err) = encode(packet, version, &mut out) {
            eprintln!("skipping {name}: {err}");
            return;
        }
    }
    if let Err(err) = fs::write(dir.join(name), &out) {
        eprintln!("cannot write {name}: {err}");
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let decode_dir = root.join("decode");
    let connection_dir = root.join("connection");
    for dir in [&decode_dir, &connection_dir] {
        if let Err(err) = fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {err}", dir.display());
            return;
        }
    }
    for (version, tag) in VERSIONS {
        let packets = every_packet(version);
        for (name, packet) in &packets {
            write(
                &decode_dir,
                &format!("{tag}-{name}"),
                std::slice::from_ref(packet),
                version,
            );
        }
        let stream: Vec<Packet> = packets.into_iter().map(|(_, p)| p).collect();
        write(&decode_dir, &format!("{tag}-all"), &stream, version);
        for (name, session) in sessions(version) {
            write(&connection_dir, &format!("{tag}-{name}"), &session, version);
        }
    }
}

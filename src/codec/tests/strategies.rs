//! Proptest strategies producing valid packets for a given protocol level.

use bytes::Bytes;
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

use crate::codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketId, Properties,
    ProtocolVersion, Publish, QoS, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

/// Any string field: multi-byte characters included, no U+0000.
pub fn text() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 /_+#$é€😀-]{0,12}".prop_map(ByteString::from)
}

/// A valid, non-empty topic name.
pub fn topic() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 /_$é€😀-]{1,16}".prop_map(ByteString::from)
}

/// Binary data.
pub fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// A valid topic filter, possibly shared. Returns the filter and whether it is shared.
pub fn filter() -> impl Strategy<Value = (ByteString, bool)> {
    let level = prop_oneof![Just("+".to_owned()), "[a-z0-9 $é-]{0,5}"];
    let plain = (vec(level, 1..5), any::<bool>()).prop_map(|(levels, hash)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str(if f.is_empty() { "#" } else { "/#" });
        }
        if f.is_empty() { "#".to_owned() } else { f }
    });
    (plain, of("[a-z0-9_-]{1,6}")).prop_map(|(f, group)| match group {
        Some(g) => (ByteString::from(format!("$share/{g}/{f}")), true),
        None => (ByteString::from(f), false),
    })
}

/// A non-zero packet id.
pub fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|v| PacketId::new(v).unwrap_or(PacketId::MIN))
}

/// Any QoS.
pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// Every property with a valid value, then cut down to a packet's set by [`keep`].
fn any_properties() -> impl Strategy<Value = Properties> {
    let flag = || of(0..=1u8);
    let a = (
        flag(),
        of(any::<u32>()),
        of(text()),
        of(topic()),
        of(binary(8)),
        vec(1..=268_435_455u32, 0..3),
        of(any::<u32>()),
        of(text()),
        of(any::<u16>()),
        of(text()),
        of(binary(8)),
        flag(),
    );
    let b = (
        of(any::<u32>()),
        flag(),
        of(text()),
        of(text()),
        of(text()),
        of(1..=u16::MAX),
        of(any::<u16>()),
        of(1..=u16::MAX),
        flag(),
        flag(),
        vec((text(), text()), 0..3),
        of(1..=u32::MAX),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: a.9,
        authentication_data: a.10,
        request_problem_information: a.11,
        will_delay_interval: b.0,
        request_response_information: b.1,
        response_information: b.2,
        server_reference: b.3,
        reason_string: b.4,
        receive_maximum: b.5,
        topic_alias_maximum: b.6,
        topic_alias: b.7,
        maximum_qos: b.8,
        retain_available: b.9,
        user_properties: b.10,
        maximum_packet_size: b.11,
        wildcard_subscription_available: c.0,
        subscription_identifier_available: c.1,
        shared_subscription_available: c.2,
    })
}

/// Property sets per packet (MQTT 5.0 table 2-4), for the strategies.
#[derive(Clone, Copy)]
pub enum Kind {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    Unsubscribe,
    Disconnect,
    Auth,
}

impl Kind {
    fn ids(self) -> &'static [u8] {
        match self {
            Kind::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
            Kind::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
            Kind::ConnAck => &[
                0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
                0x28, 0x29, 0x2A,
            ],
            Kind::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
            Kind::Ack => &[0x1F, 0x26],
            Kind::Subscribe => &[0x0B, 0x26],
            Kind::Unsubscribe => &[0x26],
            Kind::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
            Kind::Auth => &[0x15, 0x16, 0x1F, 0x26],
        }
    }
}

/// Clears every property `kind` may not carry; `None` if nothing is left.
fn keep(mut p: Properties, kind: Kind) -> Option<Box<Properties>> {
    let ids = kind.ids();
    let has = |id: u8| ids.contains(&id);
    macro_rules! clear {
        ($($id:literal => $field:ident),* $(,)?) => {
            $(if !has($id) { p.$field = Default::default(); })*
        };
    }
    clear!(
        0x01 => payload_format_indicator, 0x02 => message_expiry_interval,
        0x03 => content_type, 0x08 => response_topic, 0x09 => correlation_data,
        0x0B => subscription_identifiers, 0x11 => session_expiry_interval,
        0x12 => assigned_client_identifier, 0x13 => server_keep_alive,
        0x15 => authentication_method, 0x16 => authentication_data,
        0x17 => request_problem_information, 0x18 => will_delay_interval,
        0x19 => request_response_information, 0x1A => response_information,
        0x1C => server_reference, 0x1F => reason_string, 0x21 => receive_maximum,
        0x22 => topic_alias_maximum, 0x23 => topic_alias, 0x24 => maximum_qos,
        0x25 => retain_available, 0x26 => user_properties, 0x27 => maximum_packet_size,
        0x28 => wildcard_subscription_available, 0x29 => subscription_identifier_available,
        0x2A => shared_subscription_available,
    );
    if matches!(kind, Kind::Subscribe) {
        p.subscription_identifiers.truncate(1);
    }
    // Authentication Data requires Authentication Method.
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    (p != Properties::default()).then(|| Box::new(p))
}

/// Properties for `kind` at `version`: always `None` before MQTT 5.
pub fn props(version: ProtocolVersion, kind: Kind) -> BoxedStrategy<Option<Box<Properties>>> {
    if version.is_v5() {
        prop_oneof![
            1 => Just(None),
            2 => any_properties().prop_map(move |p| keep(p, kind)),
        ]
        .boxed()
    } else {
        Just(None).boxed()
    }
}

/// A reason code from `codes` for MQTT 5, 0 before.
fn reason(version: ProtocolVersion, codes: &'static [u8]) -> BoxedStrategy<u8> {
    if version.is_v5() {
        proptest::sample::select(codes).boxed()
    } else {
        Just(0).boxed()
    }
}

const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V3_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic(),
        binary(20),
        qos(),
        any::<bool>(),
        props(v, Kind::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(),
        of(will),
        of(text()),
        of(binary(10)),
        props(v, Kind::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // [MQTT-3.1.2-22]: before 5.0 a password needs a user name
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() {
        proptest::sample::select(CONNACK_CODES).boxed()
    } else {
        any::<u8>().boxed()
    };
    (any::<bool>(), code, props(v, Kind::ConnAck)).prop_map(move |(present, code, properties)| {
        Packet::ConnAck(ConnAck {
            session_present: present && v != ProtocolVersion::V3_1,
            code,
            properties,
        })
    })
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if v.is_v5() {
        prop_oneof![1 => Just(ByteString::new()), 5 => topic()].boxed()
    } else {
        topic().boxed()
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        packet_id(),
        binary(300),
        props(v, Kind::Publish),
    )
        .prop_map(|(dup, qos, retain, topic, id, payload, properties)| {
            let qos0 = qos == QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: (!qos0).then_some(id),
                payload,
                properties,
            })
        })
}

fn ack(v: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    (packet_id(), reason(v, codes), props(v, Kind::Ack)).prop_map(
        |(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        },
    )
}

fn options(v: ProtocolVersion, shared: bool) -> BoxedStrategy<SubscriptionOptions> {
    if !v.is_v5() {
        return qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            })
            .boxed();
    }
    let rh = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), rh)
        .prop_map(move |(qos, nl, rap, retain_handling)| SubscriptionOptions {
            qos,
            // [MQTT-3.8.3-4]: No Local is not allowed on shared subscriptions
            no_local: nl && !shared,
            retain_as_published: rap,
            retain_handling,
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let entry = filter().prop_flat_map(move |(f, shared)| (Just(f), options(v, shared)));
    (packet_id(), vec(entry, 1..4), props(v, Kind::Subscribe)).prop_map(
        |(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        },
    )
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() {
        SUBACK_CODES
    } else {
        SUBACK_V3_CODES
    };
    (
        packet_id(),
        vec(proptest::sample::select(codes), 1..5),
        props(v, Kind::Ack),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(filter().prop_map(|(f, _)| f), 1..4),
        props(v, Kind::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let n = if v.is_v5() { 1..5 } else { 0..1 };
    (
        packet_id(),
        vec(proptest::sample::select(UNSUBACK_CODES), n),
        props(v, Kind::Ack),
    )
        .prop_map(|(packet_id, codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                codes,
                properties,
            })
        })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (reason(v, DISCONNECT_CODES), props(v, Kind::Disconnect))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        proptest::sample::select(AUTH_CODES),
        props(ProtocolVersion::V5, Kind::Auth),
    )
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any valid packet at `v`, of every type that level has.
pub fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        ack(v, PUBACK_CODES).prop_map(Packet::PubAck),
        ack(v, PUBACK_CODES).prop_map(Packet::PubRec),
        ack(v, PUBREL_CODES).prop_map(Packet::PubRel),
        ack(v, PUBREL_CODES).prop_map(Packet::PubComp),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    if v.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

/// A protocol level and a valid packet for it.
pub fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    proptest::sample::select(super::VERSIONS.to_vec()).prop_flat_map(|v| (Just(v), packet(v)))
}

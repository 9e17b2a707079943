//! MQTT 5.0 over real sockets: properties and their errors, CONNACK, session expiry, server
//! DISCONNECT reasons, topic aliases, flow control, maximum packet size, message expiry,
//! subscription options and identifiers, will delay, shared subscriptions and enhanced
//! authentication (SCRAM-SHA-256).
//!
//! Every test drives raw packets (the crate's own codec, or hand-written bytes for what the
//! encoder cannot express) against a broker on an ephemeral port. Negative checks ("nothing
//! arrives") follow a positive barrier; timers are checked both "not before" (a short silence
//! window) and "after" (a bounded wait). Statement ids are those of MQTT 5.0 (mqtt-v5.0-os).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use mqtt_server::codec::{
    self, Ack, Auth, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion,
    Publish, QoS, RetainHandling, Subscribe, SubscriptionOptions, Unsubscribe,
};
use mqtt_server::config::SharedStrategy;
use tokio::time::Instant;

const V5: ProtocolVersion = ProtocolVersion::V5;
/// How long "nothing arrives" is watched for, after a barrier has shown the broker is idle.
const SILENCE: Duration = Duration::from_millis(300);
/// The SCRAM method the broker has built in.
const SCRAM: &str = "SCRAM-SHA-256";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A v5 CONNECT without properties.
fn connect5(client_id: &str, clean_start: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: V5,
        ..connect_packet(client_id, clean_start, keep_alive)
    }
}

/// `connect` with CONNECT properties `p`.
fn with_props(mut connect: Connect, p: Properties) -> Connect {
    connect.properties = Some(Box::new(p));
    connect
}

/// A v5 CONNECT asking for Session Expiry Interval `expiry`.
fn connect_expiry(client_id: &str, clean_start: bool, expiry: u32) -> Connect {
    with_props(
        connect5(client_id, clean_start, 60),
        Properties {
            session_expiry_interval: Some(expiry),
            ..Properties::default()
        },
    )
}

/// A socket that speaks MQTT 5 (nothing sent yet).
async fn open5(b: &TestBroker) -> RawClient {
    let mut c = RawClient::open(b.addr).await;
    c.version = V5;
    c
}

/// Sends `connect` and returns the CONNACK, whatever its code.
async fn handshake(b: &TestBroker, connect: Connect) -> (RawClient, ConnAck) {
    let mut c = open5(b).await;
    c.send(Packet::Connect(Box::new(connect))).await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => (c, a),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Sends `connect` and requires CONNACK 0x00.
async fn connect_ok(b: &TestBroker, connect: Connect) -> (RawClient, ConnAck) {
    let (c, a) = handshake(b, connect).await;
    assert_eq!(a.code, 0, "[MQTT-3.1.4-5] CONNACK 0x00 expected, got {a:?}");
    (c, a)
}

/// A connected v5 client: Clean Start 1, keep-alive 60, no properties.
async fn client5(b: &TestBroker, client_id: &str) -> RawClient {
    connect_ok(b, connect5(client_id, true, 60)).await.0
}

/// The properties of a CONNACK (empty when it has none).
fn connack_props(a: &ConnAck) -> Properties {
    a.properties.as_deref().cloned().unwrap_or_default()
}

/// The properties of a PUBLISH (empty when it has none).
fn pub_props(p: &Publish) -> Properties {
    p.properties.as_deref().cloned().unwrap_or_default()
}

/// A v5 PUBLISH.
fn pub5(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    id: Option<u16>,
    props: Option<Properties>,
) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: id.map(pid),
        payload: Bytes::copy_from_slice(payload),
        properties: props.map(Box::new),
    })
}

/// A retained v5 PUBLISH at QoS 0.
fn retained5(topic: &str, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: ByteString::from(topic),
        packet_id: None,
        payload: Bytes::copy_from_slice(payload),
        properties: None,
    })
}

/// Subscription options with maximum QoS `qos` and everything else default.
fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// A v5 SUBSCRIBE, with Subscription Identifier `sub_id` if given.
fn subscribe5(id: u16, filters: &[(&str, SubscriptionOptions)], sub_id: Option<u32>) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, o)| (ByteString::from(*f), *o))
            .collect(),
        properties: sub_id.map(|s| {
            Box::new(Properties {
                subscription_identifiers: vec![s],
                ..Properties::default()
            })
        }),
    })
}

/// Subscribes and returns the SUBACK codes.
async fn sub5(
    c: &mut RawClient,
    id: u16,
    filters: &[(&str, SubscriptionOptions)],
    sub_id: Option<u32>,
) -> Vec<u8> {
    c.send(subscribe5(id, filters, sub_id)).await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => {
            assert_eq!(s.packet_id, pid(id), "[MQTT-3.8.4-2] SUBACK packet id");
            s.codes
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// Subscribes to one filter at `qos` and requires it granted.
async fn sub_one(c: &mut RawClient, id: u16, filter: &str, qos: QoS) {
    let codes = sub5(c, id, &[(filter, opts(qos))], None).await;
    assert_eq!(codes, vec![qos as u8], "SUBACK for {filter}");
}

/// Acknowledges a QoS 1 delivery.
async fn puback(c: &mut RawClient, p: &Publish) {
    let id = p.packet_id.expect("QoS 1 delivery has a packet id");
    c.send(Packet::PubAck(Ack::new(id))).await;
}

/// Publishes at QoS 1 and returns the PUBACK reason code.
async fn publish_qos1(
    c: &mut RawClient,
    topic: &str,
    payload: &[u8],
    id: u16,
    props: Option<Properties>,
) -> u8 {
    c.send(pub5(topic, payload, QoS::AtLeastOnce, Some(id), props))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id, pid(id), "[MQTT-2.2.1-5] PUBACK packet id");
            a.reason
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

/// The packet encoded as MQTT 5 bytes.
fn enc(packet: &Packet) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    codec::encode(packet, V5, &mut out).expect("encodable test packet");
    out.to_vec()
}

/// A Variable Byte Integer.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// A whole packet: first byte, remaining length, body.
fn raw(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A property block: length, then the given property bytes.
fn props_block(content: &[u8]) -> Vec<u8> {
    let mut out = varint(content.len());
    out.extend_from_slice(content);
    out
}

/// A UTF-8 string field.
fn str_field(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A SUBSCRIBE (packet id 1) of one filter with a raw options byte and raw property bytes.
fn raw_subscribe(filter: &str, options: u8, props: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(props_block(props));
    body.extend(str_field(filter));
    body.push(options);
    raw(0x82, &body)
}

/// Requires the next packet to be a DISCONNECT with `code`, then nothing more and the close
/// ([MQTT-3.14.4-1], [MQTT-3.14.4-2]).
async fn expect_disconnect(c: &mut RawClient, code: u8, what: &str) {
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(
            d.reason, code,
            "{what}: DISCONNECT reason {:#04x}, expected {code:#04x}",
            d.reason
        ),
        other => panic!("{what}: expected DISCONNECT {code:#04x}, got {other:?}"),
    }
    match c.recv_within(WAIT).await {
        Ok(None) => {}
        Ok(Some(p)) => panic!("{what}: [MQTT-3.14.4-1] nothing may follow DISCONNECT, got {p:?}"),
        Err(()) => panic!("{what}: [MQTT-3.14.4-2] connection not closed after DISCONNECT"),
    }
}

/// Connects an offender, sends it `bytes`, and requires DISCONNECT `code` and the close; a
/// bystander on the same broker keeps working throughout (section 4.13.1: an error on one
/// session never affects others).
async fn offence_closes(b: &TestBroker, bytes: Vec<u8>, code: u8, what: &str) {
    let mut bystander = client5(b, "bystander").await;
    sub_one(&mut bystander, 1, "bystander/t", QoS::AtMostOnce).await;
    let mut offender = client5(b, "offender").await;
    offender.send_bytes(&bytes).await;
    expect_disconnect(&mut offender, code, what).await;
    let local = b.broker.local_client("bystander-publisher");
    local
        .publish("bystander/t", "still here", QoS::AtMostOnce, false)
        .expect("valid topic");
    let p = bystander.recv_publish().await;
    assert_eq!(
        &p.payload[..],
        b"still here",
        "the bystander still gets messages"
    );
    bystander.ping_barrier().await;
}

/// Sends a faulty CONNECT and requires the connection closed: [MQTT-3.1.4-1] / 4.13.1 the server
/// MAY first send CONNACK with the reason code, and [MQTT-3.14.0-1] never a DISCONNECT before a
/// successful CONNACK. No session may be created.
async fn connect_refused_and_closed(b: &TestBroker, connect: Connect, code: u8, what: &str) {
    let mut c = open5(b).await;
    c.send(Packet::Connect(Box::new(connect))).await;
    match c.recv_within(WAIT).await {
        Ok(None) => {}
        Ok(Some(Packet::ConnAck(a))) => {
            assert_eq!(a.code, code, "{what}: CONNACK reason code");
            assert!(!a.session_present, "{what}: [MQTT-3.2.2-6]");
            match c.recv_within(WAIT).await {
                Ok(None) => {}
                other => {
                    panic!("{what}: [MQTT-3.2.2-7] expected close after CONNACK, got {other:?}")
                }
            }
        }
        Ok(Some(p)) => panic!(
            "{what}: [MQTT-3.14.0-1] only a refusing CONNACK may precede the close, got {p:?}"
        ),
        Err(()) => panic!("{what}: [MQTT-3.1.4-1] connection not closed"),
    }
    assert_eq!(
        b.broker.session_count(),
        0,
        "{what}: no session was created"
    );
}

/// Waits until exactly `n` connections are open on the broker (connections that just ended
/// have finished their exit path: session detached, will handled).
async fn wait_connections(b: &TestBroker, n: u64) {
    wait_until(&format!("{n} open connections"), || {
        b.broker.metrics().connections_current == n
    })
    .await;
}

fn utf8(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).expect("test payloads are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// 1. Malformed packets and protocol errors: DISCONNECT with the reason code, then close
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn duplicate_property_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    // PUBLISH QoS 0 "t" with Payload Format Indicator (0x01) twice.
    let mut body = str_field("t");
    body.extend(props_block(&[0x01, 0x00, 0x01, 0x00]));
    body.extend_from_slice(b"x");
    offence_closes(
        &b,
        raw(0x30, &body),
        0x82,
        "section 2.2.2.2: a single-valued property twice is a Protocol Error",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn property_not_allowed_in_the_packet_type_is_malformed_0x81() {
    let b = TestBroker::start().await;
    // PUBLISH QoS 0 "t" carrying Session Expiry Interval (0x11), a CONNECT/DISCONNECT property.
    let mut body = str_field("t");
    body.extend(props_block(&[0x11, 0, 0, 0, 5]));
    body.extend_from_slice(b"x");
    offence_closes(
        &b,
        raw(0x30, &body),
        0x81,
        "section 2.2.2.2: a property not defined for the packet type is a Malformed Packet",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn receive_maximum_zero_in_connect_closes_without_disconnect() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("rm0", true, 60),
        Properties {
            receive_maximum: Some(0),
            ..Properties::default()
        },
    );
    connect_refused_and_closed(
        &b,
        connect,
        0x82,
        "section 3.1.2.11.3: Receive Maximum 0 is a Protocol Error",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn maximum_packet_size_zero_in_connect_closes_without_disconnect() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("mps0", true, 60),
        Properties {
            maximum_packet_size: Some(0),
            ..Properties::default()
        },
    );
    connect_refused_and_closed(
        &b,
        connect,
        0x82,
        "section 3.1.2.11.4: Maximum Packet Size 0 is a Protocol Error",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn topic_alias_zero_is_topic_alias_invalid_0x94() {
    let b = TestBroker::start().await;
    let props = Properties {
        topic_alias: Some(0),
        ..Properties::default()
    };
    offence_closes(
        &b,
        enc(&pub5("t", b"x", QoS::AtMostOnce, None, Some(props))),
        0x94,
        "[MQTT-3.3.2-8] Topic Alias 0",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn topic_alias_above_the_maximum_is_topic_alias_invalid_0x94() {
    let b = TestBroker::start().await;
    let props = Properties {
        topic_alias: Some(11),
        ..Properties::default()
    };
    offence_closes(
        &b,
        enc(&pub5("t", b"x", QoS::AtMostOnce, None, Some(props))),
        0x94,
        "[MQTT-3.3.2-9] [MQTT-3.2.2-17] Topic Alias 11 above the CONNACK Topic Alias Maximum 10",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn empty_topic_with_an_unknown_alias_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    let props = Properties {
        topic_alias: Some(3),
        ..Properties::default()
    };
    offence_closes(
        &b,
        enc(&pub5("", b"x", QoS::AtMostOnce, None, Some(props))),
        0x82,
        "section 3.3.4: empty Topic Name with an alias never defined",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn empty_topic_without_an_alias_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    offence_closes(
        &b,
        enc(&pub5("", b"x", QoS::AtMostOnce, None, None)),
        0x82,
        "section 3.3.2.1: zero-length Topic Name and no Topic Alias",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn subscription_identifier_in_a_client_publish_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    let props = Properties {
        subscription_identifiers: vec![1],
        ..Properties::default()
    };
    offence_closes(
        &b,
        enc(&pub5("t", b"x", QoS::AtMostOnce, None, Some(props))),
        0x82,
        "[MQTT-3.3.4-6] Subscription Identifier in a client PUBLISH",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn subscription_identifier_zero_in_subscribe_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    offence_closes(
        &b,
        raw_subscribe("t", 0x00, &[0x0B, 0x00]),
        0x82,
        "section 3.8.2.1.2: Subscription Identifier 0",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn response_topic_with_a_wildcard_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    let props = Properties {
        response_topic: Some("reply/+".into()),
        ..Properties::default()
    };
    offence_closes(
        &b,
        enc(&pub5("t", b"x", QoS::AtMostOnce, None, Some(props))),
        0x82,
        "[MQTT-3.3.2-14] Response Topic with a wildcard",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn payload_format_indicator_2_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    let props = Properties {
        payload_format_indicator: Some(2),
        ..Properties::default()
    };
    offence_closes(
        &b,
        enc(&pub5("t", b"x", QoS::AtMostOnce, None, Some(props))),
        0x82,
        "section 3.3.2.3.2: Payload Format Indicator is 0 or 1",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    let options = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    offence_closes(
        &b,
        enc(&subscribe5(1, &[("$share/g/t", options)], None)),
        0x82,
        "[MQTT-3.8.3-4] No Local on a Shared Subscription",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn auth_from_a_client_without_authentication_method_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    let auth = Packet::Auth(Auth {
        reason: 0x19,
        properties: None,
    });
    offence_closes(
        &b,
        enc(&auth),
        0x82,
        "[MQTT-4.12.0-7] AUTH although CONNECT had no Authentication Method",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn subscription_options_qos_3_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    offence_closes(
        &b,
        raw_subscribe("t", 0x03, &[]),
        0x82,
        "section 3.8.3.1: Maximum QoS 3",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn retain_handling_3_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    offence_closes(
        &b,
        raw_subscribe("t", 0x30, &[]),
        0x82,
        "section 3.8.3.1: Retain Handling 3",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn reserved_subscription_option_bits_are_malformed_0x81() {
    let b = TestBroker::start().await;
    offence_closes(
        &b,
        raw_subscribe("t", 0x40, &[]),
        0x81,
        "[MQTT-3.8.3-5] reserved bit 6 of the subscription options",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error_0x82() {
    let b = TestBroker::start().await;
    offence_closes(
        &b,
        enc(&Packet::Connect(Box::new(connect5("offender", true, 60)))),
        0x82,
        "[MQTT-3.1.0-2] second CONNECT",
    )
    .await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. CONNACK
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connack_assigns_unique_client_identifiers_for_empty_ones() {
    let b = TestBroker::start().await;
    let (mut first, a1) = connect_ok(&b, connect5("", true, 60)).await;
    let id1 = connack_props(&a1)
        .assigned_client_identifier
        .expect("[MQTT-3.1.3-7] CONNACK carries the Assigned Client Identifier");
    assert!(!id1.is_empty(), "[MQTT-3.1.3-6] a real identifier");
    // MQTT 5 allows an empty id with Clean Start 0 too.
    let (_c2, a2) = connect_ok(&b, connect_expiry("", false, 60)).await;
    assert!(!a2.session_present, "[MQTT-3.2.2-3] no stored session");
    let id2 = connack_props(&a2)
        .assigned_client_identifier
        .expect("[MQTT-3.1.3-7] assigned with Clean Start 0 too");
    assert_ne!(id1, id2, "[MQTT-3.2.2-16] not used by any other session");
    // [MQTT-3.1.3-7] the connection is processed as if that id had been sent: a client that
    // connects with it now takes the first connection over.
    let (_taker, _) = connect_ok(&b, connect5(&id1, true, 60)).await;
    expect_disconnect(
        &mut first,
        0x8E,
        "[MQTT-3.1.4-3] takeover of the assigned id",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn connack_server_keep_alive_caps_the_clients_keep_alive() {
    let mut config = test_config();
    config.mqtt.max_keepalive = 60;
    let b = TestBroker::start_with(config).await;
    for (asked, told) in [(0u16, Some(60u16)), (100, Some(60)), (30, None), (60, None)] {
        let (c, a) = connect_ok(&b, connect5(&format!("ka{asked}"), true, asked)).await;
        assert_eq!(
            connack_props(&a).server_keep_alive,
            told,
            "[MQTT-3.2.2-21] / [MQTT-3.2.2-22] Server Keep Alive for a keep-alive of {asked}"
        );
        c.disconnect().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn connack_session_expiry_is_capped_by_the_broker() {
    let mut config = test_config();
    config.mqtt.session_expiry_interval = 100;
    let b = TestBroker::start_with(config).await;
    let (_c, a) = connect_ok(&b, connect_expiry("cap", true, 1000)).await;
    assert_eq!(
        connack_props(&a).session_expiry_interval,
        Some(100),
        "section 3.2.2.3.2: the server's Session Expiry Interval when it differs"
    );
    let (_d, a) = connect_ok(&b, connect_expiry("under", true, 50)).await;
    assert_eq!(
        connack_props(&a).session_expiry_interval,
        None,
        "the requested 50 is granted as is"
    );
    b.stop().await;
}

#[tokio::test]
async fn connack_session_present_when_a_session_is_resumed() {
    let b = TestBroker::start().await;
    let (mut c, a) = connect_ok(&b, connect_expiry("resume", false, 60)).await;
    assert!(!a.session_present, "[MQTT-3.2.2-3] nothing stored yet");
    sub_one(&mut c, 1, "resume/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connections(&b, 0).await;
    let (mut c, a) = connect_ok(&b, connect_expiry("resume", false, 60)).await;
    assert!(
        a.session_present,
        "[MQTT-3.2.2-3] the stored session is resumed"
    );
    let local = b.broker.local_client("pub");
    local
        .publish("resume/t", "kept", QoS::AtMostOnce, false)
        .expect("topic");
    assert_eq!(
        &c.recv_publish().await.payload[..],
        b"kept",
        "[MQTT-3.1.2-5] the subscription came back with the session"
    );
    c.disconnect().await;
    wait_connections(&b, 1).await;
    let (_c, a) = connect_ok(&b, connect_expiry("resume", true, 60)).await;
    assert!(
        !a.session_present,
        "[MQTT-3.2.2-2] Clean Start 1: Session Present 0"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Session expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn session_with_expiry_zero_ends_at_disconnect() {
    let b = TestBroker::start().await;
    // No Session Expiry Interval: 0 (section 3.1.2.11.2).
    let (mut c, _) = connect_ok(&b, connect5("zero", false, 60)).await;
    sub_one(&mut c, 1, "zero/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connections(&b, 0).await;
    assert_eq!(
        b.broker.session_count(),
        0,
        "[MQTT-4.1.0-2] the session is gone"
    );
    let (_c, a) = connect_ok(&b, connect5("zero", false, 60)).await;
    assert!(!a.session_present, "[MQTT-3.2.2-3] no session to resume");
    b.stop().await;
}

#[tokio::test]
async fn session_resumed_within_expiry_delivers_queued_qos1_messages() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("keep", false, 2)).await;
    sub_one(&mut c, 1, "keep/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connections(&b, 0).await;
    let mut p = client5(&b, "publisher").await;
    for (i, payload) in [b"one", b"two"].iter().enumerate() {
        let reason = publish_qos1(&mut p, "keep/t", *payload, i as u16 + 1, None).await;
        assert_eq!(reason, 0, "the offline session still matches (not 0x10)");
    }
    let (mut c, a) = connect_ok(&b, connect_expiry("keep", false, 2)).await;
    assert!(a.session_present, "[MQTT-3.1.2-23] kept within its expiry");
    for want in [&b"one"[..], b"two"] {
        let m = c.recv_publish().await;
        assert_eq!(
            &m.payload[..],
            want,
            "[MQTT-3.1.2-23] queued QoS 1 messages, in order"
        );
        assert_eq!(m.qos, QoS::AtLeastOnce);
        puback(&mut c, &m).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn session_is_discarded_after_its_expiry_interval() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("short", false, 1)).await;
    sub_one(&mut c, 1, "short/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connections(&b, 0).await;
    let gone_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.broker.session_count(),
        1,
        "[MQTT-3.1.2-23] still kept before 1 s"
    );
    wait_until("the session expires", || b.broker.session_count() == 0).await;
    assert!(
        gone_at.elapsed() >= Duration::from_millis(900),
        "[MQTT-4.1.0-2] discarded only after the interval ({:?})",
        gone_at.elapsed()
    );
    let (_c, a) = connect_ok(&b, connect_expiry("short", false, 1)).await;
    assert!(
        !a.session_present,
        "[MQTT-4.1.0-2] nothing to resume after expiry"
    );
    b.stop().await;
}

#[tokio::test]
async fn disconnect_raising_session_expiry_from_zero_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect5("raise", false, 60)).await;
    sub_one(&mut c, 1, "raise/t", QoS::AtLeastOnce).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(5),
            ..Properties::default()
        })),
    }))
    .await;
    expect_disconnect(
        &mut c,
        0x82,
        "section 3.14.2.2.2: Session Expiry 0 in CONNECT, non-zero in DISCONNECT",
    )
    .await;
    wait_connections(&b, 0).await;
    let (_c, a) = connect_ok(&b, connect5("raise", false, 60)).await;
    assert!(
        !a.session_present,
        "the session still ended with the connection"
    );
    b.stop().await;
}

#[tokio::test]
async fn disconnect_may_lower_a_non_zero_session_expiry_to_zero() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("lower", false, 60)).await;
    sub_one(&mut c, 1, "lower/t", QoS::AtLeastOnce).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(0),
            ..Properties::default()
        })),
    }))
    .await;
    match c.recv_within(WAIT).await {
        Ok(None) => {}
        other => panic!("a valid DISCONNECT is answered by the close only, got {other:?}"),
    }
    wait_connections(&b, 0).await;
    assert_eq!(
        b.broker.session_count(),
        0,
        "section 3.14.2.2.2: the DISCONNECT's expiry 0 ends the session"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Server-sent DISCONNECT reasons
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn takeover_sends_session_taken_over_0x8e_to_the_old_connection() {
    let b = TestBroker::start().await;
    let mut old = client5(&b, "same").await;
    let (_new, _) = connect_ok(&b, connect5("same", true, 60)).await;
    expect_disconnect(&mut old, 0x8E, "[MQTT-3.1.4-3] session taken over").await;
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_timeout_sends_0x8d() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect5("sleepy", true, 1)).await;
    let since = Instant::now();
    expect_disconnect(&mut c, 0x8D, "[MQTT-3.1.2-22] keep-alive timeout").await;
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(1200),
        "[MQTT-3.1.2-22] not before 1.5 x keep-alive ({waited:?})"
    );
    b.stop().await;
}

#[tokio::test]
async fn packet_larger_than_the_servers_maximum_gets_0x95() {
    let mut config = test_config();
    config.limits.max_packet_size = 256;
    let b = TestBroker::start_with(config).await;
    let (mut c, a) = connect_ok(&b, connect5("big", true, 60)).await;
    assert_eq!(
        connack_props(&a).maximum_packet_size,
        Some(256),
        "CONNACK announces the limit"
    );
    // Just under the limit is fine...
    c.send(pub5("t", &[b'x'; 200], QoS::AtMostOnce, None, None))
        .await;
    c.ping_barrier().await;
    // ...just over is not.
    c.send(pub5("t", &[b'x'; 300], QoS::AtMostOnce, None, None))
        .await;
    expect_disconnect(&mut c, 0x95, "[MQTT-3.2.2-15] packet too large").await;
    b.stop().await;
}

#[tokio::test]
async fn broker_shutdown_sends_server_shutting_down_0x8b() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "stay").await;
    c.ping_barrier().await;
    b.broker.shutdown().await;
    expect_disconnect(&mut c, 0x8B, "server shutting down").await;
}

// ---------------------------------------------------------------------------------------------
// 5. Topic aliases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_topic_alias_is_defined_used_and_redefined() {
    let b = TestBroker::start().await;
    let mut sub = client5(&b, "alias-sub").await;
    sub_one(&mut sub, 1, "alias/#", QoS::AtMostOnce).await;
    let mut p = client5(&b, "alias-pub").await;
    let alias = |a| {
        Some(Properties {
            topic_alias: Some(a),
            ..Properties::default()
        })
    };
    let sends = [
        ("alias/one", "1", 1u16),
        ("", "2", 1),
        ("alias/two", "3", 1),
        ("", "4", 1),
        ("alias/ten", "5", 10),
        ("", "6", 10),
    ];
    for (topic, payload, a) in sends {
        p.send(pub5(
            topic,
            payload.as_bytes(),
            QoS::AtMostOnce,
            None,
            alias(a),
        ))
        .await;
    }
    p.ping_barrier().await;
    let expected = [
        ("alias/one", "1"),
        ("alias/one", "2"),
        ("alias/two", "3"),
        ("alias/two", "4"),
        ("alias/ten", "5"),
        ("alias/ten", "6"),
    ];
    for (topic, payload) in expected {
        let m = sub.recv_publish().await;
        assert_eq!(
            (&*m.topic, utf8(&m)),
            (topic, payload),
            "[MQTT-3.3.2-12] alias resolved (a non-empty topic redefines it, section 3.3.4)"
        );
        assert_eq!(
            pub_props(&m).topic_alias,
            None,
            "[MQTT-3.1.2-27] the publisher's alias is not forwarded to a client without aliases"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn client_topic_aliases_do_not_survive_the_connection() {
    let b = TestBroker::start().await;
    let mut p = client5(&b, "alias-forget").await;
    let alias = Properties {
        topic_alias: Some(1),
        ..Properties::default()
    };
    p.send(pub5(
        "a/b",
        b"x",
        QoS::AtMostOnce,
        None,
        Some(alias.clone()),
    ))
    .await;
    p.ping_barrier().await;
    p.disconnect().await;
    let mut p = client5(&b, "alias-forget").await;
    p.send(pub5("", b"y", QoS::AtMostOnce, None, Some(alias)))
        .await;
    expect_disconnect(
        &mut p,
        0x82,
        "[MQTT-3.3.2-7] the alias of the previous connection is unknown",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn server_assigns_topic_aliases_up_to_the_clients_maximum() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("alias-recv", true, 60),
        Properties {
            topic_alias_maximum: Some(2),
            ..Properties::default()
        },
    );
    let (mut sub, _) = connect_ok(&b, connect).await;
    sub_one(&mut sub, 1, "ta/#", QoS::AtMostOnce).await;
    let local = b.broker.local_client("ta-pub");
    for topic in ["ta/1", "ta/1", "ta/2", "ta/3", "ta/3", "ta/2", "ta/1"] {
        local
            .publish(topic, topic.to_string(), QoS::AtMostOnce, false)
            .expect("topic");
    }
    // (topic on the wire, alias) expected for each delivery.
    let expected = [
        ("ta/1", Some(1)),
        ("", Some(1)),
        ("ta/2", Some(2)),
        ("ta/3", None),
        ("ta/3", None),
        ("", Some(2)),
        ("", Some(1)),
    ];
    let mut aliases: std::collections::HashMap<u16, String> = Default::default();
    for (i, (topic, alias)) in expected.into_iter().enumerate() {
        let m = sub.recv_publish().await;
        let a = pub_props(&m).topic_alias;
        assert_eq!(
            (&*m.topic, a),
            (topic, alias),
            "delivery {i} ({}): first use full topic + alias, then empty topic + alias; \
             no alias once both are used ([MQTT-3.3.2-11] never above 2)",
            utf8(&m)
        );
        // The payload is the real topic: the alias must resolve to it.
        let resolved = match (a, m.topic.is_empty()) {
            (Some(a), false) => {
                aliases.insert(a, m.topic.to_string());
                m.topic.to_string()
            }
            (Some(a), true) => aliases.get(&a).cloned().expect("alias defined before use"),
            (None, _) => m.topic.to_string(),
        };
        assert_eq!(resolved, utf8(&m), "the alias maps to the message's topic");
    }
    b.stop().await;
}

#[tokio::test]
async fn no_topic_aliases_to_a_client_that_announced_none() {
    let b = TestBroker::start().await;
    let mut sub = client5(&b, "no-alias").await;
    sub_one(&mut sub, 1, "na/#", QoS::AtMostOnce).await;
    let local = b.broker.local_client("na-pub");
    for _ in 0..3 {
        local
            .publish("na/t", "x", QoS::AtMostOnce, false)
            .expect("topic");
    }
    for _ in 0..3 {
        let m = sub.recv_publish().await;
        assert_eq!(&*m.topic, "na/t");
        assert_eq!(
            pub_props(&m).topic_alias,
            None,
            "[MQTT-3.1.2-27] no Topic Alias Maximum: no alias"
        );
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Flow control
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_receive_maximum_limits_unacknowledged_deliveries() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("rm2", true, 60),
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    );
    let (mut c, _) = connect_ok(&b, connect).await;
    sub_one(&mut c, 1, "fc/t", QoS::AtLeastOnce).await;
    let local = b.broker.local_client("fc-pub");
    for i in 0..5 {
        local
            .publish("fc/t", format!("m{i}"), QoS::AtLeastOnce, false)
            .expect("topic");
    }
    let first = c.recv_publish().await;
    let second = c.recv_publish().await;
    assert_eq!((utf8(&first), utf8(&second)), ("m0", "m1"));
    // [MQTT-3.3.4-10] control packets still flow while the quota is used up.
    let stray = c.ping_barrier().await;
    assert!(
        stray.is_empty(),
        "[MQTT-3.3.4-9] only 2 unacknowledged: {stray:?}"
    );
    c.expect_silence(SILENCE).await;
    puback(&mut c, &first).await;
    let third = c.recv_publish().await;
    assert_eq!(utf8(&third), "m2", "one acknowledgement frees one slot");
    c.expect_silence(SILENCE).await;
    puback(&mut c, &second).await;
    puback(&mut c, &third).await;
    let fourth = c.recv_publish().await;
    let fifth = c.recv_publish().await;
    assert_eq!((utf8(&fourth), utf8(&fifth)), ("m3", "m4"));
    puback(&mut c, &fourth).await;
    puback(&mut c, &fifth).await;
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn exceeding_the_servers_receive_maximum_gets_0x93() {
    let mut config = test_config();
    config.mqtt.receive_maximum = 2;
    let b = TestBroker::start_with(config).await;
    let (mut c, a) = connect_ok(&b, connect5("rmx", true, 60)).await;
    assert_eq!(
        connack_props(&a).receive_maximum,
        Some(2),
        "CONNACK announces the Receive Maximum"
    );
    for id in 1..=2 {
        c.send(pub5("q2", b"x", QoS::ExactlyOnce, Some(id), None))
            .await;
        match c.recv().await {
            Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, pid(id)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }
    // Two QoS 2 messages await PUBREL: a third is one too many.
    c.send(pub5("q2", b"x", QoS::ExactlyOnce, Some(3), None))
        .await;
    expect_disconnect(&mut c, 0x93, "[MQTT-3.3.4-7] Receive Maximum exceeded").await;
    b.stop().await;
}

#[tokio::test]
async fn refused_qos2_messages_do_not_hold_the_servers_receive_maximum() {
    let mut config = test_config();
    config.mqtt.receive_maximum = 1;
    let b = TestBroker::start_with(config).await;
    let mut c = client5(&b, "rm-refused").await;
    // PUBLISH into $SYS is refused: PUBREC 0x87 ends each exchange without PUBREL, so the
    // packet ids must not pile up against the Receive Maximum of 1.
    for id in 1..=3 {
        c.send(pub5("$SYS/x", b"x", QoS::ExactlyOnce, Some(id), None))
            .await;
        match c.recv().await {
            Some(Packet::PubRec(r)) => assert_eq!(
                (r.packet_id, r.reason),
                (pid(id), 0x87),
                "[MQTT-4.3.3-9] refused: PUBREC 0x87, and the id is free again"
            ),
            other => panic!("expected PUBREC 0x87, got {other:?}"),
        }
    }
    c.ping_barrier().await;
    b.stop().await;
}

#[tokio::test]
async fn released_qos2_messages_free_the_servers_receive_maximum() {
    let mut config = test_config();
    config.mqtt.receive_maximum = 1;
    let b = TestBroker::start_with(config).await;
    let mut c = client5(&b, "rm-release").await;
    for id in 1..=3 {
        c.send(pub5("q2", b"x", QoS::ExactlyOnce, Some(id), None))
            .await;
        match c.recv().await {
            Some(Packet::PubRec(r)) => assert_eq!(r.packet_id, pid(id)),
            other => panic!("expected PUBREC, got {other:?}"),
        }
        c.send(Packet::PubRel(ack(id))).await;
        match c.recv().await {
            Some(Packet::PubComp(r)) => {
                assert_eq!((r.packet_id, r.reason), (pid(id), 0), "[MQTT-4.3.3-11]")
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. The client's Maximum Packet Size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_above_the_clients_maximum_packet_size_are_not_sent() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("small", true, 60),
        Properties {
            maximum_packet_size: Some(100),
            ..Properties::default()
        },
    );
    let (mut c, _) = connect_ok(&b, connect).await;
    sub_one(&mut c, 1, "mps/t", QoS::AtMostOnce).await;
    let local = b.broker.local_client("mps-pub");
    local
        .publish("mps/t", vec![b'x'; 200], QoS::AtMostOnce, false)
        .expect("topic");
    local
        .publish("mps/t", "small", QoS::AtMostOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    assert_eq!(
        &m.payload[..],
        b"small",
        "[MQTT-3.1.2-24] / [MQTT-3.1.2-25] the 200-byte message is discarded, the next one sent"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_discarded_large_qos1_message_does_not_hold_a_window_slot() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("small-q1", true, 60),
        Properties {
            maximum_packet_size: Some(100),
            receive_maximum: Some(1),
            ..Properties::default()
        },
    );
    let (mut c, _) = connect_ok(&b, connect).await;
    sub_one(&mut c, 1, "mps/q1", QoS::AtLeastOnce).await;
    let local = b.broker.local_client("mps-pub");
    local
        .publish("mps/q1", vec![b'x'; 200], QoS::AtLeastOnce, false)
        .expect("topic");
    local
        .publish("mps/q1", "small", QoS::AtLeastOnce, false)
        .expect("topic");
    // Receive Maximum 1 and no PUBACK sent: the small message only comes if the big one was
    // treated as delivered.
    let m = c.recv_publish().await;
    assert_eq!(
        &m.payload[..],
        b"small",
        "[MQTT-3.1.2-25] behave as if the large message had been sent (window slot freed)"
    );
    puback(&mut c, &m).await;
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Message expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forwarded_message_expiry_interval_is_decremented_by_the_wait() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("me-sub", false, 60)).await;
    sub_one(&mut c, 1, "me/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connections(&b, 0).await;
    let mut p = client5(&b, "me-pub").await;
    let props = Properties {
        message_expiry_interval: Some(10),
        ..Properties::default()
    };
    assert_eq!(publish_qos1(&mut p, "me/t", b"x", 1, Some(props)).await, 0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut c, a) = connect_ok(&b, connect_expiry("me-sub", false, 60)).await;
    assert!(a.session_present);
    let m = c.recv_publish().await;
    let left = pub_props(&m)
        .message_expiry_interval
        .expect("[MQTT-3.3.2-6] the interval is forwarded");
    assert!(
        (1..=9).contains(&left),
        "[MQTT-3.3.2-6] 10 s minus the 1.2 s waited, got {left}"
    );
    puback(&mut c, &m).await;
    b.stop().await;
}

#[tokio::test]
async fn expired_queued_message_is_not_delivered() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("exp-sub", false, 60)).await;
    sub_one(&mut c, 1, "exp/t", QoS::AtLeastOnce).await;
    c.disconnect().await;
    wait_connections(&b, 0).await;
    let mut p = client5(&b, "exp-pub").await;
    let short = Properties {
        message_expiry_interval: Some(1),
        ..Properties::default()
    };
    assert_eq!(
        publish_qos1(&mut p, "exp/t", b"stale", 1, Some(short)).await,
        0
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(publish_qos1(&mut p, "exp/t", b"fresh", 2, None).await, 0);
    let (mut c, a) = connect_ok(&b, connect_expiry("exp-sub", false, 60)).await;
    assert!(a.session_present);
    let m = c.recv_publish().await;
    assert_eq!(
        &m.payload[..],
        b"fresh",
        "[MQTT-3.3.2-5] the expired message is deleted, the later one delivered"
    );
    puback(&mut c, &m).await;
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Properties pass-through and acknowledgement reason codes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn publish_properties_are_forwarded_unaltered_and_in_order() {
    let b = TestBroker::start().await;
    let mut sub = client5(&b, "props-sub").await;
    sub_one(&mut sub, 1, "props/t", QoS::AtLeastOnce).await;
    let mut p = client5(&b, "props-pub").await;
    let user: Vec<(ByteString, ByteString)> =
        [("k", "1"), ("a", "x"), ("k", "2"), ("z", ""), ("k", "1")]
            .iter()
            .map(|(k, v)| (ByteString::from(*k), ByteString::from(*v)))
            .collect();
    let props = Properties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xFF])),
        user_properties: user.clone(),
        ..Properties::default()
    };
    assert_eq!(
        publish_qos1(&mut p, "props/t", b"{}", 1, Some(props)).await,
        0
    );
    let m = sub.recv_publish().await;
    let got = pub_props(&m);
    assert_eq!(got.payload_format_indicator, Some(1), "[MQTT-3.3.2-4]");
    assert_eq!(
        got.content_type.as_deref(),
        Some("application/json"),
        "[MQTT-3.3.2-20]"
    );
    assert_eq!(
        got.response_topic.as_deref(),
        Some("props/reply"),
        "[MQTT-3.3.2-15]"
    );
    assert_eq!(
        got.correlation_data.as_deref(),
        Some(&[0u8, 1, 2, 0xFF][..]),
        "[MQTT-3.3.2-16]"
    );
    assert_eq!(
        got.user_properties, user,
        "[MQTT-3.3.2-17] / [MQTT-3.3.2-18] every user property, repeated keys kept, in order"
    );
    assert_eq!(got.message_expiry_interval, None, "none was sent");
    assert!(
        got.subscription_identifiers.is_empty(),
        "no identifier on the subscription"
    );
    puback(&mut sub, &m).await;
    b.stop().await;
}

#[tokio::test]
async fn puback_reason_0x10_when_no_subscriber_matches() {
    let b = TestBroker::start().await;
    let mut p = client5(&b, "lonely").await;
    assert_eq!(
        publish_qos1(&mut p, "nobody/listens", b"x", 1, None).await,
        0x10,
        "[MQTT-3.4.2-1] 0x10 No matching subscribers"
    );
    success_once_someone_listens(&b, &mut p).await;
    b.stop().await;
}

/// With a subscriber present the same publish gets 0x00.
async fn success_once_someone_listens(b: &TestBroker, p: &mut RawClient) {
    let mut s = client5(b, "listener").await;
    sub_one(&mut s, 1, "nobody/listens", QoS::AtMostOnce).await;
    assert_eq!(publish_qos1(p, "nobody/listens", b"x", 2, None).await, 0);
    assert_eq!(&s.recv_publish().await.payload[..], b"x");
}

#[tokio::test]
async fn invalid_utf8_payload_with_format_indicator_1_gets_0x99_and_is_not_delivered() {
    let b = TestBroker::start().await;
    let mut sub = client5(&b, "pfi-sub").await;
    sub_one(&mut sub, 1, "pfi/t", QoS::AtLeastOnce).await;
    let mut p = client5(&b, "pfi-pub").await;
    let utf8_declared = Properties {
        payload_format_indicator: Some(1),
        ..Properties::default()
    };
    assert_eq!(
        publish_qos1(
            &mut p,
            "pfi/t",
            &[0xC3, 0x28],
            1,
            Some(utf8_declared.clone())
        )
        .await,
        0x99,
        "section 3.3.2.3.2: 0x99 Payload format invalid"
    );
    // QoS 2: PUBREC 0x99.
    p.send(pub5(
        "pfi/t",
        &[0xFF],
        QoS::ExactlyOnce,
        Some(2),
        Some(utf8_declared.clone()),
    ))
    .await;
    match p.recv().await {
        Some(Packet::PubRec(r)) => {
            assert_eq!((r.packet_id, r.reason), (pid(2), 0x99), "[MQTT-3.5.2-1]")
        }
        other => panic!("expected PUBREC 0x99, got {other:?}"),
    }
    // Valid UTF-8 with the same indicator passes.
    assert_eq!(
        publish_qos1(&mut p, "pfi/t", "héllo".as_bytes(), 3, Some(utf8_declared)).await,
        0
    );
    let m = sub.recv_publish().await;
    assert_eq!(utf8(&m), "héllo", "only the valid message is delivered");
    puback(&mut sub, &m).await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "pubrel").await;
    c.send(Packet::PubRel(ack(42))).await;
    match c.recv().await {
        Some(Packet::PubComp(a)) => assert_eq!(
            (a.packet_id, a.reason),
            (pid(42), 0x92),
            "[MQTT-3.7.2-1] 0x92 Packet Identifier not found"
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    c.ping_barrier().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 10. Subscription options and identifiers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_local_suppresses_own_messages_only() {
    let b = TestBroker::start().await;
    let mut me = client5(&b, "nl-me").await;
    let nl = SubscriptionOptions {
        no_local: true,
        ..opts(QoS::AtMostOnce)
    };
    assert_eq!(sub5(&mut me, 1, &[("nl/t", nl)], None).await, vec![0]);
    // The PUBACK is queued after a delivery to myself would have been: the next PUBLISH must be
    // the other client's.
    let reason = publish_qos1(&mut me, "nl/t", b"mine", 1, None).await;
    assert!(reason < 0x80, "accepted ({reason:#04x})");
    let mut other = client5(&b, "nl-other").await;
    other
        .send(pub5("nl/t", b"theirs", QoS::AtMostOnce, None, None))
        .await;
    let m = me.recv_publish().await;
    assert_eq!(
        &m.payload[..],
        b"theirs",
        "[MQTT-3.8.3-3] own message not forwarded back"
    );
    me.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn retain_as_published_keeps_or_clears_the_retain_flag() {
    let b = TestBroker::start().await;
    let mut sub = client5(&b, "rap").await;
    let keep = SubscriptionOptions {
        retain_as_published: true,
        ..opts(QoS::AtMostOnce)
    };
    assert_eq!(
        sub5(
            &mut sub,
            1,
            &[("rap/keep", keep), ("rap/clear", opts(QoS::AtMostOnce))],
            None
        )
        .await,
        vec![0, 0]
    );
    let mut p = client5(&b, "rap-pub").await;
    p.send(retained5("rap/keep", b"k")).await;
    p.send(retained5("rap/clear", b"c")).await;
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!(
        (&*first.topic, first.retain),
        ("rap/keep", true),
        "[MQTT-3.3.1-13]"
    );
    assert_eq!(
        (&*second.topic, second.retain),
        ("rap/clear", false),
        "[MQTT-3.3.1-12]"
    );
    b.stop().await;
}

/// A broker with a retained message on `rh/t`, and a connected v5 client.
async fn retained_setup(b: &TestBroker, id: &str) -> RawClient {
    let mut p = client5(b, &format!("{id}-pub")).await;
    p.send(retained5("rh/t", b"kept")).await;
    p.ping_barrier().await;
    client5(b, id).await
}

#[tokio::test]
async fn retain_handling_0_sends_retained_on_every_subscribe() {
    let b = TestBroker::start().await;
    let mut c = retained_setup(&b, "rh0").await;
    for id in 1..=2 {
        assert_eq!(
            sub5(&mut c, id, &[("rh/#", opts(QoS::AtMostOnce))], None).await,
            vec![0]
        );
        let m = c.recv_publish().await;
        assert_eq!(
            (&m.payload[..], m.retain),
            (&b"kept"[..], true),
            "[MQTT-3.3.1-9] / [MQTT-3.8.4-4] subscribe #{id} sends the retained message"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn retain_handling_1_sends_retained_only_for_a_new_subscription() {
    let b = TestBroker::start().await;
    let mut c = retained_setup(&b, "rh1").await;
    let o = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..opts(QoS::AtMostOnce)
    };
    assert_eq!(sub5(&mut c, 1, &[("rh/#", o)], None).await, vec![0]);
    let m = c.recv_publish().await;
    assert_eq!(
        (&m.payload[..], m.retain),
        (&b"kept"[..], true),
        "[MQTT-3.3.1-10] new subscription"
    );
    assert_eq!(sub5(&mut c, 2, &[("rh/#", o)], None).await, vec![0]);
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn retain_handling_2_sends_no_retained_messages() {
    let b = TestBroker::start().await;
    let mut c = retained_setup(&b, "rh2").await;
    let o = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..opts(QoS::AtMostOnce)
    };
    assert_eq!(sub5(&mut c, 1, &[("rh/#", o)], None).await, vec![0]);
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn overlapping_subscriptions_give_one_publish_with_every_identifier() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "ids").await;
    assert_eq!(
        sub5(&mut c, 1, &[("si/#", opts(QoS::AtMostOnce))], Some(1)).await,
        vec![0]
    );
    assert_eq!(
        sub5(&mut c, 2, &[("si/+", opts(QoS::AtLeastOnce))], Some(2)).await,
        vec![1]
    );
    let local = b.broker.local_client("ids-pub");
    local
        .publish("si/x", "both", QoS::AtLeastOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    let ids: BTreeSet<u32> = pub_props(&m).subscription_identifiers.into_iter().collect();
    assert_eq!(
        ids,
        BTreeSet::from([1, 2]),
        "[MQTT-3.3.4-4] one copy carries the identifiers of all matching subscriptions"
    );
    assert_eq!(
        m.qos,
        QoS::AtLeastOnce,
        "[MQTT-3.3.4-2] the maximum QoS of the overlap"
    );
    puback(&mut c, &m).await;
    c.assert_no_publish(&b.broker).await;
    // Re-subscribing without an identifier removes it from that subscription (section 3.8.4).
    assert_eq!(
        sub5(&mut c, 3, &[("si/+", opts(QoS::AtMostOnce))], None).await,
        vec![0]
    );
    local
        .publish("si/y", "one", QoS::AtMostOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    assert_eq!(
        pub_props(&m).subscription_identifiers,
        vec![1],
        "only the identifier of si/# is left"
    );
    b.stop().await;
}

#[tokio::test]
async fn retained_delivery_carries_the_subscription_identifier() {
    let b = TestBroker::start().await;
    let mut c = retained_setup(&b, "rid").await;
    assert_eq!(
        sub5(&mut c, 1, &[("rh/#", opts(QoS::AtMostOnce))], Some(7)).await,
        vec![0]
    );
    let m = c.recv_publish().await;
    assert!(m.retain, "[MQTT-3.3.1-9] the retained message");
    assert_eq!(
        pub_props(&m).subscription_identifiers,
        vec![7],
        "[MQTT-3.3.4-3] the subscription's identifier"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 11. Will delay
// ---------------------------------------------------------------------------------------------

/// A v5 CONNECT with a will on `will/{id}` (Will Delay `delay` if given) and Session Expiry
/// `expiry`.
fn connect_with_will(id: &str, delay: Option<u32>, expiry: u32) -> Connect {
    let mut connect = connect_expiry(id, false, expiry);
    connect.will = Some(LastWill {
        properties: delay.map(|d| {
            Box::new(Properties {
                will_delay_interval: Some(d),
                ..Properties::default()
            })
        }),
        ..will(&format!("will/{id}"), "gone", QoS::AtMostOnce, false)
    });
    connect
}

/// A v5 client watching `will/#`.
async fn will_watcher(b: &TestBroker) -> RawClient {
    let mut w = client5(b, "watcher").await;
    sub_one(&mut w, 1, "will/#", QoS::AtMostOnce).await;
    w
}

#[tokio::test]
async fn delayed_will_is_published_after_the_delay_not_before() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let (c, _) = connect_ok(&b, connect_with_will("wd2", Some(2), 10)).await;
    drop(c);
    let since = Instant::now();
    w.expect_silence(Duration::from_millis(1500)).await;
    let m = w.recv_publish().await;
    assert_eq!(&*m.topic, "will/wd2");
    assert!(
        since.elapsed() >= Duration::from_millis(1800),
        "[MQTT-3.1.2-8] after the 2 s Will Delay ({:?})",
        since.elapsed()
    );
    assert_eq!(
        pub_props(&m).will_delay_interval,
        None,
        "the Will Delay Interval is not a PUBLISH property"
    );
    b.stop().await;
}

#[tokio::test]
async fn reconnecting_within_the_will_delay_cancels_the_will() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let (c, _) = connect_ok(&b, connect_with_will("wdr", Some(1), 10)).await;
    drop(c);
    wait_connections(&b, 1).await;
    let (c, a) = connect_ok(&b, connect_expiry("wdr", false, 10)).await;
    assert!(a.session_present);
    // Past the 1 s delay: still nothing.
    w.expect_silence(Duration::from_millis(1600)).await;
    drop(c);
    b.stop().await;
}

#[tokio::test]
async fn disconnect_with_will_message_0x04_publishes_the_will() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let (mut c, _) = connect_ok(&b, connect_with_will("w04", None, 0)).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0x04,
        properties: None,
    }))
    .await;
    let since = Instant::now();
    let m = w.recv_publish().await;
    assert_eq!(&*m.topic, "will/w04", "0x04 Disconnect with Will Message");
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "published at once"
    );
    // And DISCONNECT 0x00 discards it.
    let (mut c, _) = connect_ok(&b, connect_with_will("w00", None, 0)).await;
    c.send(Packet::Disconnect(Disconnect::default())).await;
    wait_connections(&b, 1).await;
    w.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn disconnect_with_an_error_code_publishes_the_will() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let (mut c, _) = connect_ok(&b, connect_with_will("w80", None, 0)).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0x80,
        properties: None,
    }))
    .await;
    let m = w.recv_publish().await;
    assert_eq!(
        &*m.topic, "will/w80",
        "[MQTT-3.14.4-3] only reason 0x00 discards the will; 0x80 publishes it"
    );
    b.stop().await;
}

#[tokio::test]
async fn disconnect_0x04_still_honours_the_will_delay() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let (mut c, _) = connect_ok(&b, connect_with_will("w04d", Some(1), 10)).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0x04,
        properties: None,
    }))
    .await;
    let since = Instant::now();
    w.expect_silence(Duration::from_millis(700)).await;
    let m = w.recv_publish().await;
    assert_eq!(&*m.topic, "will/w04d");
    assert!(
        since.elapsed() >= Duration::from_millis(900),
        "[MQTT-3.1.2-8] the Will Delay applies after DISCONNECT 0x04 too ({:?})",
        since.elapsed()
    );
    b.stop().await;
}

#[tokio::test]
async fn session_expiry_shorter_than_the_will_delay_publishes_the_will_at_expiry() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let (c, _) = connect_ok(&b, connect_with_will("wse", Some(5), 1)).await;
    drop(c);
    let since = Instant::now();
    w.expect_silence(Duration::from_millis(600)).await;
    let m = w.recv_publish().await;
    assert_eq!(&*m.topic, "will/wse");
    let waited = since.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "[MQTT-3.1.2-8] the session ends after 1 s, before the 5 s delay ({waited:?})"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 12. Shared subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn shared_group_of_mqtt311_and_mqtt5_members_round_robins() {
    let b = TestBroker::start().await;
    let mut old = RawClient::connect(b.addr, "member-311").await;
    assert_eq!(
        old.subscribe(1, &[("$share/g/rr/t", QoS::AtLeastOnce)])
            .await,
        vec![1]
    );
    let mut new = client5(&b, "member-5").await;
    sub_one(&mut new, 1, "$share/g/rr/t", QoS::AtLeastOnce).await;
    let local = b.broker.local_client("rr-pub");
    for i in 0..10 {
        local
            .publish("rr/t", format!("m{i}"), QoS::AtLeastOnce, false)
            .expect("topic");
    }
    let mut seen = BTreeSet::new();
    for c in [&mut old, &mut new] {
        for _ in 0..5 {
            let m = c.recv_publish().await;
            puback(c, &m).await;
            assert!(
                seen.insert(utf8(&m).to_string()),
                "section 4.8.2: each message to one member"
            );
        }
        c.assert_no_publish(&b.broker).await;
    }
    assert_eq!(seen.len(), 10, "5 + 5: round robin over both members");
    b.stop().await;
}

#[tokio::test]
async fn shared_subscription_gets_no_retained_messages() {
    let b = TestBroker::start().await;
    let mut plain = retained_setup(&b, "plain").await;
    let mut member = client5(&b, "member").await;
    sub_one(&mut member, 1, "$share/g/rh/t", QoS::AtMostOnce).await;
    member.assert_no_publish(&b.broker).await;
    // The retained message does exist: a plain subscription gets it.
    sub_one(&mut plain, 1, "rh/t", QoS::AtMostOnce).await;
    assert!(
        plain.recv_publish().await.retain,
        "section 3.8.4: retained to plain subscribers only"
    );
    b.stop().await;
}

#[tokio::test]
async fn shared_and_plain_subscription_of_one_session_each_get_a_copy() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "both").await;
    assert_eq!(
        sub5(
            &mut c,
            1,
            &[
                ("$share/g/dup/t", opts(QoS::AtMostOnce)),
                ("dup/t", opts(QoS::AtMostOnce))
            ],
            None
        )
        .await,
        vec![0, 0]
    );
    let local = b.broker.local_client("dup-pub");
    local
        .publish("dup/t", "x", QoS::AtMostOnce, false)
        .expect("topic");
    for n in 1..=2 {
        let m = c.recv_publish().await;
        assert_eq!(
            &m.payload[..],
            b"x",
            "copy {n}: section 4.8.2, one per subscription"
        );
    }
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn unacknowledged_shared_messages_of_a_leaving_member_go_to_another() {
    let b = TestBroker::start().await;
    let mut leaver = client5(&b, "leaver").await;
    sub_one(&mut leaver, 1, "$share/g/rd/t", QoS::AtLeastOnce).await;
    let mut stayer = client5(&b, "stayer").await;
    sub_one(&mut stayer, 1, "$share/g/rd/t", QoS::AtLeastOnce).await;
    let local = b.broker.local_client("rd-pub");
    for i in 0..4 {
        local
            .publish("rd/t", format!("m{i}"), QoS::AtLeastOnce, false)
            .expect("topic");
    }
    let mut unacked = BTreeSet::new();
    for _ in 0..2 {
        unacked.insert(utf8(&leaver.recv_publish().await).to_string());
    }
    let mut all = BTreeSet::new();
    for _ in 0..2 {
        let m = stayer.recv_publish().await;
        puback(&mut stayer, &m).await;
        all.insert(utf8(&m).to_string());
    }
    assert!(all.is_disjoint(&unacked));
    // The leaver goes without acknowledging (network close, session expiry 0).
    drop(leaver);
    let mut redelivered = BTreeSet::new();
    for _ in 0..2 {
        let m = stayer.recv_publish().await;
        puback(&mut stayer, &m).await;
        redelivered.insert(utf8(&m).to_string());
    }
    assert_eq!(
        redelivered, unacked,
        "section 4.8.2: the QoS 1 messages the leaver left unacknowledged go to the other member"
    );
    stayer.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn hash_client_id_strategy_sends_one_publishers_messages_to_one_member() {
    let mut config = test_config();
    config.mqtt.shared_subscription_strategy = SharedStrategy::HashClientId;
    let b = TestBroker::start_with(config).await;
    let mut m1 = client5(&b, "hash-1").await;
    sub_one(&mut m1, 1, "$share/g/h/t", QoS::AtMostOnce).await;
    let mut m2 = client5(&b, "hash-2").await;
    sub_one(&mut m2, 1, "$share/g/h/t", QoS::AtMostOnce).await;
    let mut p = client5(&b, "hash-publisher").await;
    for i in 0..6 {
        p.send(pub5(
            "h/t",
            format!("m{i}").as_bytes(),
            QoS::AtMostOnce,
            None,
            None,
        ))
        .await;
    }
    p.ping_barrier().await;
    // Read from whichever member gets them until all 6 are in.
    let (mut got1, mut got2) = (0usize, 0usize);
    while got1 + got2 < 6 {
        let (r, n) = tokio::select! {
            r = m1.recv_within(WAIT) => (r, &mut got1),
            r = m2.recv_within(WAIT) => (r, &mut got2),
        };
        match r {
            Ok(Some(Packet::Publish(_))) => *n += 1,
            other => panic!("expected the group's PUBLISHes, got {other:?}"),
        }
    }
    // Nothing beyond the 6.
    m1.assert_no_publish(&b.broker).await;
    m2.assert_no_publish(&b.broker).await;
    let mut counts = [got1, got2];
    counts.sort_unstable();
    assert_eq!(
        counts,
        [0, 6],
        "hash_client_id: every message of one publisher to the same member ({got1}/{got2})"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 13. Enhanced authentication: SCRAM-SHA-256
// ---------------------------------------------------------------------------------------------

/// AUTH with `reason`, the SCRAM method and `data`.
fn auth5(reason: u8, data: Option<&str>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Some(Box::new(Properties {
            authentication_method: Some(SCRAM.into()),
            authentication_data: data.map(|d| Bytes::copy_from_slice(d.as_bytes())),
            ..Properties::default()
        })),
    })
}

/// Requires an AUTH with `reason` and the SCRAM method; returns its data as text.
async fn expect_auth(c: &mut RawClient, reason: u8) -> String {
    match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason, reason, "AUTH reason code");
            let p = a.properties.as_deref().cloned().unwrap_or_default();
            assert_eq!(
                p.authentication_method.as_deref(),
                Some(SCRAM),
                "[MQTT-4.12.0-5] every AUTH carries the CONNECT's method"
            );
            assert!(
                p.reason_string.is_none() && p.user_properties.is_empty(),
                "[MQTT-3.15.2-2] / [MQTT-3.15.2-3] the server's AUTH adds no Reason String or \
                 User Property (which could exceed the client's Maximum Packet Size)"
            );
            let data = p.authentication_data.expect("AUTH carries SCRAM data");
            String::from_utf8(data.to_vec()).expect("SCRAM messages are text")
        }
        other => panic!("expected AUTH {reason:#04x}, got {other:?}"),
    }
}

/// A CONNECT asking for SCRAM-SHA-256 with the client-first-message.
fn scram_connect(id: &str, method: &str, client_first: &str) -> Connect {
    with_props(
        connect5(id, true, 60),
        Properties {
            authentication_method: Some(method.into()),
            authentication_data: Some(Bytes::copy_from_slice(client_first.as_bytes())),
            ..Properties::default()
        },
    )
}

/// Runs a full SCRAM exchange for `user`/`password` through CONNECT; returns the client and
/// the CONNACK (success verified against the server signature).
async fn scram_login(b: &TestBroker, id: &str, user: &str, password: &str) -> (RawClient, ConnAck) {
    let scram = scram::ScramClient::new(user, password, None);
    let (scram, client_first) = scram.client_first();
    let mut c = open5(b).await;
    c.send(Packet::Connect(Box::new(scram_connect(
        id,
        SCRAM,
        &client_first,
    ))))
    .await;
    let server_first = expect_auth(&mut c, 0x18).await;
    let scram = scram
        .handle_server_first(&server_first)
        .expect("a valid server-first-message");
    let (scram, client_final) = scram.client_final();
    c.send(auth5(0x18, Some(&client_final))).await;
    let connack = match c.recv().await {
        Some(Packet::ConnAck(a)) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if connack.code == 0 {
        let p = connack_props(&connack);
        assert_eq!(
            p.authentication_method.as_deref(),
            Some(SCRAM),
            "[MQTT-4.12.0-5] the successful CONNACK carries the method"
        );
        let server_final = p.authentication_data.expect("CONNACK carries server-final");
        let server_final = std::str::from_utf8(&server_final).expect("text");
        scram
            .handle_server_final(server_final)
            .expect("the server proves it knows the password");
    }
    (c, connack)
}

#[tokio::test]
async fn scram_sha_256_exchange_connects() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("user", "pencil");
    let (mut c, a) = scram_login(&b, "scram-ok", "user", "pencil").await;
    assert_eq!(a.code, 0, "section 4.12: authenticated");
    sub_one(&mut c, 1, "scram/t", QoS::AtMostOnce).await;
    b.stop().await;
}

#[tokio::test]
async fn scram_with_the_wrong_password_gets_0x86() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("user", "pencil");
    let (mut c, a) = scram_login(&b, "scram-bad", "user", "crayon").await;
    assert_eq!(a.code, 0x86, "[MQTT-4.12.0-4] Bad User Name or Password");
    assert!(!a.session_present, "[MQTT-3.2.2-6]");
    match c.recv_within(WAIT).await {
        Ok(None) => {}
        other => panic!("[MQTT-3.2.2-7] closed after the refusal, got {other:?}"),
    }
    assert_eq!(
        b.broker.session_count(),
        0,
        "no session for a refused client"
    );
    b.stop().await;
}

#[tokio::test]
async fn unknown_authentication_method_gets_0x8c() {
    let b = TestBroker::start().await;
    let (mut c, a) = handshake(&b, scram_connect("weird", "X-UNKNOWN", "hello")).await;
    assert_eq!(a.code, 0x8C, "[MQTT-4.12.0-1] Bad authentication method");
    assert!(!a.session_present, "[MQTT-3.2.2-6]");
    match c.recv_within(WAIT).await {
        Ok(None) => {}
        other => panic!("[MQTT-4.12.0-1] closed after the refusal, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn scram_re_authentication_succeeds_with_auth_0x00() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("user", "pencil");
    let (mut c, a) = scram_login(&b, "scram-re", "user", "pencil").await;
    assert_eq!(a.code, 0);
    let scram = scram::ScramClient::new("user", "pencil", None);
    let (scram, client_first) = scram.client_first();
    c.send(auth5(0x19, Some(&client_first))).await;
    let server_first = expect_auth(&mut c, 0x18).await;
    let scram = scram
        .handle_server_first(&server_first)
        .expect("a valid server-first-message");
    let (scram, client_final) = scram.client_final();
    c.send(auth5(0x18, Some(&client_final))).await;
    let server_final = expect_auth(&mut c, 0x00).await;
    scram
        .handle_server_final(&server_final)
        .expect("section 4.12.1: re-authentication verified");
    // The connection carries on.
    sub_one(&mut c, 1, "reauth/t", QoS::AtMostOnce).await;
    b.stop().await;
}

#[tokio::test]
async fn failed_re_authentication_disconnects_with_not_authorized_0x87() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("user", "pencil");
    let (mut c, a) = scram_login(&b, "scram-refail", "user", "pencil").await;
    assert_eq!(a.code, 0);
    // The same user re-authenticating with a wrong password.
    let scram = scram::ScramClient::new("user", "wrong", None);
    let (scram, client_first) = scram.client_first();
    c.send(auth5(0x19, Some(&client_first))).await;
    let server_first = expect_auth(&mut c, 0x18).await;
    let scram = scram
        .handle_server_first(&server_first)
        .expect("a valid server-first-message");
    let (_, client_final) = scram.client_final();
    c.send(auth5(0x18, Some(&client_final))).await;
    expect_disconnect(
        &mut c,
        0x87,
        "[MQTT-4.12.1-2] failed re-authentication: DISCONNECT with a valid code ([MQTT-3.14.2-1])",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn re_authentication_with_another_method_is_a_protocol_error() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("user", "pencil");
    let (mut c, a) = scram_login(&b, "scram-switch", "user", "pencil").await;
    assert_eq!(a.code, 0);
    c.send(Packet::Auth(Auth {
        reason: 0x19,
        properties: Some(Box::new(Properties {
            authentication_method: Some("SCRAM-SHA-1".into()),
            authentication_data: Some(Bytes::from_static(b"n,,n=user,r=abc")),
            ..Properties::default()
        })),
    }))
    .await;
    expect_disconnect(
        &mut c,
        0x82,
        "[MQTT-4.12.1-1] re-authentication with another method",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn auth_omitting_the_method_is_a_protocol_error() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("user", "pencil");
    let (mut c, a) = scram_login(&b, "scram-nomethod", "user", "pencil").await;
    assert_eq!(a.code, 0);
    c.send(Packet::Auth(Auth {
        reason: 0x19,
        properties: None,
    }))
    .await;
    expect_disconnect(
        &mut c,
        0x82,
        "section 3.15.2.2.2: AUTH without Authentication Method",
    )
    .await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 14. More of the same ground: limits the broker announces, will properties, expiry corners
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn server_topic_aliases_start_afresh_on_a_new_connection() {
    let b = TestBroker::start().await;
    let aliases = || {
        with_props(
            connect5("alias-again", false, 60),
            Properties {
                topic_alias_maximum: Some(5),
                session_expiry_interval: Some(60),
                ..Properties::default()
            },
        )
    };
    let (mut c, _) = connect_ok(&b, aliases()).await;
    sub_one(&mut c, 1, "again/t", QoS::AtMostOnce).await;
    let local = b.broker.local_client("again-pub");
    local
        .publish("again/t", "1", QoS::AtMostOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    assert_eq!((&*m.topic, pub_props(&m).topic_alias), ("again/t", Some(1)));
    c.disconnect().await;
    wait_connections(&b, 1).await;
    let (mut c, a) = connect_ok(&b, aliases()).await;
    assert!(a.session_present);
    local
        .publish("again/t", "2", QoS::AtMostOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    assert_eq!(
        (&*m.topic, pub_props(&m).topic_alias),
        ("again/t", Some(1)),
        "[MQTT-3.3.2-7] a new connection has no aliases: the topic is sent in full again"
    );
    b.stop().await;
}

#[tokio::test]
async fn maximum_qos_1_is_announced_granted_and_enforced() {
    let mut config = test_config();
    config.mqtt.maximum_qos = 1;
    let b = TestBroker::start_with(config).await;
    let (mut c, a) = connect_ok(&b, connect5("mq1", true, 60)).await;
    assert_eq!(
        connack_props(&a).maximum_qos,
        Some(1),
        "[MQTT-3.2.2-9] CONNACK announces Maximum QoS 1"
    );
    assert_eq!(
        sub5(&mut c, 1, &[("mq/t", opts(QoS::ExactlyOnce))], None).await,
        vec![1],
        "[MQTT-3.2.2-10] a QoS 2 subscription is accepted, granted QoS 1"
    );
    c.send(pub5("mq/t", b"x", QoS::ExactlyOnce, Some(1), None))
        .await;
    expect_disconnect(&mut c, 0x9B, "[MQTT-3.2.2-11] PUBLISH above Maximum QoS").await;
    b.stop().await;
}

#[tokio::test]
async fn will_qos_above_maximum_qos_is_refused_0x9b() {
    let mut config = test_config();
    config.mqtt.maximum_qos = 1;
    let b = TestBroker::start_with(config).await;
    let mut connect = connect5("wq2", true, 60);
    connect.will = Some(will("will/wq2", "x", QoS::ExactlyOnce, false));
    let (mut c, a) = handshake(&b, connect).await;
    assert_eq!(
        a.code, 0x9B,
        "[MQTT-3.2.2-12] CONNACK 0x9B QoS not supported"
    );
    assert!(!a.session_present, "[MQTT-3.2.2-6]");
    assert!(
        matches!(c.recv_within(WAIT).await, Ok(None)),
        "[MQTT-3.2.2-7] closed"
    );
    b.stop().await;
}

#[tokio::test]
async fn retain_unavailable_is_announced_and_enforced() {
    let mut config = test_config();
    config.mqtt.retain_available = false;
    let b = TestBroker::start_with(config).await;
    let (mut c, a) = connect_ok(&b, connect5("noretain", true, 60)).await;
    assert_eq!(
        connack_props(&a).retain_available,
        Some(0),
        "CONNACK Retain Available 0"
    );
    c.send(retained5("r/t", b"x")).await;
    expect_disconnect(
        &mut c,
        0x9A,
        "[MQTT-3.2.2-14] RETAIN 1 while Retain Available is 0",
    )
    .await;
    let mut connect = connect5("noretain-will", true, 60);
    connect.will = Some(will("will/r", "x", QoS::AtMostOnce, true));
    let (mut c, a) = handshake(&b, connect).await;
    assert_eq!(
        a.code, 0x9A,
        "[MQTT-3.2.2-13] retained will refused with 0x9A"
    );
    assert!(
        matches!(c.recv_within(WAIT).await, Ok(None)),
        "[MQTT-3.2.2-7] closed"
    );
    b.stop().await;
}

#[tokio::test]
async fn will_with_invalid_utf8_payload_declared_utf8_is_refused_0x99() {
    let b = TestBroker::start().await;
    let mut connect = connect5("bad-will", true, 60);
    connect.will = Some(LastWill {
        payload: Bytes::from_static(&[0xC3, 0x28]),
        properties: Some(Box::new(Properties {
            payload_format_indicator: Some(1),
            ..Properties::default()
        })),
        ..will("will/bad", "", QoS::AtMostOnce, false)
    });
    let (mut c, a) = handshake(&b, connect).await;
    assert_eq!(
        a.code, 0x99,
        "section 3.1.3.2.3: CONNACK 0x99 Payload format invalid"
    );
    assert!(
        matches!(c.recv_within(WAIT).await, Ok(None)),
        "[MQTT-3.2.2-7] closed"
    );
    b.stop().await;
}

#[tokio::test]
async fn authentication_data_without_method_in_connect_closes() {
    let b = TestBroker::start().await;
    let connect = with_props(
        connect5("data-only", true, 60),
        Properties {
            authentication_data: Some(Bytes::from_static(b"x")),
            ..Properties::default()
        },
    );
    connect_refused_and_closed(
        &b,
        connect,
        0x82,
        "section 3.1.2.11.10: Authentication Data without Authentication Method",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn will_properties_are_published_with_the_will_in_order() {
    let b = TestBroker::start().await;
    let mut w = will_watcher(&b).await;
    let user: Vec<(ByteString, ByteString)> = [("b", "2"), ("a", "1"), ("b", "3")]
        .iter()
        .map(|(k, v)| (ByteString::from(*k), ByteString::from(*v)))
        .collect();
    let mut connect = connect5("will-props", true, 60);
    connect.will = Some(LastWill {
        properties: Some(Box::new(Properties {
            content_type: Some("text/plain".into()),
            response_topic: Some("will/reply".into()),
            correlation_data: Some(Bytes::from_static(b"corr")),
            message_expiry_interval: Some(100),
            user_properties: user.clone(),
            ..Properties::default()
        })),
        ..will("will/props", "bye", QoS::AtMostOnce, false)
    });
    let (c, _) = connect_ok(&b, connect).await;
    drop(c);
    let m = w.recv_publish().await;
    let p = pub_props(&m);
    assert_eq!(&*m.topic, "will/props");
    assert_eq!(
        p.user_properties, user,
        "[MQTT-3.1.3-10] will user properties in order"
    );
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.response_topic.as_deref(), Some("will/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr"[..]));
    let left = p
        .message_expiry_interval
        .expect("section 3.1.3.2.4: the will's expiry is sent");
    assert!((99..=100).contains(&left), "expiry {left}");
    b.stop().await;
}

#[tokio::test]
async fn disconnect_can_shorten_the_session_expiry() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("shorten", false, 600)).await;
    sub_one(&mut c, 1, "shorten/t", QoS::AtLeastOnce).await;
    c.send(Packet::Disconnect(Disconnect {
        reason: 0,
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(1),
            ..Properties::default()
        })),
    }))
    .await;
    wait_connections(&b, 0).await;
    let since = Instant::now();
    assert_eq!(b.broker.session_count(), 1, "kept for now");
    wait_until("the shortened session expires", || {
        b.broker.session_count() == 0
    })
    .await;
    assert!(
        since.elapsed() >= Duration::from_millis(800),
        "section 3.14.2.2.2: the DISCONNECT's 1 s governs ({:?})",
        since.elapsed()
    );
    b.stop().await;
}

#[tokio::test]
async fn expired_retained_message_is_not_sent_to_new_subscribers() {
    let b = TestBroker::start().await;
    let mut p = client5(&b, "ret-exp-pub").await;
    let Packet::Publish(mut short) = retained5("re/short", b"short") else {
        unreachable!("retained5 builds a PUBLISH")
    };
    short.properties = Some(Box::new(Properties {
        message_expiry_interval: Some(1),
        ..Properties::default()
    }));
    p.send(Packet::Publish(short)).await;
    let Packet::Publish(mut long) = retained5("re/long", b"long") else {
        unreachable!("retained5 builds a PUBLISH")
    };
    long.properties = Some(Box::new(Properties {
        message_expiry_interval: Some(100),
        ..Properties::default()
    }));
    p.send(Packet::Publish(long)).await;
    p.ping_barrier().await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut c = client5(&b, "ret-exp-sub").await;
    sub_one(&mut c, 1, "re/#", QoS::AtMostOnce).await;
    let m = c.recv_publish().await;
    assert_eq!(
        &m.payload[..],
        b"long",
        "[MQTT-3.3.2-5] the expired retained message is not sent"
    );
    let left = pub_props(&m)
        .message_expiry_interval
        .expect("[MQTT-3.3.2-6]");
    assert!(
        (1..=99).contains(&left),
        "[MQTT-3.3.2-6] decremented, got {left}"
    );
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn unsuback_reason_codes_tell_whether_a_subscription_existed() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "unsub").await;
    sub_one(&mut c, 1, "u/a", QoS::AtMostOnce).await;
    c.send(unsubscribe(2, &["u/a", "u/none"])).await;
    match c.recv().await {
        Some(Packet::UnsubAck(u)) => {
            assert_eq!(u.packet_id, pid(2), "[MQTT-3.10.4-5]");
            assert_eq!(
                u.codes,
                vec![0x00, 0x11],
                "[MQTT-3.11.3-1] / [MQTT-3.11.3-2] success, then 0x11 No subscription existed"
            );
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn refused_subscription_and_sys_publish_get_not_authorized_0x87() {
    let b = TestBroker::start_with_hooks(test_config(), DenyPrefix).await;
    let mut c = client5(&b, "denied").await;
    assert_eq!(
        sub5(
            &mut c,
            1,
            &[
                ("denied/x", opts(QoS::AtLeastOnce)),
                ("ok/x", opts(QoS::AtLeastOnce))
            ],
            None
        )
        .await,
        vec![0x87, 1],
        "[MQTT-3.9.3-2] 0x87 Not authorized for the refused filter only"
    );
    assert_eq!(
        publish_qos1(&mut c, "$SYS/mine", b"x", 1, None).await,
        0x87,
        "[MQTT-3.4.2-1] PUBACK 0x87 for a publish into $SYS"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos2_shared_delivery_stays_with_its_member_across_a_reconnect() {
    let b = TestBroker::start().await;
    let (mut leaver, _) = connect_ok(&b, connect_expiry("q2-leaver", false, 60)).await;
    sub_one(&mut leaver, 1, "$share/g/q2/t", QoS::ExactlyOnce).await;
    let mut stayer = client5(&b, "q2-stayer").await;
    sub_one(&mut stayer, 1, "$share/g/q2/t", QoS::ExactlyOnce).await;
    let local = b.broker.local_client("q2-pub");
    for i in 0..2 {
        local
            .publish("q2/t", format!("m{i}"), QoS::ExactlyOnce, false)
            .expect("topic");
    }
    let kept = leaver.recv_publish().await;
    assert_eq!(kept.qos, QoS::ExactlyOnce);
    let other = stayer.recv_publish().await;
    assert_ne!(other.payload, kept.payload, "one message each");
    stayer
        .send(Packet::PubRec(Ack::new(other.packet_id.expect("QoS 2 id"))))
        .await;
    // The leaver goes without PUBREC; its session persists.
    drop(leaver);
    wait_connections(&b, 2).await;
    stayer.assert_no_publish(&b.broker).await;
    let (mut leaver, a) = connect_ok(&b, connect_expiry("q2-leaver", false, 60)).await;
    assert!(a.session_present);
    let again = leaver.recv_publish().await;
    assert_eq!(
        (&again.payload, again.packet_id, again.dup),
        (&kept.payload, kept.packet_id, true),
        "[MQTT-4.8.2-4] the QoS 2 delivery is completed with the same member, re-sent with DUP"
    );
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 15. Rules that hold by construction, pinned by tests
// ---------------------------------------------------------------------------------------------

/// The properties of any acknowledgement-like packet, to check what the server adds.
fn ack_props(p: &Packet) -> Option<Properties> {
    match p {
        Packet::ConnAck(a) => a.properties.as_deref().cloned(),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            a.properties.as_deref().cloned()
        }
        Packet::SubAck(a) => a.properties.as_deref().cloned(),
        Packet::UnsubAck(a) => a.properties.as_deref().cloned(),
        Packet::Disconnect(d) => d.properties.as_deref().cloned(),
        _ => None,
    }
}

#[tokio::test]
async fn no_reason_strings_or_user_properties_on_acks_and_nothing_over_a_small_maximum_packet_size()
{
    let b = TestBroker::start().await;
    // A client with a small Maximum Packet Size that asks for no problem information and no
    // response information.
    let (mut c, a) = connect_ok(
        &b,
        with_props(
            connect5("tiny", true, 60),
            Properties {
                maximum_packet_size: Some(64),
                request_problem_information: Some(0),
                request_response_information: Some(0),
                ..Properties::default()
            },
        ),
    )
    .await;
    let p = connack_props(&a);
    assert_eq!(
        p.response_information, None,
        "[MQTT-3.1.2-28] no Response Information unless requested"
    );
    assert!(
        p.reason_string.is_none() && p.user_properties.is_empty(),
        "[MQTT-3.2.2-19] / [MQTT-3.2.2-20] / [MQTT-3.1.2-29] no Reason String or User Property in CONNACK"
    );
    let mut seen = vec![Packet::ConnAck(a)];
    // SUBACK, UNSUBACK, PUBACK, PUBREC, PUBCOMP towards the client, PUBREL too (outbound QoS 2).
    c.send(subscribe5(1, &[("tiny/t", opts(QoS::ExactlyOnce))], None))
        .await;
    seen.push(c.recv().await.expect("SUBACK"));
    c.send(pub5("tiny/t", b"1", QoS::AtLeastOnce, Some(1), None))
        .await;
    c.send(pub5("tiny/t", b"2", QoS::ExactlyOnce, Some(2), None))
        .await;
    c.send(Packet::PubRel(ack(2))).await;
    // Answer the broker's deliveries so it sends PUBREL for the QoS 2 one.
    let mut pubrel = false;
    while !pubrel {
        let p = c.recv().await.expect("packet");
        match &p {
            Packet::Publish(m) if m.qos == QoS::AtLeastOnce => puback(&mut c, m).await,
            Packet::Publish(m) if m.qos == QoS::ExactlyOnce => {
                let id = m.packet_id.expect("id");
                c.send(Packet::PubRec(Ack::new(id))).await;
            }
            Packet::PubRel(r) => {
                c.send(Packet::PubComp(Ack::new(r.packet_id))).await;
                pubrel = true;
            }
            _ => {}
        }
        seen.push(p);
    }
    c.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(3),
        filters: vec!["tiny/t".into()],
        properties: None,
    }))
    .await;
    seen.extend(c.ping_barrier().await);
    let kinds: Vec<&str> = seen.iter().map(Packet::name).collect();
    for kind in [
        "SUBACK", "PUBACK", "PUBREC", "PUBCOMP", "PUBREL", "UNSUBACK",
    ] {
        assert!(kinds.contains(&kind), "{kind} seen: {kinds:?}");
    }
    for p in &seen {
        let props = ack_props(p).unwrap_or_default();
        assert!(
            props.reason_string.is_none() && props.user_properties.is_empty(),
            "[MQTT-3.4.2-2..3] [MQTT-3.5.2-2..3] [MQTT-3.6.2-2..3] [MQTT-3.7.2-2..3] \
             [MQTT-3.9.2-1..2] [MQTT-3.11.2-1..2] no Reason String or User Property in {}",
            p.name()
        );
        let size = codec::encoded_len(p, V5);
        assert!(
            size <= 64,
            "[MQTT-3.1.2-24] {} of {size} bytes exceeds the client's maximum 64",
            p.name()
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn server_disconnect_drops_its_reason_string_to_fit_a_tiny_maximum_packet_size() {
    let b = TestBroker::start().await;
    let (mut c, a) = connect_ok(
        &b,
        with_props(
            connect5("tiny-disc", true, 60),
            Properties {
                maximum_packet_size: Some(8),
                ..Properties::default()
            },
        ),
    )
    .await;
    let size = codec::encoded_len(&Packet::ConnAck(a), V5);
    assert!(
        size <= 8,
        "[MQTT-3.1.2-24] the CONNACK ({size} bytes) fits the client's Maximum Packet Size 8"
    );
    // A protocol error: Topic Alias above the maximum.
    c.send(pub5(
        "t",
        b"x",
        QoS::AtMostOnce,
        None,
        Some(Properties {
            topic_alias: Some(11),
            ..Properties::default()
        }),
    ))
    .await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, 0x94);
            let props = d.properties.as_deref().cloned().unwrap_or_default();
            assert!(
                props.reason_string.is_none() && props.user_properties.is_empty(),
                "[MQTT-3.14.2-3] / [MQTT-3.14.2-4] no Reason String beyond the client's maximum"
            );
            assert!(
                codec::encoded_len(&Packet::Disconnect(d), V5) <= 8,
                "[MQTT-3.1.2-24]"
            );
        }
        other => panic!("expected DISCONNECT 0x94, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn server_disconnect_carries_a_reason_string_and_never_a_session_expiry() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("disc-props", true, 60)).await;
    c.send(pub5("", b"x", QoS::AtMostOnce, None, None)).await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason, 0x82, "empty topic without alias");
            let props = d.properties.as_deref().cloned().unwrap_or_default();
            assert_eq!(
                props.session_expiry_interval, None,
                "[MQTT-3.14.2-2] the server never sends a Session Expiry Interval in DISCONNECT"
            );
            assert_eq!(props.reason_string.as_deref(), Some("protocol error"));
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn topic_alias_maximum_zero_refuses_every_alias() {
    let mut config = test_config();
    config.mqtt.topic_alias_maximum = 0;
    let b = TestBroker::start_with(config).await;
    let (mut c, a) = connect_ok(&b, connect5("noalias", true, 60)).await;
    assert_eq!(
        connack_props(&a).topic_alias_maximum,
        None,
        "no Topic Alias Maximum announced: 0"
    );
    c.send(pub5(
        "t",
        b"x",
        QoS::AtMostOnce,
        None,
        Some(Properties {
            topic_alias: Some(1),
            ..Properties::default()
        }),
    ))
    .await;
    expect_disconnect(
        &mut c,
        0x94,
        "[MQTT-3.2.2-18] a Topic Alias when the server allows none",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn shared_and_plain_copies_each_carry_their_own_subscription_identifier() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "ids-two-copies").await;
    sub5(&mut c, 1, &[("two/t", opts(QoS::AtMostOnce))], Some(1)).await;
    sub5(
        &mut c,
        2,
        &[("$share/g/two/t", opts(QoS::AtMostOnce))],
        Some(2),
    )
    .await;
    let local = b.broker.local_client("pub");
    local
        .publish("two/t", "m", QoS::AtMostOnce, false)
        .expect("topic");
    let mut ids = vec![
        pub_props(&c.recv_publish().await).subscription_identifiers,
        pub_props(&c.recv_publish().await).subscription_identifiers,
    ];
    ids.sort();
    assert_eq!(
        ids,
        vec![vec![1], vec![2]],
        "[MQTT-3.3.4-5] each copy carries the identifier of its own subscription"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_delivery_refused_with_puback_0x80_is_not_sent_again() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("refuser", true, 60)).await;
    sub_one(&mut c, 1, "refuse/t", QoS::AtLeastOnce).await;
    let local = b.broker.local_client("pub");
    local
        .publish("refuse/t", "m", QoS::AtLeastOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    c.send(Packet::PubAck(Ack {
        packet_id: m.packet_id.expect("id"),
        reason: 0x80,
        properties: None,
    }))
    .await;
    c.ping_barrier().await;
    drop(c);
    wait_connections(&b, 1).await;
    let (mut c, a) = connect_ok(&b, connect_expiry("refuser", false, 60)).await;
    assert!(a.session_present);
    // [MQTT-4.4.0-2] a PUBLISH answered with a reason code >= 0x80 is acknowledged: it is
    // not re-sent when the session resumes.
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn shared_delivery_respects_the_members_granted_qos() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "shared-qos0").await;
    sub_one(&mut c, 1, "$share/g/sq/t", QoS::AtMostOnce).await;
    let local = b.broker.local_client("pub");
    local
        .publish("sq/t", "m", QoS::ExactlyOnce, false)
        .expect("topic");
    let m = c.recv_publish().await;
    assert_eq!(
        m.qos,
        QoS::AtMostOnce,
        "[MQTT-4.8.2-3] delivered at the QoS granted to the chosen member"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_shared_message_refused_with_0x80_is_not_given_to_another_member() {
    let b = TestBroker::start().await;
    let mut first = client5(&b, "sh-refuse-a").await;
    sub_one(&mut first, 1, "$share/g/sr/t", QoS::AtLeastOnce).await;
    let local = b.broker.local_client("pub");
    local
        .publish("sr/t", "m", QoS::AtLeastOnce, false)
        .expect("topic");
    let m = first.recv_publish().await;
    first
        .send(Packet::PubAck(Ack {
            packet_id: m.packet_id.expect("id"),
            reason: 0x80,
            properties: None,
        }))
        .await;
    first.ping_barrier().await;
    let mut second = client5(&b, "sh-refuse-b").await;
    sub_one(&mut second, 1, "$share/g/sr/t", QoS::AtLeastOnce).await;
    drop(first);
    wait_connections(&b, 2).await;
    // [MQTT-4.8.2-6] refused by the member it went to: discarded, not given to another.
    second.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn a_qos2_shared_delivery_is_not_given_to_another_member_when_the_session_ends() {
    let b = TestBroker::start().await;
    let (mut first, _) = connect_ok(&b, connect_expiry("sh-q2-a", true, 1)).await;
    sub_one(&mut first, 1, "$share/g/sq2/t", QoS::ExactlyOnce).await;
    let local = b.broker.local_client("pub");
    local
        .publish("sq2/t", "m", QoS::ExactlyOnce, false)
        .expect("topic");
    let m = first.recv_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    let mut second = client5(&b, "sh-q2-b").await;
    sub_one(&mut second, 1, "$share/g/sq2/t", QoS::ExactlyOnce).await;
    // The first member leaves without PUBREC; its session (expiry 1 s) ends.
    drop(first);
    wait_until("the first member's session expired", || {
        b.broker.session_count() == 2
    })
    .await;
    // [MQTT-4.8.2-4] / [MQTT-4.8.2-5] a QoS 2 delivery already sent belongs to that member's
    // session: when the session ends it is not sent to another member.
    second.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn unsubscribing_a_shared_subscription_stops_its_deliveries() {
    let b = TestBroker::start().await;
    let mut c = client5(&b, "sh-unsub").await;
    sub_one(&mut c, 1, "$share/g/su/t", QoS::AtMostOnce).await;
    c.send(Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(2),
        filters: vec!["$share/g/su/t".into()],
        properties: None,
    }))
    .await;
    match c.recv().await {
        Some(Packet::UnsubAck(u)) => assert_eq!(u.codes, vec![0x00], "it existed"),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    assert_eq!(b.broker.subscription_count(), 0);
    let local = b.broker.local_client("pub");
    local
        .publish("su/t", "m", QoS::AtMostOnce, false)
        .expect("topic");
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn malformed_shared_subscription_filters_close_the_connection() {
    let b = TestBroker::start().await;
    for (i, filter) in ["$share//t", "$share/g+/t", "$share/g"].iter().enumerate() {
        let mut c = client5(&b, &format!("bad-share-{i}")).await;
        c.send_bytes(&raw_subscribe(filter, 0, &[])).await;
        match c.recv().await {
            Some(Packet::Disconnect(d)) => assert!(
                d.reason == 0x81 || d.reason == 0x8F || d.reason == 0x82,
                "[MQTT-4.8.2-1] / [MQTT-4.8.2-2] {filter}: DISCONNECT {:#04x}",
                d.reason
            ),
            other => panic!("{filter}: expected DISCONNECT, got {other:?}"),
        }
    }
    assert_eq!(b.broker.subscription_count(), 0);
    b.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_user_property_response_topic_or_content_type_is_malformed() {
    let b = TestBroker::start().await;
    let bad = [0xC3u8, 0x28];
    let mut bad_str = (bad.len() as u16).to_be_bytes().to_vec();
    bad_str.extend_from_slice(&bad);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("[MQTT-1.5.7-1] User Property name", {
            let mut p = vec![0x26];
            p.extend(&bad_str);
            p.extend(str_field("v"));
            p
        }),
        ("[MQTT-3.3.2-13] Response Topic", {
            let mut p = vec![0x08];
            p.extend(&bad_str);
            p
        }),
        ("[MQTT-3.3.2-19] Content Type", {
            let mut p = vec![0x03];
            p.extend(&bad_str);
            p
        }),
    ];
    for (what, props) in cases {
        let mut body = str_field("t");
        body.extend(props_block(&props));
        body.extend_from_slice(b"x");
        offence_closes(&b, raw(0x30, &body), 0x81, what).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn auth_with_reserved_flags_is_malformed() {
    let b = TestBroker::start().await;
    // AUTH (type 15) with flags 0001: [MQTT-3.15.1-1].
    offence_closes(&b, vec![0xF1, 0x00], 0x81, "[MQTT-3.15.1-1] AUTH flags").await;
    b.stop().await;
}

#[tokio::test]
async fn request_problem_or_response_information_other_than_0_or_1_is_refused() {
    let b = TestBroker::start().await;
    for (what, p) in [
        (
            "Request Problem Information 2",
            Properties {
                request_problem_information: Some(2),
                ..Properties::default()
            },
        ),
        (
            "Request Response Information 2",
            Properties {
                request_response_information: Some(2),
                ..Properties::default()
            },
        ),
    ] {
        let mut c = open5(&b).await;
        // Encode a valid CONNECT with the flag set to 1, then patch the value to 2.
        let mut ok = p.clone();
        if ok.request_problem_information.is_some() {
            ok.request_problem_information = Some(1);
        } else {
            ok.request_response_information = Some(1);
        }
        let mut bytes = enc(&Packet::Connect(Box::new(with_props(
            connect5("rpi", true, 60),
            ok,
        ))));
        let id = if p.request_problem_information.is_some() {
            0x17
        } else {
            0x19
        };
        let at = bytes
            .windows(2)
            .position(|w| w == [id, 1])
            .expect("the property in the encoded CONNECT");
        bytes[at + 1] = 2;
        c.send_bytes(&bytes).await;
        match c.recv_within(WAIT).await {
            Ok(None) => {}
            Ok(Some(Packet::ConnAck(a))) => assert!(a.code >= 0x80, "{what}: refused"),
            other => panic!("{what}: section 3.1.2.11.6/7: expected a refusal, got {other:?}"),
        }
        assert_eq!(b.broker.session_count(), 0, "{what}: no session");
    }
    b.stop().await;
}

#[tokio::test]
async fn an_expired_qos2_message_already_sent_is_still_completed() {
    let b = TestBroker::start().await;
    let (mut c, _) = connect_ok(&b, connect_expiry("q2-exp", true, 60)).await;
    sub_one(&mut c, 1, "q2e/t", QoS::ExactlyOnce).await;
    let mut publisher = client5(&b, "q2e-pub").await;
    publisher
        .send(pub5(
            "q2e/t",
            b"m",
            QoS::ExactlyOnce,
            Some(1),
            Some(Properties {
                message_expiry_interval: Some(1),
                ..Properties::default()
            }),
        ))
        .await;
    // Inbound side, [MQTT-4.3.3-13]: PUBREL after the expiry still gets PUBCOMP.
    match publisher.recv().await {
        Some(Packet::PubRec(r)) => assert_eq!(r.reason, 0),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    let m = c.recv_publish().await;
    assert_eq!(m.qos, QoS::ExactlyOnce);
    drop(c);
    wait_connections(&b, 1).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    publisher.send(Packet::PubRel(ack(1))).await;
    match publisher.recv().await {
        Some(Packet::PubComp(r)) => assert_eq!(
            (r.packet_id, r.reason),
            (pid(1), 0),
            "[MQTT-4.3.3-13] the exchange completes after expiry"
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // Outbound side, [MQTT-4.3.3-7]: the delivery had started, so it is re-sent on resume.
    let (mut c, a) = connect_ok(&b, connect_expiry("q2-exp", false, 60)).await;
    assert!(a.session_present);
    let again = c.recv_publish().await;
    assert!(
        again.dup && again.packet_id == m.packet_id,
        "[MQTT-4.3.3-7] no expiry once a QoS 2 PUBLISH was sent: re-sent with DUP"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos0_with_an_invalid_declared_utf8_payload_is_not_delivered() {
    let b = TestBroker::start().await;
    let mut sub = client5(&b, "pfi0-sub").await;
    sub_one(&mut sub, 1, "pfi0/t", QoS::AtMostOnce).await;
    let mut c = client5(&b, "pfi0-pub").await;
    let declared_utf8 = Properties {
        payload_format_indicator: Some(1),
        ..Properties::default()
    };
    // Policy: QoS 0 has no acknowledgement to carry 0x99, so the message is dropped quietly
    // and the connection stays up.
    c.send(pub5(
        "pfi0/t",
        &[0xFF, 0xFE],
        QoS::AtMostOnce,
        None,
        Some(declared_utf8.clone()),
    ))
    .await;
    c.ping_barrier().await;
    sub.assert_no_publish(&b.broker).await;
    c.send(pub5(
        "pfi0/t",
        "ok".as_bytes(),
        QoS::AtMostOnce,
        None,
        Some(declared_utf8),
    ))
    .await;
    assert_eq!(utf8(&sub.recv_publish().await), "ok");
    b.stop().await;
}

#[tokio::test]
async fn response_information_is_sent_only_when_requested_and_configured() {
    let mut config = test_config();
    config.mqtt.response_information = "responses/%c".to_owned();
    let b = TestBroker::start_with(config).await;
    let ask = |id: &str, value: Option<u8>| {
        with_props(
            connect5(id, true, 60),
            Properties {
                request_response_information: value,
                ..Properties::default()
            },
        )
    };
    let (_c, a) = connect_ok(&b, ask("rr-yes", Some(1))).await;
    assert_eq!(
        connack_props(&a).response_information.as_deref(),
        Some("responses/rr-yes"),
        "section 3.2.2.3.15: Response Information with the client id"
    );
    for (id, value) in [("rr-no", Some(0)), ("rr-absent", None)] {
        let (_c, a) = connect_ok(&b, ask(id, value)).await;
        assert_eq!(
            connack_props(&a).response_information,
            None,
            "[MQTT-3.1.2-28] not requested ({value:?}): none sent"
        );
    }
    b.stop().await;
    // Not configured: none even when requested.
    let b = TestBroker::start().await;
    let (_c, a) = connect_ok(&b, ask("rr-off", Some(1))).await;
    assert_eq!(connack_props(&a).response_information, None);
    b.stop().await;
}

//! MQTT 3.1.1 conformance, statement by statement (see `docs/conformance.md`), plus the MQTT 3.1
//! (`MQIsdp`) differences. Every test drives a real broker over a raw TCP socket with hand-built
//! bytes, and every assertion message names the normative statement it checks.
//!
//! Conventions:
//! - "closed silently": the broker closes the connection and sends no byte at all before it
//!   (for a refused CONNECT: no CONNACK, [MQTT-3.1.4-1]).
//! - Negative delivery checks never sleep: a marker message is routed through an in-process
//!   client *after* the action under test. Routing is synchronous and a session's queue is
//!   first in, first out, so anything routed to the watcher before the marker arrives before it.
//! - A Will is published in the connection's exit path before a Clean Session is removed from
//!   the registry, so "the session count dropped" is the barrier for "no Will was published".

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use common::*;
use mqtt_server::codec::{self, Ack, Packet, ProtocolVersion, Publish, QoS};
use mqtt_server::{ConnectDecision, ConnectRequest, Hooks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Raw packet building
// ---------------------------------------------------------------------------------------------

/// A packet: the first byte, the Remaining Length, the body.
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn field(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("field fits a two-byte length");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Several length-prefixed fields back to back.
fn fields(list: &[&[u8]]) -> Vec<u8> {
    list.iter().flat_map(|f| field(f)).collect()
}

/// A CONNECT with any protocol name, level, flags, keep-alive and payload.
fn connect_raw(name: &[u8], level: u8, flags: u8, keep_alive: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = field(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    body.extend_from_slice(payload);
    pkt(0x10, &body)
}

/// An MQTT 3.1.1 CONNECT (keep-alive 60).
fn connect311(flags: u8, payload: &[u8]) -> Vec<u8> {
    connect_raw(b"MQTT", 4, flags, 60, payload)
}

/// An MQTT 3.1 (`MQIsdp`) CONNECT (keep-alive 60).
fn connect31(flags: u8, payload: &[u8]) -> Vec<u8> {
    connect_raw(b"MQIsdp", 3, flags, 60, payload)
}

/// Connect flag bits.
const CLEAN: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS1: u8 = 0x08;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// A PUBLISH with an explicit first byte (flags included).
fn publish_raw(first: u8, topic: &[u8], id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    pkt(first, &body)
}

/// A SUBSCRIBE with an explicit first byte and raw options bytes.
fn subscribe_raw(first: u8, id: u16, filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for (f, o) in filters {
        body.extend_from_slice(&field(f));
        body.push(*o);
    }
    pkt(first, &body)
}

/// An UNSUBSCRIBE with an explicit first byte.
fn unsubscribe_raw(first: u8, id: u16, filters: &[&[u8]]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for f in filters {
        body.extend_from_slice(&field(f));
    }
    pkt(first, &body)
}

// ---------------------------------------------------------------------------------------------
// Raw reading
// ---------------------------------------------------------------------------------------------

/// Splits one whole packet off the front of `buf`, if it holds one.
fn split_packet(buf: &mut BytesMut) -> Option<Vec<u8>> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let total = 2 + i + len;
            if buf.len() < total {
                return None;
            }
            return Some(buf.split_to(total).to_vec());
        }
    }
    panic!(
        "broker sent a Remaining Length over four bytes: {:02x?}",
        &buf[..]
    );
}

/// The next whole packet as raw bytes, `None` once the connection is closed. Panics after WAIT.
async fn recv_raw(c: &mut RawClient) -> Option<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(p) = split_packet(&mut c.buf) {
            return Some(p);
        }
        match tokio::time::timeout_at(deadline, c.stream.read_buf(&mut c.buf)).await {
            Err(_) => panic!("no packet within {WAIT:?} (buffered: {:02x?})", &c.buf[..]),
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(_)) => {}
        }
    }
}

/// The next raw packet; panics if the connection closed.
async fn next_raw(c: &mut RawClient, what: &str) -> Vec<u8> {
    match recv_raw(c).await {
        Some(p) => p,
        None => panic!("{what}: connection closed, expected a packet"),
    }
}

/// Reads until the broker closes the connection and returns every byte received. Panics if it
/// is not closed within WAIT.
async fn bytes_until_closed(c: &mut RawClient) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, c.stream.read_buf(&mut c.buf)).await {
            Err(_) => panic!(
                "connection not closed within {WAIT:?}; received {:02x?}",
                &c.buf[..]
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return c.buf.split().to_vec(),
            Ok(Ok(_)) => {}
        }
    }
}

/// The broker closes the connection without sending a single byte.
async fn expect_closed_silently(c: &mut RawClient, statement: &str) {
    let got = bytes_until_closed(c).await;
    assert!(
        got.is_empty(),
        "{statement}: expected the connection closed with nothing sent, got {got:02x?}"
    );
}

/// The broker sends exactly `expected` and then closes the connection.
async fn expect_exactly_then_closed(c: &mut RawClient, expected: &[u8], statement: &str) {
    let got = bytes_until_closed(c).await;
    assert_eq!(
        got, expected,
        "{statement}: expected exactly {expected:02x?} then close, got {got:02x?}"
    );
}

/// Opens a connection and writes `bytes` as its first data.
async fn open_with(b: &TestBroker, bytes: &[u8]) -> RawClient {
    let mut c = RawClient::open(b.addr).await;
    c.send_bytes(bytes).await;
    c
}

/// Sends a raw CONNECT and expects exactly `20 02 <sp> 00`; returns the client.
async fn accepted(
    b: &TestBroker,
    connect: &[u8],
    session_present: bool,
    statement: &str,
) -> RawClient {
    let mut c = open_with(b, connect).await;
    let got = next_raw(&mut c, statement).await;
    assert_eq!(
        got,
        [0x20, 0x02, u8::from(session_present), 0x00],
        "{statement}: expected CONNACK accepted (Session Present {})",
        u8::from(session_present)
    );
    c
}

/// A fresh connection that sends `bytes` after a successful CONNECT, then must be closed with
/// nothing sent in answer.
async fn violation_closes_silently(b: &TestBroker, id: &str, bytes: &[u8], statement: &str) {
    let mut c = RawClient::connect(b.addr, id).await;
    c.send_bytes(bytes).await;
    let got = bytes_until_closed(&mut c).await;
    assert!(
        got.is_empty(),
        "{statement}: {bytes:02x?} must close the connection with no answer, got {got:02x?}"
    );
}

/// A CONNECT that must be refused by closing with no CONNACK ([MQTT-3.1.4-1]).
async fn connect_closes_silently(b: &TestBroker, connect: &[u8], statement: &str) {
    let mut c = open_with(b, connect).await;
    let got = bytes_until_closed(&mut c).await;
    assert!(
        got.is_empty(),
        "{statement} / [MQTT-3.1.4-1]: CONNECT {connect:02x?} must be closed without CONNACK, got {got:02x?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Watching what the broker routes
// ---------------------------------------------------------------------------------------------

/// The topic of the marker message used as a delivery barrier.
const MARKER: &str = "zz/marker";

/// Connects `id` (Clean Session 1) subscribed to `filters` and to the marker topic.
async fn subscriber(b: &TestBroker, id: &str, filters: &[(&str, QoS)]) -> RawClient {
    let mut c = RawClient::connect(b.addr, id).await;
    subscribe_with_marker(&mut c, 1, filters).await;
    c
}

/// Subscribes to `filters` plus the marker topic; asserts every filter was granted.
async fn subscribe_with_marker(c: &mut RawClient, id: u16, filters: &[(&str, QoS)]) {
    let mut all = filters.to_vec();
    all.push((MARKER, QoS::AtMostOnce));
    let codes = c.subscribe(id, &all).await;
    assert!(
        codes.iter().all(|&code| code != 0x80),
        "subscription refused: {codes:?}"
    );
}

/// Routes a marker through an in-process client and returns every PUBLISH `w` received before
/// it, acknowledging each as its QoS requires.
async fn before_marker(b: &TestBroker, w: &mut RawClient) -> Vec<Publish> {
    let marker = b.broker.local_client("zz-marker-publisher");
    marker
        .publish(MARKER, "marker", QoS::AtMostOnce, false)
        .expect("valid marker topic");
    drop(marker);
    let mut before = Vec::new();
    loop {
        match w.recv().await {
            Some(Packet::Publish(p)) if &*p.topic == MARKER => return before,
            Some(Packet::Publish(p)) => {
                ack_publish(w, &p).await;
                before.push(p);
            }
            Some(Packet::PubRel(a)) => w.send(Packet::PubComp(Ack::new(a.packet_id))).await,
            Some(other) => panic!("expected PUBLISH before the marker, got {other:?}"),
            None => panic!("connection closed while waiting for the marker"),
        }
    }
}

/// Acknowledges a received PUBLISH: PUBACK for QoS 1, PUBREC for QoS 2.
async fn ack_publish(c: &mut RawClient, p: &Publish) {
    match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => c.send(Packet::PubAck(Ack::new(id))).await,
        (QoS::ExactlyOnce, Some(id)) => c.send(Packet::PubRec(Ack::new(id))).await,
        _ => {}
    }
}

/// The next PUBLISH, acknowledged; a PUBREL on the way is answered with PUBCOMP.
async fn recv_acking(c: &mut RawClient) -> Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                ack_publish(c, &p).await;
                return p;
            }
            Some(Packet::PubRel(a)) => c.send(Packet::PubComp(Ack::new(a.packet_id))).await,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// Asserts that nothing was routed to `w` before the marker.
async fn assert_nothing_routed(b: &TestBroker, w: &mut RawClient, statement: &str) {
    let got = before_marker(b, w).await;
    assert!(
        got.is_empty(),
        "{statement}: nothing may be delivered, got {:?}",
        got.iter().map(|p| p.topic.to_string()).collect::<Vec<_>>()
    );
}

/// Publishes `topics` from one client (QoS 0, payload = topic) and returns the topic names a
/// subscriber to `filters` received, in order (same publisher, same QoS: order is kept).
async fn deliveries(b: &TestBroker, filters: &[&str], topics: &[&str]) -> Vec<String> {
    let f: Vec<(&str, QoS)> = filters.iter().map(|f| (*f, QoS::AtMostOnce)).collect();
    let mut sub = subscriber(b, "match-sub", &f).await;
    let mut publ = RawClient::connect(b.addr, "match-pub").await;
    for t in topics {
        publ.send(publish(t, t, QoS::AtMostOnce, false, None)).await;
    }
    publ.send(publish(MARKER, "end", QoS::AtMostOnce, false, None))
        .await;
    let mut got = Vec::new();
    loop {
        let p = sub.recv_publish().await;
        if &*p.topic == MARKER {
            break;
        }
        got.push(p.topic.to_string());
    }
    publ.disconnect().await;
    sub.disconnect().await;
    got
}

/// Waits until the broker holds `n` sessions (used as the "exit path finished" barrier).
async fn wait_sessions(b: &TestBroker, n: usize) {
    wait_until(&format!("{n} sessions"), || b.broker.session_count() == n).await;
}

// =============================================================================================
// 1 Data representation (§1.5.3 UTF-8 encoded strings)
// =============================================================================================

#[tokio::test]
async fn ill_formed_utf8_in_any_string_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    // Topic filter "a" + 0xFF.
    violation_closes_silently(
        &b,
        "bad-filter",
        &subscribe_raw(0x82, 1, &[(b"a\xFF", 0)]),
        "[MQTT-1.5.3-1] ill-formed UTF-8 in a SUBSCRIBE filter",
    )
    .await;
    // Topic name with an encoded surrogate (U+D800) and with an overlong '/'.
    for topic in [&b"a\xED\xA0\x80"[..], b"a\xC0\xAF"] {
        violation_closes_silently(
            &b,
            "bad-topic",
            &publish_raw(0x30, topic, None, b"x"),
            "[MQTT-1.5.3-1] ill-formed UTF-8 in a PUBLISH topic",
        )
        .await;
    }
    assert_nothing_routed(
        &b,
        &mut w,
        "[MQTT-1.5.3-1] a PUBLISH with an ill-formed topic",
    )
    .await;
    // Client identifier 0xC0 0xAF (overlong encoding).
    connect_closes_silently(
        &b,
        &connect311(CLEAN, &field(b"\xC0\xAF")),
        "[MQTT-1.5.3-1] ill-formed UTF-8 in the client identifier",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn null_character_in_any_string_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    violation_closes_silently(
        &b,
        "nul-topic",
        &publish_raw(0x30, b"a\0b", None, b"x"),
        "[MQTT-1.5.3-2] U+0000 in a PUBLISH topic",
    )
    .await;
    assert_nothing_routed(
        &b,
        &mut w,
        "[MQTT-1.5.3-2] a PUBLISH whose topic holds U+0000",
    )
    .await;
    violation_closes_silently(
        &b,
        "nul-filter",
        &subscribe_raw(0x82, 1, &[(b"a\0", 0)]),
        "[MQTT-1.5.3-2] U+0000 in a SUBSCRIBE filter",
    )
    .await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN, &field(b"a\0")),
        "[MQTT-1.5.3-2] U+0000 in the client identifier",
    )
    .await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN | USERNAME, &fields(&[b"c", b"u\0"])),
        "[MQTT-1.5.3-2] U+0000 in the user name",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn byte_order_mark_is_kept_as_part_of_the_topic() {
    let b = TestBroker::start().await;
    // [MQTT-1.5.3-3] EF BB BF is U+FEFF: kept, never stripped.
    let got = deliveries(&b, &["\u{FEFF}a"], &["\u{FEFF}a", "a"]).await;
    assert_eq!(
        got,
        vec!["\u{FEFF}a".to_owned()],
        "[MQTT-1.5.3-3] a filter starting with U+FEFF matches only the topic that keeps it"
    );
    // The delivered bytes still start with EF BB BF.
    let mut sub = subscriber(&b, "bom-sub", &[("\u{FEFF}a", QoS::AtMostOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "bom-pub").await;
    publ.send_bytes(&publish_raw(0x30, b"\xEF\xBB\xBFa", None, b"x"))
        .await;
    assert_eq!(
        next_raw(&mut sub, "[MQTT-1.5.3-3]").await,
        [0x30, 0x07, 0x00, 0x04, 0xEF, 0xBB, 0xBF, b'a', b'x'],
        "[MQTT-1.5.3-3] the topic is delivered with its BOM"
    );
    b.stop().await;
}

#[tokio::test]
async fn control_characters_and_noncharacters_are_accepted_in_topics() {
    // §1.5.3 (unnumbered) policy: strings with U+0001..U+001F, U+007F..U+009F or Unicode
    // non-characters are accepted and delivered (the receiver MAY close; we do not).
    let b = TestBroker::start().await;
    let topics = ["a\u{1}b", "c\u{1F}", "d\u{7F}", "e\u{9F}", "f\u{FFFF}"];
    let got = deliveries(&b, &["#"], &topics).await;
    assert_eq!(
        got, topics,
        "§1.5.3 policy: control characters and non-characters are delivered"
    );
    b.stop().await;
}

// =============================================================================================
// 2 Control packet format
// =============================================================================================

/// The low nibble each server-sent packet type must carry ([MQTT-2.2.2-1]); PUBLISH is checked
/// by the caller.
fn check_reserved_flags(packet: &[u8]) {
    let first = packet.first().copied().expect("non-empty packet");
    let (kind, flags) = (first >> 4, first & 0x0F);
    let required = match kind {
        3 => return,
        6 => 0b0010,
        2 | 4 | 5 | 7 | 9 | 11 | 13 => 0,
        other => panic!("§2.2.1: the server sent packet type {other}: {packet:02x?}"),
    };
    assert_eq!(
        flags, required,
        "[MQTT-2.2.2-1] packet type {kind} must have flags {required:04b}: {packet:02x?}"
    );
    // §7.1.1: the project's strict decoder accepts every packet the server sends.
    let mut buf = BytesMut::from(packet);
    assert!(
        matches!(
            codec::decode(&mut buf, ProtocolVersion::V3_1_1, usize::MAX),
            Ok(Some(_))
        ),
        "§7.1.1 server packet is well formed: {packet:02x?}"
    );
}

#[tokio::test]
async fn every_packet_the_server_sends_has_the_reserved_flag_values() {
    let b = TestBroker::start().await;
    let mut c = accepted(
        &b,
        &connect311(CLEAN, &field(b"flags")),
        false,
        "[MQTT-3.1.4-4]",
    )
    .await;
    let mut seen: Vec<Vec<u8>> = Vec::new();

    c.send_bytes(&subscribe_raw(0x82, 1, &[(b"t/#", 2)])).await;
    seen.push(next_raw(&mut c, "SUBACK").await);
    // QoS 0, 1 and 2 to itself (the client is its own subscriber).
    c.send_bytes(&publish_raw(0x30, b"t/0", None, b"0")).await;
    let p0 = next_raw(&mut c, "QoS 0 delivery").await;
    assert_eq!(
        p0.first(),
        Some(&0x30),
        "[MQTT-4.3.1-1] QoS 0 sent with QoS=0, DUP=0, RETAIN=0: {p0:02x?}"
    );
    seen.push(p0);
    c.send_bytes(&publish_raw(0x32, b"t/1", Some(2), b"1"))
        .await;
    let mut got = vec![
        next_raw(&mut c, "PUBACK/PUBLISH").await,
        next_raw(&mut c, "PUBACK/PUBLISH").await,
    ];
    got.sort();
    assert_eq!(
        got[0],
        [0x32, 0x08, 0, 3, b't', b'/', b'1', 0, 1, b'1'],
        "QoS 1 delivery (id 1)"
    );
    assert_eq!(got[1], [0x40, 0x02, 0x00, 0x02], "PUBACK");
    seen.extend(got);
    c.send_bytes(&pkt(0x40, &[0, 1])).await;
    c.send_bytes(&publish_raw(0x34, b"t/2", Some(3), b"2"))
        .await;
    let mut got = vec![
        next_raw(&mut c, "PUBREC/PUBLISH").await,
        next_raw(&mut c, "PUBREC/PUBLISH").await,
    ];
    got.sort();
    assert_eq!(
        got[0],
        [0x34, 0x08, 0, 3, b't', b'/', b'2', 0, 2, b'2'],
        "QoS 2 delivery (id 2)"
    );
    assert_eq!(got[1], [0x50, 0x02, 0x00, 0x03], "PUBREC");
    seen.extend(got);
    c.send_bytes(&pkt(0x50, &[0, 2])).await;
    let rel = next_raw(&mut c, "PUBREL").await;
    assert_eq!(
        rel,
        [0x62, 0x02, 0x00, 0x02],
        "[MQTT-2.2.2-1] PUBREL carries flags 0010"
    );
    seen.push(rel);
    c.send_bytes(&pkt(0x70, &[0, 2])).await;
    c.send_bytes(&pkt(0x62, &[0, 3])).await;
    seen.push(next_raw(&mut c, "PUBCOMP").await);
    // A retained message sent for a new subscription.
    c.send_bytes(&publish_raw(0x31, b"r", None, b"kept")).await;
    c.send_bytes(&subscribe_raw(0x82, 4, &[(b"r", 0)])).await;
    let suback = next_raw(&mut c, "SUBACK").await;
    let retained = next_raw(&mut c, "retained PUBLISH").await;
    assert_eq!(
        retained,
        [0x31, 0x07, 0, 1, b'r', b'k', b'e', b'p', b't'],
        "retained QoS 0 with RETAIN 1"
    );
    seen.extend([suback, retained]);
    c.send_bytes(&unsubscribe_raw(0xA2, 5, &[b"r"])).await;
    seen.push(next_raw(&mut c, "UNSUBACK").await);
    c.send_bytes(&[0xC0, 0x00]).await;
    seen.push(next_raw(&mut c, "PINGRESP").await);

    let kinds: HashSet<u8> = seen
        .iter()
        .filter_map(|p| p.first().map(|f| f >> 4))
        .collect();
    assert_eq!(
        kinds,
        HashSet::from([3, 4, 5, 6, 7, 9, 11, 13]),
        "every server-to-client type except CONNACK (checked above) was seen"
    );
    for p in &seen {
        check_reserved_flags(p);
    }
    b.stop().await;
}

#[tokio::test]
async fn invalid_fixed_header_flags_close_the_connection() {
    let b = TestBroker::start().await;
    let cases: &[&[u8]] = &[
        &[0xC1, 0x00],                                     // PINGREQ with a flag
        &[0x41, 0x02, 0x00, 0x01],                         // PUBACK 0001
        &[0x48, 0x02, 0x00, 0x01],                         // PUBACK 1000
        &[0x52, 0x02, 0x00, 0x01],                         // PUBREC 0010
        &[0x60, 0x02, 0x00, 0x01],                         // PUBREL 0000
        &[0x63, 0x02, 0x00, 0x01],                         // PUBREL 0011
        &[0x71, 0x02, 0x00, 0x01],                         // PUBCOMP 0001
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE 0000
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],       // UNSUBSCRIBE 0000
        &[0xE2, 0x00],                                     // DISCONNECT 0010
        &[0x18, 0x00], // CONNECT 1000 (a second CONNECT, and flagged)
    ];
    for (i, bytes) in cases.iter().enumerate() {
        violation_closes_silently(
            &b,
            &format!("flags-{i}"),
            bytes,
            "[MQTT-2.2.2-2] invalid fixed-header flags",
        )
        .await;
    }
    // And as the very first packet: a CONNECT with flags 0001.
    let mut first = connect311(CLEAN, &field(b"c"));
    first[0] = 0x11;
    connect_closes_silently(
        &b,
        &first,
        "[MQTT-2.2.2-2] CONNECT with fixed-header flags 0001",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn zero_packet_identifier_from_a_client_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    let cases: &[(&str, Vec<u8>)] = &[
        ("SUBSCRIBE", subscribe_raw(0x82, 0, &[(b"a/b", 0)])),
        ("UNSUBSCRIBE", unsubscribe_raw(0xA2, 0, &[b"a/b"])),
        ("PUBLISH QoS 1", publish_raw(0x32, b"a/b", Some(0), b"x")),
        ("PUBLISH QoS 2", publish_raw(0x34, b"a/b", Some(0), b"x")),
        ("PUBACK", pkt(0x40, &[0, 0])),
        ("PUBREL", pkt(0x62, &[0, 0])),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        violation_closes_silently(
            &b,
            &format!("zero-id-{i}"),
            bytes,
            &format!("[MQTT-2.3.1-1] {what} with packet identifier 0"),
        )
        .await;
    }
    assert_nothing_routed(
        &b,
        &mut w,
        "[MQTT-2.3.1-1] PUBLISH with packet identifier 0",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn server_packet_identifier_is_kept_on_resend_and_not_reused_while_in_flight() {
    let b = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("ids", false, 60)).await;
    subscribe_with_marker(&mut sub, 1, &[("k", QoS::AtLeastOnce)]).await;
    let app = b.broker.local_client("app");
    app.publish("k", "held", QoS::AtLeastOnce, false)
        .expect("topic");
    let held = sub.recv_publish().await;
    let p = held
        .packet_id
        .expect("[MQTT-2.3.1-1] QoS 1 PUBLISH from the server has a packet id");
    assert!(!held.dup, "[MQTT-4.3.2-1] first delivery has DUP 0");
    // While `p` is unacknowledged, 30 more messages (each acknowledged) never use `p`.
    for i in 0..30 {
        app.publish("k", format!("m{i}"), QoS::AtLeastOnce, false)
            .expect("topic");
        let m = sub.recv_publish().await;
        let id = m.packet_id.expect("packet id");
        assert_ne!(
            id, p,
            "[MQTT-2.3.1-4] an identifier in flight is not reused"
        );
        sub.send(Packet::PubAck(Ack::new(id))).await;
    }
    drop(sub);
    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("ids", false, 60)).await;
    assert!(present, "[MQTT-3.2.2-2]");
    let again = next_raw(&mut sub, "[MQTT-2.3.1-4] re-sent PUBLISH").await;
    let pid = p.get().to_be_bytes();
    assert_eq!(
        again,
        [
            0x3A, 0x09, 0, 1, b'k', pid[0], pid[1], b'h', b'e', b'l', b'd'
        ],
        "[MQTT-2.3.1-4] / [MQTT-3.3.1-1] the re-sent PUBLISH keeps its packet id and has DUP 1"
    );
    sub.send(Packet::PubAck(Ack::new(p))).await;
    assert!(
        before_marker(&b, &mut sub).await.is_empty(),
        "nothing else in flight"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos0_publish_from_the_server_has_no_packet_identifier() {
    let b = TestBroker::start().await;
    let mut s0 = RawClient::connect(b.addr, "s0").await;
    s0.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
    let mut s1 = RawClient::connect(b.addr, "s1").await;
    s1.subscribe(1, &[("a/b", QoS::AtLeastOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "p").await;
    publ.send_bytes(&publish_raw(0x30, b"a/b", None, b"x"))
        .await;
    for s in [&mut s0, &mut s1] {
        assert_eq!(
            next_raw(s, "[MQTT-2.3.1-5]").await,
            [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'x'],
            "[MQTT-2.3.1-5] a QoS 0 PUBLISH carries no packet identifier"
        );
    }
    // Downgraded to QoS 0 by the subscription: no packet identifier either.
    publ.send_bytes(&publish_raw(0x32, b"a/b", Some(9), b"y"))
        .await;
    assert_eq!(
        next_raw(&mut s0, "[MQTT-2.3.1-5]").await,
        [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'y'],
        "[MQTT-2.3.1-5] a QoS 1 message delivered at QoS 0 carries no packet identifier"
    );
    b.stop().await;
}

#[tokio::test]
async fn acknowledgements_carry_the_packet_identifier_of_their_publish() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "acks").await;
    c.send_bytes(&publish_raw(0x32, b"a/b", Some(0x1234), b"x"))
        .await;
    assert_eq!(
        next_raw(&mut c, "PUBACK").await,
        [0x40, 0x02, 0x12, 0x34],
        "[MQTT-2.3.1-6] PUBACK id"
    );
    c.send_bytes(&publish_raw(0x34, b"a/b", Some(0xABCD), b"x"))
        .await;
    assert_eq!(
        next_raw(&mut c, "PUBREC").await,
        [0x50, 0x02, 0xAB, 0xCD],
        "[MQTT-2.3.1-6] PUBREC id"
    );
    c.send_bytes(&pkt(0x62, &[0xAB, 0xCD])).await;
    assert_eq!(
        next_raw(&mut c, "PUBCOMP").await,
        [0x70, 0x02, 0xAB, 0xCD],
        "[MQTT-2.3.1-6] PUBCOMP id"
    );
    // The server as QoS 2 sender: its PUBREL carries the id of its PUBLISH.
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("q2", QoS::ExactlyOnce)]).await;
    c.send(publish("q2", "m", QoS::ExactlyOnce, false, Some(7)))
        .await;
    let p = sub.recv_publish().await;
    let id = p.packet_id.expect("QoS 2 id");
    sub.send(Packet::PubRec(Ack::new(id))).await;
    let want = id.get().to_be_bytes();
    assert_eq!(
        next_raw(&mut sub, "PUBREL").await,
        [0x62, 0x02, want[0], want[1]],
        "[MQTT-2.3.1-6] the server's PUBREL carries its PUBLISH's id"
    );
    b.stop().await;
}

#[tokio::test]
async fn suback_and_unsuback_carry_the_request_packet_identifier() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "ids").await;
    c.send_bytes(&subscribe_raw(0x82, 0xBEEF, &[(b"a/b", 1)]))
        .await;
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        [0x90, 0x03, 0xBE, 0xEF, 0x01],
        "[MQTT-2.3.1-7] / [MQTT-3.8.4-2] SUBACK carries the SUBSCRIBE's id"
    );
    c.send_bytes(&subscribe_raw(0x82, 0x0A0B, &[(b"c", 2)]))
        .await;
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        [0x90, 0x03, 0x0A, 0x0B, 0x02],
        "[MQTT-3.8.4-2] SUBACK carries the SUBSCRIBE's id"
    );
    c.send_bytes(&unsubscribe_raw(0xA2, 0xCAFE, &[b"a/b"]))
        .await;
    assert_eq!(
        next_raw(&mut c, "UNSUBACK").await,
        [0xB0, 0x02, 0xCA, 0xFE],
        "[MQTT-2.3.1-7] / [MQTT-3.10.4-4] UNSUBACK carries the UNSUBSCRIBE's id"
    );
    c.send_bytes(&unsubscribe_raw(0xA2, 0x0102, &[b"c"])).await;
    assert_eq!(
        next_raw(&mut c, "UNSUBACK").await,
        [0xB0, 0x02, 0x01, 0x02],
        "[MQTT-3.10.4-4] UNSUBACK carries the UNSUBSCRIBE's id"
    );
    b.stop().await;
}

#[tokio::test]
async fn forbidden_and_server_only_packet_types_close_the_connection() {
    let b = TestBroker::start().await;
    let cases: &[(&str, &[u8])] = &[
        ("reserved type 0", &[0x00, 0x00]),
        ("reserved type 15", &[0xF0, 0x00]),
        ("CONNACK", &[0x20, 0x02, 0x00, 0x00]),
        ("SUBACK", &[0x90, 0x03, 0x00, 0x01, 0x00]),
        ("UNSUBACK", &[0xB0, 0x02, 0x00, 0x01]),
        ("PINGRESP", &[0xD0, 0x00]),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        violation_closes_silently(
            &b,
            &format!("forbidden-{i}"),
            bytes,
            &format!("§2.2.1 / [MQTT-4.8.0-1] {what} from a client"),
        )
        .await;
    }
    b.stop().await;
}

#[tokio::test]
async fn remaining_length_over_four_bytes_closes_the_connection() {
    let b = TestBroker::start().await;
    for bytes in [
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..],
        &[0x30, 0x80, 0x80, 0x80, 0x80],
    ] {
        violation_closes_silently(
            &b,
            "varint",
            bytes,
            "§2.2.3 a Remaining Length of five bytes is malformed",
        )
        .await;
    }
    b.stop().await;
}

#[tokio::test]
async fn remaining_length_that_disagrees_with_the_contents_closes_the_connection() {
    let b = TestBroker::start().await;
    // CONNECT with one surplus byte after its last field.
    let mut payload = field(b"c");
    payload.push(0);
    connect_closes_silently(
        &b,
        &connect311(CLEAN, &payload),
        "§2.2.3 CONNECT with surplus bytes",
    )
    .await;
    let cases: &[(&str, &[u8])] = &[
        // Topic filter length 5, but only 1 byte follows.
        (
            "SUBSCRIBE field past the end",
            &[0x82, 0x05, 0x00, 0x01, 0x00, 0x05, b'a'],
        ),
        (
            "PUBACK with a surplus byte",
            &[0x40, 0x03, 0x00, 0x01, 0x00],
        ),
        ("PUBREL too short", &[0x62, 0x01, 0x00]),
        (
            "UNSUBSCRIBE field past the end",
            &[0xA2, 0x04, 0x00, 0x01, 0x00, 0x09],
        ),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        violation_closes_silently(&b, &format!("len-{i}"), bytes, &format!("§2.2.3 {what}")).await;
    }
    b.stop().await;
}

// =============================================================================================
// 3.1 CONNECT
// =============================================================================================

#[tokio::test]
async fn first_packet_must_be_connect() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    let mut c = open_with(&b, &[0xC0, 0x00]).await;
    expect_closed_silently(&mut c, "[MQTT-3.1.0-1] PINGREQ before CONNECT").await;
    let mut c = open_with(&b, &publish_raw(0x30, b"a/b", None, b"x")).await;
    expect_closed_silently(&mut c, "[MQTT-3.1.0-1] PUBLISH before CONNECT").await;
    assert_nothing_routed(&b, &mut w, "[MQTT-3.1.0-1] a PUBLISH sent before CONNECT").await;
    b.stop().await;
}

#[tokio::test]
async fn second_connect_closes_without_a_second_connack_and_publishes_the_will() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtMostOnce)]).await;
    let connect = connect311(CLEAN | WILL, &fields(&[b"twice", b"w", b"m"]));
    let mut c = accepted(&b, &connect, false, "[MQTT-3.1.4-4]").await;
    c.send_bytes(&connect).await;
    expect_closed_silently(&mut c, "[MQTT-3.1.0-2] a second CONNECT").await;
    let will = w.recv_publish().await;
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        ("w", &b"m"[..]),
        "[MQTT-3.1.0-2] a protocol violation publishes the Will"
    );
    b.stop().await;
}

#[tokio::test]
async fn unknown_protocol_name_closes_without_connack() {
    let b = TestBroker::start().await;
    for name in [&b"MQTX"[..], b"mqtt", b"MQIsdP", b""] {
        connect_closes_silently(
            &b,
            &connect_raw(name, 4, CLEAN, 60, &field(b"c")),
            &format!(
                "[MQTT-3.1.2-1] protocol name {:?}",
                String::from_utf8_lossy(name)
            ),
        )
        .await;
    }
    b.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    let b = TestBroker::start().await;
    for (name, level) in [
        (&b"MQTT"[..], 0u8),
        (b"MQTT", 2),
        (b"MQTT", 3),
        (b"MQTT", 6),
        (b"MQTT", 255),
        (b"MQIsdp", 4),
        (b"MQIsdp", 1),
    ] {
        let mut c = open_with(&b, &connect_raw(name, level, CLEAN, 60, &field(b"c"))).await;
        expect_exactly_then_closed(
            &mut c,
            &[0x20, 0x02, 0x00, 0x01],
            &format!(
                "[MQTT-3.1.2-2] / [MQTT-3.2.2-4] / [MQTT-3.2.2-5] {} level {level}",
                String::from_utf8_lossy(name)
            ),
        )
        .await;
    }
    b.stop().await;
}

#[tokio::test]
async fn reserved_connect_flag_closes_without_connack() {
    let b = TestBroker::start().await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN | 0x01, &field(b"c")),
        "[MQTT-3.1.2-3] reserved Connect Flags bit set",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn clean_session_state_is_never_reused() {
    let b = TestBroker::start().await;
    // A persistent session with a subscription, replaced by a clean one.
    let (mut c, _) = RawClient::connect_with(b.addr, connect_packet("p", false, 60)).await;
    c.subscribe(1, &[("a/b", QoS::AtLeastOnce)]).await;
    c.disconnect().await;
    let mut c = accepted(
        &b,
        &connect311(CLEAN, &field(b"p")),
        false,
        "[MQTT-3.1.2-6]",
    )
    .await;
    subscribe_with_marker(&mut c, 1, &[]).await;
    let app = b.broker.local_client("app");
    app.publish("a/b", "old-subscription", QoS::AtLeastOnce, false)
        .expect("topic");
    assert!(
        before_marker(&b, &mut c).await.is_empty(),
        "[MQTT-3.1.2-6] CleanSession=1 discards the previous session's subscriptions"
    );
    c.send_bytes(&[0xE0, 0x00]).await;
    bytes_until_closed(&mut c).await;
    wait_sessions(&b, 1).await; // only the in-process "app" remains
    // The clean session is not kept either.
    let mut c = accepted(&b, &connect311(0, &field(b"p")), false, "[MQTT-3.1.2-6]").await;
    c.send_bytes(&[0xE0, 0x00]).await;
    bytes_until_closed(&mut c).await;

    // A live Clean Session taken over by CleanSession=0: its state is not resumed.
    let mut live = RawClient::connect(b.addr, "live").await;
    live.subscribe(1, &[("l", QoS::AtLeastOnce)]).await;
    let mut next = accepted(&b, &connect311(0, &field(b"live")), false, "[MQTT-3.1.2-6]").await;
    live.expect_closed().await;
    subscribe_with_marker(&mut next, 1, &[]).await;
    app.publish("l", "x", QoS::AtLeastOnce, false)
        .expect("topic");
    assert!(
        before_marker(&b, &mut next).await.is_empty(),
        "[MQTT-3.1.2-6] the state of a Clean Session is never reused"
    );
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_outlive_the_publishing_session() {
    let b = TestBroker::start().await;
    let mut a = RawClient::connect(b.addr, "a").await;
    a.send(publish("a/b", "r", QoS::AtLeastOnce, true, Some(1)))
        .await;
    assert!(matches!(a.recv().await, Some(Packet::PubAck(_))));
    a.disconnect().await;
    wait_sessions(&b, 0).await;
    let mut s = RawClient::connect(b.addr, "b").await;
    s.subscribe(1, &[("a/b", QoS::AtLeastOnce)]).await;
    let p = s.recv_publish().await;
    assert!(
        p.retain && &p.payload[..] == b"r",
        "[MQTT-3.1.2-7] / §4.1 a retained message is not deleted when its publisher's session ends"
    );
    b.stop().await;
}

#[tokio::test]
async fn will_flag_without_will_fields_is_malformed() {
    let b = TestBroker::start().await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN | WILL, &field(b"c")),
        "[MQTT-3.1.2-9] Will Flag set, Will Topic and Message missing",
    )
    .await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN | WILL, &fields(&[b"c", b"w"])),
        "[MQTT-3.1.2-9] Will Flag set, Will Message missing",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn will_is_published_once_and_then_removed() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtMostOnce)]).await;
    let c = accepted(
        &b,
        &connect311(CLEAN | WILL, &fields(&[b"once", b"w", b"m"])),
        false,
        "",
    )
    .await;
    drop(c);
    assert_eq!(
        &w.recv_publish().await.payload[..],
        b"m",
        "[MQTT-3.1.2-8] Will published on a drop"
    );
    wait_sessions(&b, 1).await;
    // The same client id again, without a Will, dropped: the old Will is gone.
    let c = accepted(&b, &connect311(CLEAN, &field(b"once")), false, "").await;
    drop(c);
    wait_sessions(&b, 1).await;
    assert_nothing_routed(
        &b,
        &mut w,
        "[MQTT-3.1.2-10] a Will is removed once published: never published a second time",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn will_qos_or_retain_without_will_flag_closes_without_connack() {
    let b = TestBroker::start().await;
    for (flags, statement) in [
        (
            CLEAN | WILL_QOS1,
            "[MQTT-3.1.2-11] / [MQTT-3.1.2-13] Will QoS 1 without Will Flag",
        ),
        (
            CLEAN | 0x10,
            "[MQTT-3.1.2-11] / [MQTT-3.1.2-13] Will QoS 2 without Will Flag",
        ),
        (
            CLEAN | WILL_RETAIN,
            "[MQTT-3.1.2-11] / [MQTT-3.1.2-15] Will Retain without Will Flag",
        ),
    ] {
        connect_closes_silently(&b, &connect311(flags, &field(b"c")), statement).await;
    }
    // Will fields present although the Will Flag is 0: surplus bytes.
    connect_closes_silently(
        &b,
        &connect311(CLEAN, &fields(&[b"c", b"w", b"m"])),
        "[MQTT-3.1.2-11] Will fields present with Will Flag 0",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn no_will_flag_means_nothing_is_published_on_a_drop() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    let c = accepted(&b, &connect311(CLEAN, &field(b"nowill")), false, "").await;
    drop(c);
    wait_sessions(&b, 1).await;
    assert_nothing_routed(&b, &mut w, "[MQTT-3.1.2-12] Will Flag 0: nothing published").await;
    b.stop().await;
}

#[tokio::test]
async fn will_qos_3_closes_without_connack() {
    let b = TestBroker::start().await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN | WILL | 0x18, &fields(&[b"c", b"w", b"m"])),
        "[MQTT-3.1.2-14] Will QoS 3",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn will_retain_0_publishes_a_non_retained_will() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtLeastOnce)]).await;
    let c = accepted(
        &b,
        &connect311(CLEAN | WILL | WILL_QOS1, &fields(&[b"c", b"w", b"m"])),
        false,
        "",
    )
    .await;
    drop(c);
    let will = recv_acking(&mut w).await;
    assert!(
        !will.retain && will.qos == QoS::AtLeastOnce,
        "[MQTT-3.1.2-16] Will published with its QoS, not retained"
    );
    wait_sessions(&b, 1).await;
    assert_eq!(
        b.broker.retained_count(),
        0,
        "[MQTT-3.1.2-16] Will Retain 0: not stored"
    );
    let mut late = subscriber(&b, "late", &[("w", QoS::AtMostOnce)]).await;
    assert_nothing_routed(
        &b,
        &mut late,
        "[MQTT-3.1.2-16] no retained Will for a later subscriber",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn will_retain_1_publishes_a_retained_will() {
    let b = TestBroker::start().await;
    let mut w = RawClient::connect(b.addr, "watcher").await;
    w.subscribe(1, &[("w", QoS::AtMostOnce)]).await;
    let c = accepted(
        &b,
        &connect311(CLEAN | WILL | WILL_RETAIN, &fields(&[b"c", b"w", b"m"])),
        false,
        "",
    )
    .await;
    drop(c);
    assert_eq!(
        next_raw(&mut w, "[MQTT-3.1.2-17]").await,
        [0x30, 0x04, 0x00, 0x01, b'w', b'm'],
        "[MQTT-3.1.2-17] / [MQTT-3.3.1-9] an established subscription gets the Will with RETAIN 0"
    );
    let mut late = RawClient::connect(b.addr, "late").await;
    late.send_bytes(&subscribe_raw(0x82, 1, &[(b"w", 0)])).await;
    assert_eq!(
        next_raw(&mut late, "SUBACK").await,
        [0x90, 0x03, 0x00, 0x01, 0x00]
    );
    assert_eq!(
        next_raw(&mut late, "[MQTT-3.1.2-17]").await,
        [0x31, 0x04, 0x00, 0x01, b'w', b'm'],
        "[MQTT-3.1.2-17] the Will was stored as a retained message"
    );
    b.stop().await;
}

#[tokio::test]
async fn user_name_and_password_flags_must_match_the_payload() {
    let b = TestBroker::start().await;
    let cases: &[(u8, &[&[u8]], &str)] = &[
        (
            CLEAN,
            &[b"c", b"u"],
            "[MQTT-3.1.2-18] User Name Flag 0 but a user name follows",
        ),
        (
            CLEAN | USERNAME,
            &[b"c"],
            "[MQTT-3.1.2-19] User Name Flag 1 but no user name",
        ),
        (
            CLEAN | USERNAME,
            &[b"c", b"u", b"p"],
            "[MQTT-3.1.2-20] Password Flag 0 but a password follows",
        ),
        (
            CLEAN | USERNAME | PASSWORD,
            &[b"c", b"u"],
            "[MQTT-3.1.2-21] Password Flag 1 but no password",
        ),
        (
            CLEAN | PASSWORD,
            &[b"c", b"p"],
            "[MQTT-3.1.2-22] password without user name",
        ),
    ];
    for (flags, payload, statement) in cases {
        connect_closes_silently(&b, &connect311(*flags, &fields(payload)), statement).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_timeout_closes_after_one_and_a_half_times_keep_alive() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtMostOnce)]).await;
    // Keep-alive 1 s, with a Will; keep-alive 0 on a second client, connected at the same time.
    let mut short = accepted(
        &b,
        &connect_raw(
            b"MQTT",
            4,
            CLEAN | WILL,
            1,
            &fields(&[b"ka1", b"w", b"late"]),
        ),
        false,
        "",
    )
    .await;
    let started = Instant::now();
    let mut off = accepted(
        &b,
        &connect_raw(b"MQTT", 4, CLEAN, 0, &field(b"ka0")),
        false,
        "",
    )
    .await;
    let mut two = accepted(
        &b,
        &connect_raw(b"MQTT", 4, CLEAN, 2, &field(b"ka2")),
        false,
        "",
    )
    .await;
    expect_closed_silently(&mut short, "[MQTT-3.1.2-24] keep-alive expiry").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited <= Duration::from_millis(3000),
        "[MQTT-3.1.2-24] closed after 1.5 × keep-alive (1.5 s), took {waited:?}"
    );
    assert_eq!(
        &w.recv_publish().await.payload[..],
        b"late",
        "[MQTT-3.1.2-24] closed as if the network failed: the Will is published"
    );
    // The keep-alive 2 client is closed after 3 s; the keep-alive 0 one is still served then.
    expect_closed_silently(&mut two, "[MQTT-3.1.2-24] keep-alive 2 expiry").await;
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "keep-alive 2 closed too early"
    );
    assert!(
        off.ping_barrier().await.is_empty(),
        "§3.1.2.10 keep-alive 0 turns the timeout off"
    );
    b.stop().await;
}

#[tokio::test]
async fn payload_fields_are_read_in_spec_order() {
    let mut config = test_config();
    config.listeners[0].allow_anonymous = Some(false);
    let b = TestBroker::start_with(config).await;
    b.broker.add_credentials("alice", "secret");
    let mut w = RawClient::connect_with(b.addr, {
        let mut c = connect_packet("watcher", true, 60);
        c.username = Some("alice".into());
        c.password = Some("secret".into());
        c
    })
    .await
    .0;
    w.subscribe(1, &[("w/order", QoS::AtMostOnce)]).await;
    let flags = CLEAN | WILL | USERNAME | PASSWORD;
    let c = accepted(
        &b,
        &connect311(
            flags,
            &fields(&[b"ordered", b"w/order", b"m", b"alice", b"secret"]),
        ),
        false,
        "[MQTT-3.1.3-1]",
    )
    .await;
    drop(c);
    let will = w.recv_publish().await;
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        ("w/order", &b"m"[..]),
        "[MQTT-3.1.3-1] ClientId, Will Topic, Will Message, User Name, Password in that order"
    );
    // User name and password swapped: read positionally, so the credentials are wrong.
    let mut c = open_with(
        &b,
        &connect311(
            CLEAN | USERNAME | PASSWORD,
            &fields(&[b"swapped", b"secret", b"alice"]),
        ),
    )
    .await;
    expect_exactly_then_closed(
        &mut c,
        &[0x20, 0x02, 0x00, 0x04],
        "[MQTT-3.1.3-1] fields are positional",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn sessions_are_identified_by_client_id() {
    let b = TestBroker::start().await;
    let (mut a, _) = RawClient::connect_with(b.addr, connect_packet("A", false, 60)).await;
    a.subscribe(1, &[("a/t", QoS::AtLeastOnce)]).await;
    drop(a);
    let other = accepted(
        &b,
        &connect311(0, &field(b"B")),
        false,
        "[MQTT-3.1.3-2] another id has no session",
    )
    .await;
    drop(other);
    let mut a = accepted(
        &b,
        &connect311(0, &field(b"A")),
        true,
        "[MQTT-3.1.3-2] the id finds its session",
    )
    .await;
    let app = b.broker.local_client("app");
    app.publish("a/t", "for A", QoS::AtLeastOnce, false)
        .expect("topic");
    let got = recv_acking(&mut a).await;
    assert_eq!(
        &got.payload[..],
        b"for A",
        "[MQTT-3.1.3-2] the session's subscription is live"
    );
    b.stop().await;
}

#[tokio::test]
async fn client_id_must_be_present_and_utf8() {
    let b = TestBroker::start().await;
    // Variable header only: Remaining Length 10.
    connect_closes_silently(&b, &connect311(CLEAN, &[]), "[MQTT-3.1.3-3] no ClientId").await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN, &field(b"\xFF\xFE")),
        "[MQTT-3.1.3-4] ClientId FF FE",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn client_ids_of_1_to_23_alphanumerics_are_accepted() {
    let b = TestBroker::start().await;
    for id in [
        "abcdefghijklmnopqrstuvw",
        "0123456789ABCDEFGHIJKLM",
        "a",
        "Z9",
    ] {
        let mut c = accepted(
            &b,
            &connect311(CLEAN, &field(id.as_bytes())),
            false,
            &format!("[MQTT-3.1.3-5] ClientId {id:?}"),
        )
        .await;
        c.send_bytes(&[0xE0, 0x00]).await;
    }
    // Longer ids and other characters MAY be accepted: we accept them.
    let long = format!("{}-/_.:{}", "x".repeat(100), "é");
    accepted(
        &b,
        &connect311(CLEAN, &field(long.as_bytes())),
        false,
        "[MQTT-3.1.3-5] long ClientId accepted",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn zero_length_client_ids_get_unique_identifiers() {
    let b = TestBroker::start().await;
    let mut one = accepted(&b, &connect311(CLEAN, &field(b"")), false, "[MQTT-3.1.3-6]").await;
    let mut two = accepted(&b, &connect311(CLEAN, &field(b"")), false, "[MQTT-3.1.3-6]").await;
    for (c, topic) in [(&mut one, "self/1"), (&mut two, "self/2")] {
        c.send_bytes(&subscribe_raw(0x82, 1, &[(topic.as_bytes(), 0)]))
            .await;
        assert_eq!(next_raw(c, "SUBACK").await, [0x90, 0x03, 0x00, 0x01, 0x00]);
    }
    for (c, topic) in [(&mut one, "self/1"), (&mut two, "self/2")] {
        c.send(publish(topic, "me", QoS::AtMostOnce, false, None))
            .await;
        assert_eq!(
            &*c.recv_publish().await.topic,
            topic,
            "[MQTT-3.1.3-6] two clients with assigned ids are distinct sessions; neither was taken over"
        );
    }
    assert_eq!(
        b.broker.session_count(),
        2,
        "[MQTT-3.1.3-6] unique assigned ids"
    );
    b.stop().await;
}

#[tokio::test]
async fn zero_length_client_id_without_clean_session_gets_0x02() {
    let b = TestBroker::start().await;
    let mut c = open_with(&b, &connect311(0, &field(b""))).await;
    expect_exactly_then_closed(&mut c, &[0x20, 0x02, 0x00, 0x02], "[MQTT-3.1.3-8]").await;
    b.stop().await;
}

struct RejectIds;

#[async_trait]
impl Hooks for RejectIds {
    async fn on_connect(
        &self,
        req: &ConnectRequest<'_>,
        builtin: ConnectDecision,
    ) -> ConnectDecision {
        if req.client_id.starts_with("reject-") {
            ConnectDecision::IdentifierRejected
        } else {
            builtin
        }
    }
}

#[tokio::test]
async fn rejected_client_ids_get_0x02_and_close() {
    let mut config = test_config();
    config.mqtt.allow_zero_length_client_id = false;
    let b = TestBroker::start_with_hooks(config, RejectIds).await;
    let mut c = open_with(&b, &connect311(CLEAN, &field(b""))).await;
    expect_exactly_then_closed(
        &mut c,
        &[0x20, 0x02, 0x00, 0x02],
        "[MQTT-3.1.3-9] zero-length ids disallowed by configuration",
    )
    .await;
    let mut c = open_with(&b, &connect311(CLEAN, &field(b"reject-me"))).await;
    expect_exactly_then_closed(
        &mut c,
        &[0x20, 0x02, 0x00, 0x02],
        "[MQTT-3.1.3-9] id rejected by the hook",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn will_topic_must_be_a_valid_topic_name() {
    let b = TestBroker::start().await;
    for (topic, what) in [
        (
            &b"\xC3\x28"[..],
            "[MQTT-3.1.3-10] ill-formed UTF-8 Will Topic",
        ),
        (b"w\0x", "[MQTT-3.1.3-10] Will Topic with U+0000"),
        (b"w/#", "[MQTT-4.7.1-1] Will Topic with '#'"),
        (b"w/+", "[MQTT-4.7.1-1] Will Topic with '+'"),
        (b"", "[MQTT-4.7.3-1] empty Will Topic"),
    ] {
        connect_closes_silently(
            &b,
            &connect311(CLEAN | WILL, &fields(&[b"c", topic, b"m"])),
            what,
        )
        .await;
    }
    b.stop().await;
}

#[tokio::test]
async fn user_name_must_be_utf8() {
    let b = TestBroker::start().await;
    connect_closes_silently(
        &b,
        &connect311(CLEAN | USERNAME, &fields(&[b"c", b"\xFF"])),
        "[MQTT-3.1.3-11] user name FF",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn malformed_connects_close_without_connack() {
    let b = TestBroker::start().await;
    let mut flagged = connect311(CLEAN, &field(b"c"));
    flagged[0] = 0x11;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Remaining Length 0", vec![0x10, 0x00]),
        (
            "cut-off protocol name",
            vec![0x10, 0x05, 0x00, 0x04, b'M', b'Q', b'T'],
        ),
        ("protocol name length past the end", {
            let mut c = connect311(CLEAN, &field(b"c"));
            c[3] = 0xFF;
            c
        }),
        (
            "no keep-alive",
            vec![0x10, 0x08, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02],
        ),
        (
            "ClientId length past the end",
            connect311(CLEAN, &[0x00, 0x09, b'c']),
        ),
        ("surplus byte", {
            let mut p = field(b"c");
            p.push(0x00);
            connect311(CLEAN, &p)
        }),
        ("fixed-header flags 0001", flagged),
    ];
    for (what, bytes) in cases {
        connect_closes_silently(&b, &bytes, &format!("[MQTT-3.1.4-1] {what}")).await;
    }
    b.stop().await;
}

#[tokio::test]
async fn clean_session_takeover_discards_the_live_persistent_session() {
    let b = TestBroker::start().await;
    let (mut old, _) = RawClient::connect_with(b.addr, connect_packet("take", false, 60)).await;
    old.subscribe(1, &[("t", QoS::AtLeastOnce)]).await;
    let mut new = accepted(
        &b,
        &connect311(CLEAN, &field(b"take")),
        false,
        "[MQTT-3.1.4-3]",
    )
    .await;
    old.expect_closed().await; // [MQTT-3.1.4-2]
    subscribe_with_marker(&mut new, 1, &[]).await;
    let app = b.broker.local_client("app");
    app.publish("t", "x", QoS::AtLeastOnce, false)
        .expect("topic");
    assert!(
        before_marker(&b, &mut new).await.is_empty(),
        "[MQTT-3.1.4-3] CleanSession=1 discarded the persistent session's subscription"
    );
    assert_eq!(
        b.broker.subscription_count(),
        1,
        "only the marker subscription remains"
    );
    new.send_bytes(&[0xE0, 0x00]).await;
    bytes_until_closed(&mut new).await;
    wait_sessions(&b, 1).await;
    let c = accepted(
        &b,
        &connect311(0, &field(b"take")),
        false,
        "[MQTT-3.1.4-3] nothing was kept",
    )
    .await;
    drop(c);
    b.stop().await;
}

#[tokio::test]
async fn accepted_connect_gets_connack_0() {
    let b = TestBroker::start().await;
    let c = accepted(
        &b,
        &connect311(CLEAN, &field(b"c")),
        false,
        "[MQTT-3.1.4-4] CONNACK 20 02 00 00",
    )
    .await;
    drop(c);
    b.stop().await;
}

#[tokio::test]
async fn nothing_after_a_refused_connect_is_processed() {
    let mut config = test_config();
    config.listeners[0].allow_anonymous = Some(false);
    let b = TestBroker::start_with(config).await;
    b.broker.add_credentials("alice", "secret");
    let mut write = connect311(
        CLEAN | USERNAME | PASSWORD,
        &fields(&[b"bad", b"alice", b"wrong"]),
    );
    write.extend(publish_raw(0x31, b"x", None, b"retained"));
    write.extend(subscribe_raw(0x82, 1, &[(b"x", 0)]));
    write.extend([0xC0, 0x00]);
    let mut c = open_with(&b, &write).await;
    expect_exactly_then_closed(
        &mut c,
        &[0x20, 0x02, 0x00, 0x04],
        "[MQTT-3.1.4-5] refused: CONNACK 0x04 and nothing else (no SUBACK, no PINGRESP)",
    )
    .await;
    assert_eq!(
        b.broker.retained_count(),
        0,
        "[MQTT-3.1.4-5] the pipelined PUBLISH was not processed"
    );
    assert_eq!(
        b.broker.subscription_count(),
        0,
        "[MQTT-3.1.4-5] the pipelined SUBSCRIBE was not processed"
    );
    b.stop().await;
}

#[tokio::test]
async fn wills_are_published_promptly() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtMostOnce)]).await;
    let c = accepted(
        &b,
        &connect311(CLEAN | WILL, &fields(&[b"c", b"w", b"m"])),
        false,
        "",
    )
    .await;
    let dropped = Instant::now();
    drop(c);
    w.recv_publish().await;
    assert!(
        dropped.elapsed() < Duration::from_secs(1),
        "§3.1.2.5 the Will is published promptly, took {:?}",
        dropped.elapsed()
    );
    b.stop().await;
}

#[tokio::test]
async fn wills_are_not_published_on_broker_shutdown() {
    // §3.1.2.5 policy: the broker keeps no state across a restart, so a Will pending at
    // shutdown is dropped rather than deferred.
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    app.subscribe("w", QoS::AtMostOnce).expect("filter");
    let c = accepted(
        &b,
        &connect311(CLEAN | WILL, &fields(&[b"c", b"w", b"m"])),
        false,
        "",
    )
    .await;
    b.broker.shutdown().await;
    drop(c);
    assert!(
        app.try_recv().is_none(),
        "§3.1.2.5 policy: no Will is published when the broker shuts down"
    );
}

// =============================================================================================
// 3.2 CONNACK
// =============================================================================================

#[tokio::test]
async fn connack_is_the_first_packet_even_with_pipelined_requests() {
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    app.publish("a/b", "kept", QoS::AtMostOnce, true)
        .expect("topic");
    let mut write = connect311(CLEAN, &field(b"pipe"));
    write.extend(subscribe_raw(0x82, 1, &[(b"a/b", 0)]));
    write.extend([0xC0, 0x00]);
    let mut c = open_with(&b, &write).await;
    assert_eq!(
        next_raw(&mut c, "CONNACK").await,
        [0x20, 0x02, 0x00, 0x00],
        "[MQTT-3.2.0-1] CONNACK first"
    );
    let rest = [
        next_raw(&mut c, "").await,
        next_raw(&mut c, "").await,
        next_raw(&mut c, "").await,
    ];
    let pos = |p: &[u8]| rest.iter().position(|r| r.as_slice() == p);
    let suback = pos(&[0x90, 0x03, 0x00, 0x01, 0x00][..]).expect("SUBACK");
    let retained = pos(&[
        0x31, 0x09, 0x00, 0x03, b'a', b'/', b'b', b'k', b'e', b'p', b't',
    ][..])
    .expect("retained PUBLISH");
    assert!(pos(&[0xD0, 0x00][..]).is_some(), "PINGRESP");
    assert!(
        suback < retained,
        "§3.8.4 our order: SUBACK before the retained messages"
    );
    b.stop().await;
}

#[tokio::test]
async fn session_present_follows_the_stored_session() {
    let b = TestBroker::start().await;
    let c = accepted(
        &b,
        &connect311(0, &field(b"s")),
        false,
        "[MQTT-3.2.2-3] CleanSession=0, no stored session: 20 02 00 00",
    )
    .await;
    drop(c);
    let c = accepted(
        &b,
        &connect311(0, &field(b"s")),
        true,
        "[MQTT-3.2.2-2] CleanSession=0, stored session: 20 02 01 00",
    )
    .await;
    drop(c);
    let c = accepted(
        &b,
        &connect311(CLEAN, &field(b"s")),
        false,
        "[MQTT-3.2.2-1] CleanSession=1: 20 02 00 00",
    )
    .await;
    drop(c);
    b.stop().await;
}

#[tokio::test]
async fn refusals_have_session_present_0_and_close() {
    let mut config = test_config();
    config.listeners[0].allow_anonymous = Some(false);
    let b = TestBroker::start_with(config).await;
    b.broker.add_credentials("alice", "secret");
    // A stored session for "s".
    let good = connect311(USERNAME | PASSWORD, &fields(&[b"s", b"alice", b"secret"]));
    let c = accepted(&b, &good, false, "").await;
    drop(c);
    let c = accepted(&b, &good, true, "stored session").await;
    drop(c);
    let cases: Vec<(Vec<u8>, u8, &str)> = vec![
        (
            connect_raw(
                b"MQTT",
                6,
                USERNAME | PASSWORD,
                60,
                &fields(&[b"s", b"alice", b"secret"]),
            ),
            0x01,
            "protocol level 6",
        ),
        (connect311(0, &field(b"")), 0x02, "identifier rejected"),
        (
            connect311(USERNAME | PASSWORD, &fields(&[b"s", b"alice", b"wrong"])),
            0x04,
            "bad password",
        ),
        (
            connect311(0, &field(b"s")),
            0x05,
            "anonymous not authorized",
        ),
    ];
    for (connect, code, what) in cases {
        let mut c = open_with(&b, &connect).await;
        expect_exactly_then_closed(
            &mut c,
            &[0x20, 0x02, 0x00, code],
            &format!("[MQTT-3.2.2-4] Session Present 0 / [MQTT-3.2.2-5] closed after a refusal ({what}) / §3.2.2.3 code {code:#04x}"),
        )
        .await;
    }
    // The session survived the refusals.
    let c = accepted(
        &b,
        &good,
        true,
        "the stored session is untouched by refused CONNECTs",
    )
    .await;
    drop(c);
    b.stop().await;
}

// =============================================================================================
// 3.3 PUBLISH
// =============================================================================================

#[tokio::test]
async fn redelivered_publishes_have_dup_set() {
    let b = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("dup", false, 60)).await;
    sub.subscribe(1, &[("d/1", QoS::AtLeastOnce), ("d/2", QoS::ExactlyOnce)])
        .await;
    let app = b.broker.local_client("app");
    app.publish("d/1", "one", QoS::AtLeastOnce, false)
        .expect("topic");
    app.publish("d/2", "two", QoS::ExactlyOnce, false)
        .expect("topic");
    let first = [next_raw(&mut sub, "").await, next_raw(&mut sub, "").await];
    assert_eq!(
        first[0].first(),
        Some(&0x32),
        "[MQTT-3.3.1-1] first delivery: DUP 0"
    );
    assert_eq!(
        first[1].first(),
        Some(&0x34),
        "[MQTT-3.3.1-1] first delivery: DUP 0"
    );
    drop(sub);
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("dup", false, 60)).await;
    let again = [next_raw(&mut sub, "").await, next_raw(&mut sub, "").await];
    for (a, f) in again.iter().zip(&first) {
        let mut expected = f.clone();
        expected[0] |= 0x08;
        assert_eq!(
            a, &expected,
            "[MQTT-3.3.1-1] re-delivery: same packet with DUP 1"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn dup_is_never_set_on_qos0_and_qos0_with_dup_is_malformed() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    // QoS 1 with DUP 1 from the publisher, delivered at QoS 0.
    publ.send_bytes(&publish_raw(0x3A, b"a/b", Some(1), b"x"))
        .await;
    assert_eq!(
        next_raw(&mut sub, "[MQTT-3.3.1-2]").await,
        [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'x'],
        "[MQTT-3.3.1-2] a QoS 0 PUBLISH has DUP 0"
    );
    // Policy: a QoS 0 PUBLISH with DUP 1 is malformed and closes the connection.
    violation_closes_silently(
        &b,
        "dup0",
        &publish_raw(0x38, b"a/b", None, b"x"),
        "[MQTT-3.3.1-2] / [MQTT-4.8.0-1] QoS 0 PUBLISH with DUP 1",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn incoming_dup_flag_is_not_propagated() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("a/1", QoS::AtLeastOnce), ("a/2", QoS::ExactlyOnce)])
        .await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send_bytes(&publish_raw(0x3A, b"a/1", Some(1), b"x"))
        .await;
    assert_eq!(
        next_raw(&mut sub, "[MQTT-3.3.1-3]").await,
        [0x32, 0x08, 0x00, 0x03, b'a', b'/', b'1', 0x00, 0x01, b'x'],
        "[MQTT-3.3.1-3] the publisher's DUP flag is not passed on (QoS 1)"
    );
    publ.send_bytes(&publish_raw(0x3C, b"a/2", Some(2), b"y"))
        .await;
    assert_eq!(
        next_raw(&mut sub, "[MQTT-3.3.1-3]").await,
        [0x34, 0x08, 0x00, 0x03, b'a', b'/', b'2', 0x00, 0x02, b'y'],
        "[MQTT-3.3.1-3] the publisher's DUP flag is not passed on (QoS 2)"
    );
    b.stop().await;
}

#[tokio::test]
async fn publish_with_qos_3_closes_and_is_not_delivered() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    violation_closes_silently(
        &b,
        "qos3",
        &publish_raw(0x36, b"a/b", Some(1), b"x"),
        "[MQTT-3.3.1-4] PUBLISH with QoS 3",
    )
    .await;
    assert_nothing_routed(&b, &mut w, "[MQTT-3.3.1-4] a QoS 3 PUBLISH").await;
    b.stop().await;
}

#[tokio::test]
async fn new_subscription_gets_the_retained_message_of_every_matching_topic() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("a/b", "ab", QoS::AtLeastOnce, true, Some(1)))
        .await;
    publ.send(publish("a/c", "ac", QoS::AtMostOnce, true, None))
        .await;
    publ.ping_barrier().await;
    let mut s = RawClient::connect(b.addr, "s").await;
    s.subscribe(1, &[("a/+", QoS::ExactlyOnce)]).await;
    let mut got = [recv_acking(&mut s).await, recv_acking(&mut s).await];
    got.sort_by(|x, y| x.topic.cmp(&y.topic));
    assert!(
        got.iter().all(|p| p.retain),
        "[MQTT-3.3.1-8] RETAIN 1 for a new subscription"
    );
    assert_eq!(
        got.iter()
            .map(|p| (p.topic.to_string(), p.qos))
            .collect::<Vec<_>>(),
        vec![
            ("a/b".to_owned(), QoS::AtLeastOnce),
            ("a/c".to_owned(), QoS::AtMostOnce)
        ],
        "[MQTT-3.3.1-6] every matching retained message / [MQTT-3.3.1-5] stored with its QoS"
    );
    let mut s2 = subscriber(&b, "s2", &[("a/b/#", QoS::AtMostOnce)]).await;
    let got = before_marker(&b, &mut s2).await;
    assert_eq!(
        got.iter().map(|p| p.topic.to_string()).collect::<Vec<_>>(),
        vec!["a/b"],
        "[MQTT-3.3.1-6] only the topics the filter matches"
    );
    b.stop().await;
}

#[tokio::test]
async fn empty_retained_publish_is_delivered_and_clears_the_topic() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("a/b", "r", QoS::AtMostOnce, true, None))
        .await;
    publ.ping_barrier().await;
    let mut existing = RawClient::connect(b.addr, "existing").await;
    existing.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
    assert!(existing.recv_publish().await.retain);
    publ.send_bytes(&publish_raw(0x31, b"a/b", None, b"")).await;
    assert_eq!(
        next_raw(&mut existing, "[MQTT-3.3.1-10]").await,
        [0x30, 0x05, 0x00, 0x03, b'a', b'/', b'b'],
        "[MQTT-3.3.1-10] the empty retained PUBLISH is delivered to current subscribers (RETAIN 0)"
    );
    assert_eq!(
        b.broker.retained_count(),
        0,
        "[MQTT-3.3.1-10] the retained message is removed"
    );
    let mut late = subscriber(&b, "late", &[("a/b", QoS::AtMostOnce)]).await;
    assert_nothing_routed(
        &b,
        &mut late,
        "[MQTT-3.3.1-10] no retained message for a future subscriber",
    )
    .await;
    // An empty retained message on a topic with nothing retained is not stored either.
    publ.send_bytes(&publish_raw(0x31, b"a/empty", None, b""))
        .await;
    publ.ping_barrier().await;
    assert_eq!(
        b.broker.retained_count(),
        0,
        "[MQTT-3.3.1-11] a zero-byte retained message is never stored"
    );
    b.stop().await;
}

#[tokio::test]
async fn non_retained_publish_leaves_the_retained_message_alone() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("a/b", "old", QoS::AtMostOnce, true, None))
        .await;
    publ.send(publish("a/b", "live", QoS::AtMostOnce, false, None))
        .await;
    publ.ping_barrier().await;
    let mut s = RawClient::connect(b.addr, "s").await;
    s.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
    let p = s.recv_publish().await;
    assert!(
        p.retain && &p.payload[..] == b"old",
        "[MQTT-3.3.1-12] RETAIN 0 neither stores nor replaces the retained message"
    );
    b.stop().await;
}

#[tokio::test]
async fn publish_topic_must_be_a_present_utf8_topic_name() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "[MQTT-3.3.2-1] topic 61 FF",
            &[0x30, 0x05, 0x00, 0x02, b'a', 0xFF, b'x'],
        ),
        (
            "[MQTT-3.3.2-1] no room for the topic (Remaining Length 1)",
            &[0x30, 0x01, 0x00],
        ),
        (
            "[MQTT-3.3.2-2] topic a/+",
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', b'x'],
        ),
        (
            "[MQTT-3.3.2-2] topic a/#",
            &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', b'x'],
        ),
        (
            "[MQTT-3.3.2-2] topic #",
            &[0x30, 0x04, 0x00, 0x01, b'#', b'x'],
        ),
        (
            "[MQTT-4.7.3-1] empty topic",
            &[0x30, 0x03, 0x00, 0x00, b'x'],
        ),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        violation_closes_silently(&b, &format!("topic-{i}"), bytes, what).await;
    }
    assert_nothing_routed(
        &b,
        &mut w,
        "[MQTT-3.3.2-1] / [MQTT-3.3.2-2] invalid topic names",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn delivered_topic_is_the_topic_name_not_the_filter() {
    let b = TestBroker::start().await;
    let mut s = RawClient::connect(b.addr, "s").await;
    s.subscribe(1, &[("a/+", QoS::AtMostOnce), ("x/#", QoS::AtMostOnce)])
        .await;
    let mut p = RawClient::connect(b.addr, "p").await;
    p.send_bytes(&publish_raw(0x30, b"a/b", None, b"1")).await;
    p.send_bytes(&publish_raw(0x30, b"x/y/z", None, b"2")).await;
    assert_eq!(
        next_raw(&mut s, "").await,
        [0x30, 0x06, 0x00, 0x03, b'a', b'/', b'b', b'1'],
        "[MQTT-3.3.2-3] the PUBLISH carries the topic name a/b"
    );
    assert_eq!(
        next_raw(&mut s, "").await,
        [0x30, 0x08, 0x00, 0x05, b'x', b'/', b'y', b'/', b'z', b'2'],
        "[MQTT-3.3.2-3] the PUBLISH carries the topic name x/y/z"
    );
    b.stop().await;
}

#[tokio::test]
async fn publish_is_answered_according_to_its_qos() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "c").await;
    c.send_bytes(&publish_raw(0x30, b"a", None, b"x")).await;
    c.send_bytes(&[0xC0, 0x00]).await;
    assert_eq!(
        next_raw(&mut c, "").await,
        [0xD0, 0x00],
        "[MQTT-3.3.4-1] QoS 0: no answer"
    );
    c.send_bytes(&publish_raw(0x32, b"a", Some(5), b"x")).await;
    assert_eq!(
        next_raw(&mut c, "").await,
        [0x40, 0x02, 0x00, 0x05],
        "[MQTT-3.3.4-1] QoS 1: PUBACK"
    );
    c.send_bytes(&publish_raw(0x34, b"a", Some(6), b"x")).await;
    assert_eq!(
        next_raw(&mut c, "").await,
        [0x50, 0x02, 0x00, 0x06],
        "[MQTT-3.3.4-1] QoS 2: PUBREC"
    );
    b.stop().await;
}

#[tokio::test]
async fn zero_length_payload_is_delivered_as_is() {
    let b = TestBroker::start().await;
    let mut s = RawClient::connect(b.addr, "s").await;
    s.subscribe(1, &[("e", QoS::AtLeastOnce)]).await;
    let mut p = RawClient::connect(b.addr, "p").await;
    p.send_bytes(&publish_raw(0x32, b"e", Some(1), b"")).await;
    let got = s.recv_publish().await;
    assert!(
        got.payload.is_empty() && &*got.topic == "e",
        "§3.3.3 an empty payload is delivered"
    );
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_follow_the_wildcard_and_dollar_rules() {
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    for t in ["sport", "sport/tennis", "$app/x", "a/x"] {
        app.publish(t, t, QoS::AtMostOnce, true).expect("topic");
    }
    let topics = |ps: Vec<Publish>| {
        let mut v: Vec<String> = ps.iter().map(|p| p.topic.to_string()).collect();
        v.sort();
        v
    };
    let mut s = subscriber(&b, "s1", &[("#", QoS::AtMostOnce)]).await;
    assert_eq!(
        topics(before_marker(&b, &mut s).await),
        ["a/x", "sport", "sport/tennis"],
        "[MQTT-4.7.2-1] a retained $ topic is not sent for #"
    );
    let mut s = subscriber(&b, "s2", &[("+/x", QoS::AtMostOnce)]).await;
    assert_eq!(
        topics(before_marker(&b, &mut s).await),
        ["a/x"],
        "[MQTT-4.7.2-1] a retained $ topic is not sent for +/x"
    );
    let mut s = subscriber(&b, "s3", &[("$app/#", QoS::AtMostOnce)]).await;
    assert_eq!(
        topics(before_marker(&b, &mut s).await),
        ["$app/x"],
        "[MQTT-4.7.2-1] $app/# gets it"
    );
    let mut s = subscriber(&b, "s4", &[("sport/#", QoS::AtMostOnce)]).await;
    assert_eq!(
        topics(before_marker(&b, &mut s).await),
        ["sport", "sport/tennis"],
        "[MQTT-3.3.1-6] / [MQTT-4.7.1-2] sport/# includes the parent level"
    );
    b.stop().await;
}

#[tokio::test]
async fn overlapping_filters_in_one_subscribe_each_get_the_retained_message() {
    // Policy: live messages reach a session once, at the highest QoS of its matching
    // subscriptions (tests/wildcards.rs); retained messages are sent per new subscription
    // ([MQTT-3.3.1-6]), so two overlapping filters subscribed together each get a copy.
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    app.publish("o/x", "kept", QoS::AtMostOnce, true)
        .expect("topic");
    let mut s = subscriber(
        &b,
        "s",
        &[("o/#", QoS::AtMostOnce), ("o/+", QoS::AtMostOnce)],
    )
    .await;
    let got = before_marker(&b, &mut s).await;
    assert_eq!(
        got.len(),
        2,
        "[MQTT-3.3.1-6] one retained copy per new subscription: {got:?}"
    );
    assert!(got.iter().all(|p| p.retain && &p.payload[..] == b"kept"));
    app.publish("o/x", "live", QoS::AtMostOnce, false)
        .expect("topic");
    assert_eq!(
        before_marker(&b, &mut s).await.len(),
        1,
        "§3.3.5 policy: one live copy"
    );
    b.stop().await;
}

// =============================================================================================
// 3.6 PUBREL
// =============================================================================================

#[tokio::test]
async fn pubrel_with_flags_other_than_0010_closes() {
    let b = TestBroker::start().await;
    for first in [0x60u8, 0x63, 0x6A] {
        let mut c = RawClient::connect(b.addr, "rel").await;
        c.send_bytes(&publish_raw(0x34, b"a", Some(1), b"x")).await;
        assert_eq!(next_raw(&mut c, "PUBREC").await, [0x50, 0x02, 0x00, 0x01]);
        c.send_bytes(&[first, 0x02, 0x00, 0x01]).await;
        expect_closed_silently(
            &mut c,
            &format!("[MQTT-3.6.1-1] PUBREL with first byte {first:#04x}: no PUBCOMP"),
        )
        .await;
    }
    b.stop().await;
}

// =============================================================================================
// 3.8 SUBSCRIBE / 3.9 SUBACK
// =============================================================================================

#[tokio::test]
async fn subscribe_with_flags_other_than_0010_closes() {
    let b = TestBroker::start().await;
    for first in [0x80u8, 0x83, 0x8A] {
        violation_closes_silently(
            &b,
            "sub-flags",
            &subscribe_raw(first, 1, &[(b"a/b", 0)]),
            &format!("[MQTT-3.8.1-1] SUBSCRIBE first byte {first:#04x}: no SUBACK"),
        )
        .await;
    }
    assert_eq!(
        b.broker.subscription_count(),
        0,
        "[MQTT-3.8.1-1] nothing subscribed"
    );
    b.stop().await;
}

#[tokio::test]
async fn subscribe_payload_violations_close_without_suback() {
    let b = TestBroker::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "[MQTT-3.8.3-1] filter 61 FF",
            subscribe_raw(0x82, 1, &[(b"a\xFF", 0)]),
        ),
        ("[MQTT-3.8.3-3] no filter", vec![0x82, 0x02, 0x00, 0x01]),
        (
            "[MQTT-3.8.3-4] requested QoS 3",
            subscribe_raw(0x82, 1, &[(b"a", 0x03)]),
        ),
        (
            "[MQTT-3.8.3-4] options 04",
            subscribe_raw(0x82, 1, &[(b"a", 0x04)]),
        ),
        (
            "[MQTT-3.8.3-4] options 08",
            subscribe_raw(0x82, 1, &[(b"a", 0x08)]),
        ),
        (
            "[MQTT-3.8.3-4] options 40",
            subscribe_raw(0x82, 1, &[(b"a", 0x40)]),
        ),
        (
            "[MQTT-3.8.3-4] options 81",
            subscribe_raw(0x82, 1, &[(b"a", 0x81)]),
        ),
        (
            "[MQTT-3.8.3-4] second filter's options bad",
            subscribe_raw(0x82, 1, &[(b"a", 0x01), (b"b", 0x10)]),
        ),
        (
            "[MQTT-4.7.3-1] empty filter",
            subscribe_raw(0x82, 1, &[(b"", 0)]),
        ),
        (
            "[MQTT-4.7.3-2] filter with U+0000",
            subscribe_raw(0x82, 1, &[(b"a\0b", 0)]),
        ),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        violation_closes_silently(&b, &format!("sub-{i}"), bytes, what).await;
    }
    assert_eq!(b.broker.subscription_count(), 0, "no subscription was made");
    b.stop().await;
}

#[tokio::test]
async fn every_subscribe_is_answered_with_one_suback_with_one_code_per_filter() {
    let b = TestBroker::start_with_hooks(test_config(), DenyPrefix).await;
    let mut c = RawClient::connect(b.addr, "subs").await;
    let names: Vec<String> = (0..10).map(|i| format!("f/{i}")).collect();
    let filters: Vec<(&[u8], u8)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_bytes(), (i % 3) as u8))
        .collect();
    c.send_bytes(&subscribe_raw(0x82, 0x0102, &filters)).await;
    let mut expected = vec![0x90, 12, 0x01, 0x02];
    expected.extend((0..10).map(|i| (i % 3) as u8));
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        expected,
        "[MQTT-3.8.4-1] one SUBACK / [MQTT-3.8.4-5] one return code per filter"
    );
    // A refused filter (the hook denies `denied/...`) still gets a SUBACK.
    c.send_bytes(&subscribe_raw(0x82, 2, &[(b"denied/a", 1)]))
        .await;
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        [0x90, 0x03, 0x00, 0x02, 0x80],
        "[MQTT-3.8.4-1] / [MQTT-3.8.4-5] failure code 0x80 for a refused filter"
    );
    assert_eq!(
        b.broker.subscription_count(),
        10,
        "the denied filter was not subscribed"
    );
    b.stop().await;
}

#[tokio::test]
async fn resubscribing_replaces_the_subscription_without_interrupting_the_flow() {
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    app.publish("s", "retained", QoS::AtMostOnce, true)
        .expect("topic");
    let mut c = RawClient::connect(b.addr, "re").await;
    c.subscribe(1, &[("s", QoS::AtMostOnce)]).await;
    let r = c.recv_publish().await;
    assert!(r.retain && r.qos == QoS::AtMostOnce);
    // Publish 1..=100, re-subscribe at QoS 1 half-way, publish 101..=200.
    for i in 1..=100 {
        app.publish("s", i.to_string(), QoS::AtLeastOnce, false)
            .expect("topic");
    }
    c.send(subscribe(2, &[("s", QoS::AtLeastOnce)])).await;
    for i in 101..=200 {
        app.publish("s", i.to_string(), QoS::AtLeastOnce, false)
            .expect("topic");
    }
    let mut seq = Vec::new();
    let mut suback = None;
    let mut retained_again = 0;
    // Until the 200 messages, the SUBACK and the re-sent retained message have all arrived.
    while seq.len() < 200 || suback.is_none() || retained_again == 0 {
        match c.recv().await {
            Some(Packet::SubAck(s)) => suback = Some(s.codes),
            Some(Packet::Publish(p)) => {
                ack_publish(&mut c, &p).await;
                if p.retain {
                    retained_again += 1;
                    assert_eq!(&p.payload[..], b"retained");
                    assert_eq!(p.qos, QoS::AtMostOnce, "retained QoS 0 message at QoS 0");
                } else {
                    seq.push(
                        String::from_utf8_lossy(&p.payload)
                            .parse::<u32>()
                            .expect("number"),
                    );
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<u32> = (1..=200).collect();
    assert_eq!(
        seq, expected,
        "[MQTT-3.8.4-3] the flow of publications is not interrupted (no loss, no duplicate)"
    );
    assert_eq!(
        suback,
        Some(vec![1]),
        "[MQTT-3.8.4-3] the replacing subscription's QoS is granted"
    );
    subscribe_with_marker(&mut c, 3, &[]).await;
    assert!(
        before_marker(&b, &mut c).await.is_empty(),
        "[MQTT-3.8.4-3] retained messages are re-sent once, and nothing is duplicated"
    );
    assert_eq!(
        b.broker.subscription_count(),
        2,
        "[MQTT-3.8.4-3] replaced, not added (s + marker)"
    );
    // One subscription: one copy, at QoS 1.
    app.publish("s", "last", QoS::ExactlyOnce, false)
        .expect("topic");
    let got = before_marker(&b, &mut c).await;
    assert_eq!(got.len(), 1, "[MQTT-3.8.4-3] one copy");
    assert_eq!(
        got[0].qos,
        QoS::AtLeastOnce,
        "[MQTT-3.8.4-3] at the new QoS"
    );
    b.stop().await;
}

#[tokio::test]
async fn multi_filter_subscribe_is_handled_like_separate_subscribes() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "multi").await;
    c.send_bytes(&subscribe_raw(0x82, 1, &[(b"x", 0), (b"y", 2), (b"z", 1)]))
        .await;
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        [0x90, 0x05, 0x00, 0x01, 0x00, 0x02, 0x01],
        "[MQTT-3.8.4-4] one SUBACK / [MQTT-3.9.3-1] codes in filter order"
    );
    let mut p = RawClient::connect(b.addr, "p").await;
    for (i, t) in ["x", "y", "z"].into_iter().enumerate() {
        p.send(publish(t, t, QoS::ExactlyOnce, false, Some(i as u16 + 1)))
            .await;
    }
    let got: Vec<(String, QoS)> = vec![
        recv_acking(&mut c).await,
        recv_acking(&mut c).await,
        recv_acking(&mut c).await,
    ]
    .into_iter()
    .map(|p| (p.topic.to_string(), p.qos))
    .collect();
    let got: HashMap<String, QoS> = got.into_iter().collect();
    assert_eq!(
        got,
        HashMap::from([
            ("x".to_owned(), QoS::AtMostOnce),
            ("y".to_owned(), QoS::ExactlyOnce),
            ("z".to_owned(), QoS::AtLeastOnce),
        ]),
        "[MQTT-3.8.4-4] each filter subscribed / [MQTT-3.8.4-6] delivered at min(published, granted)"
    );
    b.stop().await;
}

#[tokio::test]
async fn suback_return_codes_are_only_0_1_2_or_0x80() {
    let b = TestBroker::start_with_hooks(test_config(), DenyPrefix).await;
    let mut c = RawClient::connect(b.addr, "codes").await;
    c.send_bytes(&subscribe_raw(
        0x82,
        1,
        &[
            (b"a", 0),
            (b"denied/b", 2),
            (b"c", 2),
            (b"d", 1),
            (b"#", 2),
            (b"+/x", 1),
        ],
    ))
    .await;
    let suback = next_raw(&mut c, "SUBACK").await;
    let codes = suback.get(4..).expect("codes").to_vec();
    assert_eq!(
        codes,
        [0x00, 0x80, 0x02, 0x01, 0x02, 0x01],
        "[MQTT-3.9.3-1] in order"
    );
    assert!(
        codes.iter().all(|c| matches!(c, 0x00 | 0x01 | 0x02 | 0x80)),
        "[MQTT-3.9.3-2] only 00, 01, 02 and 80: {codes:02x?}"
    );
    b.stop().await;
}

// =============================================================================================
// 3.10 UNSUBSCRIBE
// =============================================================================================

#[tokio::test]
async fn unsubscribe_violations_close_without_unsuback() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "keep").await;
    c.subscribe(1, &[("a/b", QoS::AtMostOnce)]).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "[MQTT-3.10.1-1] flags 0000",
            unsubscribe_raw(0xA0, 1, &[b"a/b"]),
        ),
        (
            "[MQTT-3.10.1-1] flags 0011",
            unsubscribe_raw(0xA3, 1, &[b"a/b"]),
        ),
        (
            "[MQTT-3.10.3-1] filter 61 FF",
            unsubscribe_raw(0xA2, 1, &[b"a\xFF"]),
        ),
        ("[MQTT-3.10.3-2] no filter", vec![0xA2, 0x02, 0x00, 0x01]),
        (
            "[MQTT-4.7.3-1] empty filter",
            unsubscribe_raw(0xA2, 1, &[b""]),
        ),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        violation_closes_silently(&b, &format!("unsub-{i}"), bytes, what).await;
    }
    assert_eq!(
        b.broker.subscription_count(),
        1,
        "the other client's subscription is untouched"
    );
    b.stop().await;
}

#[tokio::test]
async fn unsubscribe_deletes_only_an_exactly_matching_filter() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("a/+", QoS::AtMostOnce)]).await;
    let app = b.broker.local_client("app");
    for (id, filter) in [(2u16, "a/b"), (3, "A/+"), (4, "a/#"), (5, "a/+/")] {
        s.send(unsubscribe(id, &[filter])).await;
        assert!(matches!(s.recv().await, Some(Packet::UnsubAck(a)) if a.packet_id == pid(id)));
        app.publish("a/b", filter, QoS::AtMostOnce, false)
            .expect("topic");
        let got = before_marker(&b, &mut s).await;
        assert_eq!(
            got.len(),
            1,
            "[MQTT-3.10.4-1] UNSUBSCRIBE {filter:?} does not delete the subscription a/+"
        );
    }
    s.send(unsubscribe(6, &["a/+"])).await;
    assert!(matches!(s.recv().await, Some(Packet::UnsubAck(_))));
    app.publish("a/b", "after", QoS::AtMostOnce, false)
        .expect("topic");
    assert_nothing_routed(
        &b,
        &mut s,
        "[MQTT-3.10.4-1] / [MQTT-3.10.4-2] the exact filter deletes it",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn unsubscribe_completes_deliveries_already_started() {
    let b = TestBroker::start().await;
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("u3", false, 60)).await;
    subscribe_with_marker(
        &mut s,
        1,
        &[("x", QoS::AtLeastOnce), ("y", QoS::ExactlyOnce)],
    )
    .await;
    let app = b.broker.local_client("app");
    app.publish("x", "one", QoS::AtLeastOnce, false)
        .expect("topic");
    app.publish("y", "two", QoS::ExactlyOnce, false)
        .expect("topic");
    let one = s.recv_publish().await;
    let two = s.recv_publish().await;
    s.send(unsubscribe(2, &["x", "y"])).await;
    assert!(matches!(s.recv().await, Some(Packet::UnsubAck(_))));
    drop(s);
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("u3", false, 60)).await;
    let again = [s.recv_publish().await, s.recv_publish().await];
    assert!(
        again[0].dup
            && again[0].packet_id == one.packet_id
            && again[1].dup
            && again[1].packet_id == two.packet_id,
        "[MQTT-3.10.4-3] QoS 1 and QoS 2 deliveries started before UNSUBSCRIBE are completed"
    );
    s.send(Packet::PubAck(Ack::new(one.packet_id.expect("id"))))
        .await;
    let id2 = two.packet_id.expect("id");
    s.send(Packet::PubRec(Ack::new(id2))).await;
    assert!(
        matches!(s.recv().await, Some(Packet::PubRel(a)) if a.packet_id == id2),
        "[MQTT-3.10.4-3] the QoS 2 flow goes on to PUBREL"
    );
    s.send(Packet::PubComp(Ack::new(id2))).await;
    app.publish("x", "new", QoS::AtLeastOnce, false)
        .expect("topic");
    assert_nothing_routed(
        &b,
        &mut s,
        "[MQTT-3.10.4-2] no new message for the deleted subscription",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn unsuback_is_sent_even_when_nothing_was_deleted() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "c").await;
    c.send_bytes(&unsubscribe_raw(0xA2, 1, &[b"nope"])).await;
    assert_eq!(
        next_raw(&mut c, "UNSUBACK").await,
        [0xB0, 0x02, 0x00, 0x01],
        "[MQTT-3.10.4-5] UNSUBACK for a filter never subscribed"
    );
    b.stop().await;
}

#[tokio::test]
async fn multi_filter_unsubscribe_gets_a_single_unsuback() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)]).await;
    s.send_bytes(&unsubscribe_raw(0xA2, 7, &[b"a", b"b"])).await;
    s.send_bytes(&[0xC0, 0x00]).await;
    assert_eq!(
        next_raw(&mut s, "UNSUBACK").await,
        [0xB0, 0x02, 0x00, 0x07],
        "[MQTT-3.10.4-6]"
    );
    assert_eq!(
        next_raw(&mut s, "PINGRESP").await,
        [0xD0, 0x00],
        "[MQTT-3.10.4-6] exactly one UNSUBACK"
    );
    let app = b.broker.local_client("app");
    app.publish("a", "x", QoS::AtMostOnce, false)
        .expect("topic");
    app.publish("b", "x", QoS::AtMostOnce, false)
        .expect("topic");
    assert_nothing_routed(&b, &mut s, "[MQTT-3.10.4-6] both filters were deleted").await;
    b.stop().await;
}

// =============================================================================================
// 3.12 PINGREQ / 3.14 DISCONNECT
// =============================================================================================

#[tokio::test]
async fn every_pingreq_gets_a_pingresp() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "ping").await;
    c.send_bytes(&[0xC0, 0x00].repeat(10)).await;
    for i in 0..10 {
        assert_eq!(
            next_raw(&mut c, "PINGRESP").await,
            [0xD0, 0x00],
            "[MQTT-3.12.4-1] PINGRESP {i}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn invalid_disconnect_closes_and_keeps_the_will() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w/#", QoS::AtMostOnce)]).await;
    for (i, bad) in [&[0xE1u8, 0x00][..], &[0xE0, 0x01, 0x00]]
        .into_iter()
        .enumerate()
    {
        let topic = format!("w/{i}");
        let mut c = accepted(
            &b,
            &connect311(CLEAN | WILL, &fields(&[b"d", topic.as_bytes(), b"m"])),
            false,
            "",
        )
        .await;
        c.send_bytes(bad).await;
        expect_closed_silently(
            &mut c,
            &format!("[MQTT-3.14.1-1] invalid DISCONNECT {bad:02x?}"),
        )
        .await;
        assert_eq!(
            &*w.recv_publish().await.topic,
            topic,
            "[MQTT-3.14.1-1] an invalid DISCONNECT does not discard the Will"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn disconnect_discards_the_will_and_the_server_closes() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("#", QoS::AtMostOnce)]).await;
    let mut c = accepted(
        &b,
        &connect311(CLEAN | WILL, &fields(&[b"bye", b"w", b"m"])),
        false,
        "",
    )
    .await;
    // DISCONNECT and, in the same write, a PUBLISH that must be ignored; the socket stays open.
    let mut write = vec![0xE0, 0x00];
    write.extend(publish_raw(0x30, b"after", None, b"x"));
    c.send_bytes(&write).await;
    expect_closed_silently(
        &mut c,
        "§3.14.4 the server closes the connection after DISCONNECT",
    )
    .await;
    wait_sessions(&b, 1).await;
    assert_nothing_routed(
        &b,
        &mut w,
        "[MQTT-3.14.4-3] no Will after DISCONNECT / [MQTT-3.14.4-2] nothing after DISCONNECT is processed",
    )
    .await;
    b.stop().await;
}

// =============================================================================================
// 4 Operational behaviour
// =============================================================================================

#[tokio::test]
async fn session_lasts_as_long_as_its_connection() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "long", &[("l", QoS::AtLeastOnce)]).await;
    // Other sessions come and go (each end runs the session clean-up path).
    for i in 0..10 {
        let mut o = RawClient::connect(b.addr, &format!("other-{i}")).await;
        o.subscribe(1, &[("l", QoS::AtMostOnce)]).await;
        o.disconnect().await;
    }
    wait_sessions(&b, 1).await;
    let app = b.broker.local_client("app");
    app.publish("l", "still", QoS::AtLeastOnce, false)
        .expect("topic");
    assert_eq!(
        &recv_acking(&mut s).await.payload[..],
        b"still",
        "[MQTT-4.1.0-1] / [MQTT-4.1.0-2] the session and its subscription last while connected"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos1_sender_uses_unused_ids_and_resends_only_unacknowledged() {
    let b = TestBroker::start().await;
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("q1", false, 60)).await;
    subscribe_with_marker(&mut s, 1, &[("q", QoS::AtLeastOnce)]).await;
    let app = b.broker.local_client("app");
    for i in 1..=5 {
        app.publish("q", i.to_string(), QoS::AtLeastOnce, false)
            .expect("topic");
    }
    let mut sent = Vec::new();
    for _ in 0..5 {
        let raw = next_raw(&mut s, "QoS 1 PUBLISH").await;
        assert_eq!(
            raw.first(),
            Some(&0x32),
            "[MQTT-4.3.2-1] QoS=1, DUP=0: {raw:02x?}"
        );
        let mut buf = BytesMut::from(&raw[..]);
        match codec::decode(&mut buf, ProtocolVersion::V3_1_1, usize::MAX) {
            Ok(Some(Packet::Publish(p))) => sent.push(p),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    let ids: HashSet<_> = sent.iter().map(|p| p.packet_id.expect("id")).collect();
    assert_eq!(
        ids.len(),
        5,
        "[MQTT-4.3.2-1] five distinct non-zero packet ids"
    );
    // Acknowledge the 1st and 3rd, drop the connection: only the others are re-sent, in order.
    for i in [0, 2] {
        s.send(Packet::PubAck(Ack::new(sent[i].packet_id.expect("id"))))
            .await;
    }
    s.send(Packet::PingReq).await;
    assert!(matches!(s.recv().await, Some(Packet::PingResp)));
    drop(s);
    let (mut s, present) = RawClient::connect_with(b.addr, connect_packet("q1", false, 60)).await;
    assert!(present);
    let resent = before_marker(&b, &mut s).await;
    assert_eq!(
        resent
            .iter()
            .map(|p| (p.packet_id, p.payload.clone(), p.dup))
            .collect::<Vec<_>>(),
        [1usize, 3, 4]
            .iter()
            .map(|&i| (sent[i].packet_id, sent[i].payload.clone(), true))
            .collect::<Vec<_>>(),
        "[MQTT-4.3.2-1] unacknowledged until PUBACK: only these are re-sent / [MQTT-4.6.0-1] in the original order"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos1_receiver_treats_a_reused_id_after_puback_as_new() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("n", QoS::AtLeastOnce)]).await;
    let mut p = RawClient::connect(b.addr, "p").await;
    p.send_bytes(&publish_raw(0x32, b"n", Some(7), b"first"))
        .await;
    assert_eq!(
        next_raw(&mut p, "PUBACK").await,
        [0x40, 0x02, 0x00, 0x07],
        "[MQTT-4.3.2-2] PUBACK id 7"
    );
    p.send_bytes(&publish_raw(0x3A, b"n", Some(7), b"second"))
        .await;
    assert_eq!(
        next_raw(&mut p, "PUBACK").await,
        [0x40, 0x02, 0x00, 0x07],
        "[MQTT-4.3.2-2] PUBACK id 7"
    );
    let got: Vec<_> = before_marker(&b, &mut s)
        .await
        .into_iter()
        .map(|p| p.payload)
        .collect();
    assert_eq!(
        got,
        ["first", "second"],
        "[MQTT-4.3.2-2] after PUBACK the same id (even with DUP) is a new publication"
    );
    b.stop().await;
}

#[tokio::test]
async fn qos2_sender_never_resends_the_publish_after_pubrel() {
    let b = TestBroker::start().await;
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("q2", false, 60)).await;
    subscribe_with_marker(&mut s, 1, &[("q", QoS::ExactlyOnce)]).await;
    let app = b.broker.local_client("app");
    app.publish("q", "m", QoS::ExactlyOnce, false)
        .expect("topic");
    let raw = next_raw(&mut s, "QoS 2 PUBLISH").await;
    assert_eq!(raw.first(), Some(&0x34), "[MQTT-4.3.3-1] QoS=2, DUP=0");
    let id = raw.get(5..7).expect("id").to_vec();
    s.send_bytes(&pkt(0x50, &id)).await;
    assert_eq!(
        next_raw(&mut s, "PUBREL").await,
        pkt(0x62, &id),
        "[MQTT-4.3.3-1] PUBREL with the same id"
    );
    drop(s);
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("q2", false, 60)).await;
    assert_eq!(
        next_raw(&mut s, "re-sent PUBREL").await,
        pkt(0x62, &id),
        "[MQTT-4.3.3-1] after PUBREL only the PUBREL is re-sent, never the PUBLISH"
    );
    s.send_bytes(&pkt(0x70, &id)).await;
    assert!(
        before_marker(&b, &mut s).await.is_empty(),
        "[MQTT-4.3.3-1] nothing else"
    );
    drop(s);
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("q2", false, 60)).await;
    assert_nothing_routed(
        &b,
        &mut s,
        "[MQTT-4.3.3-1] PUBCOMP completed the flow: nothing re-sent",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn qos2_receiver_delivers_once_and_frees_the_id_after_pubcomp() {
    let b = TestBroker::start().await;
    let mut s = subscriber(&b, "s", &[("q", QoS::AtMostOnce)]).await;
    let mut p = RawClient::connect(b.addr, "p").await;
    p.send_bytes(&publish_raw(0x34, b"q", Some(9), b"one"))
        .await;
    assert_eq!(
        next_raw(&mut p, "PUBREC").await,
        [0x50, 0x02, 0x00, 0x09],
        "[MQTT-4.3.3-2] PUBREC"
    );
    p.send_bytes(&publish_raw(0x3C, b"q", Some(9), b"one"))
        .await;
    assert_eq!(
        next_raw(&mut p, "PUBREC").await,
        [0x50, 0x02, 0x00, 0x09],
        "[MQTT-4.3.3-2] PUBREC again"
    );
    p.send_bytes(&[0x62, 0x02, 0x00, 0x09]).await;
    assert_eq!(
        next_raw(&mut p, "PUBCOMP").await,
        [0x70, 0x02, 0x00, 0x09],
        "[MQTT-4.3.3-2] PUBCOMP same id"
    );
    assert_eq!(
        before_marker(&b, &mut s).await.len(),
        1,
        "[MQTT-4.3.3-2] delivered once"
    );
    p.send_bytes(&publish_raw(0x34, b"q", Some(9), b"two"))
        .await;
    assert_eq!(next_raw(&mut p, "PUBREC").await, [0x50, 0x02, 0x00, 0x09]);
    let got = before_marker(&b, &mut s).await;
    assert_eq!(
        got.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(),
        ["two"],
        "[MQTT-4.3.3-2] after PUBCOMP the id starts a new publication"
    );
    b.stop().await;
}

#[tokio::test]
async fn reconnect_resends_publish_and_pubrel_before_new_messages() {
    let b = TestBroker::start().await;
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("r", false, 60)).await;
    subscribe_with_marker(&mut s, 1, &[("r/#", QoS::ExactlyOnce)]).await;
    let app = b.broker.local_client("app");
    app.publish("r/1", "one", QoS::AtLeastOnce, false)
        .expect("topic");
    app.publish("r/2", "two", QoS::ExactlyOnce, false)
        .expect("topic");
    let one = s.recv_publish().await;
    let two = s.recv_publish().await;
    let id2 = two.packet_id.expect("id");
    s.send(Packet::PubRec(Ack::new(id2))).await;
    assert!(matches!(s.recv().await, Some(Packet::PubRel(_))));
    drop(s);
    wait_until("offline", || b.broker.metrics().connections_current == 1).await; // "app"
    app.publish("r/3", "three", QoS::AtLeastOnce, false)
        .expect("topic");
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("r", false, 60)).await;
    let p1 = s.recv_publish().await;
    assert!(
        p1.dup && p1.packet_id == one.packet_id && p1.payload == one.payload,
        "[MQTT-4.4.0-1] the unacknowledged PUBLISH is re-sent first, same id, DUP 1"
    );
    assert!(
        matches!(s.recv().await, Some(Packet::PubRel(a)) if a.packet_id == id2),
        "[MQTT-4.4.0-1] then the unacknowledged PUBREL, same id"
    );
    let p3 = s.recv_publish().await;
    assert!(
        !p3.dup
            && &p3.payload[..] == b"three"
            && p3.packet_id != one.packet_id
            && p3.packet_id != Some(id2),
        "[MQTT-4.4.0-1] new traffic follows, with an unused id"
    );
    b.stop().await;
}

#[tokio::test]
async fn message_is_added_to_every_matching_session() {
    let b = TestBroker::start().await;
    let (mut off, _) = RawClient::connect_with(b.addr, connect_packet("offline", false, 60)).await;
    off.subscribe(1, &[("a/#", QoS::AtLeastOnce)]).await;
    off.disconnect().await;
    wait_until("offline", || b.broker.metrics().connections_current == 0).await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut s = RawClient::connect(b.addr, &format!("s{i}")).await;
        s.subscribe(1, &[("a/#", QoS::AtLeastOnce)]).await;
        subs.push(s);
    }
    let mut p = RawClient::connect(b.addr, "p").await;
    p.send(publish("a/b", "all", QoS::AtLeastOnce, false, Some(1)))
        .await;
    for s in &mut subs {
        assert_eq!(
            &recv_acking(s).await.payload[..],
            b"all",
            "[MQTT-4.5.0-1] each subscriber gets it"
        );
    }
    let (mut off, _) = RawClient::connect_with(b.addr, connect_packet("offline", false, 60)).await;
    assert_eq!(
        &recv_acking(&mut off).await.payload[..],
        b"all",
        "[MQTT-4.5.0-1] added to the offline session too"
    );
    b.stop().await;
}

#[tokio::test]
async fn acknowledgements_go_out_in_the_order_publishes_arrived() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "order").await;
    let mut write = Vec::new();
    for i in 1..=20u16 {
        write.extend(publish_raw(0x32, b"o/1", Some(i), b"x"));
    }
    c.send_bytes(&write).await;
    for i in 1..=20u16 {
        let id = i.to_be_bytes();
        assert_eq!(
            next_raw(&mut c, "PUBACK").await,
            [0x40, 0x02, id[0], id[1]],
            "[MQTT-4.6.0-2] PUBACK {i} in order"
        );
    }
    let mut write = Vec::new();
    for i in 1..=20u16 {
        write.extend(publish_raw(0x34, b"o/2", Some(i), b"x"));
    }
    c.send_bytes(&write).await;
    for i in 1..=20u16 {
        let id = i.to_be_bytes();
        assert_eq!(
            next_raw(&mut c, "PUBREC").await,
            [0x50, 0x02, id[0], id[1]],
            "[MQTT-4.6.0-3] PUBREC {i} in order"
        );
    }
    let mut write = Vec::new();
    for i in 1..=20u16 {
        write.extend(pkt(0x62, &i.to_be_bytes()));
    }
    c.send_bytes(&write).await;
    for i in 1..=20u16 {
        let id = i.to_be_bytes();
        assert_eq!(
            next_raw(&mut c, "PUBCOMP").await,
            [0x70, 0x02, id[0], id[1]],
            "PUBCOMP {i} in order"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn pubrels_go_out_in_the_order_pubrecs_arrived() {
    let b = TestBroker::start().await;
    let mut s = RawClient::connect(b.addr, "s").await;
    s.subscribe(1, &[("q", QoS::ExactlyOnce)]).await;
    let app = b.broker.local_client("app");
    for i in 1..=3 {
        app.publish("q", i.to_string(), QoS::ExactlyOnce, false)
            .expect("topic");
    }
    let ids: Vec<_> = [
        s.recv_publish().await,
        s.recv_publish().await,
        s.recv_publish().await,
    ]
    .iter()
    .map(|p| p.packet_id.expect("id"))
    .collect();
    let order = [ids[2], ids[0], ids[1]];
    let mut write = Vec::new();
    for id in order {
        write.extend(pkt(0x50, &id.get().to_be_bytes()));
    }
    s.send_bytes(&write).await;
    for id in order {
        assert_eq!(
            next_raw(&mut s, "PUBREL").await,
            pkt(0x62, &id.get().to_be_bytes()),
            "[MQTT-4.6.0-4] PUBRELs in the order the PUBRECs arrived"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn messages_from_one_client_keep_their_order_per_topic_and_qos() {
    let b = TestBroker::start().await;
    let mut subs = Vec::new();
    for i in 0..2 {
        let mut s = RawClient::connect(b.addr, &format!("s{i}")).await;
        s.subscribe(1, &[("t", QoS::ExactlyOnce)]).await;
        subs.push(s);
    }
    let mut pa = RawClient::connect(b.addr, "A").await;
    let mut pb = RawClient::connect(b.addr, "B").await;
    const N: u16 = 60;
    async fn run(c: &mut RawClient, name: &str) {
        for i in 1..=N {
            let qos = match i % 3 {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            };
            let id = (qos != QoS::AtMostOnce).then_some(i);
            c.send(publish(
                "t",
                &format!("{name}:{}:{i}", qos as u8),
                qos,
                false,
                id,
            ))
            .await;
            if qos == QoS::ExactlyOnce {
                c.send(Packet::PubRel(ack(i))).await;
            }
        }
    }
    tokio::join!(run(&mut pa, "A"), run(&mut pb, "B"));
    for s in &mut subs {
        let mut last: HashMap<(String, String), u16> = HashMap::new();
        for _ in 0..2 * N {
            let p = recv_acking(s).await;
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            let mut parts = text.split(':');
            let (who, qos, seq) = (
                parts.next().expect("who").to_owned(),
                parts.next().expect("qos").to_owned(),
                parts.next().expect("seq").parse::<u16>().expect("number"),
            );
            let prev = last.insert((who.clone(), qos.clone()), seq).unwrap_or(0);
            assert!(
                seq > prev,
                "[MQTT-4.6.0-6] publisher {who}, QoS {qos}: {seq} arrived after {prev}"
            );
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn hash_wildcard_must_be_last_and_alone_in_its_level() {
    let b = TestBroker::start().await;
    for filter in ["a#", "sport/tennis#", "#/a", "a/#/b", "##"] {
        violation_closes_silently(
            &b,
            "hash",
            &subscribe_raw(0x82, 1, &[(filter.as_bytes(), 0)]),
            &format!("[MQTT-4.7.1-2] filter {filter:?} (policy: close)"),
        )
        .await;
    }
    let got = deliveries(&b, &["sport/#"], &["sport", "sport/tennis", "sports"]).await;
    assert_eq!(
        got,
        ["sport", "sport/tennis"],
        "[MQTT-4.7.1-2] sport/# also matches the parent level"
    );
    let got = deliveries(&b, &["#"], &["a", "/", "a/b/c"]).await;
    assert_eq!(
        got,
        ["a", "/", "a/b/c"],
        "[MQTT-4.7.1-2] # alone matches everything"
    );
    b.stop().await;
}

#[tokio::test]
async fn plus_wildcard_must_fill_a_whole_level() {
    let b = TestBroker::start().await;
    for filter in ["sport+", "a/b+", "+a", "a/++/b"] {
        violation_closes_silently(
            &b,
            "plus",
            &subscribe_raw(0x82, 1, &[(filter.as_bytes(), 0)]),
            &format!("[MQTT-4.7.1-3] filter {filter:?} (policy: close)"),
        )
        .await;
    }
    let got = deliveries(
        &b,
        &["sport/+"],
        &["sport", "sport/", "sport/x", "sport/x/y"],
    )
    .await;
    assert_eq!(
        got,
        ["sport/", "sport/x"],
        "[MQTT-4.7.1-3] sport/+ matches one level, even an empty one"
    );
    let got = deliveries(
        &b,
        &["+", "+/tennis/#"],
        &["x", "/tennis", "a/tennis/b", "a/b"],
    )
    .await;
    assert_eq!(
        got,
        ["x", "/tennis", "a/tennis/b"],
        "[MQTT-4.7.1-3] + at the first and any level"
    );
    b.stop().await;
}

#[tokio::test]
async fn topic_of_65535_bytes_is_delivered_intact() {
    let b = TestBroker::start().await;
    let mut s = RawClient::connect(b.addr, "s").await;
    s.subscribe(1, &[("#", QoS::AtMostOnce)]).await;
    let mut p = RawClient::connect(b.addr, "p").await;
    let topic = "t".repeat(65_535);
    p.send(publish(&topic, "big", QoS::AtMostOnce, false, None))
        .await;
    let got = s.recv_publish().await;
    assert!(
        got.topic.len() == 65_535 && *got.topic == *topic,
        "[MQTT-4.7.3-3] a 65,535-byte topic name is accepted and delivered intact"
    );
    b.stop().await;
}

#[tokio::test]
async fn topic_matching_is_byte_for_byte() {
    let b = TestBroker::start().await;
    // NFC "é" (C3 A9) vs NFD "e" + U+0301 (65 CC 81); case; spaces.
    let got = deliveries(
        &b,
        &["caf\u{E9}", "Accounts", "a b"],
        &[
            "cafe\u{301}",
            "caf\u{E9}",
            "ACCOUNTS",
            "accounts",
            "Accounts",
            "a b",
            "ab",
            "a  b",
        ],
    )
    .await;
    assert_eq!(
        got,
        ["caf\u{E9}", "Accounts", "a b"],
        "[MQTT-4.7.3-4] no normalization, no case folding"
    );
    b.stop().await;
}

#[tokio::test]
async fn leading_and_trailing_slashes_and_empty_levels_are_significant() {
    let b = TestBroker::start().await;
    let got = deliveries(
        &b,
        &["/finance", "a/+/b", "/", "x/"],
        &["finance", "/finance", "a//b", "a/b", "/", "x", "x/"],
    )
    .await;
    assert_eq!(
        got,
        ["/finance", "a//b", "/", "x/"],
        "§4.7.3 leading '/', empty levels, '/' alone and trailing '/' are significant"
    );
    b.stop().await;
}

#[tokio::test]
async fn clients_cannot_publish_into_sys() {
    let b = TestBroker::start().await;
    let mut w = subscriber(
        &b,
        "watcher",
        &[("$SYS/#", QoS::AtMostOnce), ("$app/#", QoS::AtMostOnce)],
    )
    .await;
    let mut p = RawClient::connect(b.addr, "p").await;
    p.send_bytes(&publish_raw(0x32, b"$SYS/x", Some(1), b"fake"))
        .await;
    assert_eq!(
        next_raw(&mut p, "PUBACK").await,
        [0x40, 0x02, 0x00, 0x01],
        "acknowledged, then dropped"
    );
    p.send_bytes(&publish_raw(0x30, b"$app/x", None, b"allowed"))
        .await;
    p.ping_barrier().await;
    let got = before_marker(&b, &mut w).await;
    assert_eq!(
        got.iter().map(|p| p.topic.to_string()).collect::<Vec<_>>(),
        ["$app/x"],
        "§4.7.2 policy: clients cannot publish into $SYS; other $ topics are ordinary"
    );
    b.stop().await;
}

#[tokio::test]
async fn transient_error_closes_only_that_connection() {
    let mut config = test_config();
    config.limits.max_packet_size = 1024;
    let b = TestBroker::start_with(config).await;
    let mut s = subscriber(&b, "bystander", &[("t", QoS::AtLeastOnce)]).await;
    let mut big = RawClient::connect(b.addr, "big").await;
    big.send(publish(
        "t",
        &"x".repeat(2000),
        QoS::AtMostOnce,
        false,
        None,
    ))
    .await;
    expect_closed_silently(
        &mut big,
        "[MQTT-4.8.0-2] a packet over the buffer limit closes its connection",
    )
    .await;
    assert!(
        s.ping_barrier().await.is_empty(),
        "§4.8 the other client is still served"
    );
    let app = b.broker.local_client("app");
    app.publish("t", "ok", QoS::AtLeastOnce, false)
        .expect("topic");
    let got = before_marker(&b, &mut s).await;
    assert_eq!(
        got.len(),
        1,
        "§4.8 the other client's subscription still delivers (and the oversized one was not routed)"
    );
    assert_eq!(&got[0].payload[..], b"ok");
    b.stop().await;
}

#[tokio::test]
async fn offline_qos0_is_queued_only_when_configured() {
    // §3.1.2.4 policy: QoS 0 messages for an offline persistent session are dropped by default
    // (tests/session.rs) and queued with `queue_qos0_messages = true`.
    let mut config = test_config();
    config.mqtt.queue_qos0_messages = true;
    let b = TestBroker::start_with(config).await;
    let (mut s, _) = RawClient::connect_with(b.addr, connect_packet("q0", false, 60)).await;
    subscribe_with_marker(&mut s, 1, &[("z", QoS::AtMostOnce)]).await;
    s.disconnect().await;
    wait_until("offline", || b.broker.metrics().connections_current == 0).await;
    let app = b.broker.local_client("app");
    app.publish("z", "queued", QoS::AtMostOnce, false)
        .expect("topic");
    let (mut s, present) = RawClient::connect_with(b.addr, connect_packet("q0", false, 60)).await;
    assert!(present);
    let got = before_marker(&b, &mut s).await;
    assert_eq!(
        got.iter().map(|p| p.payload.clone()).collect::<Vec<_>>(),
        ["queued"],
        "§3.1.2.4 queue_qos0_messages = true queues QoS 0 for an offline session"
    );
    b.stop().await;
}

// =============================================================================================
// 7 Conformance: the transport is an ordered, lossless byte stream
// =============================================================================================

#[tokio::test]
async fn packets_split_into_single_bytes_or_batched_are_all_processed() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    let mut session = connect311(CLEAN, &field(b"bytes"));
    session.extend(subscribe_raw(0x82, 1, &[(b"t", 1)]));
    session.extend(publish_raw(0x32, b"t", Some(2), b"x"));
    session.extend([0xC0, 0x00]);
    for byte in session {
        c.stream.write_all(&[byte]).await.expect("write");
        c.stream.flush().await.expect("flush");
    }
    assert_eq!(
        next_raw(&mut c, "").await,
        [0x20, 0x02, 0x00, 0x00],
        "[MQTT-7.1.1-1] CONNACK"
    );
    assert_eq!(
        next_raw(&mut c, "").await,
        [0x90, 0x03, 0x00, 0x01, 0x01],
        "[MQTT-7.1.1-1] SUBACK"
    );
    let mut rest = vec![
        next_raw(&mut c, "").await,
        next_raw(&mut c, "").await,
        next_raw(&mut c, "").await,
    ];
    rest.sort();
    assert_eq!(
        rest,
        [
            vec![0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x'],
            vec![0x40, 0x02, 0x00, 0x02],
            vec![0xD0, 0x00],
        ],
        "[MQTT-7.1.1-1] packets written one byte at a time"
    );
    // Fifty packets in one write.
    let mut write = Vec::new();
    for i in 1..=50u16 {
        write.extend(publish_raw(0x30, b"t", None, i.to_string().as_bytes()));
    }
    c.send_bytes(&write).await;
    for i in 1..=50 {
        let p = c.recv_publish().await;
        assert_eq!(
            p.payload,
            i.to_string(),
            "[MQTT-7.1.1-1] fifty packets in one write, in order"
        );
    }
    b.stop().await;
}

// =============================================================================================
// MQTT 3.1 (MQIsdp)
// =============================================================================================

/// An MQTT 3.1 client (decodes with the 3.1 codec).
async fn connect_v31(b: &TestBroker, connect: &[u8]) -> RawClient {
    let mut c = accepted(b, connect, false, "31-1 MQIsdp level 3 accepted").await;
    c.version = ProtocolVersion::V3_1;
    c
}

#[tokio::test]
async fn mqtt_3_1_level_and_name_mismatch_gets_0x01() {
    let b = TestBroker::start().await;
    for (name, level) in [(&b"MQIsdp"[..], 4u8), (b"MQTT", 3)] {
        let mut c = open_with(&b, &connect_raw(name, level, CLEAN, 60, &field(b"c"))).await;
        expect_exactly_then_closed(
            &mut c,
            &[0x20, 0x02, 0x00, 0x01],
            &format!("31-1 {} with level {level}", String::from_utf8_lossy(name)),
        )
        .await;
    }
    let c = connect_v31(&b, &connect31(CLEAN, &field(b"c"))).await;
    drop(c);
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_long_client_ids_are_accepted_and_empty_ones_refused() {
    let b = TestBroker::start().await;
    let c = connect_v31(&b, &connect31(CLEAN, &field("x".repeat(64).as_bytes()))).await;
    drop(c);
    // An empty id is refused for 3.1 even though 3.1.1 clients may use one.
    let mut c = open_with(&b, &connect31(CLEAN, &field(b""))).await;
    expect_exactly_then_closed(
        &mut c,
        &[0x20, 0x02, 0x00, 0x02],
        "31-3 empty ClientId from a 3.1 client",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_connack_never_has_session_present() {
    let b = TestBroker::start().await;
    let mut c = connect_v31(&b, &connect31(0, &field(b"old"))).await;
    c.subscribe(1, &[("t31", QoS::AtLeastOnce)]).await;
    drop(c);
    let mut c = open_with(&b, &connect31(0, &field(b"old"))).await;
    c.version = ProtocolVersion::V3_1;
    assert_eq!(
        next_raw(&mut c, "CONNACK").await,
        [0x20, 0x02, 0x00, 0x00],
        "31-4 byte 1 is 00 for a 3.1 client even when the session is resumed"
    );
    let app = b.broker.local_client("app");
    app.publish("t31", "resumed", QoS::AtLeastOnce, false)
        .expect("topic");
    assert_eq!(
        &recv_acking(&mut c).await.payload[..],
        b"resumed",
        "31-4 the session was resumed"
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_refused_subscription_gets_0x80() {
    let b = TestBroker::start_with_hooks(test_config(), DenyPrefix).await;
    let mut c = connect_v31(&b, &connect31(CLEAN, &field(b"c"))).await;
    c.send_bytes(&subscribe_raw(0x82, 1, &[(b"denied/x", 1), (b"x", 1)]))
        .await;
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        [0x90, 0x04, 0x00, 0x01, 0x80, 0x01],
        "31-5 our choice: a refused 3.1 subscription gets 0x80 as in 3.1.1"
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_dup_and_qos_bits_on_pubrel_subscribe_unsubscribe_are_accepted() {
    let b = TestBroker::start().await;
    let mut c = connect_v31(&b, &connect31(CLEAN, &field(b"c"))).await;
    c.send_bytes(&subscribe_raw(0x8A, 1, &[(b"a", 1)])).await;
    assert_eq!(
        next_raw(&mut c, "SUBACK").await,
        [0x90, 0x03, 0x00, 0x01, 0x01],
        "31-6 SUBSCRIBE 8A accepted"
    );
    c.send_bytes(&unsubscribe_raw(0xAA, 2, &[b"a"])).await;
    assert_eq!(
        next_raw(&mut c, "UNSUBACK").await,
        [0xB0, 0x02, 0x00, 0x02],
        "31-6 UNSUBSCRIBE AA accepted"
    );
    c.send_bytes(&publish_raw(0x34, b"a", Some(3), b"x")).await;
    assert_eq!(next_raw(&mut c, "PUBREC").await, [0x50, 0x02, 0x00, 0x03]);
    c.send_bytes(&[0x6A, 0x02, 0x00, 0x03]).await;
    assert_eq!(
        next_raw(&mut c, "PUBCOMP").await,
        [0x70, 0x02, 0x00, 0x03],
        "31-6 PUBREL 6A accepted"
    );
    // The same bytes from a 3.1.1 client close the connection ([MQTT-3.8.1-1] and others).
    violation_closes_silently(
        &b,
        "v311",
        &subscribe_raw(0x8A, 1, &[(b"a", 1)]),
        "[MQTT-3.8.1-1] 8A from 3.1.1",
    )
    .await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_connect_flags_are_checked_like_3_1_1() {
    // 31-7 / 31-8 / 31-9: our current choice is the 3.1.1 rule for every level (stricter than the
    // recommendation for 3.1 clients).
    let b = TestBroker::start().await;
    let cases: &[(u8, &[&[u8]], &str)] = &[
        (CLEAN | 0x01, &[b"c"], "31-7 reserved bit set"),
        (
            CLEAN | WILL_QOS1,
            &[b"c"],
            "31-8 Will QoS without Will Flag",
        ),
        (
            CLEAN | WILL_RETAIN,
            &[b"c"],
            "31-8 Will Retain without Will Flag",
        ),
        (CLEAN | WILL | 0x18, &[b"c", b"w", b"m"], "31-8 Will QoS 3"),
        (
            CLEAN | USERNAME,
            &[b"c"],
            "31-9 User Name Flag without a user name",
        ),
        (
            CLEAN | PASSWORD,
            &[b"c", b"p"],
            "31-9 password without user name",
        ),
    ];
    for (flags, payload, what) in cases {
        connect_closes_silently(&b, &connect31(*flags, &fields(payload)), what).await;
    }
    // No 12-character limit on user names and passwords.
    let mut config = test_config();
    config.listeners[0].allow_anonymous = Some(false);
    let b2 = TestBroker::start_with(config).await;
    b2.broker
        .add_credentials("a-twenty-char-user-x", "a-twenty-char-secret");
    let c = connect_v31(
        &b2,
        &connect31(
            CLEAN | USERNAME | PASSWORD,
            &fields(&[b"c", b"a-twenty-char-user-x", b"a-twenty-char-secret"]),
        ),
    )
    .await;
    drop(c);
    b2.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_will_message_is_binary() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtMostOnce)]).await;
    let c = connect_v31(
        &b,
        &connect31(CLEAN | WILL, &fields(&[b"c", b"w", b"\xFF\xFE"])),
    )
    .await;
    drop(c);
    assert_eq!(
        &w.recv_publish().await.payload[..],
        b"\xFF\xFE",
        "31-10 the Will Message is delivered byte for byte"
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_keep_alive_expiry_publishes_the_will() {
    let b = TestBroker::start().await;
    let mut w = subscriber(&b, "watcher", &[("w", QoS::AtMostOnce)]).await;
    let mut c = open_with(
        &b,
        &connect_raw(b"MQIsdp", 3, CLEAN | WILL, 1, &fields(&[b"c", b"w", b"ka"])),
    )
    .await;
    assert_eq!(next_raw(&mut c, "CONNACK").await, [0x20, 0x02, 0x00, 0x00]);
    let started = Instant::now();
    expect_closed_silently(&mut c, "31-11 keep-alive expiry").await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "31-11 after 1.5 × keep-alive"
    );
    assert_eq!(
        &w.recv_publish().await.payload[..],
        b"ka",
        "31-11 the Will is published"
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_resubscribe_resends_retained() {
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    app.publish("r", "kept", QoS::AtMostOnce, true)
        .expect("topic");
    let mut c = connect_v31(&b, &connect31(CLEAN, &field(b"c"))).await;
    for id in 1..=2 {
        c.subscribe(id, &[("r", QoS::AtMostOnce)]).await;
        let p = c.recv_publish().await;
        assert!(
            p.retain && &p.payload[..] == b"kept",
            "31-12 retained message sent on subscription {id}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_strings_are_validated_like_3_1_1() {
    let b = TestBroker::start().await;
    let mut c = connect_v31(&b, &connect31(CLEAN, &field(b"c"))).await;
    c.send_bytes(&publish_raw(0x30, b"a\xFF", None, b"x")).await;
    expect_closed_silently(&mut c, "31-13 ill-formed UTF-8 topic from a 3.1 client").await;
    b.stop().await;
}

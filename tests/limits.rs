//! Limits and isolation: oversized packets, connection limit, malformed input that closes only
//! the offending connection.

mod common;

use common::*;
use mqtt_server::codec::{Packet, QoS};

#[tokio::test]
async fn packet_over_max_size_closes_before_the_body_arrives() {
    let mut config = test_config();
    config.limits.max_packet_size = 1024;
    let b = TestBroker::start_with(config).await;
    let mut c = RawClient::connect(b.addr, "big").await;
    // A PUBLISH header announcing 200 MiB, and nothing more: the broker must not wait for
    // (or allocate) the body.
    c.send_bytes(&[0x30, 0x80, 0x80, 0xe4, 0x00]).await;
    c.expect_closed().await;
    assert!(b.broker.metrics().protocol_errors >= 1);
    b.stop().await;
}

#[tokio::test]
async fn packet_at_max_size_is_accepted() {
    let mut config = test_config();
    config.limits.max_packet_size = 1024;
    let b = TestBroker::start_with(config).await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("t", QoS::AtMostOnce)]).await;
    let mut c = RawClient::connect(b.addr, "fits").await;
    // Fixed header 3 bytes (0x30 + 2-byte length) + topic 3 bytes + payload = 1024.
    let payload = "x".repeat(1024 - 3 - 3);
    c.send(publish("t", &payload, QoS::AtMostOnce, false, None))
        .await;
    assert_eq!(sub.recv_publish().await.payload.len(), payload.len());
    assert!(c.ping_barrier().await.is_empty());
    b.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let mut config = test_config();
    config.limits.max_connections = 2;
    let b = TestBroker::start_with(config).await;
    let _one = RawClient::connect(b.addr, "one").await;
    let mut two = RawClient::connect(b.addr, "two").await;
    let mut three = RawClient::open(b.addr).await;
    three.expect_closed().await;
    assert_eq!(b.broker.metrics().connections_refused, 1);
    // The clients within the limit are unaffected.
    assert!(two.ping_barrier().await.is_empty());
    drop(two);
    // A freed slot is reusable.
    wait_until("slot freed", || b.broker.metrics().connections_current == 1).await;
    let _four = RawClient::connect(b.addr, "four").await;
    b.stop().await;
}

#[tokio::test]
async fn malformed_packets_close_only_the_offender() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "bystander-sub").await;
    sub.subscribe(1, &[("flow", QoS::AtLeastOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "bystander-pub").await;
    let garbage: &[&[u8]] = &[
        &[0x00, 0x00],                               // reserved packet type 0
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],       // remaining length over 4 bytes
        &[0x62, 0x02, 0x00, 0x01], // PUBREL with wrong flags 0b0010 → ok; next one bad
        &[0x60, 0x02, 0x00, 0x01], // PUBREL with flags 0 [MQTT-3.6.1-1]
        &[0x82, 0x02, 0x00, 0x01], // SUBSCRIBE without filters [MQTT-3.8.3-3]
        &[0xa2, 0x02, 0x00, 0x01], // UNSUBSCRIBE without filters [MQTT-3.10.3-2]
        &[0x32, 0x04, 0x00, 0x01, b't', 0x00], // QoS 1 PUBLISH missing its packet id bytes
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00], // packet id 0 [MQTT-2.3.1-1]
        &[0x30, 0x04, 0x00, 0x02, 0xc3, 0x28], // invalid UTF-8 topic [MQTT-1.5.3-1]
        &[0xc0, 0x01, 0x00],       // PINGREQ with a body
        &[0x20, 0x02, 0x00, 0x00], // CONNACK from a client
    ];
    for (i, bytes) in garbage.iter().enumerate() {
        let mut bad = RawClient::connect(b.addr, &format!("bad-{i}")).await;
        bad.send_bytes(bytes).await;
        if i == 2 {
            // A valid PUBREL: answered with PUBCOMP, connection stays.
            assert!(matches!(bad.recv().await, Some(Packet::PubComp(_))));
            continue;
        }
        bad.expect_closed().await;
        // The bystanders' flow is untouched.
        publ.send(publish(
            "flow",
            &i.to_string(),
            QoS::AtLeastOnce,
            false,
            Some(i as u16 + 1),
        ))
        .await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
        let p = sub.recv_publish().await;
        assert_eq!(p.payload, i.to_string());
        sub.send(Packet::PubAck(mqtt_server::codec::Ack::new(
            p.packet_id.expect("id"),
        )))
        .await;
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Security limits (issue 5): each offender is cut off or slowed while a bystander keeps going.
// ---------------------------------------------------------------------------------------------

use mqtt_server::codec::{ConnAck, ProtocolVersion};
use std::time::{Duration, Instant};

/// A bystander subscribed to `bystander/t` and an in-process publisher feeding it.
async fn bystander(b: &TestBroker) -> RawClient {
    let mut c = RawClient::connect(b.addr, "bystander").await;
    c.subscribe(1, &[("bystander/t", QoS::AtMostOnce)]).await;
    c
}

/// The bystander still gets a message published now.
async fn bystander_still_served(b: &TestBroker, c: &mut RawClient, n: u32) {
    let local = b.broker.local_client(&format!("bystander-pub-{n}"));
    local
        .publish("bystander/t", format!("m{n}"), QoS::AtMostOnce, false)
        .expect("topic");
    let p = c.recv_publish().await;
    assert_eq!(
        &p.payload[..],
        format!("m{n}").as_bytes(),
        "the bystander is unaffected"
    );
}

/// A v5 connection; returns the client and its CONNACK.
async fn connect_v5(b: &TestBroker, id: &str) -> (RawClient, ConnAck) {
    let mut c = RawClient::open(b.addr).await;
    c.version = ProtocolVersion::V5;
    let mut connect = connect_packet(id, true, 60);
    connect.protocol = ProtocolVersion::V5;
    c.send(Packet::Connect(Box::new(connect))).await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => (c, a),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn topics_over_the_length_or_level_limits_are_refused() {
    let mut config = test_config();
    config.limits.max_topic_length = 16;
    config.limits.max_topic_levels = 3;
    let b = TestBroker::start_with(config).await;
    let mut by = bystander(&b).await;
    // SUBSCRIBE: per-filter refusal, the connection stays.
    let (mut v5, _) = connect_v5(&b, "v5-sub").await;
    v5.send(subscribe(
        1,
        &[
            ("a/b/c", QoS::AtMostOnce),
            ("a/b/c/d", QoS::AtMostOnce),
            ("abcdefghijklmnopq", QoS::AtMostOnce),
        ],
    ))
    .await;
    match v5.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(
            s.codes,
            vec![0x00, 0x8F, 0x8F],
            "too many levels / too long: 0x8F Topic Filter invalid"
        ),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut v3 = RawClient::connect(b.addr, "v3-sub").await;
    assert_eq!(
        v3.subscribe(1, &[("x/y/z/w", QoS::AtMostOnce)]).await,
        vec![0x80],
        "3.1.1: 0x80"
    );
    // PUBLISH: the connection ends (0x90 Topic Name invalid in MQTT 5).
    v5.send(publish("p/q/r/s", "x", QoS::AtLeastOnce, false, Some(1)))
        .await;
    match v5.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, 0x90),
        other => panic!("expected DISCONNECT 0x90, got {other:?}"),
    }
    v3.send(publish(
        "abcdefghijklmnopq",
        "x",
        QoS::AtMostOnce,
        false,
        None,
    ))
    .await;
    v3.expect_closed().await;
    bystander_still_served(&b, &mut by, 1).await;
    b.stop().await;
}

#[tokio::test]
async fn subscriptions_over_the_per_client_maximum_get_quota_exceeded() {
    let mut config = test_config();
    config.limits.max_subscriptions_per_client = 2;
    let b = TestBroker::start_with(config).await;
    let (mut c, _) = connect_v5(&b, "quota").await;
    c.send(subscribe(
        1,
        &[
            ("q/1", QoS::AtMostOnce),
            ("q/2", QoS::AtMostOnce),
            ("q/3", QoS::AtMostOnce),
        ],
    ))
    .await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![0, 0, 0x97], "0x97 Quota exceeded"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // Replacing an existing subscription is not a new one.
    c.send(subscribe(2, &[("q/1", QoS::AtLeastOnce)])).await;
    match c.recv().await {
        Some(Packet::SubAck(s)) => assert_eq!(s.codes, vec![1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut v3 = RawClient::connect(b.addr, "quota-v3").await;
    assert_eq!(
        v3.subscribe(
            1,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtMostOnce),
                ("c", QoS::AtMostOnce)
            ]
        )
        .await,
        vec![0, 0, 0x80]
    );
    assert_eq!(b.broker.subscription_count(), 4);
    b.stop().await;
}

#[tokio::test]
async fn a_publisher_over_its_rate_is_slowed_while_a_bystander_keeps_going() {
    let mut config = test_config();
    config.limits.publish_rate_messages = 50;
    let b = TestBroker::start_with(config).await;
    let mut by = bystander(&b).await;
    let mut sink = RawClient::connect(b.addr, "sink").await;
    sink.subscribe(1, &[("flood", QoS::AtMostOnce)]).await;
    let mut flood = RawClient::connect(b.addr, "flooder").await;
    let started = Instant::now();
    // 150 messages at once: 50 pass as the one-second burst, 100 more take ~2 s at 50/s.
    let mut bytes = Vec::new();
    for i in 0..150u32 {
        let mut out = bytes::BytesMut::new();
        mqtt_server::codec::encode(
            &publish("flood", &i.to_string(), QoS::AtMostOnce, false, None),
            ProtocolVersion::V3_1_1,
            &mut out,
        )
        .expect("encode");
        bytes.extend_from_slice(&out);
    }
    flood.send_bytes(&bytes).await;
    // While the flooder is held back, the bystander is served at once, several times.
    for n in 0..3 {
        bystander_still_served(&b, &mut by, n).await;
    }
    for i in 0..150u32 {
        let p = sink.recv_publish().await;
        assert_eq!(
            &p.payload[..],
            i.to_string().as_bytes(),
            "in order, none lost"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "150 messages at 50/s (burst 50) take about 2 s, not {took:?}"
    );
    // Slowed, not cut off.
    flood.ping_barrier().await;
    b.stop().await;
}

#[tokio::test]
async fn failed_logins_are_delayed_and_repeated_failures_ban_the_address() {
    let mut config = test_config();
    config.listeners[0].allow_anonymous = Some(false);
    config.auth.failed_login_delay_ms = 300;
    config.auth.ban_after_failures = 3;
    config.auth.ban_secs = 60;
    let b = TestBroker::start_with(config).await;
    b.broker.add_credentials("alice", "right");
    let attempt = |password: &'static str| {
        let addr = b.addr;
        async move {
            let mut connect = connect_packet("guesser", true, 60);
            connect.username = Some("alice".into());
            connect.password = Some(bytes::Bytes::from_static(password.as_bytes()));
            let mut c = RawClient::open(addr).await;
            let started = Instant::now();
            c.send(Packet::Connect(Box::new(connect))).await;
            match c.recv().await {
                Some(Packet::ConnAck(a)) => (a.code, started.elapsed()),
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }
    };
    let (code, took) = attempt("wrong").await;
    assert_eq!(code, 0x04, "bad user name or password");
    assert!(
        took >= Duration::from_millis(250),
        "answered after the delay, not {took:?}"
    );
    assert_eq!(attempt("wrong").await.0, 0x04);
    assert_eq!(attempt("wrong").await.0, 0x04);
    // Banned now: even the right password is refused, at once.
    let (code, took) = attempt("right").await;
    assert_eq!(code, 0x05, "banned address: not authorized");
    assert!(
        took < Duration::from_millis(250),
        "a ban is answered without the delay"
    );
    b.stop().await;
}

//! CONNECT and CONNACK: section 3.1 / 3.2 of MQTT 3.1.1, over real sockets.

mod common;

use std::time::Duration;

use common::*;
use mqtt_server::codec::{Packet, ProtocolVersion, QoS};

#[tokio::test]
async fn connect_is_acknowledged_with_session_present_zero() {
    let b = TestBroker::start().await;
    let (c, present) = RawClient::connect_with(b.addr, connect_packet("c1", true, 30)).await;
    assert!(
        !present,
        "[MQTT-3.2.2-1] clean session gives Session Present 0"
    );
    c.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_mqisdp_clients_are_accepted() {
    let b = TestBroker::start().await;
    let mut connect = connect_packet("old-client", true, 30);
    connect.protocol = ProtocolVersion::V3_1;
    let (mut c, _) = RawClient::connect_with(b.addr, connect).await;
    assert_eq!(c.subscribe(1, &[("a/b", QoS::AtLeastOnce)]).await, vec![1]);
    c.send(publish("a/b", "hello", QoS::AtLeastOnce, false, Some(7)))
        .await;
    let mut got_ack = false;
    let mut got_msg = false;
    for _ in 0..2 {
        match c.recv().await {
            Some(Packet::PubAck(a)) => got_ack = a.packet_id == pid(7),
            Some(Packet::Publish(p)) => got_msg = &p.payload[..] == b"hello",
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_ack && got_msg);
    b.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_and_close() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    // CONNECT, protocol name MQTT, level 6.
    c.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 0])
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.code, 0x01, "[MQTT-3.1.2-2] unacceptable protocol level");
            assert!(!a.session_present, "[MQTT-3.2.2-4]");
        }
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn wrong_protocol_name_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    c.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'X', 4, 0x02, 0, 60, 0, 0])
        .await;
    // [MQTT-3.1.2-1] the server may disconnect without CONNACK.
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn first_packet_other_than_connect_closes() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    c.send(Packet::PingReq).await;
    // [MQTT-3.1.0-1]
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_violation() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "twice").await;
    c.send(Packet::Connect(Box::new(connect_packet("twice", true, 30))))
        .await;
    // [MQTT-3.1.0-2]
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn reserved_connect_flag_closes() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    // Connect flags 0x03: clean session + reserved bit.
    c.send_bytes(&[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 1, b'x',
    ])
    .await;
    // [MQTT-3.1.2-3]
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn zero_length_client_id_with_clean_session_is_assigned_one() {
    let b = TestBroker::start().await;
    let (mut c, present) = RawClient::connect_with(b.addr, connect_packet("", true, 30)).await;
    assert!(!present);
    // [MQTT-3.1.3-6] the session works like any other.
    assert_eq!(c.subscribe(1, &[("x", QoS::AtMostOnce)]).await, vec![0]);
    b.stop().await;
}

#[tokio::test]
async fn zero_length_client_id_without_clean_session_is_rejected_0x02() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    c.send(Packet::Connect(Box::new(connect_packet("", false, 30))))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0x02, "[MQTT-3.1.3-8] identifier rejected"),
        other => panic!("expected CONNACK 0x02, got {other:?}"),
    }
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn silent_socket_is_closed_after_connect_timeout() {
    let mut config = test_config();
    config.limits.connect_timeout_secs = 1;
    let b = TestBroker::start_with(config).await;
    let mut c = RawClient::open(b.addr).await;
    let started = tokio::time::Instant::now();
    c.expect_closed().await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed only after the timeout"
    );
    b.stop().await;
}

#[tokio::test]
async fn takeover_disconnects_the_old_connection_and_resumes_the_session() {
    let b = TestBroker::start().await;
    let (mut old, _) = RawClient::connect_with(b.addr, connect_packet("same", false, 30)).await;
    assert_eq!(old.subscribe(1, &[("t", QoS::AtLeastOnce)]).await, vec![1]);
    let (mut new, present) =
        RawClient::connect_with(b.addr, connect_packet("same", false, 30)).await;
    // [MQTT-3.1.4-2] the existing client is disconnected.
    old.expect_closed().await;
    // [MQTT-3.2.2-2] the stored session is resumed.
    assert!(present);
    // The subscription made on the old connection serves the new one.
    let mut p = RawClient::connect(b.addr, "pub").await;
    p.send(publish("t", "after-takeover", QoS::AtMostOnce, false, None))
        .await;
    assert_eq!(&new.recv_publish().await.payload[..], b"after-takeover");
    b.stop().await;
}

#[tokio::test]
async fn wrong_password_gets_0x04_and_anonymous_refused_gets_0x05() {
    let mut config = test_config();
    config.listeners[0].allow_anonymous = Some(false);
    let b = TestBroker::start_with(config).await;
    b.broker.add_credentials("alice", "secret");

    let mut bad = connect_packet("a1", true, 30);
    bad.username = Some("alice".into());
    bad.password = Some("wrong".into());
    let mut c = RawClient::open(b.addr).await;
    c.send(Packet::Connect(Box::new(bad))).await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0x04),
        other => panic!("expected CONNACK 0x04, got {other:?}"),
    }
    c.expect_closed().await;

    let mut c = RawClient::open(b.addr).await;
    c.send(Packet::Connect(Box::new(connect_packet("anon", true, 30))))
        .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0x05),
        other => panic!("expected CONNACK 0x05, got {other:?}"),
    }
    c.expect_closed().await;

    let mut good = connect_packet("a2", true, 30);
    good.username = Some("alice".into());
    good.password = Some("secret".into());
    let (c, _) = RawClient::connect_with(b.addr, good).await;
    c.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt5_connect_is_accepted_with_the_servers_capabilities_in_connack() {
    let b = TestBroker::start().await;
    let mut c = RawClient::open(b.addr).await;
    c.version = ProtocolVersion::V5;
    let mut connect = connect_packet("five", true, 30);
    connect.protocol = ProtocolVersion::V5;
    c.send(Packet::Connect(Box::new(connect))).await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => {
            assert_eq!(a.code, 0, "[MQTT-3.1.4-5] accepted with 0x00");
            assert!(!a.session_present, "[MQTT-3.2.2-2] clean start: no session");
            let p = a.properties.expect("CONNACK properties");
            assert_eq!(
                p.maximum_packet_size,
                Some(1024 * 1024),
                "our maximum packet size"
            );
            assert_eq!(p.topic_alias_maximum, Some(10), "topic aliases accepted");
            assert_eq!(p.shared_subscription_available, Some(1));
            assert_eq!(p.wildcard_subscription_available, Some(1));
            assert_eq!(p.subscription_identifier_available, Some(1));
            assert_eq!(
                p.assigned_client_identifier, None,
                "the client chose its id"
            );
            assert_eq!(p.server_keep_alive, None, "its keep-alive is accepted");
            assert_eq!(
                p.session_expiry_interval, None,
                "the expiry it asked for (0)"
            );
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.ping_barrier().await;
    b.stop().await;
}

#[tokio::test]
async fn mqtt311_keep_alive_above_max_keepalive_is_refused_with_0x02() {
    let mut config = test_config();
    config.mqtt.max_keepalive = 60;
    let b = TestBroker::start_with(config).await;
    // Policy (as Mosquitto): a 3.1.1 client cannot be told a Server Keep Alive, so asking for
    // more than the maximum is refused with "identifier rejected".
    let mut c = RawClient::open(b.addr).await;
    c.send(Packet::Connect(Box::new(connect_packet(
        "ka-too-long",
        true,
        61,
    ))))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0x02, "identifier rejected"),
        other => panic!("expected CONNACK 0x02, got {other:?}"),
    }
    c.expect_closed().await;
    let (mut ok, present) =
        RawClient::connect_with(b.addr, connect_packet("ka-ok", true, 60)).await;
    assert!(!present);
    ok.ping_barrier().await;
    b.stop().await;
}

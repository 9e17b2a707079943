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

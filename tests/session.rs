//! Persistent sessions (Clean Session 0) kept in memory: subscriptions survive a disconnect,
//! QoS 1/2 messages are queued while the client is offline, queues are bounded.

mod common;

use common::*;
use mqtt_server::codec::{Ack, Packet, QoS};

#[tokio::test]
async fn offline_qos1_and_qos2_messages_are_queued_qos0_is_not() {
    let b = TestBroker::start().await;
    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("keeper", false, 30)).await;
    assert!(!present, "first connection: no stored session");
    sub.subscribe(1, &[("off/#", QoS::ExactlyOnce)]).await;
    sub.disconnect().await;
    wait_until("session offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;

    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("off/0", "zero", QoS::AtMostOnce, false, None))
        .await;
    publ.send(publish("off/1", "one", QoS::AtLeastOnce, false, Some(1)))
        .await;
    publ.send(publish("off/2", "two", QoS::ExactlyOnce, false, Some(2)))
        .await;
    publ.send(Packet::PubRel(ack(2))).await;
    publ.ping_barrier().await;

    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("keeper", false, 30)).await;
    // [MQTT-3.2.2-2] the session was kept, with its subscription ([MQTT-3.1.2-4]).
    assert!(present);
    let one = sub.recv_publish().await;
    assert_eq!((&one.payload[..], one.qos), (&b"one"[..], QoS::AtLeastOnce));
    let two = sub.recv_publish().await;
    assert_eq!((&two.payload[..], two.qos), (&b"two"[..], QoS::ExactlyOnce));
    sub.send(Packet::PubAck(Ack::new(one.packet_id.expect("id"))))
        .await;
    sub.send(Packet::PubRec(Ack::new(two.packet_id.expect("id"))))
        .await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(_))));
    sub.send(Packet::PubComp(Ack::new(two.packet_id.expect("id"))))
        .await;
    // QoS 0 was not queued for the offline client (as Mosquitto's default).
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn clean_session_discards_the_stored_session() {
    let b = TestBroker::start().await;
    let (mut c, _) = RawClient::connect_with(b.addr, connect_packet("forget", false, 30)).await;
    c.subscribe(1, &[("f", QoS::AtLeastOnce)]).await;
    c.disconnect().await;
    let (c, present) = RawClient::connect_with(b.addr, connect_packet("forget", true, 30)).await;
    // [MQTT-3.1.2-6] the previous session is discarded; [MQTT-3.2.2-1] Session Present 0.
    assert!(!present);
    assert_eq!(b.broker.subscription_count(), 0);
    c.disconnect().await;
    // A clean session ends with its connection.
    wait_until("clean session removed", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn offline_queue_is_bounded_and_drops_are_counted() {
    let mut config = test_config();
    config.limits.max_queued_messages = 10;
    let b = TestBroker::start_with(config).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("bounded", false, 30)).await;
    sub.subscribe(1, &[("b", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    wait_until("session offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;

    let mut publ = RawClient::connect(b.addr, "pub").await;
    for i in 1..=25u16 {
        publ.send(publish(
            "b",
            &i.to_string(),
            QoS::AtLeastOnce,
            false,
            Some(i),
        ))
        .await;
    }
    publ.ping_barrier().await;
    assert_eq!(
        b.broker.metrics().messages_dropped,
        15,
        "overflow drops the newest and counts them"
    );

    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("bounded", false, 30)).await;
    assert!(present);
    for i in 1..=10 {
        let p = sub.recv_publish().await;
        assert_eq!(
            p.payload,
            i.to_string(),
            "the oldest ten were kept, in order"
        );
        sub.send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
            .await;
    }
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn inbound_qos2_state_survives_a_reconnect() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("x2", QoS::AtMostOnce)]).await;
    let (mut publ, _) = RawClient::connect_with(b.addr, connect_packet("p2", false, 30)).await;
    publ.send(publish("x2", "exactly", QoS::ExactlyOnce, false, Some(77)))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(_))));
    drop(publ);
    // The publisher reconnects and re-sends the PUBLISH (it never saw... it did see PUBREC, but
    // a client may re-send): it must not be delivered again ([MQTT-4.3.3-2]).
    let (mut publ, present) =
        RawClient::connect_with(b.addr, connect_packet("p2", false, 30)).await;
    assert!(present);
    let Packet::Publish(mut again) = publish("x2", "exactly", QoS::ExactlyOnce, false, Some(77))
    else {
        unreachable!()
    };
    again.dup = true;
    publ.send(Packet::Publish(again)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(_))));
    publ.send(Packet::PubRel(ack(77))).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubComp(_))));
    assert_eq!(&sub.recv_publish().await.payload[..], b"exactly");
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn a_burst_into_a_small_queue_slows_the_publisher_instead_of_dropping() {
    let mut config = test_config();
    config.limits.max_queued_messages = 10;
    let b = TestBroker::start_with(config).await;
    let mut sub = RawClient::connect(b.addr, "reader").await;
    sub.subscribe(1, &[("burst", QoS::AtLeastOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "burster").await;
    // 500 QoS 1 messages pipelined without waiting for a single PUBACK: far more than the
    // subscriber's queue holds at once.
    let mut out = bytes::BytesMut::new();
    for i in 1..=500u16 {
        let packet = publish("burst", &i.to_string(), QoS::AtLeastOnce, false, Some(i));
        mqtt_server::codec::encode(&packet, publ.version, &mut out).expect("encodable");
    }
    publ.send_bytes(&out).await;
    for i in 1..=500 {
        let p = sub.recv_publish().await;
        assert_eq!(p.payload, i.to_string(), "every message arrives, in order");
        sub.send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
            .await;
    }
    assert_eq!(
        b.broker.metrics().messages_dropped,
        0,
        "the publisher was slowed, nothing dropped"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_stuck_subscriber_does_not_stall_the_others() {
    let mut config = test_config();
    config.limits.max_queued_messages = 10;
    let b = TestBroker::start_with(config).await;
    // Subscribes, then never reads again (and never acknowledges).
    let mut stuck = RawClient::connect(b.addr, "stuck").await;
    stuck.subscribe(1, &[("news", QoS::AtLeastOnce)]).await;
    let mut healthy = RawClient::connect(b.addr, "healthy").await;
    healthy.subscribe(1, &[("news", QoS::AtLeastOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "newsroom").await;
    for i in 1..=300u16 {
        publ.send(publish(
            "news",
            &i.to_string(),
            QoS::AtLeastOnce,
            false,
            Some(i),
        ))
        .await;
    }
    for i in 1..=300 {
        let p = healthy.recv_publish().await;
        assert_eq!(p.payload, i.to_string());
        healthy
            .send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
            .await;
    }
    // The stuck client's overflow was dropped (after the congestion grace), and counted.
    assert!(b.broker.metrics().messages_dropped > 0);
    drop(stuck);
    b.stop().await;
}

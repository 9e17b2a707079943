//! QoS 0/1/2 flows in both directions (MQTT 3.1.1 sections 4.3, 4.4, 4.6), with raw packets.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use mqtt_server::codec::{Packet, QoS};

#[tokio::test]
async fn qos1_publish_is_acknowledged_and_delivered_at_granted_qos() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    assert_eq!(
        sub.subscribe(1, &[("q/1", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("q/1", "m", QoS::AtLeastOnce, false, Some(42)))
        .await;
    match publ.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.packet_id, pid(42), "[MQTT-3.3.4-1] PUBACK for QoS 1")
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let p = sub.recv_publish().await;
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(
        !p.dup && !p.retain,
        "[MQTT-3.3.1-9] retain is 0 for an established subscription"
    );
    let id = p.packet_id.expect("QoS 1 has a packet id");
    sub.send(Packet::PubAck(mqtt_server::codec::Ack::new(id)))
        .await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn delivery_qos_is_the_minimum_of_published_and_granted() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("down", QoS::AtMostOnce), ("up", QoS::ExactlyOnce)])
        .await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("down", "a", QoS::ExactlyOnce, false, Some(1)))
        .await;
    publ.send(publish("up", "b", QoS::AtLeastOnce, false, Some(2)))
        .await;
    let first = sub.recv_publish().await;
    assert_eq!(
        (&first.payload[..], first.qos),
        (&b"a"[..], QoS::AtMostOnce)
    );
    assert!(first.packet_id.is_none());
    let second = sub.recv_publish().await;
    assert_eq!(
        (&second.payload[..], second.qos),
        (&b"b"[..], QoS::AtLeastOnce)
    );
    b.stop().await;
}

#[tokio::test]
async fn inbound_qos2_is_delivered_exactly_once_even_when_resent() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("q/2", QoS::ExactlyOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("q/2", "once", QoS::ExactlyOnce, false, Some(9)))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(a)) if a.packet_id == pid(9)));
    // The publisher re-sends the same PUBLISH (DUP) before PUBREL: acknowledged, not re-routed.
    let Packet::Publish(mut again) = publish("q/2", "once", QoS::ExactlyOnce, false, Some(9))
    else {
        unreachable!()
    };
    again.dup = true;
    publ.send(Packet::Publish(again)).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(a)) if a.packet_id == pid(9)));
    publ.send(Packet::PubRel(ack(9))).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubComp(a)) if a.packet_id == pid(9)));

    let p = sub.recv_publish().await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let id = p.packet_id.expect("id");
    sub.send(Packet::PubRec(mqtt_server::codec::Ack::new(id)))
        .await;
    assert!(
        matches!(sub.recv().await, Some(Packet::PubRel(a)) if a.packet_id == id),
        "[MQTT-4.3.3-1] PUBREL after PUBREC"
    );
    sub.send(Packet::PubComp(mqtt_server::codec::Ack::new(id)))
        .await;
    // [MQTT-4.3.3-2] no second copy arrived.
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn outbound_inflight_window_is_bounded_and_ids_unique() {
    let mut config = test_config();
    config.limits.max_inflight_messages = 5;
    let b = TestBroker::start_with(config).await;
    let mut sub = RawClient::connect(b.addr, "slow").await;
    sub.subscribe(1, &[("w", QoS::AtLeastOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    for i in 1..=12u16 {
        publ.send(publish(
            "w",
            &i.to_string(),
            QoS::AtLeastOnce,
            false,
            Some(i),
        ))
        .await;
    }
    for _ in 1..=12 {
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    // Without acknowledgements only the window's worth is sent.
    let mut ids = Vec::new();
    for expected in 1..=5 {
        let p = sub.recv_publish().await;
        assert_eq!(p.payload, expected.to_string());
        ids.push(p.packet_id.expect("id"));
    }
    let before = sub.ping_barrier().await;
    assert!(
        before.is_empty(),
        "more than max_inflight unacknowledged messages sent: {before:?}"
    );
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        5,
        "[MQTT-2.3.1-2] ids in flight are unique"
    );
    // Acknowledging frees the window; the rest follows in order ([MQTT-4.6.0-6] ordered topic).
    let mut received = Vec::new();
    for id in ids {
        sub.send(Packet::PubAck(mqtt_server::codec::Ack::new(id)))
            .await;
    }
    while received.len() < 7 {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(mqtt_server::codec::Ack::new(
            p.packet_id.expect("id"),
        )))
        .await;
        received.push(String::from_utf8_lossy(&p.payload).into_owned());
    }
    let expected: Vec<String> = (6..=12).map(|i: i32| i.to_string()).collect();
    assert_eq!(received, expected);
    b.stop().await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_after_reconnect() {
    let b = TestBroker::start().await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("durable", false, 30)).await;
    sub.subscribe(1, &[("r/#", QoS::ExactlyOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("r/1", "one", QoS::AtLeastOnce, false, Some(1)))
        .await;
    publ.send(publish("r/2", "two", QoS::ExactlyOnce, false, Some(2)))
        .await;
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!(second.qos, QoS::ExactlyOnce);
    // PUBREC the QoS 2 one, so a PUBREL (not the PUBLISH) must be re-sent for it.
    sub.send(Packet::PubRec(mqtt_server::codec::Ack::new(
        second.packet_id.expect("id"),
    )))
    .await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(_))));
    drop(sub); // network drop: no PUBACK, no PUBCOMP

    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("durable", false, 30)).await;
    assert!(present);
    // [MQTT-4.4.0-1] re-send, in order: the PUBLISH with DUP set, then the PUBREL.
    let again = sub.recv_publish().await;
    assert!(again.dup, "[MQTT-3.3.1-1] DUP set on redelivery");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.payload, first.payload);
    match sub.recv().await {
        Some(Packet::PubRel(a)) => assert_eq!(Some(a.packet_id), second.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn messages_on_one_topic_arrive_in_order() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("ord", QoS::AtLeastOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    for i in 1..=200u16 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        publ.send(publish(
            "ord",
            &i.to_string(),
            qos,
            false,
            (qos != QoS::AtMostOnce).then_some(i),
        ))
        .await;
    }
    for i in 1..=200 {
        let p = sub.recv_publish().await;
        assert_eq!(p.payload, i.to_string(), "[MQTT-4.6.0-6] order kept");
        if let Some(id) = p.packet_id {
            sub.send(Packet::PubAck(mqtt_server::codec::Ack::new(id)))
                .await;
        }
    }
    let _ = Duration::ZERO;
    b.stop().await;
}

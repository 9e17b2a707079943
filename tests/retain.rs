//! Retained messages (MQTT 3.1.1 section 3.3.1.3).

mod common;

use common::*;
use mqtt_server::codec::{Packet, QoS};

#[tokio::test]
async fn retained_message_is_sent_to_new_subscribers_with_retain_set() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("r/a", "kept", QoS::AtLeastOnce, true, Some(1)))
        .await;
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("r/+", QoS::AtLeastOnce)]).await;
    let p = sub.recv_publish().await;
    // [MQTT-3.3.1-6] sent on subscribe, [MQTT-3.3.1-8] with RETAIN 1.
    assert!(p.retain);
    assert_eq!(
        (&*p.topic, &p.payload[..], p.qos),
        ("r/a", &b"kept"[..], QoS::AtLeastOnce)
    );
    b.stop().await;
}

#[tokio::test]
async fn live_delivery_of_a_retained_publish_has_retain_clear() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("r/live", QoS::AtMostOnce)]).await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("r/live", "x", QoS::AtMostOnce, true, None))
        .await;
    // [MQTT-3.3.1-9]
    assert!(!sub.recv_publish().await.retain);
    b.stop().await;
}

#[tokio::test]
async fn empty_retained_payload_deletes_and_is_not_stored() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("r/del", "v", QoS::AtMostOnce, true, None))
        .await;
    publ.ping_barrier().await;
    assert_eq!(b.broker.retained_count(), 1);
    publ.send(publish("r/del", "", QoS::AtMostOnce, true, None))
        .await;
    publ.ping_barrier().await;
    // [MQTT-3.3.1-10] deleted, [MQTT-3.3.1-11] and the empty message is not stored.
    assert_eq!(b.broker.retained_count(), 0);
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("r/#", QoS::AtMostOnce)]).await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn retained_qos0_replaces_the_previous_one() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("r/q", "first", QoS::AtLeastOnce, true, Some(1)))
        .await;
    publ.send(publish("r/q", "second", QoS::AtMostOnce, true, None))
        .await;
    publ.ping_barrier().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("r/q", QoS::ExactlyOnce)]).await;
    let p = sub.recv_publish().await;
    // [MQTT-3.3.1-5] the new message replaces the old one, at its own QoS.
    assert_eq!((&p.payload[..], p.qos), (&b"second"[..], QoS::AtMostOnce));
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn resubscribing_replaces_the_subscription_and_resends_retained() {
    let b = TestBroker::start().await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("r/re", "again", QoS::AtMostOnce, true, None))
        .await;
    publ.ping_barrier().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("r/re", QoS::AtMostOnce)]).await;
    assert!(sub.recv_publish().await.retain);
    sub.subscribe(2, &[("r/re", QoS::AtLeastOnce)]).await;
    // [MQTT-3.8.4-3] the retained message is re-sent for the replacing subscription.
    assert!(sub.recv_publish().await.retain);
    assert_eq!(b.broker.subscription_count(), 1, "replaced, not added");
    b.stop().await;
}

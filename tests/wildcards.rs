//! Topic filters and wildcards over real sockets (MQTT 3.1.1 section 4.7), overlapping
//! subscriptions, unsubscribe, and validation of topic names and filters.

mod common;

use common::*;
use mqtt_server::codec::{Packet, QoS};

async fn deliveries(b: &TestBroker, filters: &[&str], topics: &[&str]) -> Vec<String> {
    let mut sub = RawClient::connect(b.addr, "wsub").await;
    let mut f: Vec<(&str, QoS)> = filters.iter().map(|f| (*f, QoS::AtMostOnce)).collect();
    f.push(("zz/marker", QoS::AtMostOnce));
    sub.subscribe(1, &f).await;
    let mut publ = RawClient::connect(b.addr, "wpub").await;
    for t in topics {
        publ.send(publish(t, t, QoS::AtMostOnce, false, None)).await;
    }
    // Messages of one publisher reach a subscriber in order: the marker closes the list.
    publ.send(publish("zz/marker", "end", QoS::AtMostOnce, false, None))
        .await;
    let mut got = Vec::new();
    loop {
        let p = sub.recv_publish().await;
        if &*p.topic == "zz/marker" {
            return got;
        }
        got.push(p.topic.to_string());
    }
}

#[tokio::test]
async fn plus_matches_exactly_one_level() {
    let b = TestBroker::start().await;
    let got = deliveries(
        &b,
        &["a/+/c"],
        &["a/b/c", "a//c", "a/b/c/d", "a/c", "x/b/c"],
    )
    .await;
    assert_eq!(got, vec!["a/b/c", "a//c"]);
    b.stop().await;
}

#[tokio::test]
async fn hash_matches_parent_and_all_children() {
    let b = TestBroker::start().await;
    let got = deliveries(
        &b,
        &["sport/tennis/#"],
        &[
            "sport/tennis",
            "sport/tennis/p1",
            "sport/tennis/p1/score",
            "sport",
        ],
    )
    .await;
    assert_eq!(
        got,
        vec!["sport/tennis", "sport/tennis/p1", "sport/tennis/p1/score"]
    );
    b.stop().await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    let b = TestBroker::start().await;
    // [MQTT-4.7.2-1]
    let got = deliveries(&b, &["#", "+/x"], &["$app/x", "a/x"]).await;
    assert_eq!(got, vec!["a/x"]);
    let got = deliveries(&b, &["$app/#"], &["$app/x", "a/x"]).await;
    assert_eq!(got, vec!["$app/x"]);
    b.stop().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(
        1,
        &[
            ("o/#", QoS::AtMostOnce),
            ("o/+", QoS::AtLeastOnce),
            ("o/x", QoS::AtMostOnce),
        ],
    )
    .await;
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("o/x", "once", QoS::ExactlyOnce, false, Some(1)))
        .await;
    let p = sub.recv_publish().await;
    // [MQTT-3.3.5-1] one copy, at the maximum QoS of the matching subscriptions.
    assert_eq!(p.qos, QoS::AtLeastOnce);
    sub.send(Packet::PubAck(mqtt_server::codec::Ack::new(
        p.packet_id.expect("id"),
    )))
    .await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_is_acknowledged_even_without_match() {
    let b = TestBroker::start().await;
    let mut sub = RawClient::connect(b.addr, "sub").await;
    sub.subscribe(1, &[("u/1", QoS::AtMostOnce)]).await;
    sub.send(unsubscribe(5, &["u/1", "never/subscribed"])).await;
    match sub.recv().await {
        // [MQTT-3.10.4-4] same packet id, [MQTT-3.10.4-5] even for a filter with no match.
        Some(Packet::UnsubAck(a)) => assert_eq!(a.packet_id, pid(5)),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    assert_eq!(b.broker.subscription_count(), 0);
    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish("u/1", "nope", QoS::AtMostOnce, false, None))
        .await;
    publ.ping_barrier().await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn publish_with_wildcard_topic_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "bad").await;
    // PUBLISH QoS 0 to "a/+" [MQTT-3.3.2-2].
    c.send_bytes(&[0x30, 5, 0, 3, b'a', b'/', b'+']).await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn subscribe_with_misplaced_wildcard_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "bad").await;
    // SUBSCRIBE id 1, filter "a/#/b" QoS 0 [MQTT-4.7.1-2].
    c.send_bytes(&[0x82, 10, 0, 1, 0, 5, b'a', b'/', b'#', b'/', b'b', 0])
        .await;
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn topic_with_null_character_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "bad").await;
    c.send_bytes(&[0x30, 5, 0, 3, b'a', 0, b'b']).await;
    // [MQTT-1.5.3-2]
    c.expect_closed().await;
    b.stop().await;
}

#[tokio::test]
async fn subscribe_with_reserved_option_bits_closes_the_connection() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "bad").await;
    // Requested QoS byte 0x04: reserved bit set [MQTT-3.8.3-4].
    c.send_bytes(&[0x82, 6, 0, 1, 0, 1, b'a', 0x04]).await;
    c.expect_closed().await;
    b.stop().await;
}

//! Will messages (MQTT 3.1.1 section 3.1.2.5): published on every abnormal end of a
//! connection, never after DISCONNECT.

mod common;

use std::time::Duration;

use common::*;
use mqtt_server::codec::{Packet, QoS};

async fn watcher(b: &TestBroker, id: &str) -> RawClient {
    let mut w = RawClient::connect(b.addr, id).await;
    w.subscribe(1, &[("will/#", QoS::AtLeastOnce)]).await;
    w
}

async fn connect_with_will(b: &TestBroker, id: &str, keep_alive: u16) -> RawClient {
    let mut connect = connect_packet(id, true, keep_alive);
    connect.will = Some(will(&format!("will/{id}"), "gone", QoS::AtLeastOnce, false));
    RawClient::connect_with(b.addr, connect).await.0
}

#[tokio::test]
async fn will_is_published_when_the_network_connection_drops() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b, "w").await;
    let c = connect_with_will(&b, "dropper", 30).await;
    drop(c);
    let p = w.recv_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("will/dropper", &b"gone"[..]));
    assert_eq!(p.qos, QoS::AtLeastOnce);
    b.stop().await;
}

#[tokio::test]
async fn will_is_not_published_after_disconnect() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b, "w").await;
    let c = connect_with_will(&b, "polite", 30).await;
    c.disconnect().await;
    // Barrier: a second client's will, published after the first has certainly been handled.
    let c2 = connect_with_will(&b, "marker", 30).await;
    drop(c2);
    let p = w.recv_publish().await;
    assert_eq!(
        &*p.topic, "will/marker",
        "[MQTT-3.14.4-3] will of a client that sent DISCONNECT was published"
    );
    b.stop().await;
}

#[tokio::test]
async fn will_is_published_on_keep_alive_timeout() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b, "w").await;
    let mut c = connect_with_will(&b, "sleepy", 1).await;
    let started = tokio::time::Instant::now();
    // [MQTT-3.1.2-24] no packet for 1.5 × keep-alive: the server closes.
    c.expect_closed().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed too early: {waited:?}"
    );
    assert_eq!(&*w.recv_publish().await.topic, "will/sleepy");
    b.stop().await;
}

#[tokio::test]
async fn keep_alive_is_kept_by_pingreq() {
    let b = TestBroker::start().await;
    let mut c = connect_with_will(&b, "pinger", 1).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        // [MQTT-3.12.4-1] PINGREQ is answered with PINGRESP.
        assert!(c.ping_barrier().await.is_empty());
    }
    b.stop().await;
}

#[tokio::test]
async fn will_is_published_on_protocol_violation() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b, "w").await;
    let mut c = connect_with_will(&b, "rude", 30).await;
    // PUBLISH with QoS 3 [MQTT-3.3.1-4].
    c.send_bytes(&[0x36, 5, 0, 1, b't', 0, 1]).await;
    c.expect_closed().await;
    assert_eq!(&*w.recv_publish().await.topic, "will/rude");
    b.stop().await;
}

#[tokio::test]
async fn will_is_published_on_takeover() {
    let b = TestBroker::start().await;
    let mut w = watcher(&b, "w").await;
    let mut old = connect_with_will(&b, "twin", 30).await;
    let _new = RawClient::connect(b.addr, "twin").await;
    old.expect_closed().await;
    assert_eq!(&*w.recv_publish().await.topic, "will/twin");
    b.stop().await;
}

#[tokio::test]
async fn retained_will_is_kept_for_later_subscribers() {
    let b = TestBroker::start().await;
    let mut connect = connect_packet("ret", true, 30);
    connect.will = Some(will("status/ret", "offline", QoS::AtMostOnce, true));
    let (c, _) = RawClient::connect_with(b.addr, connect).await;
    drop(c);
    wait_until("will retained", || b.broker.retained_count() == 1).await;
    let mut late = RawClient::connect(b.addr, "late").await;
    late.subscribe(1, &[("status/+", QoS::AtMostOnce)]).await;
    let p = late.recv_publish().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"offline");
    let _ = Packet::PingReq;
    b.stop().await;
}

//! The library surface: in-process client, hooks, start/shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::*;
use mqtt_server::codec::{Packet, QoS};
use mqtt_server::{
    Broker, BrokerError, ClientInfo, ConnectDecision, ConnectRequest, Decision, DisconnectReason,
    Hooks, PublishDraft,
};

#[tokio::test]
async fn in_process_client_exchanges_messages_with_network_clients() {
    let b = TestBroker::start().await;
    let app = b.broker.local_client("app");
    app.subscribe("to-app/#", QoS::AtLeastOnce)
        .expect("valid filter");
    let mut net = RawClient::connect(b.addr, "net").await;
    net.subscribe(1, &[("from-app", QoS::AtLeastOnce)]).await;

    net.send(publish(
        "to-app/x",
        "hello app",
        QoS::AtLeastOnce,
        false,
        Some(1),
    ))
    .await;
    let got = tokio::time::timeout(WAIT, app.recv())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(
        (&*got.topic, &got.payload[..], got.qos),
        ("to-app/x", &b"hello app"[..], QoS::AtLeastOnce)
    );

    app.publish("from-app", "hello net", QoS::AtLeastOnce, false)
        .expect("valid topic");
    let mut seen = None;
    for _ in 0..2 {
        match net.recv().await {
            Some(Packet::Publish(p)) => seen = Some(p),
            Some(Packet::PubAck(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(&seen.expect("publish").payload[..], b"hello net");

    assert!(
        app.publish("bad/+", "x", QoS::AtMostOnce, false).is_err(),
        "wildcards refused in a topic name"
    );
    assert!(
        app.subscribe("a/#/b", QoS::AtMostOnce).is_err(),
        "misplaced # refused"
    );
    b.stop().await;
}

#[tokio::test]
async fn in_process_client_gets_retained_and_ends_its_session_on_drop() {
    let b = TestBroker::start().await;
    let writer = b.broker.local_client("writer");
    writer
        .publish("state/door", "open", QoS::AtLeastOnce, true)
        .expect("valid");
    let reader = b.broker.local_client("reader");
    reader.subscribe("state/+", QoS::AtMostOnce).expect("valid");
    let m = reader
        .try_recv()
        .expect("retained message queued at subscribe");
    assert!(m.retain);
    assert_eq!(m.qos, QoS::AtMostOnce);
    assert_eq!(b.broker.subscription_count(), 1);
    drop(reader);
    assert_eq!(b.broker.subscription_count(), 0);
    assert_eq!(b.broker.session_count(), 1);
    b.stop().await;
}

#[derive(Default)]
struct TestHooks {
    disconnects: AtomicUsize,
}

#[async_trait]
impl Hooks for TestHooks {
    async fn on_connect(
        &self,
        req: &ConnectRequest<'_>,
        builtin: ConnectDecision,
    ) -> ConnectDecision {
        if req.client_id.starts_with("banned") {
            ConnectDecision::NotAuthorized
        } else {
            builtin
        }
    }
    fn on_publish(&self, _client: &ClientInfo, publish: &mut PublishDraft) -> Decision {
        if publish.topic.starts_with("secret/") {
            return Decision::Deny;
        }
        if &*publish.topic == "rewrite/invalid" {
            publish.topic = "not/a/+/topic/name".into();
        }
        if &*publish.topic == "rewrite/me" {
            publish.topic = "rewritten".into();
            publish.payload = "changed".into();
        }
        Decision::Allow
    }
    fn on_subscribe(&self, _client: &ClientInfo, filter: &str, qos: &mut QoS) -> Decision {
        if filter.starts_with("admin/") {
            return Decision::Deny;
        }
        *qos = (*qos).min(QoS::AtLeastOnce);
        Decision::Allow
    }
    fn on_disconnect(&self, _client: &ClientInfo, _reason: DisconnectReason) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn hooks_decide_on_connect_publish_and_subscribe() {
    let hooks = Arc::new(TestHooks::default());
    let b = TestBroker::start_with_hooks(test_config(), hooks.clone()).await;

    let mut banned = RawClient::open(b.addr).await;
    banned
        .send(Packet::Connect(Box::new(connect_packet(
            "banned-1", true, 30,
        ))))
        .await;
    assert!(matches!(banned.recv().await, Some(Packet::ConnAck(a)) if a.code == 0x05));

    let mut sub = RawClient::connect(b.addr, "sub").await;
    let codes = sub
        .subscribe(1, &[("admin/x", QoS::AtMostOnce), ("#", QoS::ExactlyOnce)])
        .await;
    assert_eq!(
        codes,
        vec![0x80, 0x01],
        "denied filter gets 0x80; QoS lowered by the hook"
    );

    let mut publ = RawClient::connect(b.addr, "pub").await;
    publ.send(publish(
        "secret/plan",
        "x",
        QoS::AtLeastOnce,
        false,
        Some(1),
    ))
    .await;
    // [MQTT-3.3.5-2] a refused PUBLISH is still acknowledged.
    assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    // A hook that rewrites a topic into an invalid one gets the message dropped.
    publ.send(publish(
        "rewrite/invalid",
        "x",
        QoS::AtMostOnce,
        false,
        None,
    ))
    .await;
    publ.send(publish("rewrite/me", "orig", QoS::AtMostOnce, false, None))
        .await;
    let p = sub.recv_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("rewritten", &b"changed"[..]));
    sub.assert_no_publish(&b.broker).await;

    publ.disconnect().await;
    wait_until("on_disconnect called", || {
        hooks.disconnects.load(Ordering::SeqCst) >= 1
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_and_start_reports_busy_ports() {
    let b = TestBroker::start().await;
    let mut c = RawClient::connect(b.addr, "c").await;

    let mut config = test_config();
    config.listeners[0].bind = b.addr;
    let clash = Broker::new(config);
    match clash.start().await {
        Err(BrokerError::Bind { addr, .. }) => assert_eq!(addr, b.addr),
        other => panic!("expected a bind error, got {other:?}"),
    }
    assert!(matches!(
        b.broker.start().await,
        Err(BrokerError::AlreadyStarted)
    ));

    b.broker.shutdown().await;
    c.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(b.addr).await.is_err(),
        "listener closed"
    );
}

struct StuckAuth;

#[async_trait]
impl Hooks for StuckAuth {
    async fn on_connect(
        &self,
        _req: &ConnectRequest<'_>,
        _builtin: ConnectDecision,
    ) -> ConnectDecision {
        std::future::pending().await
    }
}

#[tokio::test]
async fn an_authentication_hook_that_never_answers_is_bounded_by_the_connect_timeout() {
    let mut config = test_config();
    config.limits.connect_timeout_secs = 1;
    let b = TestBroker::start_with_hooks(config, StuckAuth).await;
    let mut c = RawClient::open(b.addr).await;
    c.send(Packet::Connect(Box::new(connect_packet(
        "patient", true, 30,
    ))))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, 0x05, "refused as not authorized"),
        other => panic!("expected CONNACK 0x05, got {other:?}"),
    }
    c.expect_closed().await;
    b.stop().await;
}

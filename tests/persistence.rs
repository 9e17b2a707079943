//! Durable persistence (issue 6), over real sockets: what a persistent session, its queued and
//! in-flight messages, inbound QoS 2 state, retained messages and delayed wills look like after
//! the broker is shut down and started again on the same store — and the clear errors for a
//! store the broker must not start on. (The SIGKILL crash test is `persistence_crash.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use mqtt_server::codec::{Ack, Connect, Packet, Properties, ProtocolVersion, QoS};
use mqtt_server::config::{Config, Durability};
use mqtt_server::{Broker, BrokerError};

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mqtt-persist-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn persistent_config(dir: &Path, durability: Durability) -> Config {
    let mut config = test_config();
    config.persistence.enabled = true;
    config.persistence.path = dir.to_owned();
    config.persistence.durability = durability;
    config
}

async fn start(dir: &Path) -> TestBroker {
    TestBroker::start_with(persistent_config(dir, Durability::Sync)).await
}

/// Starting must fail; returns the error's message.
async fn start_fails(config: Config) -> String {
    let broker = Broker::new(config);
    match broker.start().await {
        Ok(()) => {
            broker.shutdown().await;
            panic!("the broker started on a store it must refuse");
        }
        Err(e @ BrokerError::Store(_)) => e.to_string(),
        Err(other) => panic!("expected a store error, got {other:?}"),
    }
}

fn v5_connect(client_id: &str, session_expiry: u32) -> Connect {
    Connect {
        protocol: ProtocolVersion::V5,
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(session_expiry),
            ..Properties::default()
        })),
        ..connect_packet(client_id, false, 60)
    }
}

/// Publishes at QoS 1 or 2 and completes the flow (so the broker has acknowledged it).
async fn publish_acked(
    c: &mut RawClient,
    topic: &str,
    payload: &str,
    qos: QoS,
    id: u16,
    retain: bool,
) {
    c.send(publish(topic, payload, qos, retain, Some(id))).await;
    match (qos, c.recv().await) {
        (QoS::AtLeastOnce, Some(Packet::PubAck(a))) => assert_eq!(a.packet_id, pid(id)),
        (QoS::ExactlyOnce, Some(Packet::PubRec(a))) => {
            assert_eq!(a.packet_id, pid(id));
            c.send(Packet::PubRel(ack(id))).await;
            match c.recv().await {
                Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, pid(id)),
                other => panic!("expected PUBCOMP, got {other:?}"),
            }
        }
        (_, other) => {
            panic!("expected the acknowledgement of a QoS {qos:?} PUBLISH, got {other:?}")
        }
    }
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_queued_messages_across_a_restart() {
    let dir = TempDir::new("session");
    let b = start(dir.path()).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("keeper", false, 60)).await;
    sub.subscribe(1, &[("a/#", QoS::ExactlyOnce), ("b", QoS::AtLeastOnce)])
        .await;
    sub.disconnect().await;
    wait_until("subscriber offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    let mut publ = RawClient::connect(b.addr, "publisher").await;
    publish_acked(&mut publ, "a/1", "one", QoS::AtLeastOnce, 1, false).await;
    publish_acked(&mut publ, "a/2", "two", QoS::ExactlyOnce, 2, false).await;
    publish_acked(&mut publ, "b", "three", QoS::AtLeastOnce, 3, false).await;
    // QoS 0 for an offline client is not queued ([MQTT-3.1.2-5] allows dropping it).
    publ.send(publish("a/0", "zero", QoS::AtMostOnce, false, None))
        .await;
    publ.ping_barrier().await;
    publ.disconnect().await;
    b.stop().await;

    let b = start(dir.path()).await;
    assert_eq!(
        b.broker.session_count(),
        1,
        "the persistent session is back"
    );
    assert_eq!(b.broker.subscription_count(), 2);
    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("keeper", false, 60)).await;
    assert!(present, "[MQTT-3.2.2-2] session present after the restart");
    let mut got = Vec::new();
    while got.len() < 3 {
        match sub.recv().await {
            Some(Packet::Publish(p)) => {
                // A recovered message may have been sent before the restart: DUP set
                // ([MQTT-3.3.1-1]).
                assert!(p.dup, "recovered deliveries carry DUP: {p:?}");
                let id = p.packet_id.expect("QoS 1/2 has a packet id");
                match p.qos {
                    QoS::AtLeastOnce => sub.send(Packet::PubAck(Ack::new(id))).await,
                    QoS::ExactlyOnce => sub.send(Packet::PubRec(Ack::new(id))).await,
                    QoS::AtMostOnce => panic!("QoS 0 was not to be stored"),
                }
                got.push((p.topic.to_string(), p.qos));
            }
            Some(Packet::PubRel(a)) => sub.send(Packet::PubComp(Ack::new(a.packet_id))).await,
            other => panic!("expected PUBLISH or PUBREL, got {other:?}"),
        }
    }
    for p in sub.ping_barrier().await {
        match p {
            Packet::PubRel(a) => sub.send(Packet::PubComp(Ack::new(a.packet_id))).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    // [MQTT-4.6.0-6] in the order they were published.
    assert_eq!(
        got,
        vec![
            ("a/1".to_owned(), QoS::AtLeastOnce),
            ("a/2".to_owned(), QoS::ExactlyOnce),
            ("b".to_owned(), QoS::AtLeastOnce),
        ]
    );
    // The subscriptions themselves were restored: a new message is routed.
    let local = b.broker.local_client("after-restart");
    local
        .publish("a/new", "fresh", mqtt_server::QoS::AtLeastOnce, false)
        .expect("topic");
    let fresh = sub.recv_publish().await;
    assert_eq!((&fresh.payload[..], fresh.dup), (&b"fresh"[..], false));
    sub.send(Packet::PubAck(Ack::new(fresh.packet_id.expect("id"))))
        .await;
    sub.ping_barrier().await;
    sub.disconnect().await;
    b.stop().await;

    // Everything acknowledged is gone from the store: nothing is delivered a second time.
    let b = start(dir.path()).await;
    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("keeper", false, 60)).await;
    assert!(present);
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn a_clean_session_ends_the_stored_one() {
    let dir = TempDir::new("clean");
    let b = start(dir.path()).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("cleaner", false, 60)).await;
    sub.subscribe(1, &[("c/#", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    // [MQTT-3.1.2-6] Clean Session 1 discards the previous session.
    let sub = RawClient::connect(b.addr, "cleaner").await;
    sub.disconnect().await;
    wait_until("sessions gone", || b.broker.session_count() == 0).await;
    b.stop().await;
    let b = start(dir.path()).await;
    assert_eq!(
        b.broker.session_count(),
        0,
        "the discarded session stays discarded"
    );
    assert_eq!(b.broker.subscription_count(), 0);
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_and_their_deletion_survive_a_restart() {
    let dir = TempDir::new("retained");
    let b = start(dir.path()).await;
    let mut publ = RawClient::connect(b.addr, "retainer").await;
    publish_acked(&mut publ, "r/1", "kept", QoS::AtLeastOnce, 1, true).await;
    publish_acked(&mut publ, "r/2", "deleted", QoS::AtLeastOnce, 2, true).await;
    // [MQTT-3.3.1-10] an empty retained payload deletes the topic's retained message.
    publish_acked(&mut publ, "r/2", "", QoS::AtLeastOnce, 3, true).await;
    publ.disconnect().await;
    b.stop().await;

    let b = start(dir.path()).await;
    assert_eq!(b.broker.retained_count(), 1);
    let mut sub = RawClient::connect(b.addr, "reader").await;
    sub.subscribe(1, &[("r/#", QoS::AtLeastOnce)]).await;
    let p = sub.recv_publish().await;
    assert_eq!(
        (&*p.topic, &p.payload[..], p.retain),
        ("r/1", &b"kept"[..], true)
    );
    sub.send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
        .await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn an_inbound_qos2_message_is_delivered_once_across_a_restart() {
    let dir = TempDir::new("inbound-qos2");
    let b = start(dir.path()).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("q2-sub", false, 60)).await;
    sub.subscribe(1, &[("q2", QoS::ExactlyOnce)]).await;
    sub.disconnect().await;
    let (mut publ, _) = RawClient::connect_with(b.addr, connect_packet("q2-pub", false, 60)).await;
    publ.send(publish("q2", "once", QoS::ExactlyOnce, false, Some(7)))
        .await;
    match publ.recv().await {
        Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, pid(7)),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // The broker restarts before the PUBREL.
    drop(publ);
    b.stop().await;

    let b = start(dir.path()).await;
    let (mut publ, present) =
        RawClient::connect_with(b.addr, connect_packet("q2-pub", false, 60)).await;
    assert!(present);
    // The client re-sends the PUBLISH (it did receive PUBREC, but a client may): [MQTT-4.3.3-2]
    // until PUBREL the id is held, so this is a duplicate, acknowledged and not delivered.
    let mut again = match publish("q2", "once", QoS::ExactlyOnce, false, Some(7)) {
        Packet::Publish(p) => p,
        _ => unreachable!("publish() builds a PUBLISH"),
    };
    again.dup = true;
    publ.send(Packet::Publish(again)).await;
    match publ.recv().await {
        Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, pid(7)),
        other => panic!("expected PUBREC for the re-sent PUBLISH, got {other:?}"),
    }
    publ.send(Packet::PubRel(ack(7))).await;
    match publ.recv().await {
        Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, pid(7)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("q2-sub", false, 60)).await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"once");
    let id = p.packet_id.expect("id");
    sub.send(Packet::PubRec(Ack::new(id))).await;
    match sub.recv().await {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.send(Packet::PubComp(Ack::new(id))).await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;

    // After PUBCOMP the id is free again, also in the store: the same id is a new message.
    let b = start(dir.path()).await;
    let (mut publ, _) = RawClient::connect_with(b.addr, connect_packet("q2-pub", false, 60)).await;
    publish_acked(&mut publ, "q2", "second", QoS::ExactlyOnce, 7, false).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("q2-sub", false, 60)).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"second");
    b.stop().await;
}

#[tokio::test]
async fn an_outbound_qos2_delivery_resumes_with_pubrel_after_a_restart() {
    let dir = TempDir::new("outbound-qos2");
    let b = start(dir.path()).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("rel-sub", false, 60)).await;
    sub.subscribe(1, &[("rel", QoS::ExactlyOnce)]).await;
    let local = b.broker.local_client("rel-pub");
    local
        .publish("rel", "x", mqtt_server::QoS::ExactlyOnce, false)
        .expect("topic");
    let p = sub.recv_publish().await;
    let id = p.packet_id.expect("id");
    sub.send(Packet::PubRec(Ack::new(id))).await;
    // PUBREL comes once the new stage is stored.
    match sub.recv().await {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    drop(sub);
    drop(local);
    b.stop().await;

    let b = start(dir.path()).await;
    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("rel-sub", false, 60)).await;
    assert!(present);
    // [MQTT-4.4.0-1] the PUBREL is re-sent, not the PUBLISH: the client already has the
    // message, which must not be delivered to it twice.
    match sub.recv().await {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, id, "the same packet id"),
        other => panic!("expected PUBREL after the restart, got {other:?}"),
    }
    sub.send(Packet::PubComp(Ack::new(id))).await;
    sub.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn sessions_expire_while_the_broker_is_down() {
    let dir = TempDir::new("expiry");
    let b = start(dir.path()).await;
    let (mut short, _) = RawClient::connect_with(b.addr, v5_connect("short-lived", 1)).await;
    short.subscribe(1, &[("e/short", QoS::AtLeastOnce)]).await;
    short.disconnect().await;
    let (mut long, _) = RawClient::connect_with(b.addr, v5_connect("long-lived", 3600)).await;
    long.subscribe(1, &[("e/long", QoS::AtLeastOnce)]).await;
    long.disconnect().await;
    wait_until("both offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    b.stop().await;
    // The 1 s expiry runs out while the broker is down (this wait is the condition under test).
    tokio::time::sleep(Duration::from_millis(1_300)).await;

    let b = start(dir.path()).await;
    assert_eq!(
        b.broker.session_count(),
        1,
        "only the long-lived session is back"
    );
    let (_, present) = RawClient::connect_with(b.addr, v5_connect("long-lived", 3600)).await;
    assert!(present);
    let (_, present) = RawClient::connect_with(b.addr, v5_connect("short-lived", 1)).await;
    assert!(!present, "the expired session is gone");
    b.stop().await;
}

#[tokio::test]
async fn a_delayed_will_due_while_the_broker_was_down_is_published_at_start() {
    let dir = TempDir::new("will");
    let b = start(dir.path()).await;
    let (mut watcher, _) =
        RawClient::connect_with(b.addr, connect_packet("will-watcher", false, 60)).await;
    watcher.subscribe(1, &[("wills/#", QoS::AtLeastOnce)]).await;
    watcher.disconnect().await;
    let mut connect = v5_connect("leaver", 3600);
    let mut w = will("wills/leaver", "gone", QoS::AtLeastOnce, false);
    w.properties = Some(Box::new(Properties {
        will_delay_interval: Some(1),
        ..Properties::default()
    }));
    connect.will = Some(w);
    let (leaver, _) = RawClient::connect_with(b.addr, connect).await;
    // The connection breaks without DISCONNECT: the will waits for its 1 s delay.
    drop(leaver);
    wait_until("leaver offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    b.stop().await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;

    let b = start(dir.path()).await;
    let (mut watcher, _) =
        RawClient::connect_with(b.addr, connect_packet("will-watcher", false, 60)).await;
    let p = watcher.recv_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("wills/leaver", &b"gone"[..]));
    watcher
        .send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
        .await;
    watcher.ping_barrier().await;
    b.stop().await;

    // Published once: not again after another restart.
    let b = start(dir.path()).await;
    let (mut watcher, _) =
        RawClient::connect_with(b.addr, connect_packet("will-watcher", false, 60)).await;
    watcher.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn periodic_durability_keeps_everything_across_a_clean_shutdown() {
    let dir = TempDir::new("periodic");
    let mut config = persistent_config(dir.path(), Durability::Periodic);
    // A window longer than the test: only the explicit flush and the shutdown make it durable.
    config.persistence.flush_interval_ms = 60_000;
    let b = TestBroker::start_with(config.clone()).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("p-sub", false, 60)).await;
    sub.subscribe(1, &[("p", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    let mut publ = RawClient::connect(b.addr, "p-pub").await;
    for i in 0..20u16 {
        publish_acked(
            &mut publ,
            "p",
            &format!("m{i}"),
            QoS::AtLeastOnce,
            i + 1,
            false,
        )
        .await;
    }
    b.broker
        .save_persistent_sessions()
        .await
        .expect("flush succeeds");
    b.stop().await;
    let b = TestBroker::start_with(config).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("p-sub", false, 60)).await;
    for i in 0..20 {
        let p = sub.recv_publish().await;
        assert_eq!(p.payload, format!("m{i}").as_bytes());
        sub.send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
            .await;
    }
    b.stop().await;
}

#[tokio::test]
async fn save_persistent_sessions_without_persistence_returns_at_once() {
    let b = TestBroker::start().await;
    b.broker
        .save_persistent_sessions()
        .await
        .expect("nothing to flush");
    b.stop().await;
}

#[tokio::test]
async fn a_store_in_use_by_another_broker_is_refused() {
    let dir = TempDir::new("locked");
    let b = start(dir.path()).await;
    let message = start_fails(persistent_config(dir.path(), Durability::Sync)).await;
    assert!(
        message.contains("in use") && message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    b.stop().await;
}

#[tokio::test]
async fn a_corrupt_store_is_refused_naming_the_file() {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    let file = dir.path().join("mqtt-server.redb");
    std::fs::write(&file, vec![0x5Au8; 64 * 1024]).expect("write garbage");
    let message = start_fails(persistent_config(dir.path(), Durability::Sync)).await;
    assert!(message.contains(&file.display().to_string()), "{message}");
}

#[tokio::test]
async fn a_truncated_store_is_refused_naming_the_file() {
    let dir = TempDir::new("truncated");
    let b = start(dir.path()).await;
    let mut publ = RawClient::connect(b.addr, "filler").await;
    for i in 0..50u16 {
        let topic = format!("t/{i}");
        publish_acked(
            &mut publ,
            &topic,
            &"x".repeat(2000),
            QoS::AtLeastOnce,
            i + 1,
            true,
        )
        .await;
    }
    b.stop().await;
    let file = dir.path().join("mqtt-server.redb");
    let len = std::fs::metadata(&file).expect("store file").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open store file");
    f.set_len(len / 3).expect("truncate");
    drop(f);
    let message = start_fails(persistent_config(dir.path(), Durability::Sync)).await;
    assert!(message.contains(&file.display().to_string()), "{message}");
}

#[tokio::test]
async fn a_store_of_another_format_version_is_refused() {
    let dir = TempDir::new("version");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    let file = dir.path().join("mqtt-server.redb");
    {
        let db = redb::Database::create(&file).expect("create");
        let tx = db.begin_write().expect("write");
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut t = tx.open_table(meta).expect("table");
            t.insert("format", 99u32.to_le_bytes().as_slice())
                .expect("insert");
        }
        tx.commit().expect("commit");
    }
    let message = start_fails(persistent_config(dir.path(), Durability::Sync)).await;
    assert!(
        message.contains("format version 99") && message.contains(&file.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_store_path_that_cannot_be_created_is_refused() {
    let dir = TempDir::new("not-a-dir");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    // (The tests run as root, for whom permissions do not fail: a path under a regular file
    // cannot be created by anyone.)
    let under = file.join("store");
    let message = start_fails(persistent_config(&under, Durability::Sync)).await;
    assert!(message.contains(&under.display().to_string()), "{message}");
}

#[tokio::test]
async fn store_inspect_prints_sessions_queues_and_retained_messages() {
    let dir = TempDir::new("inspect");
    let b = start(dir.path()).await;
    let (mut sub, _) =
        RawClient::connect_with(b.addr, connect_packet("inspected", false, 60)).await;
    sub.subscribe(1, &[("i/#", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    let mut publ = RawClient::connect(b.addr, "i-pub").await;
    publish_acked(&mut publ, "i/1", "a", QoS::AtLeastOnce, 1, false).await;
    publish_acked(&mut publ, "i/2", "b", QoS::AtLeastOnce, 2, true).await;
    b.stop().await;
    let bin = env!("CARGO_BIN_EXE_mqtt-server");
    let out = tokio::process::Command::new(bin)
        .args(["store", "inspect"])
        .arg(dir.path())
        .output()
        .await
        .expect("run store inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("sessions: 1, queued messages: 2, retained messages: 1"),
        "{text}"
    );
    assert!(text.contains("\"inspected\""), "{text}");
    assert!(text.contains("subscription \"i/#\" QoS 1"), "{text}");
    assert!(text.contains("retained \"i/2\""), "{text}");

    let missing = dir.path().join("nothing-here");
    let out = tokio::process::Command::new(bin)
        .args(["store", "inspect"])
        .arg(&missing)
        .output()
        .await
        .expect("run store inspect");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_queue_too_long_for_one_packet_id_cycle_is_still_delivered() {
    // More queued deliveries than there are packet ids would not fit a naive id scheme; ids
    // derive from sequence numbers modulo 65 535 and never collide within the window.
    let dir = TempDir::new("many");
    let mut config = persistent_config(dir.path(), Durability::Periodic);
    config.limits.max_queued_messages = 100_000;
    let b = TestBroker::start_with(config).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("many", false, 60)).await;
    sub.subscribe(1, &[("m", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    wait_until("offline", || b.broker.metrics().connections_current == 0).await;
    let local = b.broker.local_client("many-pub");
    let total = 66_000u32;
    for i in 0..total {
        local
            .publish(
                "m",
                i.to_be_bytes().to_vec(),
                mqtt_server::QoS::AtLeastOnce,
                false,
            )
            .expect("topic");
    }
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("many", false, 60)).await;
    for i in 0..total {
        let p = sub.recv_publish().await;
        assert_eq!(p.payload[..], i.to_be_bytes(), "in order, none lost");
        sub.send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
            .await;
    }
    drop(local);
    b.stop().await;
}

#[tokio::test]
async fn a_store_with_damaged_records_is_refused() {
    let dir = TempDir::new("damaged");
    let b = start(dir.path()).await;
    let (mut sub, _) = RawClient::connect_with(b.addr, connect_packet("damaged", false, 60)).await;
    sub.subscribe(1, &[("d", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    let mut publ = RawClient::connect(b.addr, "d-pub").await;
    for i in 0..3u16 {
        publish_acked(
            &mut publ,
            "d",
            &format!("DAMAGE-MARKER-{i}"),
            QoS::AtLeastOnce,
            i + 1,
            false,
        )
        .await;
    }
    b.stop().await;
    // Overwrite part of a stored message, as a disk error or a stray write would.
    let file = dir.path().join("mqtt-server.redb");
    let mut bytes = std::fs::read(&file).expect("read store");
    let at = bytes
        .windows(15)
        .position(|w| w == b"DAMAGE-MARKER-1")
        .expect("the message is in the file");
    bytes[at..at + 6].copy_from_slice(b"XXXXXX");
    std::fs::write(&file, bytes).expect("write store");
    // Every page is checksummed: the damage is found at start-up, not delivered.
    let message = start_fails(persistent_config(dir.path(), Durability::Sync)).await;
    assert!(
        message.contains("corrupt") && message.contains(&file.display().to_string()),
        "{message}"
    );
}

/// Runs one of Mosquitto's command-line clients against `addr` and returns its stdout
/// (the test fails if it does not succeed within 20 s).
async fn mosquitto(program: &str, addr: std::net::SocketAddr, args: &[&str]) -> String {
    let run = tokio::process::Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish"))
        .unwrap_or_else(|e| {
            panic!("{program} not installed (scripts/test installs mosquitto-clients): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn mosquitto_clients_get_everything_acknowledged_back_after_kill_9() {
    // What a new user would try: persistence on, retained and queued messages published with
    // mosquitto_pub, the broker killed with SIGKILL, started again, mosquitto_sub reconnects.
    let dir = TempDir::new("kill9");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    let config_file = dir.path().join("broker.toml");
    std::fs::write(
        &config_file,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[persistence]\nenabled = true\npath = '{}'\n",
            dir.path().join("store").display()
        ),
    )
    .expect("write config");
    // (No file limit in practice: 4 GiB.)
    let (mut child, addr) = daemon_with_file_limit(&config_file, 8_388_608).await;
    mosquitto(
        "mosquitto_sub",
        addr,
        &["-i", "k9-watcher", "-c", "-q", "2", "-t", "k9/#", "-E"],
    )
    .await;
    for i in 1..=5 {
        let qos = if i % 2 == 0 { "2" } else { "1" };
        let (topic, payload) = (format!("k9/{i}"), format!("queued-{i}"));
        mosquitto(
            "mosquitto_pub",
            addr,
            &["-q", qos, "-t", &topic, "-m", &payload],
        )
        .await;
    }
    mosquitto(
        "mosquitto_pub",
        addr,
        &["-q", "1", "-r", "-t", "k9r/state", "-m", "on"],
    )
    .await;
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;

    let (_child, addr) = daemon_with_file_limit(&config_file, 8_388_608).await;
    let got = mosquitto(
        "mosquitto_sub",
        addr,
        &[
            "-i",
            "k9-watcher",
            "-c",
            "-q",
            "2",
            "-t",
            "k9/#",
            "-C",
            "5",
            "-W",
            "10",
            "-F",
            "%t %p",
        ],
    )
    .await;
    // (libmosquitto hands a QoS 2 message to the application when the PUBREL arrives, one
    // round trip after the QoS 1 messages sent behind it: compare as a set, counting copies.)
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        vec![
            "k9/1 queued-1",
            "k9/2 queued-2",
            "k9/3 queued-3",
            "k9/4 queued-4",
            "k9/5 queued-5"
        ],
        "every acknowledged message, once"
    );
    let retained = mosquitto(
        "mosquitto_sub",
        addr,
        &["-t", "k9r/#", "-C", "1", "-W", "10", "-F", "%t %p %r"],
    )
    .await;
    assert_eq!(retained.trim(), "k9r/state on 1");
}

/// Starts the daemon through `sh` with a file-size limit (`ulimit -f`, 512-byte blocks in
/// dash) and SIGXFSZ ignored (inherited across `exec`), so that writes beyond the limit fail
/// with EFBIG as they would with ENOSPC on a full disk. Returns the child and its address.
async fn daemon_with_file_limit(
    config: &Path,
    blocks: u32,
) -> (tokio::process::Child, std::net::SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let bin = env!("CARGO_BIN_EXE_mqtt-server");
    let script = format!(
        "trap '' XFSZ; ulimit -f {blocks}; exec '{bin}' -c '{}'",
        config.display()
    );
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start mqtt-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix("mqtt-server listening on ") {
                return addr.parse().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the daemon prints its listening line");
    (child, addr)
}

#[tokio::test]
async fn a_full_disk_stops_acknowledgements_and_the_broker_and_loses_nothing_acknowledged() {
    let dir = TempDir::new("full");
    std::fs::create_dir_all(dir.path()).expect("mkdir");
    let config_file = dir.path().join("broker.toml");
    let store_dir = dir.path().join("store");
    std::fs::write(
        &config_file,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[persistence]\nenabled = true\npath = '{}'\n",
            store_dir.display()
        ),
    )
    .expect("write config");
    // About 1 MiB of store at most (2 MiB if `sh` counts 1 KiB blocks).
    let (mut child, addr) = daemon_with_file_limit(&config_file, 2048).await;
    let (mut sub, _) = RawClient::connect_with(addr, connect_packet("full-sub", false, 60)).await;
    sub.subscribe(1, &[("full/#", QoS::AtLeastOnce)]).await;
    sub.disconnect().await;
    let mut publ = RawClient::connect(addr, "full-pub").await;
    let payload = "p".repeat(100_000);
    let mut acked = Vec::new();
    for i in 1..=60u16 {
        publ.send(publish(
            &format!("full/{i}"),
            &payload,
            QoS::AtLeastOnce,
            false,
            Some(i),
        ))
        .await;
        match publ.recv_within(WAIT).await {
            Ok(Some(Packet::PubAck(a))) if a.packet_id == pid(i) => acked.push(i),
            // No PUBACK: the store is full and the broker is going down.
            _ => break,
        }
    }
    assert!(
        !acked.is_empty() && acked.len() < 60,
        "some messages fit, then the disk was full: {acked:?}"
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the broker stops itself after a failed write")
        .expect("wait for mqtt-server");
    assert_eq!(
        status.code(),
        Some(1),
        "a persistence failure is a failure exit"
    );
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut stderr).await;
    }
    assert!(
        stderr.contains(&store_dir.display().to_string()) && stderr.contains("File too large"),
        "the error names the store and the cause: {stderr}"
    );

    // With room again, everything that was acknowledged is there.
    let b = start(&store_dir).await;
    let (mut sub, present) =
        RawClient::connect_with(b.addr, connect_packet("full-sub", false, 60)).await;
    assert!(present);
    let mut got = Vec::new();
    while got.len() < acked.len() {
        let p = sub.recv_publish().await;
        sub.send(Packet::PubAck(Ack::new(p.packet_id.expect("id"))))
            .await;
        let n: u16 = p.topic["full/".len()..].parse().expect("numbered topic");
        got.push(n);
    }
    assert_eq!(got, acked, "every acknowledged message, in order");
    b.stop().await;
}

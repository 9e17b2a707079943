//! Interoperability with rumqttc 0.24 (MQTT 3.1.1): each client's `EventLoop` is polled in a
//! spawned task that forwards every event over a channel, and the test waits on the channel
//! with timeouts.

mod common;

use std::time::Duration;

use common::{TestBroker, wait_until};
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, Event, LastWill, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for any one event.
const WAIT: Duration = Duration::from_secs(5);

/// One rumqttc client: the request handle and the events of its event loop.
struct Peer {
    name: String,
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options(b: &TestBroker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", b.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

impl Peer {
    /// Connects and waits for a successful CONNACK, which is returned.
    async fn connect(options: MqttOptions) -> (Peer, ConnAck) {
        let name = options.client_id();
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        let done = matches!(event, Event::Outgoing(Outgoing::Disconnect));
                        if tx.send(Ok(event)).is_err() || done {
                            return;
                        }
                    }
                    // No reconnection: the test decides what happens next.
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                }
            }
        });
        let mut peer = Peer {
            name,
            client,
            events,
            task,
        };
        let ack = peer
            .wait_for("CONNACK", |event| match event {
                Event::Incoming(Packet::ConnAck(ack)) => Some(ack.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            ack.code,
            ConnectReturnCode::Success,
            "{}: CONNACK",
            peer.name
        );
        (peer, ack)
    }

    /// Skips events until `pick` accepts one; fails on a connection error or after `WAIT`.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("{}: no {what} within {WAIT:?}", self.name),
                Ok(None) => panic!("{}: event loop ended while waiting for {what}", self.name),
                Ok(Some(Err(e))) => {
                    panic!("{}: connection error waiting for {what}: {e}", self.name)
                }
                Ok(Some(Ok(event))) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                }
            }
        }
    }

    /// The next PUBLISH received.
    async fn next_publish(&mut self, what: &str) -> Publish {
        self.wait_for(what, |event| match event {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes and checks the granted QoS.
    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        let codes = self
            .wait_for("SUBACK", |event| match event {
                Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await;
        assert_eq!(
            codes,
            [SubscribeReasonCode::Success(qos)],
            "SUBACK for {filter}"
        );
    }

    /// Publishes and waits until its flow is complete: written (QoS 0), PUBACK (QoS 1) or
    /// PUBCOMP (QoS 2).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("queue PUBLISH");
        let pkid = self
            .wait_for("outgoing PUBLISH", |event| match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => Some(*pkid),
                _ => None,
            })
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |event| match event {
                    Event::Incoming(Packet::PubAck(ack)) if ack.pkid == pkid => Some(()),
                    _ => None,
                })
                .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |event| match event {
                    Event::Incoming(Packet::PubComp(comp)) if comp.pkid == pkid => Some(()),
                    _ => None,
                })
                .await
            }
        }
    }

    /// Sends DISCONNECT and waits for the event loop to finish.
    async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.wait_for("outgoing DISCONNECT", |event| {
            matches!(event, Event::Outgoing(Outgoing::Disconnect)).then_some(())
        })
        .await;
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("event loop task ends")
            .expect("event loop task did not panic");
    }

    /// Drops the connection without DISCONNECT, as a crashed client: the event loop (and
    /// with it the socket) is dropped.
    async fn crash(mut self) {
        self.task.abort();
        let result = tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("aborted task ends");
        assert!(
            result.as_ref().is_err_and(|e| e.is_cancelled()),
            "{result:?}"
        );
    }
}

fn assert_publish(p: &Publish, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        (topic, payload, qos, retain),
        "topic, payload, qos, retain of {p:?}"
    );
}

#[tokio::test]
async fn qos_0_1_2_round_trips() {
    let b = TestBroker::start().await;
    let (mut sub, _) = Peer::connect(options(&b, "rumqttc-sub")).await;
    sub.subscribe("rumqttc/qos/#", QoS::ExactlyOnce).await;
    let (mut low, _) = Peer::connect(options(&b, "rumqttc-low")).await;
    low.subscribe("rumqttc/qos/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Peer::connect(options(&b, "rumqttc-pub")).await;

    for (qos, payload) in [
        (QoS::AtMostOnce, &b"zero"[..]),
        (QoS::AtLeastOnce, &b"one"[..]),
        (QoS::ExactlyOnce, &b"two"[..]),
        (QoS::ExactlyOnce, &[0u8, 255, 1, 254][..]),
    ] {
        let topic = format!("rumqttc/qos/{}", qos as u8);
        publisher.publish(&topic, qos, false, payload).await;
        let p = sub
            .next_publish(&format!("QoS {qos:?} at the QoS 2 subscriber"))
            .await;
        assert_publish(&p, &topic, payload, qos, false);
        assert!(!p.dup, "first delivery is not a duplicate");
        // [MQTT-3.8.4-6] downgraded to the subscription's maximum QoS.
        let downgraded = std::cmp::min(qos as u8, QoS::AtLeastOnce as u8);
        let p = low
            .next_publish(&format!("QoS {qos:?} at the QoS 1 subscriber"))
            .await;
        assert_eq!(p.qos as u8, downgraded, "{p:?}");
        assert_eq!(&p.payload[..], payload);
    }
    for peer in [sub, low, publisher] {
        peer.disconnect().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber_and_can_be_cleared() {
    let b = TestBroker::start().await;
    let (mut publisher, _) = Peer::connect(options(&b, "rumqttc-retainer")).await;
    publisher
        .publish("rumqttc/retained", QoS::AtLeastOnce, true, b"kept")
        .await;
    wait_until("retained message stored", || b.broker.retained_count() == 1).await;

    let (mut late, _) = Peer::connect(options(&b, "rumqttc-late")).await;
    late.subscribe("rumqttc/#", QoS::ExactlyOnce).await;
    let p = late.next_publish("retained message").await;
    // [MQTT-3.3.1-8] retain 1 on a new subscription, at the QoS it was published with.
    assert_publish(&p, "rumqttc/retained", b"kept", QoS::AtLeastOnce, true);

    publisher
        .publish("rumqttc/retained", QoS::AtLeastOnce, true, b"")
        .await;
    // [MQTT-3.3.1-10] forwarded as a normal message with retain 0, and removes the retained one.
    let p = late.next_publish("empty retained message").await;
    assert_publish(&p, "rumqttc/retained", b"", QoS::AtLeastOnce, false);
    wait_until("retained message cleared", || {
        b.broker.retained_count() == 0
    })
    .await;

    let (mut later, _) = Peer::connect(options(&b, "rumqttc-later")).await;
    later.subscribe("rumqttc/#", QoS::AtLeastOnce).await;
    // Barrier: its own message arrives after any retained message would have.
    later
        .publish("rumqttc/barrier", QoS::AtLeastOnce, false, b"barrier")
        .await;
    let p = later.next_publish("barrier").await;
    assert_publish(&p, "rumqttc/barrier", b"barrier", QoS::AtLeastOnce, false);
    for peer in [publisher, late, later] {
        peer.disconnect().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn persistent_session_receives_messages_published_while_offline() {
    let b = TestBroker::start().await;
    let mut persistent = options(&b, "rumqttc-persistent");
    persistent.set_clean_session(false);

    let (mut first, ack) = Peer::connect(persistent.clone()).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-3] no stored session yet");
    first.subscribe("rumqttc/offline/#", QoS::AtLeastOnce).await;
    first.disconnect().await;
    wait_until("the persistent client is offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    assert_eq!(b.broker.session_count(), 1, "the session is stored");

    let (mut publisher, _) = Peer::connect(options(&b, "rumqttc-offline-pub")).await;
    for i in 0..3 {
        publisher
            .publish(
                &format!("rumqttc/offline/{i}"),
                QoS::AtLeastOnce,
                false,
                format!("queued {i}").as_bytes(),
            )
            .await;
    }
    publisher.disconnect().await;

    let (mut again, ack) = Peer::connect(persistent).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2] the session is resumed");
    for i in 0..3 {
        let p = again.next_publish(&format!("queued message {i}")).await;
        assert_publish(
            &p,
            &format!("rumqttc/offline/{i}"),
            format!("queued {i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        );
    }
    again.disconnect().await;
    wait_until("only the persistent session is left", || {
        b.broker.session_count() == 1
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn last_will_is_published_when_the_client_drops() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = Peer::connect(options(&b, "rumqttc-watcher")).await;
    watcher.subscribe("rumqttc/will/#", QoS::ExactlyOnce).await;

    let mut polite = options(&b, "rumqttc-polite");
    polite.set_last_will(LastWill::new(
        "rumqttc/will/polite",
        "polite gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = Peer::connect(polite).await;
    polite.disconnect().await;

    let mut dropped = options(&b, "rumqttc-dropped");
    dropped.set_last_will(LastWill::new(
        "rumqttc/will/dropped",
        "dropped gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (dropped, _) = Peer::connect(dropped).await;
    dropped.crash().await;

    // [MQTT-3.1.2-8] published on a close without DISCONNECT; [MQTT-3.1.2-10] deleted after a
    // DISCONNECT, so the first will must be the dropped client's.
    let p = watcher.next_publish("will of the dropped client").await;
    assert_publish(
        &p,
        "rumqttc/will/dropped",
        b"dropped gone",
        QoS::AtLeastOnce,
        false,
    );
    watcher.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn hundred_qos1_messages_arrive_in_order() {
    const COUNT: usize = 100;
    let b = TestBroker::start().await;
    let (mut sub, _) = Peer::connect(options(&b, "rumqttc-ordered-sub")).await;
    sub.subscribe("rumqttc/ordered", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Peer::connect(options(&b, "rumqttc-ordered-pub")).await;
    // All queued at once: more than the broker's in-flight window (20) towards the subscriber.
    for i in 0..COUNT {
        publisher
            .client
            .publish("rumqttc/ordered", QoS::AtLeastOnce, false, i.to_string())
            .await
            .expect("queue PUBLISH");
    }
    for i in 0..COUNT {
        let p = sub.next_publish(&format!("message {i}")).await;
        assert_publish(
            &p,
            "rumqttc/ordered",
            i.to_string().as_bytes(),
            QoS::AtLeastOnce,
            false,
        );
        assert!(!p.dup, "no redelivery on a healthy connection: {p:?}");
    }
    let mut acked = 0;
    while acked < COUNT {
        publisher
            .wait_for("PUBACK", |event| {
                matches!(event, Event::Incoming(Packet::PubAck(_))).then_some(())
            })
            .await;
        acked += 1;
    }
    // Barrier: nothing beyond the 100 (no duplicates) before a final message.
    publisher
        .publish("rumqttc/ordered", QoS::AtLeastOnce, false, b"end")
        .await;
    let p = sub.next_publish("end marker").await;
    assert_eq!(&p.payload[..], b"end", "an unexpected extra message: {p:?}");
    for peer in [sub, publisher] {
        peer.disconnect().await;
    }
    b.stop().await;
}

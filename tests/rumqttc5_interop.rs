//! MQTT 5 interoperability with rumqttc 0.24's v5 client (`rumqttc::v5`): each client's
//! `EventLoop` is polled in a spawned task that forwards every event (and the error that ends
//! it) over a channel, and the test waits on the channel with timeouts.
//!
//! What rumqttc v5 cannot express is covered by `tests/interop_paho5.rs`: DISCONNECT with a
//! reason code or properties (it always sends 0x00 without properties), a topic alias above
//! the server's maximum (refused client-side), PUBACK codes >= 0x80 (rumqttc turns them into a
//! connection error), and the reason code of a server DISCONNECT (rumqttc 0.24 cannot decode a
//! DISCONNECT without a Property Length, see `Peer::server_disconnect`).

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{TestBroker, test_config, wait_until};
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet,
    PubAckReason, PubRecReason, Publish, PublishProperties, RetainForwardRule, SubscribeProperties,
    SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest wait for any one event.
const WAIT: Duration = Duration::from_secs(5);
/// How long a check that nothing arrives holds on (only while the broker is known to have
/// something it must not send yet).
const HOLD: Duration = Duration::from_millis(150);

/// One rumqttc v5 client: the request handle and the events of its event loop.
struct Peer {
    name: String,
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// PUBLISHes received while waiting for something else (an ack), in order.
    stash: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a publication's flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Acked {
    /// QoS 0: written.
    Written,
    /// QoS 1: the PUBACK's reason.
    PubAck(PubAckReason),
    /// QoS 2: the PUBREC's reason (the flow then completed with PUBCOMP).
    PubRec(PubRecReason),
}

fn options(b: &TestBroker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", b.addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Options with a Session Expiry Interval.
fn persistent(b: &TestBroker, client_id: &str, expiry: u32, clean_start: bool) -> MqttOptions {
    let mut o = options(b, client_id);
    o.set_clean_start(clean_start);
    let mut props = o.connect_properties().unwrap_or_default();
    props.session_expiry_interval = Some(expiry);
    o.set_connect_properties(props);
    o
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

fn subscription_id(id: usize) -> SubscribeProperties {
    SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    }
}

fn props_of(p: &Publish) -> PublishProperties {
    p.properties.clone().unwrap_or_default()
}

fn topic_of(p: &Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
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
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut peer = Peer {
            name,
            client,
            events,
            stash: VecDeque::new(),
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
    /// Incoming PUBLISHes that `pick` does not take are kept for [`Peer::next_publish`].
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("{}: no {what} within {WAIT:?}", self.name),
                Ok(None) => panic!("{}: event loop ended while waiting for {what}", self.name),
                Ok(Some(Err(e))) => {
                    panic!("{}: connection error waiting for {what}: {e:?}", self.name)
                }
                Ok(Some(Ok(event))) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                    if let Event::Incoming(Packet::Publish(p)) = event {
                        self.stash.push_back(p);
                    }
                }
            }
        }
    }

    /// The next PUBLISH received within `d`, if any (other events are skipped).
    async fn publish_within(&mut self, d: Duration) -> Option<Publish> {
        if let Some(p) = self.stash.pop_front() {
            return Some(p);
        }
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return None,
                Ok(None) => panic!("{}: event loop ended", self.name),
                Ok(Some(Err(e))) => panic!("{}: connection error: {e:?}", self.name),
                Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => return Some(p),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next PUBLISH received.
    async fn next_publish(&mut self, what: &str) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        self.wait_for(what, |event| match event {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes to `filters` and returns the SUBACK codes. (rumqttc ends the connection
    /// on a refused subscription, so only successes can be seen.)
    async fn subscribe_with(
        &mut self,
        filters: Vec<Filter>,
        props: Option<SubscribeProperties>,
    ) -> Vec<SubscribeReasonCode> {
        let what = format!(
            "SUBACK for {:?}",
            filters.iter().map(|f| &f.path).collect::<Vec<_>>()
        );
        let queued = match props {
            Some(p) => self.client.subscribe_many_with_properties(filters, p).await,
            None => self.client.subscribe_many(filters).await,
        };
        queued.expect("queue SUBSCRIBE");
        self.wait_for(&what, |event| match event {
            Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes to one filter and checks the granted QoS.
    async fn subscribe(&mut self, f: Filter, props: Option<SubscribeProperties>) {
        let qos = f.qos;
        let path = f.path.clone();
        let codes = self.subscribe_with(vec![f], props).await;
        assert_eq!(
            codes,
            [SubscribeReasonCode::Success(qos)],
            "SUBACK for {path}"
        );
    }

    /// Publishes and waits until its flow is complete; returns how it was acknowledged.
    async fn publish_with(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
        props: Option<PublishProperties>,
    ) -> Acked {
        let queued = match props {
            Some(p) => {
                self.client
                    .publish_with_properties(topic, qos, retain, payload.to_vec(), p)
                    .await
            }
            None => {
                self.client
                    .publish(topic, qos, retain, payload.to_vec())
                    .await
            }
        };
        queued.expect("queue PUBLISH");
        let pkid = self
            .wait_for("outgoing PUBLISH", |event| match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => Some(*pkid),
                _ => None,
            })
            .await;
        match qos {
            QoS::AtMostOnce => Acked::Written,
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |event| match event {
                    Event::Incoming(Packet::PubAck(ack)) if ack.pkid == pkid => {
                        Some(Acked::PubAck(ack.reason))
                    }
                    _ => None,
                })
                .await
            }
            QoS::ExactlyOnce => {
                let rec = self
                    .wait_for("PUBREC", |event| match event {
                        Event::Incoming(Packet::PubRec(rec)) if rec.pkid == pkid => {
                            Some(rec.reason)
                        }
                        _ => None,
                    })
                    .await;
                self.wait_for("PUBCOMP", |event| match event {
                    Event::Incoming(Packet::PubComp(comp)) if comp.pkid == pkid => Some(()),
                    _ => None,
                })
                .await;
                Acked::PubRec(rec)
            }
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, payload: &[u8]) -> Acked {
        self.publish_with(topic, qos, false, payload, None).await
    }

    /// Sends DISCONNECT (0x00) and waits for the event loop to finish.
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

    /// Waits for the server to end the connection; returns the DISCONNECT reason rumqttc
    /// reported, or `None` when it saw the connection close without one.
    ///
    /// rumqttc 0.24 cannot parse a DISCONNECT whose Remaining Length is 1 (reason code, no
    /// Property Length: legal, MQTT 5.0 section 3.14.2.2.1, and what this broker and Mosquitto
    /// send): `Disconnect::read` asks for more bytes after the frame was already taken from
    /// its buffer, so the event loop only sees the TCP close ("connection closed by peer").
    async fn server_disconnect(&mut self, what: &str) -> Option<DisconnectReasonCode> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!(
                    "{}: connection not ended ({what}) within {WAIT:?}",
                    self.name
                ),
                Ok(None) => panic!("{}: event loop ended without an error ({what})", self.name),
                Ok(Some(Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                })))) => return Some(reason_code),
                Ok(Some(Err(ConnectionError::MqttState(StateError::Io(e)))))
                    if e.kind() == std::io::ErrorKind::ConnectionAborted =>
                {
                    return None;
                }
                Ok(Some(Err(e))) => panic!("{}: {what}: connection error {e:?}", self.name),
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

#[tokio::test]
async fn rumqttc5_connack_assigned_id_server_keep_alive_and_granted_expiry() {
    let mut config = test_config();
    config.mqtt.max_keepalive = 30;
    config.mqtt.session_expiry_interval = 100;
    let b = TestBroker::start_with(config).await;

    let mut anon = options(&b, "");
    anon.set_keep_alive(Duration::from_secs(60));
    let (mut anon, ack) = Peer::connect(anon).await;
    let p = ack.properties.clone().expect("CONNACK properties");
    let assigned = p.assigned_client_identifier.clone().unwrap_or_default();
    assert!(
        assigned.starts_with("auto-") && assigned.len() > 5,
        "[MQTT-3.2.2-16] Assigned Client Identifier {assigned:?}"
    );
    // [MQTT-3.2.2-21] keep-alive 60 above max_keepalive 30: Server Keep Alive 30.
    assert_eq!(p.server_keep_alive, Some(30), "{p:?}");
    assert_eq!(
        (
            p.topic_alias_max,
            p.max_packet_size,
            p.wildcard_subscription_available,
            p.subscription_identifiers_available,
            p.shared_subscription_available,
        ),
        (Some(10), Some(1_048_576), Some(1), Some(1), Some(1)),
        "what the CONNACK announces: {p:?}"
    );
    assert_eq!(
        (
            p.receive_max,
            p.max_qos,
            p.retain_available,
            p.session_expiry_interval
        ),
        (Some(100), None, None, None),
        "Receive Maximum 100 (our default); defaults and values as requested are not repeated: {p:?}"
    );
    // The assigned identifier is usable.
    anon.subscribe(filter("r5/connack/echo", QoS::AtLeastOnce), None)
        .await;
    anon.publish("r5/connack/echo", QoS::AtLeastOnce, b"echo")
        .await;
    let echo = anon.next_publish("own message").await;
    assert_eq!(topic_of(&echo), "r5/connack/echo");
    anon.disconnect().await;

    let (capped, ack) = Peer::connect(persistent(&b, "r5-capped", 1000, true)).await;
    let p = ack.properties.expect("CONNACK properties");
    assert_eq!(
        p.session_expiry_interval,
        Some(100),
        "asked 1000 with cap 100: {p:?}"
    );
    assert_eq!(p.server_keep_alive, None, "keep-alive 30 is allowed: {p:?}");
    capped.disconnect().await;
    // Clean start discards the kept session, and ends with this connection (no expiry).
    let (gone, ack) = Peer::connect(options(&b, "r5-capped")).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-2] Clean Start 1");
    gone.disconnect().await;
    wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_session_expiry_resume_and_expiry() {
    let b = TestBroker::start().await;
    let (mut first, ack) = Peer::connect(persistent(&b, "r5-session", 60, true)).await;
    assert!(!ack.session_present, "[MQTT-3.2.2-2] Clean Start 1");
    first
        .subscribe(filter("r5/session/#", QoS::AtLeastOnce), None)
        .await;
    first.disconnect().await;

    let (mut publisher, _) = Peer::connect(options(&b, "r5-session-pub")).await;
    for i in 0..3 {
        let acked = publisher
            .publish(&format!("r5/session/{i}"), QoS::AtLeastOnce, b"queued")
            .await;
        assert_eq!(
            acked,
            Acked::PubAck(PubAckReason::Success),
            "a session subscribes"
        );
    }
    let (mut again, ack) = Peer::connect(persistent(&b, "r5-session", 60, false)).await;
    assert!(ack.session_present, "[MQTT-3.2.2-3] the session is resumed");
    for i in 0..3 {
        let p = again.next_publish(&format!("queued message {i}")).await;
        assert_eq!(topic_of(&p), format!("r5/session/{i}"), "{p:?}");
    }
    again.disconnect().await;

    // Without Session Expiry Interval (0) the session ends with the connection.
    let (zero, ack) = Peer::connect(persistent(&b, "r5-session", 60, true)).await;
    assert!(
        !ack.session_present,
        "[MQTT-3.1.2-4] Clean Start 1 discards the session"
    );
    zero.disconnect().await;
    let mut no_expiry = options(&b, "r5-session");
    no_expiry.set_clean_start(false);
    let (mut zero, ack) = Peer::connect(no_expiry.clone()).await;
    assert!(
        ack.session_present,
        "kept for 60 s by the previous connection"
    );
    zero.subscribe(filter("r5/zero", QoS::AtLeastOnce), None)
        .await;
    zero.disconnect().await;
    let (zero, ack) = Peer::connect(no_expiry).await;
    assert!(
        !ack.session_present,
        "section 3.1.2.11.2: absent Session Expiry Interval ends the session at disconnect"
    );
    zero.disconnect().await;

    // A 1 s expiry: the broker drops the session once the timer runs out.
    let (brief, _) = Peer::connect(persistent(&b, "r5-brief", 1, true)).await;
    brief.disconnect().await;
    publisher.disconnect().await;
    let gone_at = Instant::now();
    wait_until("[MQTT-4.1.0-2] the 1 s session expired", || {
        b.broker.session_count() == 0
    })
    .await;
    assert!(
        gone_at.elapsed() >= Duration::from_millis(900),
        "expired after {:?}, before its 1 s interval",
        gone_at.elapsed()
    );
    let (back, ack) = Peer::connect(persistent(&b, "r5-brief", 1, false)).await;
    assert!(
        !ack.session_present,
        "[MQTT-4.1.0-2] expired session resumed"
    );
    back.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_request_response_properties_pass_through() {
    let b = TestBroker::start().await;
    let (mut requester, _) = Peer::connect(options(&b, "r5-requester")).await;
    let (mut responder, _) = Peer::connect(options(&b, "r5-responder")).await;
    requester
        .subscribe(filter("r5/rr/reply", QoS::AtLeastOnce), None)
        .await;
    responder
        .subscribe(filter("r5/rr/service", QoS::ExactlyOnce), None)
        .await;
    let user = vec![
        ("trace".to_owned(), "1".to_owned()),
        ("zeta".to_owned(), "z".to_owned()),
        ("trace".to_owned(), "2".to_owned()),
    ];
    let request = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("r5/rr/reply".to_owned()),
        correlation_data: Some(bytes::Bytes::from_static(b"\x00corr\xff")),
        user_properties: user.clone(),
        content_type: Some("application/json".to_owned()),
        ..Default::default()
    };
    requester
        .publish_with(
            "r5/rr/service",
            QoS::ExactlyOnce,
            false,
            br#"{"op":"add"}"#,
            Some(request.clone()),
        )
        .await;
    let got = responder.next_publish("request").await;
    // [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17], [MQTT-3.3.2-18],
    // [MQTT-3.3.2-20]: forwarded unaltered, user properties in order.
    assert_eq!(props_of(&got), request, "request properties");
    assert_eq!(
        (&got.payload[..], got.qos),
        (&br#"{"op":"add"}"#[..], QoS::ExactlyOnce)
    );

    let reply_to = props_of(&got).response_topic.expect("response topic");
    let reply = PublishProperties {
        correlation_data: props_of(&got).correlation_data,
        user_properties: vec![("status".to_owned(), "ok".to_owned())],
        ..Default::default()
    };
    responder
        .publish_with(
            &reply_to,
            QoS::AtLeastOnce,
            false,
            b"3",
            Some(reply.clone()),
        )
        .await;
    let answer = requester.next_publish("response").await;
    assert_eq!(topic_of(&answer), "r5/rr/reply");
    assert_eq!(props_of(&answer), reply, "response properties");
    assert_eq!(&answer.payload[..], b"3");
    requester.disconnect().await;
    responder.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_message_expiry_decremented_and_expired_dropped() {
    let b = TestBroker::start().await;
    let (first, _) = Peer::connect(persistent(&b, "r5-expiry", 60, true)).await;
    let mut first = first;
    first
        .subscribe(filter("r5/expiry/#", QoS::AtLeastOnce), None)
        .await;
    let (mut publisher, _) = Peer::connect(options(&b, "r5-expiry-pub")).await;
    let expiring = |secs| PublishProperties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    publisher
        .publish_with(
            "r5/expiry/live",
            QoS::AtLeastOnce,
            false,
            b"live",
            Some(expiring(60)),
        )
        .await;
    let live = first.next_publish("live message").await;
    let mei = props_of(&live).message_expiry_interval;
    assert!(
        matches!(mei, Some(59..=60)),
        "[MQTT-3.3.2-6] live delivery: Message Expiry Interval {mei:?}"
    );
    first.disconnect().await;

    for (topic, secs) in [("short", Some(1)), ("long", Some(30)), ("forever", None)] {
        publisher
            .publish_with(
                &format!("r5/expiry/{topic}"),
                QoS::AtLeastOnce,
                false,
                topic.as_bytes(),
                secs.map(expiring),
            )
            .await;
    }
    let queued_at = Instant::now();
    // The expiry is the behaviour: wait past the short message's interval.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut back, ack) = Peer::connect(persistent(&b, "r5-expiry", 0, false)).await;
    assert!(ack.session_present, "session resumed");
    let p = back.next_publish("the long-lived queued message").await;
    assert_eq!(
        topic_of(&p),
        "r5/expiry/long",
        "[MQTT-3.3.2-5] the expired message must not be delivered: {p:?}"
    );
    let waited = u32::try_from(queued_at.elapsed().as_secs()).unwrap_or(u32::MAX);
    let mei = props_of(&p).message_expiry_interval;
    assert!(
        mei.is_some_and(|m| m >= 1 && m <= 30 - waited.min(29) + 1 && m <= 28),
        "[MQTT-3.3.2-6] queued for {waited}+ s: Message Expiry Interval {mei:?}"
    );
    let p = back.next_publish("the queued message without expiry").await;
    assert_eq!(topic_of(&p), "r5/expiry/forever");
    assert_eq!(props_of(&p).message_expiry_interval, None);
    back.disconnect().await;
    publisher.disconnect().await;
    wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_subscription_options() {
    let b = TestBroker::start().await;
    // No Local.
    let (mut local, _) = Peer::connect(options(&b, "r5-nolocal")).await;
    let (mut other, _) = Peer::connect(options(&b, "r5-nolocal-other")).await;
    let mut f = filter("r5/nl/#", QoS::AtLeastOnce);
    f.nolocal = true;
    local.subscribe(f, None).await;
    local.publish("r5/nl/own", QoS::AtLeastOnce, b"own").await;
    other
        .publish("r5/nl/other", QoS::AtLeastOnce, b"other")
        .await;
    let p = local.next_publish("the other client's message").await;
    assert_eq!(
        topic_of(&p),
        "r5/nl/other",
        "[MQTT-3.8.3-3] No Local: own message echoed"
    );

    // Retain As Published.
    let mut keep = filter("r5/rap/#", QoS::AtLeastOnce);
    keep.preserve_retain = true;
    let (mut keeper, _) = Peer::connect(options(&b, "r5-rap-keep")).await;
    keeper.subscribe(keep, None).await;
    let (mut clearer, _) = Peer::connect(options(&b, "r5-rap-clear")).await;
    clearer
        .subscribe(filter("r5/rap/#", QoS::AtLeastOnce), None)
        .await;
    other
        .publish_with("r5/rap/live", QoS::AtLeastOnce, true, b"retained", None)
        .await;
    let p = keeper.next_publish("live retained message").await;
    assert!(
        p.retain,
        "[MQTT-3.3.1-13] Retain As Published 1 keeps RETAIN: {p:?}"
    );
    let p = clearer.next_publish("live retained message").await;
    assert!(
        !p.retain,
        "[MQTT-3.3.1-12] Retain As Published 0 clears RETAIN: {p:?}"
    );

    // Retain Handling 0, 1, 2; the subscriber's own QoS 1 message is routed after the
    // retained messages its SUBSCRIBE queued, so it is the barrier for "none was sent".
    async fn retained_then_marker(peer: &mut Peer, rule: RetainForwardRule, expect: bool) {
        let mut f = filter("r5/rap/#", QoS::AtLeastOnce);
        f.retain_forward_rule = rule.clone();
        peer.subscribe(f, None).await;
        peer.publish("r5/rap/marker", QoS::AtLeastOnce, b"marker")
            .await;
        let p = peer.next_publish("retained message or marker").await;
        if expect {
            assert!(
                topic_of(&p) == "r5/rap/live" && p.retain,
                "{rule:?}: expected the retained message, got {p:?}"
            );
            let p = peer.next_publish("marker").await;
            assert_eq!(topic_of(&p), "r5/rap/marker", "{rule:?}");
        } else {
            assert_eq!(
                topic_of(&p),
                "r5/rap/marker",
                "{rule:?}: a retained message was sent: {p:?}"
            );
        }
    }
    let (mut rh, _) = Peer::connect(options(&b, "r5-rh")).await;
    // [MQTT-3.3.1-9] new and existing subscription.
    retained_then_marker(&mut rh, RetainForwardRule::OnEverySubscribe, true).await;
    retained_then_marker(&mut rh, RetainForwardRule::OnEverySubscribe, true).await;
    // [MQTT-3.3.1-10] existing subscription: not sent.
    retained_then_marker(&mut rh, RetainForwardRule::OnNewSubscribe, false).await;
    // [MQTT-3.3.1-11] never.
    retained_then_marker(&mut rh, RetainForwardRule::Never, false).await;
    let (mut fresh, _) = Peer::connect(options(&b, "r5-rh-new")).await;
    // [MQTT-3.3.1-10] new subscription: sent.
    retained_then_marker(&mut fresh, RetainForwardRule::OnNewSubscribe, true).await;

    other
        .publish_with("r5/rap/live", QoS::AtLeastOnce, true, b"", None)
        .await;
    wait_until("retained message cleared", || {
        b.broker.retained_count() == 0
    })
    .await;
    for peer in [local, other, keeper, clearer, rh, fresh] {
        peer.disconnect().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_subscription_identifiers() {
    let b = TestBroker::start().await;
    let (mut s, _) = Peer::connect(options(&b, "r5-subid")).await;
    s.subscribe(
        filter("r5/sid/#", QoS::AtLeastOnce),
        Some(subscription_id(7)),
    )
    .await;
    s.subscribe(
        filter("r5/sid/a", QoS::AtLeastOnce),
        Some(subscription_id(268_435_455)),
    )
    .await;
    s.subscribe(filter("r5/plain/#", QoS::AtLeastOnce), None)
        .await;
    let (mut publisher, _) = Peer::connect(options(&b, "r5-subid-pub")).await;
    for topic in ["r5/sid/a", "r5/sid/b", "r5/plain/x"] {
        publisher.publish(topic, QoS::AtLeastOnce, b"-").await;
    }
    let ids = |p: &Publish| {
        let mut ids = props_of(p).subscription_identifiers;
        ids.sort_unstable();
        (topic_of(p), ids)
    };
    let p = s.next_publish("message of two subscriptions").await;
    assert_eq!(
        ids(&p),
        ("r5/sid/a".to_owned(), vec![7, 268_435_455]),
        "[MQTT-3.3.4-3] one copy with both identifiers"
    );
    let p = s.next_publish("message of one subscription").await;
    assert_eq!(ids(&p), ("r5/sid/b".to_owned(), vec![7]));
    let p = s
        .next_publish("message of a subscription without identifier")
        .await;
    assert_eq!(ids(&p), ("r5/plain/x".to_owned(), vec![]));
    s.disconnect().await;
    publisher.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_topic_alias_server_to_client_resolved_by_the_client() {
    let b = TestBroker::start().await;
    let mut o = options(&b, "r5-alias-out");
    o.set_topic_alias_max(Some(2));
    let (mut s, _) = Peer::connect(o).await;
    s.subscribe(filter("r5/out/#", QoS::AtLeastOnce), None)
        .await;
    let (mut publisher, _) = Peer::connect(options(&b, "r5-alias-out-pub")).await;
    let sequence = ["t1", "t1", "t2", "t3", "t1", "t3", "t2"];
    for (i, t) in sequence.iter().enumerate() {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .publish(&format!("r5/out/{t}"), qos, i.to_string().as_bytes())
            .await;
    }
    // rumqttc replaces an empty topic by the alias's topic; the alias stays in the properties.
    // [MQTT-3.3.2-11] aliases 1..=2 only; t3 comes after both are taken: no alias.
    let want_alias = [Some(1), Some(1), Some(2), None, Some(1), None, Some(2)];
    for (i, t) in sequence.iter().enumerate() {
        let p = s.next_publish(&format!("message {i}")).await;
        assert_eq!(
            (topic_of(&p), &p.payload[..], props_of(&p).topic_alias),
            (
                format!("r5/out/{t}"),
                i.to_string().as_bytes(),
                want_alias[i]
            ),
            "message {i} after rumqttc resolved the alias"
        );
    }
    s.disconnect().await;
    publisher.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_topic_alias_client_to_server() {
    let b = TestBroker::start().await;
    let (mut s, _) = Peer::connect(options(&b, "r5-alias-in-sub")).await;
    s.subscribe(filter("r5/alias/#", QoS::AtLeastOnce), None)
        .await;
    let (mut publisher, ack) = Peer::connect(options(&b, "r5-alias-in-pub")).await;
    assert_eq!(
        ack.properties.and_then(|p| p.topic_alias_max),
        Some(10),
        "Topic Alias Maximum in CONNACK"
    );
    let alias = |a| PublishProperties {
        topic_alias: Some(a),
        ..Default::default()
    };
    let steps: [(&str, u16, &[u8]); 4] = [
        ("r5/alias/one", 3, b"1"),
        ("", 3, b"2"),
        ("r5/alias/two", 3, b"3"),
        ("", 3, b"4"),
    ];
    for (topic, a, payload) in steps {
        publisher
            .publish_with(topic, QoS::AtLeastOnce, false, payload, Some(alias(a)))
            .await;
    }
    for (topic, payload) in [
        ("r5/alias/one", "1"),
        ("r5/alias/one", "2"),
        ("r5/alias/two", "3"),
        ("r5/alias/two", "4"),
    ] {
        let p = s.next_publish(payload).await;
        assert_eq!(
            (topic_of(&p), &p.payload[..]),
            (topic.to_owned(), payload.as_bytes()),
            "topic resolved from the publisher's alias"
        );
        // [MQTT-3.1.2-27] the subscriber announced no Topic Alias Maximum.
        assert_eq!(props_of(&p).topic_alias, None, "{p:?}");
    }
    s.disconnect().await;
    publisher.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_receive_maximum_with_manual_acks() {
    let b = TestBroker::start().await;
    let (publisher, _) = Peer::connect(options(&b, "r5-flow-pub")).await;
    for window in [1usize, 3] {
        let mut o = options(&b, &format!("r5-flow-{window}"));
        o.set_receive_maximum(u16::try_from(window).ok());
        o.set_manual_acks(true);
        let (mut s, _) = Peer::connect(o).await;
        let topic = format!("r5/flow/{window}");
        s.subscribe(filter(&topic, QoS::AtLeastOnce), None).await;
        const TOTAL: usize = 12;
        for i in 0..TOTAL {
            publisher
                .client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, i.to_string())
                .await
                .expect("queue PUBLISH");
        }
        let mut unacked: Vec<Publish> = Vec::new();
        let mut got = Vec::new();
        while got.len() < TOTAL {
            if unacked.len() < window {
                let p = s.next_publish(&format!("message {}", got.len())).await;
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                unacked.push(p);
            } else {
                // [MQTT-3.3.4-9] the window is full: nothing until an acknowledgement.
                if let Some(p) = s.publish_within(HOLD).await {
                    panic!("Receive Maximum {window} exceeded: {p:?}");
                }
                let oldest = unacked.remove(0);
                s.client.ack(&oldest).await.expect("queue PUBACK");
            }
        }
        for p in &unacked {
            s.client.ack(p).await.expect("queue PUBACK");
        }
        let want: Vec<String> = (0..TOTAL).map(|i| i.to_string()).collect();
        assert_eq!(
            got, want,
            "[MQTT-4.6.0-6] order with Receive Maximum {window}"
        );
        s.disconnect().await;
    }
    publisher.disconnect().await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_maximum_packet_size_of_the_client() {
    let b = TestBroker::start().await;
    let mut o = options(&b, "r5-mps");
    // rumqttc also enforces it on what it reads: an oversized PUBLISH would end the connection.
    o.set_max_packet_size(Some(256));
    let (mut small, _) = Peer::connect(o).await;
    small
        .subscribe(filter("r5/mps/#", QoS::AtLeastOnce), None)
        .await;
    let (mut unlimited, _) = Peer::connect(options(&b, "r5-mps-unlimited")).await;
    unlimited
        .subscribe(filter("r5/mps/#", QoS::AtLeastOnce), None)
        .await;
    let (mut publisher, _) = Peer::connect(options(&b, "r5-mps-pub")).await;
    publisher
        .publish("r5/mps/big", QoS::AtLeastOnce, &[b'B'; 1000])
        .await;
    publisher
        .publish("r5/mps/fits", QoS::AtLeastOnce, &[b's'; 100])
        .await;
    let p = small.next_publish("the message that fits").await;
    assert_eq!(
        (topic_of(&p), p.payload.len()),
        ("r5/mps/fits".to_owned(), 100),
        "[MQTT-3.1.2-24] a packet above Maximum Packet Size 256 was sent"
    );
    let p = unlimited.next_publish("big message").await;
    assert_eq!(
        (topic_of(&p), p.payload.len()),
        ("r5/mps/big".to_owned(), 1000)
    );
    let p = unlimited.next_publish("small message").await;
    assert_eq!(topic_of(&p), "r5/mps/fits");
    for peer in [small, unlimited, publisher] {
        peer.disconnect().await;
    }
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_will_delay_and_cancel_by_reconnect() {
    let b = TestBroker::start().await;
    let (mut watcher, _) = Peer::connect(options(&b, "r5-will-watcher")).await;
    watcher
        .subscribe(filter("r5/will/#", QoS::AtLeastOnce), None)
        .await;
    let with_will = |id: &str, topic: &str| {
        let mut o = persistent(&b, id, 60, true);
        o.set_last_will(LastWill::new(
            topic,
            "gone",
            QoS::AtLeastOnce,
            false,
            Some(LastWillProperties {
                delay_interval: Some(2),
                payload_format_indicator: Some(1),
                message_expiry_interval: None,
                content_type: Some("text/plain".to_owned()),
                response_topic: None,
                correlation_data: None,
                user_properties: vec![("k".to_owned(), "v".to_owned())],
            }),
        ));
        o
    };
    let (delayed, _) = Peer::connect(with_will("r5-will-delayed", "r5/will/delayed")).await;
    let (cancelled, _) = Peer::connect(with_will("r5-will-cancelled", "r5/will/cancelled")).await;
    let dropped_at = Instant::now();
    delayed.crash().await;
    cancelled.crash().await;
    let (mut back, ack) = Peer::connect(persistent(&b, "r5-will-cancelled", 60, false)).await;
    assert!(ack.session_present, "reconnected within the will delay");
    assert!(
        dropped_at.elapsed() < Duration::from_millis(1500),
        "reconnect took {:?}, too slow for the test",
        dropped_at.elapsed()
    );

    let p = watcher.next_publish("the delayed will").await;
    let after = dropped_at.elapsed();
    assert_eq!(topic_of(&p), "r5/will/delayed", "{p:?}");
    assert!(
        after >= Duration::from_millis(1900),
        "[MQTT-3.1.3-9] will with delay 2 s published after {after:?}"
    );
    let wp = props_of(&p);
    assert_eq!(
        (
            wp.payload_format_indicator,
            wp.content_type,
            wp.user_properties
        ),
        (
            Some(1),
            Some("text/plain".to_owned()),
            vec![("k".to_owned(), "v".to_owned())]
        ),
        "will properties forwarded"
    );
    // The cancelled will's timer has run out too (2 s plus slack; the timer is the behaviour):
    // a marker must be the next message.
    let left = Duration::from_millis(2600).saturating_sub(dropped_at.elapsed());
    tokio::time::sleep(left).await;
    back.publish("r5/will/marker", QoS::AtLeastOnce, b"marker")
        .await;
    let p = watcher.next_publish("marker").await;
    assert_eq!(
        topic_of(&p),
        "r5/will/marker",
        "[MQTT-3.1.3-9] will published although the client reconnected"
    );
    back.disconnect().await;
    watcher.disconnect().await;
    b.stop().await;
}

/// A rumqttc MQTT 3.1.1 client for the shared subscription test: its PUBLISHes, over a channel.
struct V311Member {
    client: rumqttc::AsyncClient,
    publishes: mpsc::UnboundedReceiver<rumqttc::Publish>,
    task: JoinHandle<()>,
}

impl Drop for V311Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V311Member {
    async fn connect(b: &TestBroker, id: &str, filter: &str) -> V311Member {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", b.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, 64);
        let (tx, publishes) = mpsc::unbounded_channel();
        let (subacked_tx, mut subacked) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                        let _ = tx.send(p);
                    }
                    rumqttc::Event::Incoming(rumqttc::Packet::SubAck(a)) => {
                        let _ = subacked_tx.send(a.return_codes);
                    }
                    rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect) => return,
                    _ => {}
                }
            }
        });
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        let codes = tokio::time::timeout(WAIT, subacked.recv())
            .await
            .expect("SUBACK in time")
            .expect("event loop alive");
        assert_eq!(
            codes,
            [rumqttc::SubscribeReasonCode::Success(
                rumqttc::QoS::AtLeastOnce
            )]
        );
        V311Member {
            client,
            publishes,
            task,
        }
    }
}

#[tokio::test]
async fn rumqttc5_shared_subscription_with_a_v311_member() {
    let b = TestBroker::start().await;
    let (mut v5, _) = Peer::connect(options(&b, "r5-share-v5")).await;
    v5.subscribe(filter("$share/grp/r5/shared/#", QoS::AtLeastOnce), None)
        .await;
    let mut v3 = V311Member::connect(&b, "r5-share-v311", "$share/grp/r5/shared/#").await;
    let (mut publisher, _) = Peer::connect(options(&b, "r5-share-pub")).await;
    const TOTAL: usize = 20;
    for i in 0..TOTAL {
        let acked = publisher
            .publish(
                &format!("r5/shared/{i}"),
                QoS::AtLeastOnce,
                i.to_string().as_bytes(),
            )
            .await;
        assert_eq!(acked, Acked::PubAck(PubAckReason::Success), "message {i}");
    }
    let mut at_v5 = Vec::new();
    let mut at_v3 = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while at_v5.len() + at_v3.len() < TOTAL {
        tokio::select! {
            p = v5.publish_within(WAIT) => {
                let p = p.expect("a shared message");
                at_v5.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            p = v3.publishes.recv() => {
                let p = p.expect("3.1.1 member's event loop alive");
                at_v3.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("shared messages missing: v5 {at_v5:?}, 3.1.1 {at_v3:?}");
            }
        }
    }
    let mut all: Vec<String> = at_v5.iter().chain(&at_v3).cloned().collect();
    all.sort_by_key(|s| s.parse::<usize>().unwrap_or(usize::MAX));
    let want: Vec<String> = (0..TOTAL).map(|i| i.to_string()).collect();
    // Section 4.8.2: each message to exactly one member of the group.
    assert_eq!(
        all, want,
        "v5 {at_v5:?} + 3.1.1 {at_v3:?}: every message exactly once"
    );
    assert!(
        !at_v5.is_empty() && !at_v3.is_empty(),
        "round robin: both members get messages: v5 {at_v5:?}, 3.1.1 {at_v3:?}"
    );
    // Barrier: a non-shared subscription of the v5 member gets a marker; no late duplicate
    // of a shared message may come before it.
    v5.subscribe(filter("r5/marker", QoS::AtLeastOnce), None)
        .await;
    publisher
        .publish("r5/marker", QoS::AtLeastOnce, b"marker")
        .await;
    let p = v5.next_publish("marker").await;
    assert_eq!(topic_of(&p), "r5/marker", "extra shared message: {p:?}");
    v5.disconnect().await;
    publisher.disconnect().await;
    v3.client.disconnect().await.expect("queue DISCONNECT");
    tokio::time::timeout(WAIT, &mut v3.task)
        .await
        .expect("3.1.1 event loop ends")
        .expect("no panic");
    wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_session_takeover_ends_the_old_connection() {
    let b = TestBroker::start().await;
    let (mut first, _) = Peer::connect(persistent(&b, "r5-takeover", 60, true)).await;
    first
        .subscribe(filter("r5/takeover", QoS::AtLeastOnce), None)
        .await;
    let (mut second, ack) = Peer::connect(persistent(&b, "r5-takeover", 0, false)).await;
    assert!(ack.session_present, "the session is taken over");
    // [MQTT-3.1.4-3] the old connection gets DISCONNECT 0x8E and is closed. rumqttc 0.24
    // cannot decode that DISCONNECT (see `server_disconnect`); paho checks the 0x8E itself
    // (interop_paho5.rs).
    let reason = first.server_disconnect("session taken over").await;
    assert!(
        matches!(reason, None | Some(DisconnectReasonCode::SessionTakenOver)),
        "[MQTT-3.1.4-3] the old connection got DISCONNECT {reason:?}"
    );
    // The subscription moved to the new connection with the session.
    second
        .publish("r5/takeover", QoS::AtLeastOnce, b"mine")
        .await;
    let p = second
        .next_publish("message on the taken-over subscription")
        .await;
    assert_eq!(topic_of(&p), "r5/takeover");
    second.disconnect().await;
    wait_until("no session left", || b.broker.session_count() == 0).await;
    b.stop().await;
}

#[tokio::test]
async fn rumqttc5_puback_and_pubrec_no_matching_subscribers() {
    let b = TestBroker::start().await;
    let (mut p, _) = Peer::connect(options(&b, "r5-acks")).await;
    assert_eq!(
        p.publish("r5/acks/nobody", QoS::AtLeastOnce, b"x").await,
        Acked::PubAck(PubAckReason::NoMatchingSubscribers),
        "PUBACK 0x10 without subscribers"
    );
    assert_eq!(
        p.publish("r5/acks/nobody", QoS::ExactlyOnce, b"x").await,
        Acked::PubRec(PubRecReason::NoMatchingSubscribers),
        "PUBREC 0x10 without subscribers"
    );
    p.subscribe(filter("r5/acks/#", QoS::ExactlyOnce), None)
        .await;
    assert_eq!(
        p.publish("r5/acks/me", QoS::AtLeastOnce, b"x").await,
        Acked::PubAck(PubAckReason::Success)
    );
    assert_eq!(
        p.publish("r5/acks/me", QoS::ExactlyOnce, b"x").await,
        Acked::PubRec(PubRecReason::Success)
    );
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let m = p.next_publish("own message").await;
        assert_eq!((topic_of(&m), m.qos), ("r5/acks/me".to_owned(), qos));
    }
    p.disconnect().await;
    b.stop().await;
}

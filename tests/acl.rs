//! The `[auth]` ACL file (Mosquitto `acl_file` syntax) over real sockets: anonymous rules,
//! `user` sections and `%c`/`%u` patterns; denied PUBLISH (acknowledged, not delivered, 0x87 in
//! MQTT 5); denied SUBSCRIBE (0x80, or 0x87 / the configured code in MQTT 5); read access on
//! every delivery (deny areas inside a broad subscription, retained messages, wills); `$SYS`;
//! shared subscriptions; `Broker::reload`; a broken file at start (library and binary); and
//! SIGHUP in the daemon.
//!
//! Negative checks ("not delivered") always follow a positive barrier: `assert_no_publish`
//! (a marker message that must arrive first), a PUBACK (the broker routes a PUBLISH before it
//! acknowledges it), or a later message of the same queue that must arrive first. Every ACL
//! below grants `$marker/#` so `assert_no_publish` can subscribe to its marker topic.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use mqtt_server::codec::{Ack, Packet, Properties, ProtocolVersion, Publish, QoS};
use mqtt_server::config::Config;
use mqtt_server::{Broker, BrokerError, LocalClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// SUBACK failure in MQTT 3.1.1 ([MQTT-3.9.3-2] return code 0x80), and 0x80 Unspecified error
/// in MQTT 5.
const FAILURE: u8 = 0x80;
/// MQTT 5 reason code 0x87 Not authorized.
const NOT_AUTHORIZED: u8 = 0x87;
/// Lets `RawClient::assert_no_publish` subscribe to its `$marker/N` topic under every ACL.
const MARKER_RULE: &str = "pattern read $marker/#\n";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A per-test directory in the system temporary directory (pid + test name), removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "mqtt-server-acl-test-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir(path)
    }

    /// Writes (or replaces) the file `name` in the directory; returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test configuration (one listener on 127.0.0.1:0) with `acl` as `auth.acl_file`.
fn acl_config(acl: &Path) -> Config {
    let mut config = test_config();
    config.auth.acl_file = Some(acl.to_path_buf());
    config
}

/// The password of each user registered with `add_credentials` below.
fn password_of(user: &str) -> String {
    format!("{user}-pw")
}

/// Starts a broker with `config`, after registering `users` with `add_credentials` (no
/// password file is configured, so `start` keeps them).
async fn start_config(config: Config, users: &[&str]) -> TestBroker {
    let broker = Broker::new(config);
    for user in users {
        broker.add_credentials(user, &password_of(user));
    }
    broker
        .start()
        .await
        .unwrap_or_else(|e| panic!("broker starts: {e}"));
    let addr = broker.local_addr().expect("bound address");
    TestBroker { broker, addr }
}

/// Writes `rules` (after the marker rule) as `acl` in `dir` and starts a broker with it.
async fn start_acl(dir: &TempDir, rules: &str, users: &[&str]) -> (TestBroker, PathBuf) {
    let path = dir.write("acl", &format!("{MARKER_RULE}{rules}"));
    (start_config(acl_config(&path), users).await, path)
}

/// Connects `client_id` (Clean Session 1) at `version`, as `user` (with its password) or
/// anonymously; requires CONNACK 0x00.
async fn client(
    b: &TestBroker,
    client_id: &str,
    user: Option<&str>,
    version: ProtocolVersion,
) -> RawClient {
    let mut connect = connect_packet(client_id, true, 60);
    connect.protocol = version;
    connect.username = user.map(ByteString::from);
    connect.password = user.map(|u| Bytes::from(password_of(u)));
    RawClient::connect_with(b.addr, connect).await.0
}

/// A connected MQTT 3.1.1 client.
async fn client311(b: &TestBroker, client_id: &str, user: Option<&str>) -> RawClient {
    client(b, client_id, user, V311).await
}

/// Sends a PUBLISH and completes its exchange; returns the reason code of the PUBACK (QoS 1)
/// or PUBREC (QoS 2) — always 0 in MQTT 3.1.1 — or 0 for QoS 0 (after a PINGREQ barrier, which
/// proves the broker handled it). A PUBLISH arriving meanwhile fails the test: callers publish
/// to topics they are not subscribed to.
async fn publish_acked(c: &mut RawClient, packet: Packet) -> u8 {
    let (qos, id) = match &packet {
        Packet::Publish(p) => (p.qos, p.packet_id),
        other => panic!("not a PUBLISH: {other:?}"),
    };
    c.send(packet).await;
    let Some(id) = id else {
        let before = c.ping_barrier().await;
        assert!(before.is_empty(), "unexpected packets: {before:?}");
        return 0;
    };
    match (qos, c.recv().await) {
        (QoS::AtLeastOnce, Some(Packet::PubAck(a))) if a.packet_id == id => a.reason,
        (QoS::ExactlyOnce, Some(Packet::PubRec(a))) if a.packet_id == id => {
            if a.reason >= 0x80 {
                // An error PUBREC ends the exchange (MQTT 5).
                return a.reason;
            }
            c.send(Packet::PubRel(Ack::new(id))).await;
            match c.recv().await {
                Some(Packet::PubComp(done)) if done.packet_id == id => a.reason,
                other => panic!("expected PUBCOMP {id}, got {other:?}"),
            }
        }
        (_, other) => panic!("expected the acknowledgement of {id} at {qos:?}, got {other:?}"),
    }
}

/// A PUBLISH with optional MQTT 5 properties.
fn publish_props(topic: &str, qos: QoS, id: Option<u16>, props: Option<Properties>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: id.map(pid),
        payload: Bytes::from_static(b"payload"),
        properties: props.map(Box::new),
    })
}

/// Topics of the messages queued for the in-process client `observer` (which is exempt from
/// the ACL and subscribed to `#`), emptying its queue.
fn drain(observer: &LocalClient) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(m) = observer.try_recv() {
        topics.push(m.topic.to_string());
    }
    topics
}

/// An ACL-exempt in-process client subscribed to `#`: sees every message the broker routes
/// (outside `$` topics). The broker routes a PUBLISH before acknowledging it, so after a PUBACK
/// its queue tells whether the message went through.
fn observer(b: &TestBroker) -> LocalClient {
    let observer = b.broker.local_client("acl-observer");
    observer
        .subscribe("#", QoS::AtMostOnce)
        .expect("valid filter");
    observer
}

fn denied(b: &TestBroker) -> u64 {
    b.broker.metrics().acl_denied
}

/// `text` contains `path` (displayed) and `line N:`.
fn names_path_and_line(text: &str, path: &Path, line: usize) -> bool {
    text.contains(&path.display().to_string()) && text.contains(&format!("line {line}:"))
}

// ---------------------------------------------------------------------------------------------
// The matrix: anonymous rules, user sections, %c and %u patterns
// ---------------------------------------------------------------------------------------------

const MATRIX_ACL: &str = "\
# Anonymous clients (topic lines before the first user line).
topic read public/#
topic write anon/in

user alice
topic readwrite alice/#
topic read shared/+/status
topic deny alice/private/#

user bob
topic write alice/inbox

# Patterns apply to everyone, wherever they stand.
pattern readwrite devices/%c/#
pattern read users/%u/inbox
";

/// What one matrix row checks.
#[derive(Debug, Clone, Copy)]
enum Check {
    /// PUBLISH at QoS 1 to the topic: routed or not.
    Pub(&'static str, bool),
    /// SUBSCRIBE at QoS 1 to the filter: the MQTT 3.1.1 return code.
    Sub(&'static str, u8),
    /// SUBSCRIBE to the filter (which must be granted), then an in-process client publishes
    /// to the topic: delivered or not.
    Recv(&'static str, &'static str, bool),
}

#[tokio::test]
async fn matrix_of_anonymous_rules_user_sections_and_patterns() {
    use Check::*;
    let dir = TempDir::new("matrix");
    let (b, _) = start_acl(&dir, MATRIX_ACL, &["alice", "bob", "carol"]).await;
    let observer = observer(&b);
    let publisher = b.broker.local_client("acl-publisher");
    let sessions = b.broker.session_count();
    let rows: &[(&str, Option<&str>, Check)] = &[
        // Anonymous: read public/#, write anon/in.
        ("anon1", None, Pub("anon/in", true)),
        ("anon1", None, Pub("public/x", false)),
        ("anon1", None, Pub("alice/x", false)),
        ("anon1", None, Sub("public/#", 1)),
        ("anon1", None, Sub("public/+/x", 1)),
        ("anon1", None, Sub("anon/in", FAILURE)),
        ("anon1", None, Sub("#", FAILURE)),
        ("anon1", None, Sub("alice/#", FAILURE)),
        ("anon1", None, Recv("public/#", "public/news", true)),
        // The anonymous rules are not for named users, nor the user rules for anonymous ones.
        ("alice-c", Some("alice"), Pub("anon/in", false)),
        ("alice-c", Some("alice"), Sub("public/#", FAILURE)),
        ("carol-c", Some("carol"), Pub("anon/in", false)),
        ("carol-c", Some("carol"), Sub("public/#", FAILURE)),
        // alice: readwrite alice/#, read shared/+/status, deny alice/private/#.
        ("alice-c", Some("alice"), Pub("alice/x", true)),
        ("alice-c", Some("alice"), Pub("alice/private/x", false)),
        ("alice-c", Some("alice"), Pub("shared/alice/status", false)),
        ("alice-c", Some("alice"), Sub("alice/#", 1)),
        ("alice-c", Some("alice"), Sub("alice/private/+", FAILURE)),
        ("alice-c", Some("alice"), Sub("shared/+/status", 1)),
        ("alice-c", Some("alice"), Sub("shared/#", FAILURE)),
        ("alice-c", Some("alice"), Recv("alice/#", "alice/x/y", true)),
        (
            "alice-c",
            Some("alice"),
            Recv("alice/#", "alice/private/key", false),
        ),
        (
            "alice-c",
            Some("alice"),
            Recv("shared/+/status", "shared/bob/status", true),
        ),
        // bob: write-only alice/inbox.
        ("bob-c", Some("bob"), Pub("alice/inbox", true)),
        ("bob-c", Some("bob"), Pub("alice/x", false)),
        ("bob-c", Some("bob"), Sub("alice/inbox", FAILURE)),
        // %c: the client identifier, for anonymous and named clients alike.
        ("dev1", None, Pub("devices/dev1/temp", true)),
        ("dev1", None, Pub("devices/dev2/temp", false)),
        ("dev1", None, Sub("devices/dev1/#", 1)),
        ("dev1", None, Sub("devices/+/#", FAILURE)),
        (
            "dev1",
            None,
            Recv("devices/dev1/#", "devices/dev1/cmd", true),
        ),
        ("alice-c", Some("alice"), Pub("devices/alice-c/t", true)),
        ("alice-c", Some("alice"), Pub("devices/dev1/t", false)),
        // %u: the user name; read only; never for anonymous clients.
        ("carol-c", Some("carol"), Sub("users/carol/inbox", 1)),
        ("carol-c", Some("carol"), Sub("users/+/inbox", FAILURE)),
        ("carol-c", Some("carol"), Sub("users/bob/inbox", FAILURE)),
        ("carol-c", Some("carol"), Pub("users/carol/inbox", false)),
        (
            "carol-c",
            Some("carol"),
            Recv("users/carol/inbox", "users/carol/inbox", true),
        ),
        ("bob-c", Some("bob"), Sub("users/bob/inbox", 1)),
        ("anon1", None, Sub("users/anon1/inbox", FAILURE)),
    ];
    for (index, &(client_id, user, check)) in rows.iter().enumerate() {
        let row = format!("row {index}: {client_id} {user:?} {check:?}");
        let id = u16::try_from(index + 1).expect("few rows");
        let mut c = client311(&b, client_id, user).await;
        let before = denied(&b);
        let allowed = match check {
            Pub(topic, allowed) => {
                let reason = publish_acked(
                    &mut c,
                    publish(topic, "m", QoS::AtLeastOnce, false, Some(id)),
                )
                .await;
                assert_eq!(reason, 0, "{row}: MQTT 3.1.1 PUBACK has no reason code");
                let routed = drain(&observer);
                let expected: Vec<String> = if allowed {
                    vec![topic.to_owned()]
                } else {
                    Vec::new()
                };
                assert_eq!(routed, expected, "{row}: PUBLISH routed?");
                allowed
            }
            Sub(filter, code) => {
                let codes = c.subscribe(id, &[(filter, QoS::AtLeastOnce)]).await;
                assert_eq!(codes, vec![code], "{row}: SUBACK");
                code != FAILURE
            }
            Recv(filter, topic, delivered) => {
                let codes = c.subscribe(id, &[(filter, QoS::AtLeastOnce)]).await;
                assert_eq!(codes, vec![1], "{row}: the subscription must be granted");
                publisher
                    .publish(topic, "to you", QoS::AtLeastOnce, false)
                    .expect("valid topic");
                if delivered {
                    let p = c.recv_publish().await;
                    assert_eq!(&*p.topic, topic, "{row}");
                    assert_eq!(p.qos, QoS::AtLeastOnce, "{row}");
                }
                c.assert_no_publish(&b.broker).await;
                delivered
            }
        };
        let expected_denials = u64::from(!allowed);
        assert_eq!(
            denied(&b) - before,
            expected_denials,
            "{row}: acl_denied counts each refusal once"
        );
        c.disconnect().await;
        // The row's session (and subscriptions) must be gone before the next row publishes.
        wait_until(&format!("{row}: session closed"), || {
            b.broker.session_count() == sessions
        })
        .await;
        drain(&observer);
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Denied PUBLISH
// ---------------------------------------------------------------------------------------------

const NEWS_ACL: &str = "\
topic read news/#
user editor
topic readwrite news/#
";

#[tokio::test]
async fn denied_publish_v311_is_acknowledged_but_not_delivered() {
    let dir = TempDir::new("denied-publish-v311");
    let (b, _) = start_acl(&dir, NEWS_ACL, &["editor"]).await;
    // The reader may read news/#.
    let mut reader = client311(&b, "reader", None).await;
    assert_eq!(
        reader.subscribe(1, &[("news/#", QoS::ExactlyOnce)]).await,
        vec![2]
    );
    let before = denied(&b);

    // Anonymous clients may only read news/#: their PUBLISHes are acknowledged as usual in
    // MQTT 3.1.1 ([MQTT-3.3.4-1]; 3.1.1 has no way to tell the publisher) and dropped.
    let mut writer = client311(&b, "anon-writer", None).await;
    let r = publish_acked(
        &mut writer,
        publish("news/q0", "0", QoS::AtMostOnce, false, None),
    )
    .await;
    assert_eq!(r, 0);
    let r = publish_acked(
        &mut writer,
        publish("news/q1", "1", QoS::AtLeastOnce, false, Some(1)),
    )
    .await;
    assert_eq!(r, 0, "PUBACK");
    // QoS 2: PUBREC, then PUBREL / PUBCOMP complete the exchange.
    let r = publish_acked(
        &mut writer,
        publish("news/q2", "2", QoS::ExactlyOnce, false, Some(2)),
    )
    .await;
    assert_eq!(r, 0, "PUBREC");
    assert_eq!(denied(&b) - before, 3, "three PUBLISHes denied");
    // The connection stays usable.
    assert!(writer.ping_barrier().await.is_empty());

    // Positive control: the editor's message reaches the reader, and it comes first.
    let mut editor = client311(&b, "editor-c", Some("editor")).await;
    let r = publish_acked(
        &mut editor,
        publish("news/ok", "ok", QoS::AtLeastOnce, false, Some(1)),
    )
    .await;
    assert_eq!(r, 0);
    let p = reader.recv_publish().await;
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("news/ok", &b"ok"[..]),
        "a denied message reached the reader"
    );
    reader.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 3);
    b.stop().await;
}

#[tokio::test]
async fn denied_publish_v5_gets_reason_0x87() {
    let dir = TempDir::new("denied-publish-v5");
    let (b, _) = start_acl(&dir, NEWS_ACL, &["editor"]).await;
    let mut reader = client(&b, "reader5", None, V5).await;
    assert_eq!(
        reader.subscribe(1, &[("news/#", QoS::ExactlyOnce)]).await,
        vec![2]
    );
    let before = denied(&b);

    let mut writer = client(&b, "anon-writer5", None, V5).await;
    let r = publish_acked(
        &mut writer,
        publish_props("news/q0", QoS::AtMostOnce, None, None),
    )
    .await;
    assert_eq!(r, 0);
    // [MQTT-3.3.5-2] a refused PUBLISH is still acknowledged, with a reason code: 0x87.
    let r = publish_acked(
        &mut writer,
        publish_props("news/q1", QoS::AtLeastOnce, Some(1), None),
    )
    .await;
    assert_eq!(r, NOT_AUTHORIZED, "PUBACK reason");
    let r = publish_acked(
        &mut writer,
        publish_props("news/q2", QoS::ExactlyOnce, Some(2), None),
    )
    .await;
    assert_eq!(r, NOT_AUTHORIZED, "PUBREC reason");
    // A topic alias resolves to a topic that is checked the same way.
    let alias = |n| {
        Some(Properties {
            topic_alias: Some(n),
            ..Properties::default()
        })
    };
    let r = publish_acked(
        &mut writer,
        publish_props("news/alias", QoS::AtLeastOnce, Some(3), alias(1)),
    )
    .await;
    assert_eq!(r, NOT_AUTHORIZED, "PUBACK reason (alias set)");
    let r = publish_acked(
        &mut writer,
        publish_props("", QoS::AtLeastOnce, Some(4), alias(1)),
    )
    .await;
    assert_eq!(r, NOT_AUTHORIZED, "PUBACK reason (alias used)");
    assert_eq!(denied(&b) - before, 5, "five PUBLISHes denied");

    // The editor may write: 0x00, and the aliased PUBLISH arrives under its full topic.
    let mut editor = client(&b, "editor5", Some("editor"), V5).await;
    let r = publish_acked(
        &mut editor,
        publish_props("news/ok", QoS::AtLeastOnce, Some(1), alias(1)),
    )
    .await;
    assert_eq!(r, 0);
    let r = publish_acked(
        &mut editor,
        publish_props("", QoS::AtLeastOnce, Some(2), alias(1)),
    )
    .await;
    assert_eq!(r, 0);
    // The reader set no Topic Alias Maximum: it gets full topics.
    for _ in 0..2 {
        let p = reader.recv_publish().await;
        assert_eq!(
            &*p.topic, "news/ok",
            "only the editor's messages reach the reader"
        );
    }
    reader.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 5);
    // (Disconnected first: the broker's lingering close would wait for these sockets.)
    for c in [reader, writer, editor] {
        c.disconnect().await;
    }
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Denied SUBSCRIBE
// ---------------------------------------------------------------------------------------------

const SUB_ACL: &str = "\
topic read open/#
topic write wo/#
";

/// The mixed SUBSCRIBE: granted, denied (no rule), granted, denied (write-only).
const MIXED: &[(&str, QoS)] = &[
    ("open/a", QoS::AtMostOnce),
    ("closed/a", QoS::AtLeastOnce),
    ("open/#", QoS::ExactlyOnce),
    ("wo/x", QoS::AtLeastOnce),
];

/// Subscribes `MIXED` on a fresh client and checks the codes, the counter and that the denied
/// filters did not become subscriptions.
async fn mixed_subscribe(b: &TestBroker, version: ProtocolVersion, denied_code: u8) {
    let subscriptions = b.broker.subscription_count();
    let before = denied(b);
    let mut c = client(
        b,
        &format!("mixed-{version:?}-{denied_code}"),
        None,
        version,
    )
    .await;
    // [MQTT-3.8.4-5] one code per filter, in order; allowed ones get their QoS
    // ([MQTT-3.8.4-6]: never more than requested).
    let codes = c.subscribe(7, MIXED).await;
    assert_eq!(
        codes,
        vec![0, denied_code, 2, denied_code],
        "{version:?} SUBACK"
    );
    assert_eq!(denied(b) - before, 2, "two filters denied");
    assert_eq!(
        b.broker.subscription_count() - subscriptions,
        2,
        "denied filters are not subscribed"
    );
    // A filter refused alone, too.
    assert_eq!(
        c.subscribe(8, &[("#", QoS::AtMostOnce)]).await,
        vec![denied_code]
    );
    c.disconnect().await;
    wait_until("client gone", || {
        b.broker.subscription_count() == subscriptions
    })
    .await;
}

#[tokio::test]
async fn denied_subscribe_codes_v311_0x80_v5_0x87() {
    let dir = TempDir::new("denied-subscribe");
    let (b, _) = start_acl(&dir, SUB_ACL, &[]).await;
    // [MQTT-3.9.3-2] MQTT 3.1.1: 0x80 Failure.
    mixed_subscribe(&b, V311, FAILURE).await;
    // MQTT 5 default: 0x87 Not authorized.
    mixed_subscribe(&b, V5, NOT_AUTHORIZED).await;
    b.stop().await;
}

#[tokio::test]
async fn v5_subscribe_denied_code_0x80_from_the_configuration_file() {
    let dir = TempDir::new("denied-code-0x80");
    let acl = dir.write("acl", SUB_ACL);
    let acl_value = toml::Value::String(acl.display().to_string());
    let text = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[auth]\nacl_file = {acl_value}\n\
         v5_subscribe_denied_code = 0x80\n"
    );
    let config = Config::from_toml_str(&text, "<test>").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.auth.v5_subscribe_denied_code, 0x80);
    let b = start_config(config, &[]).await;
    mixed_subscribe(&b, V5, FAILURE).await;
    // MQTT 3.1.1 is not affected (it has only 0x80).
    mixed_subscribe(&b, V311, FAILURE).await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Read access on every delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deny_line_keeps_its_topics_out_of_a_broad_subscription() {
    let dir = TempDir::new("deny-in-broad");
    let (b, _) = start_acl(&dir, "topic read #\ntopic deny secret/#\n", &[]).await;
    let mut c = client311(&b, "broad", None).await;
    // `#` overlaps the denied area but is not covered by the deny rule: accepted.
    assert_eq!(c.subscribe(1, &[("#", QoS::AtLeastOnce)]).await, vec![1]);
    // Filters inside the denied area are refused.
    assert_eq!(
        c.subscribe(
            2,
            &[
                ("secret/#", QoS::AtLeastOnce),
                ("secret/+/y", QoS::AtMostOnce)
            ]
        )
        .await,
        vec![FAILURE, FAILURE]
    );
    let before = denied(&b);
    let publisher = b.broker.local_client("publisher");
    for topic in ["secret/x", "secret", "secret/a/b", "public/x"] {
        publisher
            .publish(topic, "m", QoS::AtLeastOnce, false)
            .expect("valid topic");
    }
    let p = c.recv_publish().await;
    assert_eq!(&*p.topic, "public/x", "a denied topic was delivered");
    c.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 3, "three deliveries denied");
    b.stop().await;
}

#[tokio::test]
async fn retained_messages_are_checked_against_the_reader() {
    let dir = TempDir::new("retained");
    let rules = "\
topic read #
topic deny secret/#
user writer
topic write secret/#
topic write public/#
user reader
topic read secret/#
";
    let (b, _) = start_acl(&dir, rules, &["writer", "reader"]).await;
    let mut writer = client311(&b, "writer-c", Some("writer")).await;
    for (i, topic) in [(1, "secret/r"), (2, "public/r")] {
        let r = publish_acked(
            &mut writer,
            publish(topic, "kept", QoS::AtLeastOnce, true, Some(i)),
        )
        .await;
        assert_eq!(r, 0);
    }
    assert_eq!(
        b.broker.retained_count(),
        2,
        "both retained messages stored"
    );

    // Anonymous: `#` is granted, but secret/# is denied: only public/r arrives.
    let before = denied(&b);
    let mut nosy = client311(&b, "nosy", None).await;
    assert_eq!(nosy.subscribe(1, &[("#", QoS::AtLeastOnce)]).await, vec![1]);
    let p = nosy.recv_publish().await;
    assert_eq!(&*p.topic, "public/r");
    assert!(
        p.retain,
        "[MQTT-3.3.1-8] retained flag on a retained message"
    );
    nosy.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 1, "the retained secret/r was denied");
    assert_eq!(
        nosy.subscribe(2, &[("secret/r", QoS::AtLeastOnce)]).await,
        vec![FAILURE]
    );
    nosy.assert_no_publish(&b.broker).await;

    // The reader may read secret/#: the retained message is delivered.
    let mut reader = client311(&b, "reader-c", Some("reader")).await;
    assert_eq!(
        reader.subscribe(1, &[("secret/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let p = reader.recv_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("secret/r", &b"kept"[..]));
    assert!(p.retain);
    reader.assert_no_publish(&b.broker).await;
    b.stop().await;
}

const WILL_ACL: &str = "\
user dying
topic write will/dying
user watcher-ok
topic read will/#
topic read forbidden/#
user watcher-no
topic read #
topic deny will/#
";

#[tokio::test]
async fn will_is_delivered_only_to_readers_with_access() {
    let dir = TempDir::new("will-readers");
    let (b, _) = start_acl(&dir, WILL_ACL, &["dying", "watcher-ok", "watcher-no"]).await;
    let mut ok = client311(&b, "w-ok", Some("watcher-ok")).await;
    assert_eq!(
        ok.subscribe(1, &[("will/#", QoS::AtLeastOnce)]).await,
        vec![1]
    );
    let mut no = client311(&b, "w-no", Some("watcher-no")).await;
    assert_eq!(no.subscribe(1, &[("#", QoS::AtLeastOnce)]).await, vec![1]);
    let before = denied(&b);

    let mut connect = connect_packet("dying-c", true, 60);
    connect.username = Some(ByteString::from("dying"));
    connect.password = Some(Bytes::from(password_of("dying")));
    connect.will = Some(will("will/dying", "gone", QoS::AtLeastOnce, false));
    let (dying, _) = RawClient::connect_with(b.addr, connect).await;
    // [MQTT-3.1.2-8] the network connection closes without DISCONNECT: the will is published.
    drop(dying);

    let p = ok.recv_publish().await;
    assert_eq!((&*p.topic, &p.payload[..]), ("will/dying", &b"gone"[..]));
    // The will was routed to both subscribers at once; the one without read access got
    // nothing.
    no.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 1, "one delivery of the will denied");
    b.stop().await;
}

#[tokio::test]
async fn will_on_a_topic_the_client_may_not_publish_is_not_published() {
    let dir = TempDir::new("will-denied");
    let (b, _) = start_acl(&dir, WILL_ACL, &["dying", "watcher-ok"]).await;
    let mut ok = client311(&b, "w-ok", Some("watcher-ok")).await;
    assert_eq!(
        ok.subscribe(
            1,
            &[
                ("forbidden/#", QoS::AtLeastOnce),
                ("will/#", QoS::AtLeastOnce)
            ]
        )
        .await,
        vec![1, 1]
    );
    let sessions = b.broker.session_count();
    let before = denied(&b);

    let mut connect = connect_packet("dying-c", true, 60);
    connect.username = Some(ByteString::from("dying"));
    connect.password = Some(Bytes::from(password_of("dying")));
    connect.will = Some(will("forbidden/x", "gone", QoS::AtLeastOnce, false));
    let (dying, _) = RawClient::connect_with(b.addr, connect).await;
    drop(dying);

    // The will is offered to the ACL as a PUBLISH from its client, and denied.
    wait_until("the will's PUBLISH is denied", || denied(&b) == before + 1).await;
    wait_until("the dying session is gone", || {
        b.broker.session_count() == sessions
    })
    .await;
    ok.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 1);

    // Control: the same user's will on a topic it may write does arrive.
    let mut connect = connect_packet("dying-c2", true, 60);
    connect.username = Some(ByteString::from("dying"));
    connect.password = Some(Bytes::from(password_of("dying")));
    connect.will = Some(will("will/dying", "gone", QoS::AtLeastOnce, false));
    let (dying, _) = RawClient::connect_with(b.addr, connect).await;
    drop(dying);
    let p = ok.recv_publish().await;
    assert_eq!(&*p.topic, "will/dying");
    b.stop().await;
}

/// Connects `client_id` as `user` with Clean Session 0; returns the client and Session Present.
async fn persistent(b: &TestBroker, client_id: &str, user: &str) -> (RawClient, bool) {
    let mut connect = connect_packet(client_id, false, 60);
    connect.username = Some(ByteString::from(user));
    connect.password = Some(Bytes::from(password_of(user)));
    RawClient::connect_with(b.addr, connect).await
}

#[tokio::test]
async fn queued_messages_are_not_handed_to_another_user_resuming_the_session() {
    let dir = TempDir::new("resume-other-user");
    let rules = "\
user alice
topic readwrite alice/#
user bob
topic readwrite bob/#
";
    let (b, _) = start_acl(&dir, rules, &["alice", "bob"]).await;
    // Two offline sessions of alice's, each subscribed to alice/#.
    for id in ["control", "handover"] {
        let (mut c, _) = persistent(&b, id, "alice").await;
        assert_eq!(
            c.subscribe(1, &[("alice/#", QoS::AtLeastOnce)]).await,
            vec![1]
        );
        c.disconnect().await;
    }
    wait_until("both sessions offline", || {
        b.broker.metrics().connections_current == 0
    })
    .await;
    let publisher = b.broker.local_client("publisher");
    publisher
        .publish("alice/x", "for alice only", QoS::AtLeastOnce, false)
        .expect("valid topic");

    // Control: alice resuming a session gets the queued message.
    let (mut control, present) = persistent(&b, "control", "alice").await;
    assert!(present, "the control session is resumed");
    let p = control.recv_publish().await;
    assert_eq!(&*p.topic, "alice/x");

    // bob resumes the other session: he may not read alice/x.
    let (mut bob, present) = persistent(&b, "handover", "bob").await;
    assert!(present, "the session is resumed");
    bob.assert_no_publish(&b.broker).await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// $SYS and shared subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn read_hash_rule_does_not_grant_sys_topics() {
    let dir = TempDir::new("sys");
    let rules = "\
topic read #
user ops
topic read $SYS/#
";
    let (b, _) = start_acl(&dir, rules, &["ops"]).await;
    let before = denied(&b);
    let mut anon = client311(&b, "anon", None).await;
    // [MQTT-4.7.2-1] a filter starting with a wildcard does not match `$` topics, so the rule
    // `#` covers `#` and `+/broker/uptime` but not `$SYS/...`.
    let codes = anon
        .subscribe(
            1,
            &[
                ("#", QoS::AtLeastOnce),
                ("$SYS/#", QoS::AtLeastOnce),
                ("$SYS/broker/uptime", QoS::AtLeastOnce),
                ("+/broker/uptime", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(codes, vec![1, FAILURE, FAILURE, 1]);
    assert_eq!(denied(&b) - before, 2);

    // A user with an explicit `$SYS/#` rule may subscribe and receive.
    let mut ops = client311(&b, "ops-c", Some("ops")).await;
    assert_eq!(
        ops.subscribe(1, &[("$SYS/#", QoS::AtLeastOnce), ("#", QoS::AtLeastOnce)])
            .await,
        vec![1, FAILURE]
    );
    let publisher = b.broker.local_client("sys-publisher");
    publisher
        .publish("$SYS/broker/uptime", "42", QoS::AtLeastOnce, false)
        .expect("valid topic");
    let p = ops.recv_publish().await;
    assert_eq!(&*p.topic, "$SYS/broker/uptime");
    anon.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn shared_subscriptions_are_checked_by_their_inner_filter() {
    let dir = TempDir::new("shared");
    let rules = "\
user worker
topic read jobs/#
topic deny jobs/secret
topic read $share/g/x
";
    let (b, _) = start_acl(&dir, rules, &["worker"]).await;
    let before = denied(&b);
    let mut w = client(&b, "worker-c", Some("worker"), V5).await;
    let codes = w
        .subscribe(
            1,
            &[
                // Inner filter jobs/# is covered by `jobs/#`.
                ("$share/g/jobs/#", QoS::AtLeastOnce),
                // Inner filter other/# is not granted.
                ("$share/g/other/#", QoS::AtLeastOnce),
                // A rule on the `$share/...` text grants nothing: the inner filter is `x`.
                ("$share/g/x", QoS::AtLeastOnce),
                // The deny rule covers the inner filter.
                ("$share/g/jobs/secret", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        vec![1, NOT_AUTHORIZED, NOT_AUTHORIZED, NOT_AUTHORIZED]
    );
    assert_eq!(denied(&b) - before, 3);

    // Deliveries through the share group are checked for read access too.
    let publisher = b.broker.local_client("jobs-publisher");
    for topic in ["jobs/secret", "x", "jobs/1"] {
        publisher
            .publish(topic, "job", QoS::AtLeastOnce, false)
            .expect("valid topic");
    }
    let p = w.recv_publish().await;
    assert_eq!(&*p.topic, "jobs/1");
    w.assert_no_publish(&b.broker).await;
    assert_eq!(denied(&b) - before, 4, "jobs/secret was denied on delivery");
    w.disconnect().await;
    b.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reload and broken files
// ---------------------------------------------------------------------------------------------

const RELOAD_V1: &str = "topic readwrite a/#\n";
const RELOAD_V2: &str = "topic readwrite b/#\n";

#[tokio::test]
async fn reload_applies_new_rules_to_existing_connections() {
    let dir = TempDir::new("reload");
    let (b, acl) = start_acl(&dir, RELOAD_V1, &[]).await;
    let observer = observer(&b);
    let mut c = client311(&b, "stays", None).await;
    assert_eq!(c.subscribe(1, &[("a/#", QoS::AtLeastOnce)]).await, vec![1]);
    assert_eq!(
        c.subscribe(2, &[("b/#", QoS::AtLeastOnce)]).await,
        vec![FAILURE]
    );
    publish_acked(
        &mut c,
        publish("b/x", "1", QoS::AtLeastOnce, false, Some(1)),
    )
    .await;
    assert_eq!(
        drain(&observer),
        Vec::<String>::new(),
        "b/x denied under v1"
    );

    dir.write("acl", &format!("{MARKER_RULE}{RELOAD_V2}"));
    b.broker
        .reload()
        .unwrap_or_else(|e| panic!("reload of {}: {e}", acl.display()));

    // The same connection: its next PUBLISH and SUBSCRIBE use the new rules.
    publish_acked(
        &mut c,
        publish("b/x", "2", QoS::AtLeastOnce, false, Some(2)),
    )
    .await;
    assert_eq!(drain(&observer), vec!["b/x"], "b/x allowed under v2");
    publish_acked(
        &mut c,
        publish("a/x", "3", QoS::AtLeastOnce, false, Some(3)),
    )
    .await;
    assert_eq!(
        drain(&observer),
        Vec::<String>::new(),
        "a/x denied under v2"
    );
    assert_eq!(
        c.subscribe(3, &[("a/#", QoS::AtLeastOnce), ("b/#", QoS::AtLeastOnce)])
            .await,
        vec![FAILURE, 1]
    );
    // The a/# subscription granted under v1 stays, but deliveries are checked with v2.
    let publisher = b.broker.local_client("publisher");
    publisher
        .publish("a/y", "old", QoS::AtLeastOnce, false)
        .expect("valid topic");
    publisher
        .publish("b/y", "new", QoS::AtLeastOnce, false)
        .expect("valid topic");
    let p = c.recv_publish().await;
    assert_eq!(&*p.topic, "b/y", "a/y must not be delivered under v2");
    c.assert_no_publish(&b.broker).await;
    b.stop().await;
}

#[tokio::test]
async fn broken_file_on_reload_is_an_error_and_the_old_rules_stay() {
    let dir = TempDir::new("reload-broken");
    let (b, acl) = start_acl(&dir, RELOAD_V1, &[]).await;
    let observer = observer(&b);
    let mut c = client311(&b, "stays", None).await;

    // Line 1 is the marker rule; the bad line is line 4.
    dir.write(
        "acl",
        &format!("{MARKER_RULE}{RELOAD_V2}\ntopic reed c/#\n"),
    );
    let e = b.broker.reload().expect_err("a broken ACL must not load");
    assert!(names_path_and_line(&e, &acl, 4), "{e}");

    // A missing file is an error naming it, too.
    std::fs::remove_file(&acl).expect("remove the ACL file");
    let e = b.broker.reload().expect_err("a missing ACL must not load");
    assert!(e.contains(&acl.display().to_string()), "{e}");

    // v1 is still in force.
    publish_acked(
        &mut c,
        publish("a/x", "1", QoS::AtLeastOnce, false, Some(1)),
    )
    .await;
    assert_eq!(drain(&observer), vec!["a/x"], "a/x still allowed");
    publish_acked(
        &mut c,
        publish("b/x", "2", QoS::AtLeastOnce, false, Some(2)),
    )
    .await;
    assert_eq!(drain(&observer), Vec::<String>::new(), "b/x still denied");
    assert_eq!(
        c.subscribe(1, &[("b/#", QoS::AtLeastOnce), ("a/#", QoS::AtLeastOnce)])
            .await,
        vec![FAILURE, 1]
    );
    b.stop().await;
}

#[tokio::test]
async fn start_with_a_broken_or_missing_acl_fails_naming_the_file() {
    let dir = TempDir::new("start-broken");
    let acl = dir.write("broken.acl", "topic read a/#\nuser\n");
    let broker = Broker::new(acl_config(&acl));
    match broker.start().await {
        Err(BrokerError::Security(e)) => {
            assert!(names_path_and_line(&e, &acl, 2), "{e}");
        }
        other => panic!("start with a broken ACL: {other:?}"),
    }
    assert_eq!(broker.local_addr(), None, "nothing may listen");

    let missing = dir.0.join("missing.acl");
    let broker = Broker::new(acl_config(&missing));
    match broker.start().await {
        Err(e @ BrokerError::Security(_)) => {
            let e = e.to_string();
            assert!(e.contains(&missing.display().to_string()), "{e}");
        }
        other => panic!("start with a missing ACL: {other:?}"),
    }
    assert_eq!(broker.local_addr(), None, "nothing may listen");
}

// ---------------------------------------------------------------------------------------------
// The daemon: a broken ACL at start, and SIGHUP
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-server");
/// Longest time the daemon may take to start, or to fail on bad input.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENING: &str = "mqtt-server listening on ";

/// A daemon configuration: one listener on 127.0.0.1:0, `acl` as the ACL file.
fn daemon_config(dir: &TempDir, acl: &Path) -> PathBuf {
    let acl_value = toml::Value::String(acl.display().to_string());
    dir.write(
        "mqtt-server.toml",
        &format!(
            "log_level = \"info\"\n[[listener]]\nbind = \"127.0.0.1:0\"\n\n[auth]\n\
             acl_file = {acl_value}\n"
        ),
    )
}

fn daemon(config: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn binary_with_a_broken_acl_exits_non_zero_naming_file_and_line() {
    let dir = TempDir::new("binary-broken");
    let acl = dir.write("broken.acl", "# comment\ntopic read a/#\n\nfrobnicate x\n");
    let config = daemon_config(&dir, &acl);
    let child = daemon(&config).spawn().expect("start mqtt-server");
    let out = match tokio::time::timeout(START_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("collect mqtt-server output"),
        Err(_) => panic!("mqtt-server with a broken ACL did not exit within {START_TIMEOUT:?}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a broken ACL must fail the start: {} / {stderr}",
        out.status
    );
    assert!(names_path_and_line(&stderr, &acl, 4), "stderr: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(LISTENING),
        "nothing may listen"
    );
}

/// A running daemon: its address, and its stderr lines as they come.
struct Daemon {
    child: tokio::process::Child,
    addr: SocketAddr,
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Daemon {
    async fn start(config: &Path) -> Daemon {
        let mut child = daemon(config).spawn().expect("start mqtt-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(addr) = line.strip_prefix(LISTENING) {
                            return addr.trim().parse::<SocketAddr>().unwrap_or_else(|e| {
                                panic!("listening line {line:?} has no address: {e}")
                            });
                        }
                    }
                    Ok(None) | Err(_) => panic!("mqtt-server exited before listening"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("mqtt-server did not listen within {START_TIMEOUT:?}"));
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move {
            let mut rest = String::new();
            let _ = lines.into_inner().read_to_string(&mut rest).await;
        });
        Daemon {
            child,
            addr,
            stderr: rx,
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the daemon is running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Waits for a stderr line containing every one of `parts`.
    async fn stderr_line(&mut self, parts: &[&str]) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.stderr.recv().await {
                if parts.iter().all(|p| line.contains(p)) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("mqtt-server closed stderr before a line with {parts:?}"),
            Err(_) => panic!("no stderr line with {parts:?} within {WAIT:?}"),
        }
    }

    async fn terminate(mut self) {
        self.signal("-TERM");
        match tokio::time::timeout(START_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for mqtt-server");
                assert!(status.success(), "exit after SIGTERM: {status}");
            }
            Err(_) => panic!("mqtt-server did not exit after SIGTERM"),
        }
    }
}

/// Subscribes to `filter` again and again (each SUBSCRIBE is checked against the ACL in force)
/// until it is granted; fails after `WAIT`.
async fn subscribe_until_granted(c: &mut RawClient, filter: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut id = 100;
    loop {
        id += 1;
        let codes = c.subscribe(id, &[(filter, QoS::AtLeastOnce)]).await;
        if codes == [1] {
            return;
        }
        assert_eq!(codes, vec![FAILURE]);
        assert!(
            tokio::time::Instant::now() < deadline,
            "{filter} still denied {WAIT:?} after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Publishes at QoS 1 to a topic `c` is subscribed to; returns the PUBLISH it receives back
/// (the PUBACK and the PUBLISH may come in either order).
async fn publish_to_self(c: &mut RawClient, topic: &str, id: u16) -> Publish {
    c.send(publish(topic, "self", QoS::AtLeastOnce, false, Some(id)))
        .await;
    let (mut acked, mut received) = (false, None);
    while !acked || received.is_none() {
        match c.recv().await {
            Some(Packet::PubAck(a)) if a.packet_id == pid(id) => acked = true,
            Some(Packet::Publish(p)) if received.is_none() => {
                if let Some(id) = p.packet_id {
                    c.send(Packet::PubAck(Ack::new(id))).await;
                }
                received = Some(p);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    received.expect("loop ends with a PUBLISH")
}

/// The daemon's second ACL: a/# becomes read-only (so a PUBLISH to a/x would still reach
/// the client subscribed to a/#, were it let through), b/# readwrite.
const HUP_V2: &str = "topic read a/#\ntopic readwrite b/#\n";

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_acl_of_the_daemon() {
    let dir = TempDir::new("sighup");
    let acl = dir.write("acl", RELOAD_V1);
    let config = daemon_config(&dir, &acl);
    let mut daemon = Daemon::start(&config).await;
    let mut c = RawClient::connect(daemon.addr, "hup-client").await;
    assert_eq!(c.subscribe(1, &[("a/#", QoS::AtLeastOnce)]).await, vec![1]);
    assert_eq!(
        c.subscribe(2, &[("b/#", QoS::AtLeastOnce)]).await,
        vec![FAILURE]
    );

    // New rules, then SIGHUP: the connected client's next SUBSCRIBE is granted.
    dir.write("acl", HUP_V2);
    daemon.signal("-HUP");
    subscribe_until_granted(&mut c, "b/#").await;
    // The new rules apply to its PUBLISHes too.
    assert_a_denied_b_allowed(&mut c, 3).await;

    // A broken file on SIGHUP: logged with the file and line, and the rules stay (the broken
    // file's first line would let a/x through).
    dir.write("acl", "topic readwrite a/#\nbogus line\n");
    daemon.signal("-HUP");
    let path = acl.display().to_string();
    let line = daemon
        .stderr_line(&["reload failed", &path, "line 2"])
        .await;
    assert!(line.contains("bogus"), "{line}");
    assert_eq!(
        c.subscribe(5, &[("c/#", QoS::AtLeastOnce), ("b/#", QoS::AtLeastOnce)])
            .await,
        vec![FAILURE, 1],
        "the rules of the last good file stay in force"
    );
    assert_a_denied_b_allowed(&mut c, 6).await;
    c.disconnect().await;
    daemon.terminate().await;
}

/// Under `HUP_V2`, for a client subscribed to a/# and b/#: a PUBLISH to a/x is acknowledged
/// but dropped, one to b/x goes through — and is the first PUBLISH to come back.
async fn assert_a_denied_b_allowed(c: &mut RawClient, id: u16) {
    c.send(publish("a/x", "denied", QoS::AtLeastOnce, false, Some(id)))
        .await;
    match c.recv().await {
        Some(Packet::PubAck(a)) if a.packet_id == pid(id) => {}
        other => panic!("expected PUBACK {id}, got {other:?}"),
    }
    let p = publish_to_self(c, "b/x", id + 1).await;
    assert_eq!(&*p.topic, "b/x", "a/x was published despite the ACL");
}

#[tokio::test]
async fn each_listener_can_have_its_own_password_and_acl_files() {
    let dir = TempDir::new("per-listener");
    let global_acl = dir.write("global.acl", "topic readwrite #\n");
    let public_acl = dir.write(
        "public.acl",
        "user bob\ntopic readwrite public/#\npattern read $marker/#\n",
    );
    // bob's entry, written by our own passwd logic in Mosquitto's format.
    let public_passwd = dir.0.join("public.passwd");
    mqtt_server::auth::password_file::update(
        &public_passwd,
        true,
        "bob",
        mqtt_server::auth::password_file::Change::Set("bob-pw"),
    )
    .expect("write the password file");
    let mut config = test_config();
    config.auth.acl_file = Some(global_acl);
    let mut public = config.listeners[0].clone();
    public.allow_anonymous = Some(false);
    public.password_file = Some(public_passwd);
    public.acl_file = Some(public_acl);
    config.listeners.push(public);
    let broker = Broker::new(config);
    broker.start().await.expect("start");
    broker.add_credentials("alice", "alice-pw");
    let addrs = broker.local_addrs();
    let (local, public) = (addrs[0], addrs[1]);
    let login = |user: &str, pw: &str| {
        let mut c = connect_packet(&format!("{user}-client"), true, 60);
        c.username = Some(user.into());
        c.password = Some(Bytes::copy_from_slice(pw.as_bytes()));
        c
    };
    let code = |addr: SocketAddr, connect| async move {
        let mut c = RawClient::open(addr).await;
        c.send(Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Some(Packet::ConnAck(a)) => (a.code, c),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    };
    // The global store (add_credentials) serves the first listener only.
    assert_eq!(code(local, login("alice", "alice-pw")).await.0, 0);
    assert_eq!(code(public, login("alice", "alice-pw")).await.0, 0x04);
    // The public listener's own file: bob gets in there.
    let (c, mut bob) = code(public, login("bob", "bob-pw")).await;
    assert_eq!(c, 0);
    // ... and its own ACL applies: public/# only.
    assert_eq!(
        bob.subscribe(
            1,
            &[("public/x", QoS::AtMostOnce), ("other/x", QoS::AtMostOnce)]
        )
        .await,
        vec![0, 0x80],
        "the public listener's ACL"
    );
    // The same filter is allowed on the local listener (global ACL: everything).
    let mut anon = RawClient::connect(local, "anon").await;
    assert_eq!(
        anon.subscribe(1, &[("other/x", QoS::AtMostOnce)]).await,
        vec![0]
    );
    broker.shutdown().await;
}

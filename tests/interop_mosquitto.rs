//! Interoperability with the Eclipse Mosquitto command-line clients (`mosquitto_pub` and
//! `mosquitto_sub` from Debian's `mosquitto-clients`): real processes against an in-process
//! broker on an ephemeral port.
//!
//! A subscriber is known to be subscribed before anything is published: the tests poll
//! `Broker::subscription_count` (or use `mosquitto_sub -E`, which exits after its SUBACK).
//! Publishers use QoS 1 or 2 where the order of messages from different processes matters,
//! since `mosquitto_pub` then exits only after the broker acknowledged (and so routed) them.
//! A missing binary fails the test: `scripts/test` installs it.

mod common;

use common::TestBroker;
use common::mosquitto::{
    self, PROCESS_TIMEOUT, SUB_TIMEOUT_SECS, finish, mosquitto_pub, received, text,
};
use tokio::process::Child;

/// `mosquitto_sub -F`: topic, QoS, retain flag and payload of each message on one line.
const FORMAT: &str = "%t|%q|%r|%p";

/// Starts a client process aimed at the test broker.
fn spawn(program: &str, b: &TestBroker, args: &[&str]) -> Child {
    mosquitto::spawn(program, b, args, None)
}

/// Runs `mosquitto_pub` and requires success.
async fn publish(b: &TestBroker, args: &[&str]) {
    let out = mosquitto_pub(b, args).await;
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed ({}); stderr: {}",
        out.status,
        text(&out.stderr)
    );
}

/// Starts `mosquitto_sub` and waits until the broker holds `subscriptions` subscriptions.
async fn subscriber(b: &TestBroker, args: &[&str], subscriptions: usize) -> Child {
    mosquitto::subscriber(b, FORMAT, args, subscriptions).await
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[tokio::test]
async fn qos_0_1_2_from_mosquitto_pub_reach_mosquitto_sub() {
    let b = TestBroker::start().await;
    let sub = subscriber(&b, &["-t", "interop/qos", "-q", "2", "-C", "3"], 1).await;
    // QoS 1 and 2 first: mosquitto_pub exits only after PUBACK/PUBCOMP, so each is routed
    // before the next process starts, and -C 3 cannot stop before the QoS 0 message.
    publish(&b, &["-t", "interop/qos", "-q", "1", "-m", "one"]).await;
    publish(&b, &["-t", "interop/qos", "-q", "2", "-m", "two"]).await;
    publish(&b, &["-t", "interop/qos", "-q", "0", "-m", "zero"]).await;
    // libmosquitto hands a QoS 2 message to the application only at PUBREL, so a later QoS 0
    // or 1 message may be printed first: compare in a fixed order.
    assert_eq!(
        sorted(received(sub).await),
        [
            "interop/qos|0|0|zero",
            "interop/qos|1|0|one",
            "interop/qos|2|0|two"
        ],
        "topic|qos|retain|payload of each delivery"
    );
    b.stop().await;
}

#[tokio::test]
async fn delivery_qos_is_the_minimum_of_publish_and_subscription() {
    let b = TestBroker::start().await;
    let sub = subscriber(&b, &["-t", "interop/min", "-q", "1", "-C", "2"], 1).await;
    publish(&b, &["-t", "interop/min", "-q", "2", "-m", "downgraded"]).await;
    publish(&b, &["-t", "interop/min", "-q", "0", "-m", "kept"]).await;
    assert_eq!(
        received(sub).await,
        ["interop/min|1|0|downgraded", "interop/min|0|0|kept"]
    );
    b.stop().await;
}

#[tokio::test]
async fn retained_message_reaches_a_later_subscriber() {
    let b = TestBroker::start().await;
    publish(
        &b,
        &["-t", "interop/retained", "-q", "1", "-r", "-m", "kept"],
    )
    .await;
    assert_eq!(b.broker.retained_count(), 1, "retained message stored");
    // Not `subscriber`: this one may receive its message and exit before its subscription
    // could be observed.
    let sub = spawn(
        "mosquitto_sub",
        &b,
        &[
            "-W",
            SUB_TIMEOUT_SECS,
            "-F",
            FORMAT,
            "-t",
            "interop/retained",
            "-q",
            "1",
            "-C",
            "1",
        ],
    );
    assert_eq!(
        received(sub).await,
        ["interop/retained|1|1|kept"],
        "[MQTT-3.3.1-8] retained message sent to a new subscriber with RETAIN 1"
    );

    // An empty retained payload clears it: a new subscriber then gets only a live message.
    publish(&b, &["-t", "interop/retained", "-q", "1", "-r", "-n"]).await;
    assert_eq!(b.broker.retained_count(), 0, "empty payload clears");
    let sub = subscriber(&b, &["-t", "interop/retained", "-q", "1", "-C", "1"], 1).await;
    publish(&b, &["-t", "interop/retained", "-q", "1", "-m", "live"]).await;
    assert_eq!(
        received(sub).await,
        ["interop/retained|1|0|live"],
        "[MQTT-3.3.1-9] RETAIN 0 on delivery to an established subscription"
    );
    b.stop().await;
}

#[tokio::test]
async fn wildcard_subscriptions_match_only_their_topics() {
    let b = TestBroker::start().await;
    let sub = subscriber(
        &b,
        &["-t", "sensors/+/temp", "-t", "logs/#", "-q", "1", "-C", "4"],
        2,
    )
    .await;
    for (topic, payload) in [
        ("sensors/kitchen/humidity", "no"),
        ("sensors/kitchen/temp", "21"),
        ("sensors/a/b/temp", "no"),
        ("logs", "parent"),
        ("other/logs/x", "no"),
        ("logs/app/error", "deep"),
        ("sensors//temp", "empty level"),
    ] {
        publish(&b, &["-t", topic, "-q", "1", "-m", payload]).await;
    }
    assert_eq!(
        received(sub).await,
        [
            "sensors/kitchen/temp|1|0|21",
            "logs|1|0|parent",
            "logs/app/error|1|0|deep",
            "sensors//temp|1|0|empty level",
        ],
        "[MQTT-4.7.1-2] '#' matches the parent level; '+' exactly one (possibly empty) level"
    );
    b.stop().await;
}

#[tokio::test]
async fn mqtt_3_1_and_3_1_1_clients_exchange_messages() {
    let b = TestBroker::start().await;
    let sub31 = subscriber(
        &b,
        &["-V", "mqttv31", "-t", "interop/v", "-q", "2", "-C", "2"],
        1,
    )
    .await;
    let sub311 = subscriber(
        &b,
        &["-V", "mqttv311", "-t", "interop/v", "-q", "2", "-C", "2"],
        2,
    )
    .await;
    publish(
        &b,
        &[
            "-V",
            "mqttv31",
            "-t",
            "interop/v",
            "-q",
            "2",
            "-m",
            "from31",
        ],
    )
    .await;
    publish(
        &b,
        &[
            "-V",
            "mqttv311",
            "-t",
            "interop/v",
            "-q",
            "1",
            "-m",
            "from311",
        ],
    )
    .await;
    // Sorted: the QoS 2 message reaches the application at PUBREL, possibly after the other.
    let expected = ["interop/v|1|0|from311", "interop/v|2|0|from31"];
    assert_eq!(
        sorted(received(sub31).await),
        expected,
        "MQTT 3.1 subscriber"
    );
    assert_eq!(
        sorted(received(sub311).await),
        expected,
        "MQTT 3.1.1 subscriber"
    );
    b.stop().await;
}

#[tokio::test]
async fn will_of_a_killed_mosquitto_sub_is_published() {
    let b = TestBroker::start().await;
    let watcher = subscriber(&b, &["-t", "interop/will/#", "-q", "1", "-C", "1"], 1).await;
    let mut holder = subscriber(
        &b,
        &[
            "-i",
            "will-holder",
            "-t",
            "interop/holder",
            "--will-topic",
            "interop/will/holder",
            "--will-payload",
            "holder vanished",
            "--will-qos",
            "1",
        ],
        2,
    )
    .await;
    // SIGKILL: the process cannot send DISCONNECT, so the broker must publish the will.
    holder.start_kill().expect("SIGKILL mosquitto_sub");
    let status = tokio::time::timeout(PROCESS_TIMEOUT, holder.wait())
        .await
        .expect("killed mosquitto_sub exits")
        .expect("wait for mosquitto_sub");
    assert!(!status.success(), "the holder was killed, not finished");
    assert_eq!(
        received(watcher).await,
        ["interop/will/holder|1|0|holder vanished"],
        "[MQTT-3.1.2-8] will published when the network connection closes without DISCONNECT"
    );
    b.stop().await;
}

#[tokio::test]
async fn will_is_not_published_after_a_normal_exit() {
    let b = TestBroker::start().await;
    let watcher = subscriber(&b, &["-t", "interop/will/#", "-q", "1", "-C", "1"], 1).await;
    // -E: subscribe, then DISCONNECT and exit: a normal end, so no will.
    let polite = spawn(
        "mosquitto_sub",
        &b,
        &[
            "-E",
            "-t",
            "interop/polite",
            "--will-topic",
            "interop/will/polite",
            "--will-payload",
            "should not appear",
        ],
    );
    let out = finish(polite, "mosquitto_sub -E").await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    // Barrier: a message published after the polite client finished.
    publish(
        &b,
        &["-t", "interop/will/marker", "-q", "1", "-m", "marker"],
    )
    .await;
    assert_eq!(
        received(watcher).await,
        ["interop/will/marker|1|0|marker"],
        "[MQTT-3.1.2-10] will deleted on DISCONNECT"
    );
    b.stop().await;
}

#[tokio::test]
async fn persistent_session_receives_qos1_published_while_offline() {
    let b = TestBroker::start().await;
    // -c: Clean Session 0; -E: exit (with DISCONNECT) once the SUBACK arrived.
    let first = spawn(
        "mosquitto_sub",
        &b,
        &[
            "-c",
            "-i",
            "persistent-sub",
            "-q",
            "1",
            "-t",
            "interop/offline",
            "-E",
        ],
    );
    let out = finish(first, "mosquitto_sub -c -E").await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        b.broker.session_count(),
        1,
        "the persistent session is kept"
    );
    assert_eq!(b.broker.subscription_count(), 1, "with its subscription");

    publish(&b, &["-t", "interop/offline", "-q", "1", "-m", "queued"]).await;
    publish(
        &b,
        &["-t", "interop/offline", "-q", "0", "-m", "qos0 not queued"],
    )
    .await;
    publish(
        &b,
        &["-t", "interop/offline", "-q", "2", "-m", "queued too"],
    )
    .await;

    let again = spawn(
        "mosquitto_sub",
        &b,
        &[
            "-c",
            "-i",
            "persistent-sub",
            "-q",
            "1",
            "-t",
            "interop/offline",
            "-C",
            "2",
            "-W",
            SUB_TIMEOUT_SECS,
            "-F",
            FORMAT,
        ],
    );
    assert_eq!(
        received(again).await,
        [
            "interop/offline|1|0|queued",
            "interop/offline|1|0|queued too"
        ],
        "[MQTT-3.1.2-5] QoS 1/2 messages stored for the offline session, in order; QoS 0 not \
         (queue_qos0_messages = false)"
    );
    b.stop().await;
}

#[tokio::test]
async fn username_and_password_are_checked() {
    let b = TestBroker::start().await;
    b.broker.add_credentials("alice", "s3cret");
    let sub = subscriber(
        &b,
        &[
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-t",
            "interop/auth",
            "-q",
            "1",
            "-C",
            "1",
        ],
        1,
    )
    .await;
    publish(
        &b,
        &[
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-t",
            "interop/auth",
            "-q",
            "1",
            "-m",
            "authorised",
        ],
    )
    .await;
    assert_eq!(received(sub).await, ["interop/auth|1|0|authorised"]);

    let refused_before = b.broker.metrics().connections_refused;
    for (user, password) in [("alice", "wrong"), ("mallory", "s3cret")] {
        let out = mosquitto_pub(
            &b,
            &[
                "-u",
                user,
                "-P",
                password,
                "-t",
                "interop/auth",
                "-q",
                "1",
                "-m",
                "no",
            ],
        )
        .await;
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{user}/{password} must be refused; stderr: {stderr}"
        );
        assert!(
            stderr.contains("Connection Refused") && stderr.contains("bad user name or password"),
            "[MQTT-3.2.2-6] CONNACK return code 4 expected for {user}/{password}; stderr: \
             {stderr}"
        );
    }
    // The counter may be bumped after the CONNACK is written: poll it.
    common::wait_until("both refusals counted", || {
        b.broker.metrics().connections_refused == refused_before + 2
    })
    .await;
    b.stop().await;
}
